"""Recovery throughput of ``flowinv.recover`` against the value-and-gradient floor.

``python -m benchmarks.recovery`` sweeps, on whatever device is present, the paper-size Glow
priors (64×64×3: K=18, L=4, width 512; 128×128×3: K=32, L=6, width 512) over

* tasks: compressed sensing at m/n = 0.2 with the dense Gaussian operator (``gaussian_cs``) and
  the fast structured one (``fast_cs``, O(n log n)), and denoising (σ = 0.1, γ = 0.03);
* batch sizes 1, 2, 4, … up to ``--max-batch`` or the first that does not fit in memory
  (recorded as "does not fit").

Every image runs up to 300 L-BFGS iterations (the paper setting) with its own optimiser state,
with ``tol=0``: an image stops early only where its line search can no longer lower the loss in
float32 (the rounding floor; the row's ``iterations_max`` and ``iterations_note`` say so, and
the goal scales seconds per image to 300 iterations). For each (model, task, operator, batch) it
records the compile and run seconds of ``flowinv.recover``, images/s, and the *floor*: the same
number of batched value-and-gradient evaluations of the same loss in one compiled loop, measured
in the same process, i.e. what an ideal solver would cost. ``ratio_vs_floor`` = (run seconds per
solver iteration) / (seconds per batched value-and-gradient). Peak device memory comes from
``memory_stats()`` (process max RSS on CPU). Each measurement runs in its own subprocess unless
``--quick`` or ``--in-process``.

Writes ``benchmarks/results/recovery[_quick]_<platform>.json`` and ``.md`` and prints the goals
it can judge (64×64 CS time per image, solver overhead, 128×128 batch ≥ 16 fits).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C

GROUPS = (("cs", "dense"), ("cs", "fast"), ("denoise", "identity"))
"""(task, operator) pairs swept by default."""

MEASURE_DEFAULTS = dict(
    model="tiny16", task="cs", operator="dense", batch=1, ratio=0.2, sigma=0.1,
    denoise_gamma=0.03, maxiter=C.PAPER_ITERATIONS, floor_iters=30, repeats=1,
    precision="default", compute_dtype="float32", truth="synthetic", temperature=0.7, seed=0)
"""One measurement's settings (see :func:`measure`)."""

QUICK = dict(models=("tiny16", "tiny32"),
             groups={"tiny16": GROUPS, "tiny32": (("cs", "fast"),)},
             batches={"tiny16": (1, 2), "tiny32": (1, 2)}, maxiter=5, floor_iters=5, repeats=3)
FULL = dict(models=("glow64", "glow128"), groups={"glow64": GROUPS, "glow128": GROUPS},
            batches={"glow64": C.powers_of_two(512), "glow128": C.powers_of_two(128)},
            maxiter=C.PAPER_ITERATIONS, floor_iters=30, repeats=1)


@dataclasses.dataclass(frozen=True)
class Bf16Apply:
    """``z -> G(z)`` with the flow evaluated in bfloat16 (``params`` already cast), output in
    the latent's dtype: a hashable ``apply`` for :class:`flowinv.Generator`."""

    flow: Any

    def __call__(self, params, z):
        return self.flow.forward(params, z.astype(jnp.bfloat16))[0].astype(z.dtype)


def make_operator(task: str, operator: str, key, shape, ratio: float):
    """The forward operator of a task: dense/fast CS with ``m = round(ratio·n)``, or identity."""
    from flowinv import operators

    n = math.prod(shape)
    if task == "denoise":
        return operators.identity(shape), None
    m = max(1, int(round(ratio * n)))
    if operator == "dense":
        return operators.gaussian_cs(key, shape, m), m
    if operator == "fast":
        return operators.fast_cs(key, shape, m), m
    raise ValueError(f"operator must be 'dense' or 'fast' for task 'cs', got {operator!r}")


def truth_images(cfg: dict, flow, params, key):
    """Ground-truth images ``(B, H, W, C)`` in ``[0, 1]``.

    ``"synthetic"``: smooth random images (:func:`benchmarks._common.synthetic_images`);
    ``"flow"``: samples ``G(T·ε)`` of the benchmark flow at temperature ``cfg["temperature"]``,
    clipped to ``[0, 1]`` (near the range of ``G``, so PSNR reflects how well the solve
    converged); any other string: a :func:`flowinv.data.load_dataset` spec (test split, resized
    to the model's shape, repeated if it has fewer images than the batch).
    """
    batch, shape = cfg["batch"], flow.image_shape
    if cfg["truth"] == "synthetic":
        return jnp.asarray(C.synthetic_images(np.random.default_rng(cfg["seed"] + 1), batch,
                                              shape))
    if cfg["truth"] == "flow":
        # The latents come from numpy: XLA:CPU compiles a threefry sampler slowly.
        z = float(cfg["temperature"]) * np.random.default_rng(cfg["seed"] + 5).standard_normal(
            (batch, flow.dim))
        x = _forward_batch(flow, params, jnp.asarray(z, jnp.float32))
        return jnp.clip(x, 0.0, 1.0)
    from flowinv import data

    x = data.load_dataset(cfg["truth"], "test", image_shape=shape)
    return jnp.asarray(np.resize(x, (batch, *shape)))


@functools.partial(jax.jit, static_argnums=0)
def _forward_batch(flow, params, z):
    return jax.vmap(lambda zz: flow.forward(params, zz)[0])(z)


def _psnr(x, ref) -> np.ndarray:
    """Per-image PSNR in dB (data range 1) of ``clip(x, 0, 1)`` against ``ref``; written here
    because it must accept a whole batch of arrays that may hold NaN after a diverged solve."""
    x = np.clip(np.asarray(x, np.float64), 0.0, 1.0)
    mse = np.mean((x - np.asarray(ref, np.float64)) ** 2, axis=tuple(range(1, x.ndim)))
    return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-20))


def _measure(cfg: dict) -> tuple[dict, Any]:
    import flowinv
    from flowinv import losses

    setup_start = time.perf_counter()
    flow = C.make_flow(cfg["model"])
    key = jax.random.PRNGKey(cfg["seed"])
    batch = int(cfg["batch"])
    # Problem data are made at full float32 so every precision setting solves the same problem.
    with jax.default_matmul_precision("highest"):
        params = C.benchmark_params(flow, key)
        x = truth_images(cfg, flow, params, key)
        op, m = make_operator(cfg["task"], cfg["operator"], jax.random.fold_in(key, 3),
                              flow.image_shape, cfg["ratio"])
        y = jax.vmap(op)(x)
        if cfg["task"] == "denoise":
            noise = np.random.default_rng(cfg["seed"] + 4).standard_normal(y.shape)
            y = y + jnp.asarray(cfg["sigma"] * noise, y.dtype)
        y = jax.block_until_ready(y)
    setup_s = time.perf_counter() - setup_start
    gamma = cfg["denoise_gamma"] if cfg["task"] == "denoise" else 0.0
    if cfg["compute_dtype"] == "bfloat16":
        gen_params = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        prior = (flowinv.Generator(Bf16Apply(flow), flow.dim, flow.image_shape), gen_params)
    elif cfg["compute_dtype"] == "float32":
        gen_params, prior = params, (flow, params)
    else:
        raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', "
                         f"got {cfg['compute_dtype']!r}")
    kw = dict(operator=op, method="asim", gamma=gamma, solver=cfg.get("solver", "lbfgs"),
              maxiter=int(cfg["maxiter"]), tol=0.0)

    with C.precision_context(cfg["precision"]):
        with C.CompileTimer() as ct:
            r, first_s = C.timed(lambda: flowinv.recover(prior, y, **kw))
        if cfg["repeats"] > 0:
            run_s = min(C.timed(lambda: flowinv.recover(prior, y, **kw))[1]
                        for _ in range(int(cfg["repeats"])))
            source = f"min of {cfg['repeats']} call(s) after the compiling one"
        else:
            run_s = max(first_s - ct.seconds, 1e-9)
            source = "first call minus its compile time"

        apply = Bf16Apply(flow) if cfg["compute_dtype"] == "bfloat16" else None
        floor_iters = int(cfg["floor_iters"])

        def floor_fn(p, op, y, z0):
            gen = ((lambda z: apply(p, z)) if apply is not None
                   else losses.flow_generator(flow, p))
            vg = jax.vmap(jax.value_and_grad(losses.asim_loss(gen, op, gamma=gamma)))

            def body(_, carry):
                z, acc = carry
                v, g = vg(z, y)
                return z - 1e-6 * g, acc + jnp.sum(v)

            return jax.lax.fori_loop(0, floor_iters, body, (z0, jnp.zeros((), z0.dtype)))

        # the floor's batch is what recover ran: padded to a multiple of the devices, and
        # sharded over them (unpadded, a batch of 1 on 2 GPUs was timed on one)
        size = C.padded_batch(batch)
        rows_idx = np.minimum(np.arange(size), batch - 1)
        y_s, z0_s = C.shard_batch((y[rows_idx], jnp.zeros((size, flow.dim), y.dtype)), size)
        with C.CompileTimer() as floor_ct:
            compiled = jax.jit(floor_fn).lower(gen_params, op, y_s, z0_s).compile()
        floor_s = min(C.timed(lambda: compiled(gen_params, op, y_s, z0_s))[1]
                      for _ in range(2))

    iters = np.asarray(r.iterations)
    it_max = int(iters.max())
    floor_per_iter = floor_s / floor_iters
    psnr = _psnr(r.x, x)
    row = dict(
        n=flow.dim, m=m, num_params=flowinv.num_params(params),
        iterations_max=it_max, iterations_mean=float(iters.mean()),
        diverged=int(np.sum(np.asarray(r.diverged))),
        devices_used=len(r.x.sharding.device_set),
        floor_batch=size, floor_devices_used=len(y_s.sharding.device_set),
        setup_s=setup_s, first_call_s=first_s, compile_s=ct.seconds,
        backend_compiles=ct.count,
        run_s=run_s, run_time_source=source,
        s_per_image=run_s / batch, images_per_s=batch / run_s,
        s_per_iteration=run_s / max(it_max, 1),
        floor_iterations=floor_iters, floor_compile_s=floor_ct.seconds,
        floor_s_per_iteration=floor_per_iter,
        floor_images_per_s=batch / (floor_per_iter * max(it_max, 1)),
        ratio_vs_floor=(run_s / max(it_max, 1)) / floor_per_iter,
        psnr_mean=float(np.nanmean(psnr)) if np.isfinite(psnr).any() else None,
        iterations_note=C.iterations_note(int(cfg["maxiter"]), it_max),
    )
    return row, r.x


def measure(config: dict, *, return_images: bool = False, with_environment: bool = True):
    """One recovery measurement.

    Args:
      config: keys of :data:`MEASURE_DEFAULTS` (missing ones take those values): ``model``
        (a :data:`benchmarks._common.MODELS` name), ``task`` (``"cs"``/``"denoise"``),
        ``operator`` (``"dense"``/``"fast"``/``"identity"``), ``batch``, ``ratio`` (m/n),
        ``sigma`` and ``denoise_gamma`` (denoising), ``maxiter``, ``floor_iters``,
        ``repeats`` (timed calls after the compiling one; 0 = first call minus compile time),
        ``precision`` (a ``--precision`` choice), ``compute_dtype`` (``"float32"`` or
        ``"bfloat16"``: the flow evaluated in bf16), ``truth``, ``temperature``, ``seed``.
      return_images: also return the recovered images (in-process use only).
      with_environment: attach :func:`benchmarks._common.environment` (workers do).

    Returns:
      The result row (``status`` ``"ok"``, ``"diverged"``, ``"does not fit"`` or
      ``"failed"``), and the recovered images ``(B, H, W, C)`` (None if it failed) when
      ``return_images``.
    """
    cfg = {**MEASURE_DEFAULTS, **config}
    label = ("bfloat16-dtype" if cfg["compute_dtype"] == "bfloat16" else cfg["precision"])
    row = dict(model=cfg["model"], image_shape=list(C.MODELS[cfg["model"]]["image_shape"]),
               task=cfg["task"], operator=cfg["operator"], batch=int(cfg["batch"]),
               maxiter=int(cfg["maxiter"]), precision=label, truth=cfg["truth"])
    images = None
    try:
        result, images = _measure(cfg)
        row.update(result, status="ok")
        if result["diverged"]:
            # Timings of a solve whose loss went non-finite measure no recovery (a loss that
            # is NaN at z0 stops every image at iteration 0), so the goals must not read them.
            row.update(status="diverged", error=(
                f"the loss of {result['diverged']} of {row['batch']} images became non-finite "
                f"(at most {result['iterations_max']} of {row['maxiter']} iterations ran)"))
    except Exception as e:  # out of memory is a result; anything else is recorded too
        row.update(status="does not fit" if C.is_oom(e) else "failed", error=C.first_line(e))
    row["device"] = C.device_string()
    row.update(C.peak_memory())
    if with_environment:
        row["environment"] = C.environment(cfg["precision"])
    return (row, images) if return_images else row


def sweep(config: dict, *, isolate: bool, worker_timeout: float | None = None,
          on_row=None) -> list[dict]:
    """Runs every (model, group, batch) of ``config``; a group stops at its first batch that
    does not fit or fails (a batch whose solve diverged did fit: the sweep goes on).
    ``isolate`` runs each measurement in its own subprocess; ``on_row(rows)``, if given, is
    called with the rows so far after each measurement."""
    rows = []
    for model in config["models"]:
        for task, operator in config["groups"][model]:
            for batch in config["batches"][model]:
                cfg = dict(model=model, task=task, operator=operator, batch=batch,
                           maxiter=config["maxiter"], floor_iters=config["floor_iters"],
                           repeats=config["repeats"], precision=config["precision"])
                row = (C.run_worker("recovery", cfg, timeout=worker_timeout) if isolate
                       else measure(cfg, with_environment=False))
                print(_progress_line(row), flush=True)
                rows.append(row)
                if on_row is not None:
                    on_row(rows)
                if row.get("status") not in ("ok", "diverged"):
                    break
    _add_speedups(rows)
    return rows


def _progress_line(row: dict) -> str:
    head = f"{row.get('model')} {row.get('task')}/{row.get('operator')} batch {row.get('batch')}"
    if row.get("status") != "ok":
        return f"{head}: {row.get('status')} ({row.get('error', '')[:120]})"
    return (f"{head}: {row['images_per_s']:.3g} images/s, {row['s_per_image']:.3g} s/image, "
            f"compile {row['compile_s']:.1f} s, ratio vs floor {row['ratio_vs_floor']:.2f}")


def _add_speedups(rows: list[dict]) -> None:
    """``speedup_vs_batch1``: images/s over the same group's batch-1 images/s."""
    base = {}
    for r in rows:
        if r.get("status") == "ok" and r["batch"] == 1:
            base[(r["model"], r["task"], r["operator"], r["precision"])] = r["images_per_s"]
    for r in rows:
        b = base.get((r.get("model"), r.get("task"), r.get("operator"), r.get("precision")))
        if r.get("status") == "ok" and b:
            r["speedup_vs_batch1"] = r["images_per_s"] / b


COLUMNS = [("model", "model"), ("task", "task"), ("operator", "operator"), ("batch", "batch"),
           ("iterations_max", "iters"), ("compile_s", "compile s"), ("run_s", "run s"),
           ("s_per_image", "s/image"), ("images_per_s", "images/s"),
           ("floor_images_per_s", "floor images/s"), ("ratio_vs_floor", "iter / v&g"),
           ("speedup_vs_batch1", "vs batch 1"), ("peak_gib", "peak GiB"),
           ("psnr_mean", "PSNR dB"), ("status", "status")]


def table(rows: list[dict], columns=COLUMNS) -> str:
    """The Markdown table of a sweep (peak memory in GiB)."""
    return C.markdown_table([{**r, "peak_gib": C.gib(r.get("peak_memory_bytes"))} for r in rows],
                            columns)


def _model_batches(parser: argparse.ArgumentParser, specs: list[str],
                   models) -> dict[str, tuple[int, ...]]:
    """``["glow128=16,32"]`` -> ``{"glow128": (16, 32)}``; a usage error for a model not in
    ``models`` or a malformed spec."""
    out = {}
    for spec in specs:
        model, _, batches = spec.partition("=")
        try:
            out[model] = C.int_list(batches)
        except argparse.ArgumentTypeError as e:
            parser.error(f"--model-batches {spec!r}: {e}")
        if model not in models:
            parser.error(f"--model-batches {spec!r}: expected MODEL=B1,B2,... with MODEL one "
                         f"of the run's models {sorted(models)}")
    return out


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.recovery --help``."""
    p = C.base_parser("python -m benchmarks.recovery", __doc__)
    p.add_argument("--models", type=C.str_list, default=None,
                   help="comma-separated models (default glow64,glow128; quick tiny16,tiny32)")
    p.add_argument("--tasks", type=C.str_list, default=None,
                   help="subset of cs-dense,cs-fast,denoise (default all)")
    p.add_argument("--batches", type=C.int_list, default=None,
                   help="batch sizes for every model (default powers of two up to --max-batch)")
    p.add_argument("--max-batch", type=C.positive_int, default=None,
                   help="largest batch of the sweep (default 512 for glow64, 128 for glow128)")
    p.add_argument("--model-batches", action="append", default=[], metavar="MODEL=B1,B2,...",
                   help="batch sizes of one model, over --batches and --max-batch for it "
                        "(repeatable), e.g. --batches 16,64 --model-batches glow128=16")
    p.add_argument("--maxiter", type=C.positive_int, default=None,
                   help=f"L-BFGS iterations per image (default {C.PAPER_ITERATIONS}, the paper "
                        "setting; quick: 5). Fewer is recorded in the output")
    p.add_argument("--floor-iters", type=C.positive_int, default=None,
                   help="batched value-and-gradient evaluations timed for the floor")
    p.add_argument("--repeats", type=C.nonnegative_int, default=None,
                   help="timed calls after the compiling one (0: first call minus compile time)")
    p.add_argument("--in-process", action="store_true",
                   help="no subprocess per measurement (default with --quick)")
    p.add_argument("--worker-timeout", type=float, default=3600.0,
                   help="seconds before one isolated measurement is abandoned")
    args = p.parse_args(argv)
    if args.worker:
        return C.worker_main(args, measure)
    config = dict(C.deepcopy_config(QUICK if args.quick else FULL), precision=args.precision)
    if args.models:
        unknown = set(args.models) - set(C.MODELS)
        if unknown:
            p.error(f"unknown models {sorted(unknown)}; choose from {sorted(C.MODELS)}")
        config["models"] = args.models
    if args.tasks:
        names = {"cs-dense": ("cs", "dense"), "cs-fast": ("cs", "fast"),
                 "denoise": ("denoise", "identity")}
        if set(args.tasks) - set(names):
            p.error(f"--tasks must be a subset of {sorted(names)}")
        config["groups"] = {m: tuple(names[t] for t in args.tasks) for m in C.MODELS}
    per_model = _model_batches(p, args.model_batches, config["models"])
    for model in config["models"]:
        config["groups"].setdefault(model, GROUPS)
        default = config["batches"].get(model, C.powers_of_two(8))
        if model in per_model:
            default = per_model[model]
        elif args.batches:
            default = args.batches
        elif args.max_batch is not None:
            default = C.powers_of_two(args.max_batch)
        config["batches"][model] = tuple(default)
    for k in ("maxiter", "floor_iters", "repeats"):
        if getattr(args, k) is not None:
            config[k] = getattr(args, k)
    isolate = not (args.quick or args.in_process)

    def save(rows: list[dict], partial: bool) -> dict:
        env = C.worker_environment(rows, args.precision) if isolate else C.environment(
            args.precision)
        notes = [C.iterations_note(config["maxiter"]),
                 "iter / v&g: seconds per L-BFGS iteration of the batch over seconds per "
                 "batched value-and-gradient of the same loss (the floor), measured in the same "
                 "process",
                 "the dense Gaussian operator computes A·x at Precision.HIGHEST whatever "
                 "--precision says; the flow's convolutions follow --precision",
                 "peak memory: " + ("one fresh process per measurement" if isolate else
                                    "process high-water mark so far (in-process run)")]
        if partial:
            notes.append(f"partial: the {len(rows)} measurements finished when the sweep was "
                         "last saved; it was still running (or was stopped)")
        _add_speedups(rows)
        return C.write_outputs(args.out, "recovery", quick=args.quick, environment=env,
                               config=config, rows=C.strip_environment(rows),
                               table=table(rows), notes=notes, echo=not partial)

    # saved after every measurement, so a run stopped at a deadline keeps what it finished
    rows = sweep(config, isolate=isolate, worker_timeout=args.worker_timeout,
                 on_row=lambda rows: save(rows, partial=True))
    from benchmarks import goals

    payload = save(rows, partial=False)
    goals.print_goals(goals.evaluate({"recovery": payload}), only=("cs64_time",
                                                                    "solver_overhead",
                                                                    "fit128"))
    return payload


if __name__ == "__main__":
    main()
