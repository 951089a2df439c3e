"""Training, checkpoints and kill-and-resume, on the tiny 8×8 digits Glow."""

import dataclasses
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from flowinv import checkpoints, data, priors, train

TINY = dataclasses.replace(
    priors.PRIORS["glow-digits"],
    architecture={"type": "glow", "image_shape": [8, 8, 1], "levels": 1, "steps": 2,
                  "width": 8},
    batch_size=32, init_batch=64, warmup=5, eval_every=1000, ckpt_every=10)


def test_a_few_steps_lower_the_loss(tmp_path):
    config = dataclasses.replace(TINY, steps=40)
    result = train.train(config, tmp_path / "run", progress=False)
    log = np.genfromtxt(tmp_path / "run" / "log.csv", delimiter=",", names=True)
    first, last = log["train_bpd"][:5].mean(), log["train_bpd"][-5:].mean()
    # 40 Adam steps from a data-initialised Glow on 8×8 digits reliably drop ≥ 0.3 bits/dim.
    # The first steps sit near a Gaussian with the data's std σ = 0.376, which the
    # data-dependent initialisation gives: 8 + ½·log₂(2πeσ²) = 8.63 bits/dim for 8-bit data
    # (measured: 8.62); a missing or doubled 8-bit offset in bits_per_dim is off by 8.
    assert 7.5 < first < 9.5, first
    assert last < first - 0.3, (first, last)
    assert result["step"] == 40 and np.isfinite(result["test_bpd"])


def test_evaluate_bpd_is_the_mean_over_the_images_not_the_padded_batches():
    """3 images in batches of 2: the tail batch is padded to 2 for one compiled shape, and the
    padding must not count. Each image's bits/dim by hand, with the function's own keys
    (batch i at fold_in(seed, i), split per image); float32 mean of 3 terms: 1e-6."""
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    x = data.load_dataset("digits", "test", image_shape=(8, 8, 1))[:3]
    params = flow.init(jax.random.PRNGKey(0), jnp.asarray(x))
    by_hand = []
    for i in (0, 2):
        xb = x[i:i + 2]
        keys = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(5), i), 2)[:len(xb)]
        for a, k in zip(xb, keys, strict=True):
            lp = flow.log_prob(params, data.dequantize(k, jnp.asarray(a), 8))
            by_hand.append(float(-lp / (flow.dim * np.log(2.0)) + 8))
    value = train.evaluate_bpd(flow, params, x, 8, batch_size=2, seed=5)
    assert value == pytest.approx(np.mean(by_hand), rel=1e-6)


def test_gradients_are_clipped_to_grad_clip_before_adam():
    """A gradient spike of norm 10⁴ is clipped to ``grad_clip`` = 50: the next update equals
    the one after a first gradient already of norm 50 (Adam alone would not tell them apart
    at the first step, but its moments carry the spike into the second). float32: 1e-5."""
    opt = train.make_optimizer(dataclasses.replace(TINY, lr=1.0, warmup=1, grad_clip=50.0))
    p = jnp.zeros(4)
    g1 = jnp.array([1.0, -2.0, 3.0, 0.5])
    g2 = jnp.full(4, 25.0)  # norm 50: unclipped
    second = []
    for first in (g1 * 1e4 / jnp.linalg.norm(g1), g1 * 50 / jnp.linalg.norm(g1)):
        state = opt.init(p)
        _, state = opt.update(first, state, p)
        update, _ = opt.update(g2, state, p)
        second.append(np.asarray(update))
    np.testing.assert_allclose(second[0], second[1], rtol=1e-5)


def test_training_on_arrays_equals_training_on_their_dataset_and_resumes_only_on_them(tmp_path):
    """``images=(train, test)``: the same steps as the spec the arrays came from (same
    batches, same dequantisation); the run is named by a digest of the arrays, so a resume
    with other arrays is refused and one with the same arrays continues."""
    config = dataclasses.replace(TINY, steps=6)
    x_train = data.load_dataset("digits", "train", image_shape=(8, 8, 1))
    x_test = data.load_dataset("digits", "test", image_shape=(8, 8, 1))
    spec = train.train(config, tmp_path / "spec", progress=False)
    arrays = train.train(config, tmp_path / "arrays", progress=False,
                         images=(x_train, x_test), export_to=str(tmp_path / "model"))
    assert arrays["train_bpd"] == spec["train_bpd"] and arrays["test_bpd"] == spec["test_bpd"]
    assert arrays["dataset"].startswith("arrays:") and spec["dataset"] == "digits"
    sidecar = checkpoints.read_metadata(tmp_path / "model")
    assert sidecar["data"]["dataset"] == arrays["dataset"]
    longer = dataclasses.replace(config, steps=8)
    with pytest.raises(ValueError, match="dataset 'arrays:"):
        train.train(longer, tmp_path / "arrays", progress=False,
                    images=(x_train[1:], x_test))
    resumed = train.train(longer, tmp_path / "arrays", progress=False, images=(x_train, x_test))
    assert resumed["resumed_from"] == 6 and resumed["step"] == 8
    for bad, exc, words in (((x_train,), TypeError, "pair"),
                            ((x_train * 255, x_test), ValueError, r"\[0, 1\]"),
                            ((x_train[..., 0], x_test), ValueError, "shape"),
                            (((x_train * 255).astype(np.uint8), x_test), TypeError, "255")):
        with pytest.raises(exc, match=words):
            train.train(config, tmp_path / "bad", progress=False, images=bad)


def _grey_pngs(folder, seeds):
    from PIL import Image

    folder.mkdir(parents=True)
    for i, seed in enumerate(seeds):
        pixels = np.random.default_rng(seed).integers(0, 256, (8, 8), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")


def test_training_refuses_a_dataset_whose_test_images_are_its_training_images(tmp_path):
    _grey_pngs(tmp_path / "flat", range(40))
    config = dataclasses.replace(TINY, dataset=f"folder:{tmp_path / 'flat'}", steps=1)
    with pytest.raises(ValueError, match="every test image .* is also a training image"):
        train.train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "ckpt").exists()  # refused before any work


def test_training_warns_about_test_images_duplicated_in_training():
    images = np.random.default_rng(0).uniform(size=(5, 8, 8, 1)).astype(np.float32)
    with pytest.warns(UserWarning, match="1 of the 3 test images"):
        train._check_disjoint_splits("x", images[:3], images[2:])
    with pytest.raises(ValueError, match="every test image"):
        train._check_disjoint_splits("x", images, images[:2])
    train._check_disjoint_splits("x", images[:3], images[3:])  # disjoint: nothing to say


def test_a_workdir_of_another_run_is_not_resumed(tmp_path):
    run = tmp_path / "run"
    (run / "ckpt" / "10").mkdir(parents=True)
    before = dataclasses.replace(TINY, steps=20)
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(before)))
    train._check_same_run(run, dataclasses.replace(before, steps=30, eval_every=5),
                          "0123")  # resumable (a config.json without a digest: not compared)
    with pytest.raises(ValueError, match="dataset 'digits' then, 'mnist' now"):
        train.train(dataclasses.replace(before, dataset="mnist"), run, progress=False)
    with pytest.raises(ValueError, match="another run .*architecture, seed"):
        train._check_same_run(run, dataclasses.replace(
            before, seed=1, architecture={**before.architecture, "width": 4}), "0123")


@pytest.mark.parametrize("text", [None, "{\"dataset\": \"dig", "[]"])
def test_checkpoints_without_a_readable_config_are_resumed_with_a_warning(tmp_path, text):
    run = tmp_path / "run"
    (run / "ckpt" / "10").mkdir(parents=True)
    if text is not None:
        (run / "config.json").write_text(text)
    with pytest.warns(UserWarning, match="cannot be checked to come from this config"):
        train._check_same_run(run, TINY, "0123")


def test_a_workdir_whose_dataset_now_loads_other_images_is_not_resumed(tmp_path):
    """A folder whose files changed (or a bundled set another library version crops otherwise)
    keeps its name, so only the digest of the loaded images tells the runs apart: resuming
    went on training on other images under the old run's record."""
    spec_dir = tmp_path / "faces"
    _grey_pngs(spec_dir / "train", range(8))
    _grey_pngs(spec_dir / "test", range(100, 103))
    config = dataclasses.replace(TINY, dataset=f"folder:{spec_dir}", steps=2, batch_size=4,
                                 init_batch=4, ckpt_every=1)
    train.train(config, tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert len(record["data_digest"]) == 16
    train.train(dataclasses.replace(config, steps=3), tmp_path / "run", progress=False)
    from PIL import Image

    pixels = np.random.default_rng(50).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(pixels).save(spec_dir / "train" / "00.png")  # one training image replaced
    with pytest.raises(ValueError, match="not the ones it was trained on"):
        train.train(dataclasses.replace(config, steps=4), tmp_path / "run", progress=False)


def test_a_recipe_trained_on_a_folder_exports_a_prior_the_experiments_load(tmp_path, capsys):
    from experiments import train as train_cli

    _grey_pngs(tmp_path / "faces" / "train", range(8))
    _grey_pngs(tmp_path / "faces" / "test", range(100, 103))
    spec = f"folder:{tmp_path / 'faces'}"
    args = ["--prior", "glow-digits", "--dataset", spec, "--width", "8", "--flow-steps", "1",
            "--steps", "2", "--batch-size", "4", "--export-to", str(tmp_path / "prior"),
            "--no-progress"]
    workdir = train_cli.default_workdir(
        train_cli.config_from_args(train_cli.build_parser().parse_args(args)), "glow-digits")
    assert workdir.startswith("runs/glow-digits-folder-") and workdir.endswith("-faces-8x8x1")
    assert train_cli.default_workdir(TINY, "glow-digits") == "runs/glow-digits"
    result = train_cli.main([*args, "--workdir", str(tmp_path / "run")])
    assert result["step"] == 2 and np.isfinite(result["test_bpd"])
    flow, params = flowinv.load_prior(str(tmp_path / "prior"))
    assert flow.image_shape == (8, 8, 1)
    meta = json.loads((tmp_path / "prior" / "metadata.json").read_text())
    assert meta["data"]["dataset"] == spec and "--dataset" in meta["command"]
    # the final bits/dim is measured on the whole test split, whatever eval_limit says
    assert meta["test_bits_per_dim"] == round(result["test_bpd"], 4)
    assert "all 3 images of the test split" in meta["test_bits_per_dim_note"]


def test_learning_rate_schedules():
    """Warm-up is linear to ``lr`` for both; "cosine" then halves at the midpoint of the rest
    and reaches 0 at ``steps``; "constant" stays at ``lr``."""
    base = dataclasses.replace(TINY, steps=110, warmup=10, lr=1e-3)
    constant = train.learning_rate(base)
    cosine = train.learning_rate(dataclasses.replace(base, lr_schedule="cosine"))
    for schedule in (constant, cosine):
        np.testing.assert_allclose([schedule(0), schedule(5), schedule(10)], [0, 5e-4, 1e-3],
                                   rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose([constant(60), constant(110)], [1e-3, 1e-3], rtol=1e-6)
    np.testing.assert_allclose([cosine(60), cosine(110)], [5e-4, 0.0], rtol=1e-5, atol=1e-9)
    assert float(cosine(35)) > float(cosine(85))
    with pytest.raises(ValueError, match="lr_schedule"):
        dataclasses.replace(base, lr_schedule="linear")


def test_warmup_zero_starts_at_lr():
    for schedule in ("constant", "cosine"):
        lr = train.learning_rate(dataclasses.replace(TINY, steps=100, warmup=0, lr=1e-3,
                                                     lr_schedule=schedule))
        assert float(lr(0)) == pytest.approx(1e-3)  # max(warmup, 1) made step 0 run at 0


@pytest.mark.parametrize("bad", [
    dict(ckpt_every=0), dict(eval_every=0), dict(eval_limit=0), dict(init_batch=0),
    dict(steps=0), dict(steps=-5), dict(batch_size=0), dict(warmup=-1), dict(bits=0),
    dict(bits=17), dict(lr=-1e-3), dict(lr=float("nan")), dict(grad_clip=-1.0),
    dict(seed=-1), dict(seed=2**32)], ids=str)
def test_a_bad_training_config_is_refused_when_made(bad):
    """Each failed late (a period of 0 divided by zero after the first step, an eval_limit of
    0 at the first evaluation), named the wrong field, or trained silently wrong (a negative
    lr or clip norm climbs the loss; steps=0 exported the initialisation)."""
    (field,) = bad
    with pytest.raises(ValueError, match=field):
        dataclasses.replace(TINY, **bad)


def test_a_workdir_trained_past_steps_is_refused(tmp_path):
    """It restored the longer run, trained nothing, and exported its params under a sidecar
    saying the shorter number of steps."""
    train.train(dataclasses.replace(TINY, steps=20), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="checkpoint at step 20, past steps=10"):
        train.train(dataclasses.replace(TINY, steps=10), tmp_path / "r", progress=False,
                    export_to=str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
    assert json.loads((tmp_path / "r" / "config.json").read_text())["steps"] == 20


def test_a_run_resumed_at_its_last_step_reports_no_training_loss(tmp_path):
    config = dataclasses.replace(TINY, steps=10)
    train.train(config, tmp_path / "r", progress=False)
    again = train.train(config, tmp_path / "r", progress=False)
    assert again["resumed_from"] == 10 and again["train_bpd"] is None  # was NaN: not JSON
    json.dumps(again, allow_nan=False)


def test_a_batch_larger_than_the_data_is_a_usage_error(tmp_path, capsys):
    """Found once the data are loaded, before any step: an error of the command line (it was
    a traceback)."""
    from experiments import train as train_cli

    with pytest.raises(SystemExit) as e:
        train_cli.main(["--prior", "glow-digits", "--batch-size", "5000", "--steps", "1",
                        "--workdir", str(tmp_path / "w"), "--no-progress"])
    assert e.value.code == 2 and "exceeds the 1617 training images" in capsys.readouterr().err


def test_a_diverged_run_stops_before_checkpointing_non_finite_params(tmp_path):
    """Past 20 non-finite steps in a row the params become NaN; the run went on, rotated the
    finite checkpoints away and exported NaN weights with a NaN bits/dim."""
    import orbax.checkpoint as ocp

    config = dataclasses.replace(TINY, steps=60, lr=1000.0, warmup=1)
    with pytest.raises(RuntimeError, match="training diverged by step"):
        train.train(config, tmp_path / "r", progress=False, export_to=str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()
    manager = ocp.CheckpointManager(tmp_path / "r" / "ckpt")
    for step in manager.all_steps():
        restored = manager.restore(step)
        assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(restored["params"]))


def test_naming_a_default_of_the_architecture_is_the_same_run(tmp_path):
    train.train(dataclasses.replace(TINY, steps=10), tmp_path / "r", progress=False)
    explicit = dict(TINY.architecture, actnorm_eps=5e-4)  # glow's default, named
    result = train.train(dataclasses.replace(TINY, steps=20, architecture=explicit),
                         tmp_path / "r", progress=False)
    assert result["resumed_from"] == 10


def test_evaluate_bpd_compiles_once_per_flow_and_shape():
    flow = checkpoints.flow_from_config(TINY.architecture)
    x = data.load_dataset("digits", "test", limit=8)
    params = flow.init(jax.random.PRNGKey(0), jnp.asarray(x))
    train.evaluate_bpd(flow, params, x, 8, batch_size=4)
    size = train._per_image_bpd._cache_size()
    train.evaluate_bpd(flow, jax.tree.map(lambda a: a * 1.01, params), x[::-1], 8, batch_size=4)
    assert train._per_image_bpd._cache_size() == size


def test_a_save_killed_while_replacing_a_checkpoint_leaves_the_old_one(tmp_path, monkeypatch):
    """orbax deleted the old weights before writing the new, so a kill then left a sidecar
    without weights; and the sidecar came after, so a kill between paired new weights with
    the old sidecar. The new checkpoint is now written aside and renamed into place."""
    import orbax.checkpoint as ocp

    old = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
    old_params = old.init(jax.random.PRNGKey(0), x)
    checkpoints.save(tmp_path / "m", old_params, {"architecture": checkpoints.flow_config(old)})
    new = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8, actnorm_eps=0.0)
    new_params = jax.tree.map(lambda a: a + 1.0, old_params)

    class Killed(Exception):
        pass

    def kill(*args, **kwargs):
        raise Killed

    for where in ("wait_until_finished", "write_text"):  # during the weights, the sidecar
        with monkeypatch.context() as m:
            target = ocp.StandardCheckpointer if where != "write_text" else pathlib.Path
            m.setattr(target, where, kill)
            with pytest.raises(Killed):
                checkpoints.save(tmp_path / "m", new_params,
                                 {"architecture": checkpoints.flow_config(new)})
        flow, params = checkpoints.load_prior(tmp_path / "m")
        assert flow == old
        jax.tree.map(np.testing.assert_array_equal, params, old_params)
    assert list((tmp_path / "m").glob(".params.new-*"))  # the killed saves' weights
    checkpoints.save(tmp_path / "m", new_params, {"architecture": checkpoints.flow_config(new)})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["metadata.json", "params"]
    flow, params = checkpoints.load_prior(tmp_path / "m")
    assert flow == new
    jax.tree.map(np.testing.assert_allclose, params, new_params)
    with pytest.raises(ValueError, match="NaN or inf"):
        checkpoints.save(tmp_path / "m", new_params, {"test_bits_per_dim": float("nan")})


def test_checkpoint_round_trip_and_validation(tmp_path):
    flow = flowinv.glow((8, 8, 1), levels=1, steps=2, width=8)
    params = flow.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(1),
                                                                  (4, 8, 8, 1)))
    meta = {"kind": "flow", "architecture": checkpoints.flow_config(flow)}
    checkpoints.save(tmp_path / "m", params, meta)
    flow2, params2 = checkpoints.load_prior(str(tmp_path / "m"))
    assert flow2 == flow
    jax.tree.map(np.testing.assert_array_equal, params, params2)

    # sidecar says width 16, arrays are width 8: must be refused, not silently mis-shaped
    bad = dict(meta, architecture=dict(meta["architecture"], width=16))
    (tmp_path / "m" / "metadata.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="could not be restored"):
        checkpoints.load_prior(str(tmp_path / "m"))
    (tmp_path / "m" / "metadata.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        checkpoints.load_prior(str(tmp_path / "m"))
    with pytest.raises(ValueError, match="unknown prior"):
        checkpoints.load_prior("no-such-prior")


def test_checkpoint_keeps_a_params_dtype_other_than_float32(tmp_path):
    """bfloat16 params (as float64 ones under x64) come back in their dtype, bit for bit, not
    cast to float32; float32 ones leave the sidecar as it was."""
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    x = jax.random.uniform(jax.random.PRNGKey(1), (4, 8, 8, 1))
    for dtype in (jnp.bfloat16, jnp.float32):
        params = flow.init(jax.random.PRNGKey(0), x.astype(dtype))
        meta = {"kind": "flow", "architecture": checkpoints.flow_config(flow)}
        path = checkpoints.save(tmp_path / jnp.dtype(dtype).name, params, meta)
        _, loaded = checkpoints.load_prior(str(path))
        assert {a.dtype for a in jax.tree.leaves(loaded)} == {jnp.dtype(dtype)}
        jax.tree.map(np.testing.assert_array_equal, params, loaded)
        sidecar = json.loads((path / "metadata.json").read_text())
        assert sidecar.get("param_dtype") == (None if dtype == jnp.float32 else "bfloat16")


@dataclasses.dataclass(frozen=True)
class _TiltedGlow(flowinv.Glow):
    """A flow class of a user's own: a Glow with one more field."""

    tilt: float = 0.0


def _tilted(image_shape, *, tilt, **glow_args):
    g = flowinv.glow(image_shape, **glow_args)
    return _TiltedGlow(**{f.name: getattr(g, f.name) for f in dataclasses.fields(g)}, tilt=tilt)


def test_a_registered_flow_class_is_described_saved_and_rebuilt(tmp_path, monkeypatch):
    """Before ``register_flow`` a flow of another class is a ValueError that names it (not a
    bare KeyError, and not described as the Glow it subclasses); after it, ``flow_config``
    describes it with its own type and fields, and ``load_prior`` rebuilds an equal flow of
    that class with the same params, through a builder that takes ``**kwargs``."""
    monkeypatch.setattr(checkpoints, "FLOW_BUILDERS", dict(checkpoints.FLOW_BUILDERS))
    monkeypatch.setattr(checkpoints, "_FLOW_TYPES", dict(checkpoints._FLOW_TYPES))
    flow = _tilted((8, 8, 1), levels=1, steps=1, width=8, tilt=0.5)
    with pytest.raises(ValueError, match="_TiltedGlow.*register_flow"):
        checkpoints.flow_config(flow)
    checkpoints.register_flow("tilted-glow", _tilted, _TiltedGlow)
    arch = checkpoints.flow_config(flow)
    assert arch["type"] == "tilted-glow" and arch["tilt"] == 0.5
    params = flow.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(1),
                                                                 (4, 8, 8, 1)))
    path = checkpoints.save(tmp_path / "mine", params, {"kind": "flow", "architecture": arch})
    loaded_flow, loaded = checkpoints.load_prior(str(path))
    assert type(loaded_flow) is _TiltedGlow and loaded_flow == flow
    jax.tree.map(np.testing.assert_array_equal, params, loaded)
    checkpoints.register_flow("tilted-glow", lambda image_shape, **kw: _tilted(image_shape, **kw),
                              _TiltedGlow)
    assert checkpoints.flow_from_config(arch) == flow
    for args, exc, words in ((("glow", _tilted, _TiltedGlow), ValueError, "built-in"),
                             (("mine", flowinv.glow, flowinv.Glow), ValueError, "built-in"),
                             (("mine", _tilted, object), TypeError, "Flow"),
                             (("", _tilted, _TiltedGlow), TypeError, "name")):
        with pytest.raises(exc, match=words):
            checkpoints.register_flow(*args)


def test_available_priors_filters_by_kind():
    """Error messages list only checkpoints of the kind asked for (a GAN name is never offered
    a flow, and the other way round)."""
    flows, gans = checkpoints.available_priors("flow"), checkpoints.available_priors("dcgan")
    assert sorted(flows + gans) == checkpoints.available_priors()
    assert "glow-mnist" in flows and "dcgan-mnist" in gans
    with pytest.raises(ValueError, match="unknown GAN") as e:
        checkpoints.load_gan("no-such-gan")
    assert "glow-mnist" not in str(e.value) and "dcgan-mnist" in str(e.value)


@pytest.mark.parametrize("name", checkpoints.available_priors())
def test_shipped_checkpoint_is_small_documented_and_loads(name):
    """The house rules for ``checkpoints/``: under 30 MB, a sidecar with the training command,
    the train split and the test bits/dim (None, with a note, for a GAN), and weights that
    match the sidecar's architecture."""
    path = checkpoints.checkpoint_root() / name
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert size < 30e6
    meta = checkpoints.read_metadata(path)
    assert meta["command"].startswith("python -m experiments.train")
    assert meta["data"]["split"].startswith("train")
    assert name in (priors.GANS if meta["kind"] == "dcgan" else priors.PRIORS)
    # loading restores into the shapes the sidecar's architecture implies (a mismatch raises)
    if meta["kind"] == "dcgan":
        assert meta["test_bits_per_dim"] is None and meta["test_bits_per_dim_note"]
        gen, params = checkpoints.load_gan(name)
        assert bool(jnp.all(jnp.isfinite(gen.apply(params, jnp.zeros(gen.latent_dim)))))
    else:
        assert meta["test_bits_per_dim"] > 0
        _, params = checkpoints.load_prior(name)
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(params))


def test_glow_mnist_bits_per_dim_is_its_sidecars_and_the_training_loss_agrees():
    """Issue 4's check: ``glow-mnist`` on the first 500 images of the MNIST test split, with
    ``evaluate_bpd``'s fixed dequantisation, gives the sidecar's figure (rounded to 3 decimals;
    0.002 leaves float32 summation order between machines). ``bits_per_dim``, the training
    loss, reads the same on 100 of them with other dequantisation noise: two noise seeds move
    that mean by about 0.003, so 0.01 catches any error in its formula (a lost ``+ bits`` is 8)."""
    flow, params = checkpoints.load_prior("glow-mnist")
    meta = checkpoints.read_metadata(checkpoints.checkpoint_root() / "glow-mnist")
    # the note of an export today ("all 500 images of the test split"), or of its own
    assert re.search(r"(first|all) 500 images of the test split", meta["test_bits_per_dim_note"])
    x = data.load_dataset("mnist", "test", limit=500)
    assert abs(train.evaluate_bpd(flow, params, x, 8) - meta["test_bits_per_dim"]) < 2e-3
    keys = jax.random.split(jax.random.PRNGKey(5), 100)
    xd = jax.vmap(lambda k, a: data.dequantize(k, a, 8))(keys, jnp.asarray(x[:100]))
    assert abs(float(train.bits_per_dim(flow, params, xd, 8))
               - train.evaluate_bpd(flow, params, x[:100], 8)) < 0.01


def _train_cmd(workdir, steps):
    return [sys.executable, "-m", "experiments.train", "--prior", "glow-digits", "--steps",
            str(steps), "--width", "8", "--flow-steps", "2", "--batch-size", "32",
            "--ckpt-every", "10", "--eval-every", "1000", "--workdir", str(workdir),
            "--no-progress"]


def _final_params(workdir):
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(workdir / "ckpt") as mgr:
        step = mgr.latest_step()
        state = mgr.restore(step)
    return step, state


@pytest.mark.slow
def test_sigkill_then_rerun_resumes_without_losing_progress(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, 60), cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:  # wait until at least two checkpoints are complete
        steps = [int(p.name) for p in (killed / "ckpt").glob("[0-9]*") if p.name.isdigit()]
        if len(steps) >= 2 and max(steps) >= 20:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(int(p.name) for p in (killed / "ckpt").glob("[0-9]*") if p.name.isdigit())
    assert saved and max(saved) < 60, saved  # killed mid-run, with checkpoints on disk

    subprocess.run(_train_cmd(killed, 60), cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(straight, 60), cwd=root, env=env, check=True,
                   capture_output=True, timeout=300)
    step_k, state_k = _final_params(killed)
    step_s, state_s = _final_params(straight)
    assert step_k == step_s == 60
    # Same seed, same device, same data position after resume: the resumed run reproduces the
    # uninterrupted one (params and Adam moments) to float32 rounding.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 state_k, state_s)
    log = np.genfromtxt(killed / "log.csv", delimiter=",", names=True)
    assert list(log["step"]) == list(range(1, 61))  # the steps trained again logged once


def test_each_checkpoint_is_saved_after_its_steps_log_row_is_on_disk(tmp_path, monkeypatch):
    # A kill between the two must not leave a checkpoint whose step has no row: the resumed run
    # continues after that step and would never log it (seen once in CI as a missing row 20).
    import orbax.checkpoint as ocp

    logged_at_save = {}
    save = ocp.CheckpointManager.save

    def recording_save(self, step, *args, **kwargs):
        rows = (tmp_path / "r" / "log.csv").read_text().splitlines()[1:]
        logged_at_save[step] = [int(row.split(",")[0]) for row in rows]
        return save(self, step, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "save", recording_save)
    train.train(dataclasses.replace(TINY, steps=25), tmp_path / "r", progress=False)
    assert logged_at_save == {s: list(range(1, s + 1)) for s in (10, 20, 25)}


def test_a_resumed_runs_kept_log_rows_are_on_disk_before_its_first_step(tmp_path, monkeypatch):
    # The resumed run rewrites log.csv without the rows it will train again; a kill before its
    # first new row must not leave the file truncated (the rows kept were once only buffered).
    train.train(dataclasses.replace(TINY, steps=20), tmp_path / "r", progress=False)
    on_disk, batch_indices = [], data.batch_indices

    def read_log_then_stop(n, batch_size, seed, step):
        if step < 20:  # the data-dependent initialisation's batch
            return batch_indices(n, batch_size, seed, step)
        on_disk.append((tmp_path / "r" / "log.csv").read_text().splitlines())
        raise KeyboardInterrupt  # stands in for the kill before step 21's row

    monkeypatch.setattr(data, "batch_indices", read_log_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train.train(dataclasses.replace(TINY, steps=25), tmp_path / "r", progress=False)
    assert [int(row.split(",")[0]) for row in on_disk[0][1:]] == list(range(1, 21))
    assert not (tmp_path / "r" / "log.csv.partial").exists()


def test_training_is_deterministic(tmp_path):
    config = dataclasses.replace(TINY, steps=5)
    a = train.train(config, tmp_path / "a", progress=False)
    b = train.train(config, tmp_path / "b", progress=False)
    assert a["train_bpd"] == b["train_bpd"] and a["test_bpd"] == b["test_bpd"]


def test_corrupted_latest_checkpoint_falls_back_with_a_warning(tmp_path):
    config = dataclasses.replace(TINY, steps=20)
    train.train(config, tmp_path / "r", progress=False)
    latest = tmp_path / "r" / "ckpt" / "20"
    for f in latest.rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    config = dataclasses.replace(config, steps=25)
    with pytest.warns(UserWarning, match="unreadable"):
        result = train.train(config, tmp_path / "r", progress=False)
    assert result["resumed_from"] == 10 and result["step"] == 25
    assert jnp.isfinite(result["test_bpd"])
    # the corrupted step was deleted, so step 20 was saved again (orbax saves no step at or
    # below the newest on disk) and restores
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(tmp_path / "r" / "ckpt")
    assert manager.all_steps() == [10, 20, 25]
    assert int(manager.restore(20)["step"]) == 20


def test_checkpoints_none_of_which_restores_are_not_silently_discarded(tmp_path):
    config = dataclasses.replace(TINY, steps=10)
    train.train(config, tmp_path / "r", progress=False)
    for f in (tmp_path / "r" / "ckpt").rglob("*"):
        if f.is_file() and f.stat().st_size > 0 and "metadata" not in f.name:
            f.write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="unreadable"), pytest.raises(RuntimeError,
                                                                      match="delete"):
        train.train(dataclasses.replace(config, steps=15), tmp_path / "r", progress=False)


def test_resuming_a_cosine_schedule_at_another_length_warns(tmp_path):
    config = dataclasses.replace(TINY, steps=4, lr_schedule="cosine", warmup=1)
    train.train(config, tmp_path / "r", progress=False)
    with pytest.warns(UserWarning, match="cosine schedule with steps 6 instead of 4"):
        train.train(dataclasses.replace(config, steps=6), tmp_path / "r", progress=False)


@pytest.mark.parametrize("weights", ["finite", "nan"])
def test_a_gan_with_a_nan_loss_exports_null_losses_and_never_nan_weights(weights, tmp_path,
                                                                         monkeypatch):
    """A NaN final loss is null in the sidecar (strict JSON has no NaN; save refused the
    whole export); weights that went NaN are not exported at all (with --export they would
    replace the shipped dcgan-mnist)."""
    from experiments import train_gan
    from flowinv.baselines import dcgan

    def trained(key, images, *, config, **kwargs):
        params = dcgan.init_params(key, config)["generator"]
        if weights == "nan":
            params = jax.tree.map(lambda a: a * np.nan, params)
        return params, {"d_loss": [float("nan")] * 20, "g_loss": [1.0] * 20}

    monkeypatch.setattr(train_gan, "training_images",
                        lambda c: np.zeros((8, 28, 28, 1), np.float32))
    monkeypatch.setattr(dcgan, "train_dcgan", trained)
    config = dataclasses.replace(priors.gan_config("dcgan-mnist"), steps=20)
    if weights == "nan":
        with pytest.raises(ValueError, match="diverged"):
            train_gan.run(config, export_to=str(tmp_path / "g"), progress=False)
        assert not (tmp_path / "g" / "params").exists()
    else:
        train_gan.run(config, export_to=str(tmp_path / "g"), progress=False)
        losses = checkpoints.read_metadata(tmp_path / "g")["final_losses"]
        assert losses["d_loss"] is None and losses["g_loss"] == 1.0


def test_data_digest_hashes_the_splits_in_place():
    """The digest reads the arrays' memory; it does not copy a (possibly many-GB) training
    split into a bytes object first. Same digest as the bytes."""
    import hashlib
    import tracemalloc

    x = np.random.default_rng(0).random((64, 32, 32, 3), dtype=np.float32)  # 768 KiB
    y = x[:4]
    want = hashlib.sha256()
    for a in (x, y):
        want.update(repr(a.shape).encode())
        want.update(a.tobytes())
    tracemalloc.start()
    try:
        got = train._data_digest(x, y)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == want.hexdigest()[:16]
    assert peak < x.nbytes // 4, peak


def test_a_refusal_for_other_fields_still_names_changed_images(tmp_path):
    """With the seed changed too, the refusal named the seed only: the changed images were
    dropped from it, and came up only once the seed was put back."""
    run = tmp_path / "run"
    (run / "ckpt" / "10").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({**dataclasses.asdict(TINY),
                                                 "data_digest": "aaaaaaaaaaaaaaaa"}))
    with pytest.raises(ValueError, match="seed.*not the ones it was trained on"):
        train._check_same_run(run, dataclasses.replace(TINY, seed=TINY.seed + 1),
                              "bbbbbbbbbbbbbbbb")
