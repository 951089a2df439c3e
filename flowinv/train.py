"""Maximum-likelihood training of flow priors, in bits per dimension, with resumable checkpoints.

The objective for ``b``-bit data ``x_q`` uniformly dequantised to ``x = (x_q + u)/2^b`` is

    bits/dim = −log p_G(x) / (n ln 2) + b,

an upper bound on the discrete model's code length (Theis et al., 2016). Training is
deterministic given the seed: the batch of step ``s`` and its dequantisation noise are pure
functions of ``(seed, s)``, so a run killed at any point and restarted resumes from its last
checkpoint at exactly the same data position.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import pathlib
import platform
import time
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from flowinv import checkpoints, data
from flowinv._checks import all_finite, finite_real, positive_int, unit_interval_images
from flowinv.flows import Flow, num_params

Params = Any

LR_SCHEDULES = ("constant", "cosine")


class TrainSetupError(ValueError):
    """A run that cannot start, found before its first step: the batch does not fit the data,
    the test images are the training images, or the workdir holds another run (or this one
    trained past ``steps``). A command line reports it as a usage error."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run.

    Attributes:
      architecture: the flow, as :func:`flowinv.checkpoints.flow_config` describes it.
      dataset: a :func:`flowinv.data.load_dataset` spec; trains on its ``train`` split.
      bits: quantisation of the training data (8 keeps MNIST's full depth; the papers train
        natural images at 5 bits).
      batch_size, steps, lr, warmup, grad_clip: optax Adam with linear warm-up to ``lr`` and
        global-norm gradient clipping.
      lr_schedule: after the warm-up, ``"constant"`` keeps ``lr``; ``"cosine"`` decays it as
        ``lr · ½(1 + cos(π (t − warmup) / (steps − warmup)))``, reaching 0 at ``steps``.
      augment: random flips/90° rotations of training images (natural patches only).
      init_batch: images used for the data-dependent actnorm initialisation.
      eval_every, ckpt_every: test bits/dim + sample grid, and checkpoint, periods in steps.
      eval_limit: cap on test images used for the periodic evaluation (all at the end).
      seed: the one seed of the run.
    """

    architecture: dict
    dataset: str = "mnist"
    bits: int = 8
    batch_size: int = 64
    steps: int = 2000
    lr: float = 1e-3
    warmup: int = 200
    lr_schedule: str = "constant"
    grad_clip: float = 50.0
    augment: bool = False
    init_batch: int = 256
    eval_every: int = 500
    ckpt_every: int = 250
    eval_limit: int | None = 500
    seed: int = 0

    def __post_init__(self):
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, "
                             f"got {self.lr_schedule!r}")
        # checked here, not where each is first used: a period of 0 divided by zero after the
        # first step, an eval_limit of 0 failed at the first evaluation, hours in
        for name in ("batch_size", "steps", "eval_every", "ckpt_every", "init_batch"):
            positive_int(getattr(self, name), name)
        if self.eval_limit is not None:
            positive_int(self.eval_limit, "eval_limit")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, numbers.Integral) \
                or self.warmup < 0:
            raise ValueError(f"warmup must be an int >= 0, got {self.warmup!r}")
        if positive_int(self.bits, "bits") > 16:
            raise ValueError(f"bits must be in [1, 16], got {self.bits}")
        # a negative lr or clip norm climbed the loss without a word
        finite_real(self.lr, "lr", positive=True)
        finite_real(self.grad_clip, "grad_clip", positive=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral) \
                or not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must be an int in [0, 2**32), got {self.seed!r}")


def learning_rate(config: TrainConfig) -> optax.Schedule:
    """The step → learning-rate schedule: linear warm-up from 0 over ``config.warmup`` steps,
    then ``config.lr_schedule``; ``warmup = 0`` starts at ``lr``."""
    if config.lr_schedule == "cosine":
        if config.warmup == 0:
            return optax.cosine_decay_schedule(config.lr, max(config.steps, 1), alpha=0.0)
        return optax.warmup_cosine_decay_schedule(
            0.0, config.lr, config.warmup, max(config.steps, config.warmup + 1), end_value=0.0)
    if config.warmup == 0:
        return optax.constant_schedule(config.lr)
    return optax.linear_schedule(0.0, config.lr, config.warmup)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = learning_rate(config)
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(schedule))
    # A non-finite step (rare, early in training) is skipped rather than poisoning the params.
    return optax.apply_if_finite(opt, max_consecutive_errors=20)


def bits_per_dim(flow: Flow, params: Params, x: jax.Array, bits: int) -> jax.Array:
    """Mean bits/dim of a batch ``x`` ``(N, H, W, C)`` of dequantised ``bits``-bit images."""
    lp = jax.vmap(flow.log_prob, (None, 0))(params, x)
    return -jnp.mean(lp) / (flow.dim * math.log(2.0)) + bits


def evaluate_bpd(flow: Flow, params: Params, images: np.ndarray, bits: int, *,
                 batch_size: int = 100, seed: int = 1234) -> float:
    """Test bits/dim of ``images`` ``(N, H, W, C)`` in ``[0, 1]``, with fixed dequantisation.
    One compiled program per flow, bits and batch shape, reused by every later call (it was
    compiled anew on each: about 6 of the 7 s of a call on glow-mnist)."""
    batch_size = min(batch_size, len(images))
    values = []
    for i in range(0, len(images), batch_size):
        xb = np.asarray(images[i: i + batch_size])
        real = len(xb)
        if real < batch_size:  # pad the ragged tail so the compiled shape is reused
            xb = np.concatenate([xb, np.repeat(xb[:1], batch_size - real, 0)])
        key = jax.random.fold_in(jax.random.PRNGKey(seed), i)
        values.append(np.asarray(_per_image_bpd(flow, params, jnp.asarray(xb), key,
                                                bits))[:real])
    return float(np.mean(np.concatenate(values)))


@functools.partial(jax.jit, static_argnames=("flow", "bits"))
def _per_image_bpd(flow: Flow, params: Params, xq: jax.Array, key: jax.Array,
                   bits: int) -> jax.Array:
    """Bits/dim of each image of ``xq`` ``(N, H, W, C)``, dequantised with keys from ``key``."""
    keys = jax.random.split(key, xq.shape[0])
    x = jax.vmap(lambda a, k: data.dequantize(k, a, bits))(xq, keys)
    return -jax.vmap(flow.log_prob, (None, 0))(params, x) / (flow.dim * math.log(2.0)) + bits


def _save_grid(path: pathlib.Path, images: np.ndarray, title: str) -> None:
    import matplotlib.pyplot as plt

    n = len(images)
    cols = int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for img, ax in zip(images, np.atleast_1d(axes).ravel(), strict=False):
        img = np.clip(img, 0, 1)
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
    fig.suptitle(title, fontsize=8)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _restore_latest(manager, target) -> tuple[Any, int | None]:
    """Restores the newest readable checkpoint; a corrupted one falls back to the previous,
    and is deleted once an older one restores (orbax saves no step at or below the newest on
    disk, so the run would write no checkpoint until it passed the corrupted one). Raises if
    there are checkpoints and none restores: starting over would silently discard them."""
    import orbax.checkpoint as ocp

    unreadable = []
    for step in sorted(manager.all_steps(), reverse=True):
        try:
            restored = manager.restore(step, args=ocp.args.StandardRestore(target))
        except Exception as e:  # orbax raises many types for unreadable files
            warnings.warn(f"checkpoint at step {step} is unreadable ({type(e).__name__}: {e}); "
                          "falling back to the previous one", stacklevel=2)
            unreadable.append(step)
            continue
        for bad in unreadable:
            manager.delete(bad)
        return restored, step
    if unreadable:
        raise RuntimeError(
            f"none of the checkpoints in {str(manager.directory)!r} (steps {unreadable}) can be "
            "restored into this run's parameters (see the warnings): delete that folder to "
            "start over, or train with the flowinv and orbax versions that wrote them")
    return None, None


#: TrainConfig fields a resumed run may change: how long it runs, and how often it reports.
RESUMABLE_CHANGES = ("steps", "eval_every", "ckpt_every", "eval_limit")


def _check_same_run(workdir: pathlib.Path, config: TrainConfig, data_digest: str) -> None:
    """Refuses to resume checkpoints in ``workdir`` written with another config (other data,
    architecture, optimiser or seed), which would continue another run as if it were this one.
    ``data_digest`` (:func:`_data_digest` of the loaded splits) catches a dataset whose name is
    the same but whose images are not: a folder whose files changed, or a bundled set cropped
    otherwise by another library version. Fields the earlier ``config.json`` lacks (added in a
    later version) are not compared; a missing or unreadable one is warned about and the
    checkpoints are resumed."""
    path, ckpt = workdir / "config.json", workdir / "ckpt"
    if not ckpt.is_dir() or not any(ckpt.iterdir()):
        return
    try:
        before = json.loads(path.read_text())
        if not isinstance(before, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        warnings.warn(f"cannot read {str(path)!r} ({e}), so the checkpoints in {str(ckpt)!r} "
                      "cannot be checked to come from this config; resuming them",
                      stacklevel=3)
        return
    now = _run_record(config, data_digest)
    changed = sorted(k for k in before if k not in RESUMABLE_CHANGES and k in now
                     and before[k] != now[k])
    if "architecture" in changed and _same_flow(before["architecture"], now["architecture"]):
        changed.remove("architecture")  # a default named explicitly is the same flow
    if before.get("lr_schedule") == "cosine" and before.get("steps") != now.get("steps"):
        warnings.warn(f"resuming a cosine schedule with steps {now.get('steps')} instead of "
                      f"{before.get('steps')}: the learning rate decays over the new length "
                      "from the resumed step on, so the run matches neither length trained "
                      "straight", stacklevel=3)
    note = None
    if "data_digest" in changed and "dataset" not in changed:
        changed.remove("data_digest")
        note = (f"the images of dataset {config.dataset!r} are not the ones it was trained on "
                f"(digest {before['data_digest']!r} then, {data_digest!r} now: files changed, "
                "or another library version crops or resizes them otherwise)")
        if not changed:
            raise TrainSetupError(f"{str(workdir)!r} cannot be resumed: {note}; use another "
                                  "workdir, or delete this one to start over")
    if changed:
        raise TrainSetupError(
            f"{str(workdir)!r} holds checkpoints of another run (its {', '.join(changed)} "
            f"differ{'s' if len(changed) == 1 else ''}: "
            + "; ".join(f"{k} {before[k]!r} then, {now[k]!r} now" for k in changed)
            + ("" if note is None else f"; and {note}")
            + "); use another workdir, or delete this one to start over")


def _same_flow(a: Any, b: Any) -> bool:
    """Whether two architecture dicts describe equal flows (``False`` if either is not one)."""
    try:
        return checkpoints.flow_from_config(a) == checkpoints.flow_from_config(b)
    except (TypeError, ValueError):
        return False


def _check_finite_params(params: Params, step: int, last_saved: int | None) -> None:
    """RuntimeError where training has diverged: a non-finite step is skipped
    (:func:`make_optimizer`), but only 20 in a row, and a checkpoint of non-finite params
    would rotate the finite ones away (3 are kept) and be exported."""
    if all_finite(params):
        return
    last = f"step {last_saved}" if last_saved is not None else "none"
    raise RuntimeError(
        f"training diverged by step {step}: its params are not finite (the last checkpoint, "
        f"{last}, is kept); lower lr or lengthen warmup, in another workdir")


def _check_disjoint_splits(spec: str, train_x: np.ndarray, test_x: np.ndarray) -> None:
    """Refuses a dataset whose every test image is a training image; warns about a few."""
    shared = data.num_shared_images(train_x, test_x)
    if shared == len(test_x):
        raise TrainSetupError(
            f"every test image of {spec!r} is also a training image (a 'folder:' without "
            "train/ and test/ subfolders, or 'tfds:NAME:SPLIT', gives the same images for both "
            "splits), so the test bits/dim would be measured on training images: put "
            "training images in PATH/train and test images in PATH/test")
    if shared:
        warnings.warn(f"{shared} of the {len(test_x)} test images of {spec!r} are also "
                      "training images (exact duplicates); the test bits/dim includes them",
                      stacklevel=3)


def _data_digest(train_x: np.ndarray, test_x: np.ndarray) -> str:
    """16 hex digits of SHA-256 over both splits' shapes and bytes, hashed in place (every run
    hashes its whole training split: ``tobytes()`` copied it, doubling its memory for a moment
    and taking 7× as long)."""
    digest = hashlib.sha256()
    for x in (train_x, test_x):
        digest.update(repr(x.shape).encode())
        digest.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return digest.hexdigest()[:16]


def _arrays_label(train_x: np.ndarray, test_x: np.ndarray) -> str:
    """``"arrays:"`` and :func:`_data_digest`: the ``dataset`` of a run on in-memory images, so
    a resumed run is refused when its arrays differ."""
    return f"arrays:{_data_digest(train_x, test_x)}"


def _run_record(config: TrainConfig, data_digest: str) -> dict:
    """What ``config.json`` holds: the config's fields and the loaded data's digest."""
    return {**json.loads(json.dumps(dataclasses.asdict(config))), "data_digest": data_digest}


def _checked_images(images: Any, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` float32 arrays ``(N, *shape)`` in ``[0, 1]``, or ValueError/TypeError."""
    if not isinstance(images, tuple | list) or len(images) != 2:
        raise TypeError("images must be a pair (train, test) of arrays (N, H, W, C)")
    out = []
    for name, x in zip(("train", "test"), images, strict=True):
        x = np.asarray(x)
        if x.ndim != 4 or tuple(x.shape[1:]) != tuple(shape) or len(x) == 0:
            raise ValueError(f"images' {name} must have shape (N, {', '.join(map(str, shape))}) "
                             f"for this flow, with N >= 1, got {tuple(x.shape)}")
        unit_interval_images(x, f"images' {name}")
        out.append(x.astype(np.float32))
    return out[0], out[1]


def train(config: TrainConfig, workdir: str | pathlib.Path, *, export_to: str | None = None,
          command: str | None = None, progress: bool = True, images: Any = None) -> dict:
    """Trains (or resumes) a flow by maximum likelihood.

    Args:
      config: the run.
      workdir: where checkpoints (``ckpt/``), ``log.csv`` and sample grids go. If it holds
        checkpoints, training resumes from the newest readable one.
      export_to: if given, the final params are saved there with :func:`checkpoints.save` and a
        sidecar recording architecture, data, steps, ``command`` and test bits/dim.
      command: the command line that ran this, recorded in the sidecar.
      progress: show a tqdm bar.
      images: optional ``(train, test)`` arrays ``(N, H, W, C)`` in ``[0, 1]`` (e.g. a
        notebook's own images) to train and evaluate on instead of ``config.dataset``'s splits.
        The run's ``dataset`` becomes ``"arrays:"`` and a digest of both (in ``config.json``,
        the sidecar and the returned dict), so resuming with other arrays is refused;
        a test image that is also a training image is refused or warned about as for a spec.

    Returns:
      A dict with ``step``, ``train_bpd`` (last batch; ``None`` where the run resumed at its
      last step and trained none), ``test_bpd`` (whole test split),
      ``seconds``, ``resumed_from`` and ``dataset`` (the spec, or ``images``' label).
    """
    import orbax.checkpoint as ocp
    from tqdm.auto import tqdm

    workdir = pathlib.Path(workdir).absolute()
    workdir.mkdir(parents=True, exist_ok=True)
    flow = checkpoints.flow_from_config(config.architecture)
    if images is not None:
        train_x, test_x = _checked_images(images, tuple(flow.image_shape))
        config = dataclasses.replace(config, dataset=_arrays_label(train_x, test_x))
    else:
        train_x = data.load_dataset(config.dataset, "train", image_shape=flow.image_shape)
        test_x = data.load_dataset(config.dataset, "test", image_shape=flow.image_shape)
    _check_disjoint_splits(config.dataset, train_x, test_x)
    if len(train_x) < config.batch_size:
        raise TrainSetupError(f"batch_size {config.batch_size} exceeds the {len(train_x)} "
                         f"training images of {config.dataset!r}")
    data_digest = _data_digest(train_x, test_x)
    _check_same_run(workdir, config, data_digest)

    root = jax.random.PRNGKey(config.seed)
    init_idx = data.batch_indices(len(train_x), min(config.init_batch, len(train_x)),
                                  config.seed, 0)
    init_keys = jax.random.split(jax.random.fold_in(root, 1_000_000_001), len(init_idx))
    init_x = jax.vmap(lambda a, k: data.dequantize(k, a, config.bits))(
        jnp.asarray(train_x[init_idx]), init_keys)
    params = flow.init(jax.random.fold_in(root, 1_000_000_002), init_x)
    optimizer = make_optimizer(config)
    state = {"params": params, "opt_state": optimizer.init(params),
             "step": jnp.zeros((), jnp.int32)}

    manager = ocp.CheckpointManager(
        workdir / "ckpt",
        options=ocp.CheckpointManagerOptions(max_to_keep=3, enable_async_checkpointing=False,
                                             cleanup_tmp_directories=True))
    restored, restored_step = _restore_latest(manager, jax.tree.map(np.asarray, state))
    if restored is not None:
        state = jax.tree.map(jnp.asarray, restored)
    start = int(state["step"])
    if start > config.steps:  # it would train nothing and export the longer run's params
        manager.close()
        raise TrainSetupError(
            f"{str(workdir)!r} holds a checkpoint at step {start}, past steps={config.steps}: "
            "train at least that long, or use another workdir")
    # written once the run is known to go on: renamed into place, so a kill leaves no half file
    partial = workdir / "config.json.partial"
    partial.write_text(json.dumps(_run_record(config, data_digest), indent=2))
    partial.replace(workdir / "config.json")

    def loss_fn(p, xq, key):
        keys = jax.random.split(key, xq.shape[0])
        if config.augment:
            xq = jax.vmap(data.augment)(jax.random.split(jax.random.fold_in(key, 1),
                                                         xq.shape[0]), xq)
        x = jax.vmap(lambda a, k: data.dequantize(k, a, config.bits))(xq, keys)
        return bits_per_dim(flow, p, x, config.bits)

    @jax.jit
    def train_step(state, xq, key):
        loss, grads = jax.value_and_grad(loss_fn)(state["params"], xq, key)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "opt_state": opt_state, "step": state["step"] + 1}, loss

    sample_fn = jax.jit(jax.vmap(lambda p, k: flow.sample(p, k, 0.7), (None, 0)))
    log_path = workdir / "log.csv"
    kept = []
    if log_path.exists():  # the steps after the restored one are trained again: their rows go
        with open(log_path, newline="") as f:
            kept = [row for row in list(csv.reader(f))[1:] if row and int(row[0]) <= start]
    # The kept rows replace the log in one rename: a run killed before its first new row then
    # leaves the old log or the new one whole, never a truncated file.
    partial = log_path.with_name(log_path.name + ".partial")
    with open(partial, "w", newline="") as f:
        log = csv.writer(f)
        log.writerow(["step", "train_bpd", "test_bpd", "seconds"])  # seconds of this process
        log.writerows(kept)
    os.replace(partial, log_path)
    t0 = time.time()
    loss = float("nan")
    with open(log_path, "a", newline="") as log_file:
        log = csv.writer(log_file)
        bar = tqdm(total=config.steps, initial=start, disable=not progress,
                   desc=f"train {config.dataset}", unit="step")
        for step in range(start, config.steps):
            idx = data.batch_indices(len(train_x), config.batch_size, config.seed, step)
            state, loss = train_step(state, jnp.asarray(train_x[idx]),
                                     jax.random.fold_in(root, step))
            done = step + 1
            bar.update(1)
            if done % 10 == 0:
                bar.set_postfix(bpd=f"{float(loss):.3f}")
            test_bpd = ""
            if done % config.eval_every == 0 or done == config.steps:
                subset = test_x if config.eval_limit is None else test_x[: config.eval_limit]
                test_bpd = evaluate_bpd(flow, state["params"], subset, config.bits)
                samples = np.asarray(sample_fn(state["params"],
                                               jax.random.split(jax.random.PRNGKey(7), 36)))
                _save_grid(workdir / f"samples_{done:07d}.png", samples,
                           f"step {done}, test {test_bpd:.3f} bits/dim, T=0.7")
                bar.write(f"step {done}: train {float(loss):.3f} test {test_bpd:.3f} bits/dim")
            # The row goes to disk before the checkpoint: a run killed between the two then
            # resumes from the older checkpoint and drops the row, instead of resuming from the
            # new one with its row lost.
            log.writerow([done, f"{float(loss):.5f}", test_bpd, f"{time.time() - t0:.1f}"])
            log_file.flush()
            if done % config.ckpt_every == 0 or done == config.steps:
                host_state = jax.tree.map(np.asarray, state)
                _check_finite_params(host_state["params"], done, manager.latest_step())
                manager.save(done, args=ocp.args.StandardSave(host_state))
                manager.wait_until_finished()
        bar.close()
    manager.close()

    seconds = time.time() - t0
    test_bpd = evaluate_bpd(flow, state["params"], test_x, config.bits)
    # no step trained (a run resumed at its last step): no batch to report, not NaN (not JSON)
    train_bpd = None if start == config.steps else float(loss)
    result = {"step": int(state["step"]), "train_bpd": train_bpd, "test_bpd": test_bpd,
              "seconds": seconds, "resumed_from": restored_step, "dataset": config.dataset}
    if export_to is not None:
        export(flow, state["params"], config, export_to, test_bpd=test_bpd, command=command,
               test_images=len(test_x), extra={"train_seconds_this_run": round(seconds, 1)})
    return result


def export(flow: Flow, params: Params, config: TrainConfig, path: str | pathlib.Path, *,
           test_bpd: float, command: str | None, test_images: int | None = None,
           extra: dict | None = None) -> pathlib.Path:
    """Saves a trained prior with its sidecar (architecture, data, steps, command, bits/dim).

    ``test_bpd`` is the bits/dim on ``test_images`` images of the test split (all of it, as
    :func:`train` measures at the end; the sidecar's note says how many, where given)."""
    if not math.isfinite(test_bpd):
        raise ValueError(f"test_bpd is {test_bpd}: the params do not give a finite density of "
                         "the test images, so they are not exported")
    metadata = {
        "kind": "flow",
        "architecture": checkpoints.flow_config(flow),
        "num_params": num_params(params),
        "data": {"dataset": config.dataset, "split": "train (see README: Data)",
                 "bits": config.bits, "augment": config.augment},
        "training": {k: v for k, v in dataclasses.asdict(config).items()
                     if k not in ("architecture", "dataset")},
        "test_bits_per_dim": round(float(test_bpd), 4),
        "test_bits_per_dim_note": f"{config.bits}-bit data, uniform dequantisation, "
                                  + (f"all {test_images} images of the" if test_images
                                     else "the")
                                  + f" test split of {config.dataset!r}",
        "command": command,
        "device": f"{jax.devices()[0].device_kind} ({platform.machine()})",
        "jax_version": jax.__version__,
        **(extra or {}),
    }
    return checkpoints.save(path, params, metadata)
