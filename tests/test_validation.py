"""Every bad input at the public boundary gets a ValueError/TypeError (or a CLI usage error)
whose message names the argument: one table of cases over recover, operators, noise models,
checkpoints, data loaders and the experiment CLIs."""

from __future__ import annotations

import json
import pathlib
import re

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from flowinv import checkpoints, data, noise, operators

SHAPE = (4, 4, 1)
KEY = jax.random.PRNGKey(0)


@pytest.fixture(scope="module")
def prior():
    flow = flowinv.glow(SHAPE, levels=1, steps=1, width=4)
    x = jax.random.uniform(KEY, (4, *SHAPE))
    return flow, flow.init(KEY, x)


@pytest.fixture(scope="module")
def saved_prior(prior, tmp_path_factory):
    flow, params = prior
    path = tmp_path_factory.mktemp("ckpt") / "tiny"
    checkpoints.save(path, params, {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    return path


def _y(*shape, fill=0.5):
    return jnp.full(shape or SHAPE, fill, jnp.float32)


def _recover(prior, y=None, **kw):
    kw.setdefault("operator", operators.identity(SHAPE))
    kw.setdefault("maxiter", 2)
    return flowinv.recover(prior, _y() if y is None else y, **kw)


def _mismatched_checkpoint(saved_prior, tmp_path):
    meta = json.loads((saved_prior / "metadata.json").read_text())
    meta["architecture"]["width"] = 8
    bad = tmp_path / "mismatch"
    import shutil

    shutil.copytree(saved_prior, bad)
    (bad / "metadata.json").write_text(json.dumps(meta))
    return bad


def _corrupted_checkpoint(saved_prior, tmp_path):
    import shutil

    bad = tmp_path / "corrupt"
    shutil.copytree(saved_prior, bad)
    for f in (bad / "params").rglob("*"):
        if f.is_file() and f.name != "_CHECKPOINT_METADATA":
            f.write_bytes(b"garbage")
    return bad


def _bad_sidecar(saved_prior, tmp_path):
    import shutil

    bad = tmp_path / "badjson"
    shutil.copytree(saved_prior, bad)
    (bad / "metadata.json").write_text("{not json")
    return bad


def _unreadable_image_folder(tmp_path):
    (tmp_path / "a.png").write_bytes(b"this is not a png")
    return str(tmp_path)


def _cli(module, argv):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv)
    assert e.value.code == 2  # argparse usage error, before any work


class _PlainOperator:
    """What recover's old message promised to take: callable, with in_shape and out_shape, but
    not a pytree, so jax.jit cannot take it."""

    in_shape = out_shape = SHAPE

    def __call__(self, x):
        return 2.0 * x


@flax.struct.dataclass
class _OperatorWithoutOutShape:
    """A pytree operator that forgot ``out_shape``: recover used to read it as ``()`` and
    blame the measurements' shape."""

    scale: jax.Array
    in_shape: tuple = flax.struct.field(pytree_node=False, default=SHAPE)

    def __call__(self, x):
        return self.scale * x


class _PlainNoise:
    def log_prob(self, delta):
        return -jnp.sum(jnp.abs(delta))


def _laplace(delta, b):
    return jnp.sum(-jnp.abs(delta) / b - jnp.log(2 * b))


# (id, function of (prior, saved_prior, tmp_path), exception, words the message must contain)
CASES = [
    # recover
    ("y-wrong-shape", lambda p, s, t: _recover(p, _y(5, 5, 1)), ValueError, ["y", "shape"]),
    ("y-int-dtype", lambda p, s, t: _recover(p, jnp.ones(SHAPE, jnp.int32)), TypeError,
     ["y", "floating"]),
    ("y-nan", lambda p, s, t: _recover(p, _y().at[0, 0, 0].set(jnp.nan)), ValueError,
     ["y", "nan"]),
    ("y-inf", lambda p, s, t: _recover(p, _y().at[0, 0, 0].set(jnp.inf)), ValueError,
     ["y", "inf"]),
    ("gamma-negative", lambda p, s, t: _recover(p, gamma=-1.0), ValueError, ["gamma", "-1"]),
    ("gamma-nan", lambda p, s, t: _recover(p, gamma=float("nan")), ValueError, ["gamma"]),
    ("gamma-string", lambda p, s, t: _recover(p, gamma="big"), TypeError, ["gamma"]),
    ("gamma-per-image-wrong-length", lambda p, s, t: _recover(p, _y(3, *SHAPE),
                                                              gamma=[0.1, 0.2]),
     ValueError, ["gamma", "(3,)", "(2,)"]),
    ("gamma-per-image-negative", lambda p, s, t: _recover(p, _y(2, *SHAPE), gamma=[0.1, -1.0]),
     ValueError, ["gamma", ">= 0"]),
    ("beta-negative", lambda p, s, t: _recover(p, method="map", noise=noise.gaussian(0.1),
                                               beta=-2.0), ValueError, ["beta"]),
    ("solver-kwargs-unknown-option", lambda p, s, t: _recover(p, solver_kwargs={"lowr": 0.0}),
     TypeError, ["'lowr'", "lbfgs", "lower"]),
    ("solver-kwargs-maxiter", lambda p, s, t: _recover(p, solver="adam",
                                                       solver_kwargs={"maxiter": 5}),
     TypeError, ["'maxiter'", "learning_rate", "recover"]),
    ("progress-unknown", lambda p, s, t: _recover(p, progress="yes"), ValueError,
     ["progress", "'chunks'", "'yes'"]),
    ("solver-kwargs-progress", lambda p, s, t: _recover(p, solver_kwargs={"progress": True}),
     TypeError, ["'progress'", "arguments of recover"]),
    ("solver-kwargs-array", lambda p, s, t: _recover(p, solver_kwargs={"lower": np.zeros(3)}),
     TypeError, ["solver_kwargs['lower']", "hashable", "ndarray"]),
    ("unknown-method", lambda p, s, t: _recover(p, method="magic"), ValueError,
     ["method", "magic"]),
    ("unknown-solver", lambda p, s, t: _recover(p, solver="newton"), ValueError, ["solver"]),
    ("unknown-init", lambda p, s, t: _recover(p, init="ones"), ValueError, ["init"]),
    ("maxiter-zero", lambda p, s, t: _recover(p, maxiter=0), ValueError, ["maxiter"]),
    ("maxiter-bool", lambda p, s, t: _recover(p, maxiter=True), ValueError, ["maxiter", "true"]),
    ("maxiter-float", lambda p, s, t: _recover(p, maxiter=2.0), ValueError, ["maxiter", "2.0"]),
    ("chunk-size-zero", lambda p, s, t: _recover(p, chunk_size=0), ValueError, ["chunk_size"]),
    ("glow-width-zero", lambda p, s, t: flowinv.glow(SHAPE, levels=1, steps=1, width=0),
     ValueError, ["width", "0"]),
    ("glow-levels-float", lambda p, s, t: flowinv.glow(SHAPE, levels=1.0, steps=1, width=4),
     ValueError, ["levels", "1.0"]),
    ("map-without-noise", lambda p, s, t: _recover(p, method="map"), ValueError, ["noise"]),
    ("operator-shape-mismatch", lambda p, s, t: _recover(
        p, operator=operators.identity((5, 5, 1)), y=_y(5, 5, 1)), ValueError, ["in_shape"]),
    ("operator-without-out-shape", lambda p, s, t: _recover(
        p, operator=_OperatorWithoutOutShape(jnp.float32(2.0))), TypeError,
     ["_OperatorWithoutOutShape", "lacks out_shape"]),
    ("operator-not-callable", lambda p, s, t: _recover(p, operator="identity"), TypeError,
     ["operator"]),
    ("prior-not-a-prior", lambda p, s, t: _recover(42), TypeError, ["prior"]),
    ("x0-wrong-shape", lambda p, s, t: _recover(p, init="inverse", x0=_y(1, 5, 5, 1)),
     ValueError, ["x0"]),
    ("x0-out-of-range", lambda p, s, t: _recover(p, init="inverse", x0=_y(1, *SHAPE, fill=1.5)),
     ValueError, ["x0", "[0, 1]"]),
    ("gamma-bool", lambda p, s, t: _recover(p, gamma=True), TypeError, ["gamma", "true"]),
    ("gamma-numeric-string", lambda p, s, t: _recover(p, gamma="0.5"), TypeError,
     ["gamma", "'0.5'"]),
    ("gamma-per-image-strings", lambda p, s, t: _recover(p, _y(2, *SHAPE), gamma=["0.1", "1"]),
     TypeError, ["gamma", "real numbers"]),
    ("recover-under-grad", lambda p, s, t: jax.grad(
        lambda g: _recover(p, gamma=g).loss.sum())(0.1), TypeError,
     ["recover_one", "not jax.grad"]),
    ("recover-one-concrete-beta-negative", lambda p, s, t: flowinv.recover_one(
        p, _y(), operator=operators.identity(SHAPE), noise=noise.gaussian(0.1), method="map",
        beta=-1.0, maxiter=2), ValueError, ["beta", "-1"]),
    ("operator-of-a-plain-class", lambda p, s, t: _recover(p, operator=_PlainOperator()),
     TypeError, ["pytree", "_PlainOperator", "from_function"]),
    ("noise-of-a-plain-class", lambda p, s, t: _recover(p, method="map", noise=_PlainNoise()),
     TypeError, ["pytree", "_PlainNoise", "from_log_prob"]),
    ("noise-without-log-prob", lambda p, s, t: _recover(p, method="map", noise=0.1), TypeError,
     ["noise", "log_prob"]),
    # a model shared by the batch flagged per image, where the batch (4) equals its first axis
    ("shared-mask-flagged-per-image", lambda p, s, t: _recover(
        p, _y(4, *SHAPE), operator=operators.inpainting(jnp.ones(SHAPE)),
        per_image_operator=True), ValueError, ["per_image_operator", "(4, 1)", "(4, 4, 1)"]),
    ("shared-matrix-flagged-per-image", lambda p, s, t: _recover(
        p, _y(4, 4), operator=operators.gaussian_cs(KEY, SHAPE, 4), per_image_operator=True),
     ValueError, ["per_image_operator", "(16,)", "(m, 16)"]),
    ("shared-std-map-flagged-per-image", lambda p, s, t: _recover(
        p, _y(4, *SHAPE), method="map", per_image_noise=True,
        noise=noise.diagonal_gaussian(jnp.full(SHAPE, 0.1), mean=jnp.zeros(SHAPE))),
     ValueError, ["per_image_noise", "(4, 1)"]),
    ("shared-one-bit-flagged-per-image", lambda p, s, t: _recover(
        p, _y(4, 4), operator=operators.one_bit_cs(KEY, SHAPE, 4), per_image_operator=True),
     ValueError, ["per_image_operator", "(16,)"]),
    # a model built per image (vmapped) not flagged, where nothing else would notice
    ("per-image-log-prob-noise-not-flagged", lambda p, s, t: _recover(
        p, _y(2, *SHAPE), method="map", noise=jax.vmap(
            lambda b: noise.from_log_prob(_laplace, SHAPE, params=b))(jnp.array([0.1, 0.2]))),
     ValueError, ["per_image_noise=True", "(2,)", "()"]),
    ("per-image-function-operator-not-flagged", lambda p, s, t: _recover(
        p, _y(2, *SHAPE), operator=jax.vmap(lambda c: operators.from_function(
            lambda x, c: c * x, SHAPE, params=c))(jnp.array([1.0, 2.0]))),
     ValueError, ["per_image_operator=True", "(2,)"]),
    # operators
    ("matrix-complex", lambda p, s, t: operators.matrix_operator(jnp.ones((3, 16)) * 1j, SHAPE),
     ValueError, ["matrix", "complex64", "real and imaginary"]),
    ("cs-complex-dtype", lambda p, s, t: operators.gaussian_cs(KEY, SHAPE, 3,
                                                               dtype=jnp.complex64),
     ValueError, ["dtype", "complex64"]),
    ("fast-cs-complex-dtype", lambda p, s, t: operators.fast_cs(KEY, SHAPE, 3,
                                                               dtype=jnp.complex64),
     ValueError, ["dtype", "complex64"]),
    ("cs-m-zero", lambda p, s, t: operators.gaussian_cs(KEY, SHAPE, 0), ValueError, ["m"]),
    ("cs-m-above-n", lambda p, s, t: operators.gaussian_cs(KEY, SHAPE, 17), ValueError, ["m"]),
    ("fast-cs-m-above-n", lambda p, s, t: operators.fast_cs(KEY, SHAPE, 100), ValueError, ["m"]),
    ("mask-wrong-ndim", lambda p, s, t: operators.inpainting(jnp.ones(4)), ValueError, ["mask"]),
    ("mask-not-binary", lambda p, s, t: operators.inpainting(jnp.full((4, 4), 0.5)), ValueError,
     ["mask"]),
    ("mask-shape-vs-image", lambda p, s, t: operators.inpainting(jnp.ones((4, 4, 1)), (5, 5, 1)),
     ValueError, ["mask"]),
    ("subpixel-p-above-1", lambda p, s, t: operators.subpixel(KEY, SHAPE, 1.5), ValueError, ["p"]),
    ("downsample-bad-factor", lambda p, s, t: operators.downsample(SHAPE, 3), ValueError,
     ["factor"]),
    # noise
    ("sigma-zero", lambda p, s, t: noise.gaussian(0.0), ValueError, ["sigma"]),
    ("sigma-negative", lambda p, s, t: noise.gaussian(-0.1), ValueError, ["sigma"]),
    ("std-map-negative", lambda p, s, t: noise.diagonal_gaussian(-jnp.ones(SHAPE)), ValueError,
     ["std_map"]),
    ("cs-noise-m-zero", lambda p, s, t: noise.cs_gaussian(0), ValueError, ["m"]),
    # checkpoints
    ("unknown-prior", lambda p, s, t: flowinv.load_prior("glow-imagenet-9000"), ValueError,
     ["unknown prior", "glow-imagenet-9000"]),
    ("dcgan-as-prior", lambda p, s, t: flowinv.load_prior("dcgan-mnist"), ValueError,
     ["not a flow prior", "load_gan", "--gan"]),
    ("dcgan-name-to-recover", lambda p, s, t: flowinv.recover(
        "dcgan-mnist", jnp.zeros((28, 28, 1)), operator=operators.identity((28, 28, 1)),
        method="bora"), ValueError, ["not a flow prior"]),
    ("missing-checkpoint-folder", lambda p, s, t: checkpoints.load(t / "nowhere"), ValueError,
     ["does not exist"]),
    ("checkpoint-without-sidecar", lambda p, s, t: checkpoints.load(t), ValueError,
     ["sidecar"]),
    ("sidecar-not-json", lambda p, s, t: flowinv.load_prior(_bad_sidecar(s, t)), ValueError,
     ["json"]),
    ("corrupted-checkpoint", lambda p, s, t: flowinv.load_prior(_corrupted_checkpoint(s, t)),
     ValueError, ["could not be restored"]),
    ("architecture-mismatch", lambda p, s, t: flowinv.load_prior(_mismatched_checkpoint(s, t)),
     ValueError, ["could not be restored"]),
    ("sidecar-unknown-architecture-key", lambda p, s, t: checkpoints.flow_from_config(
        {"type": "realnvp", "image_shape": [4, 4, 1], "actnorm_eps": 0.0}), ValueError,
     ["unknown keys", "actnorm_eps"]),
    ("actnorm-eps-negative", lambda p, s, t: flowinv.glow(SHAPE, levels=1, steps=1, width=4,
                                                          actnorm_eps=-1e-3),
     ValueError, ["actnorm_eps", "-0.001"]),
    ("gan-from-flow-checkpoint", lambda p, s, t: checkpoints.load_gan(s), ValueError,
     ["not a dcgan"]),
    # invert_images
    ("invert-images-wrong-shape", lambda p, s, t: flowinv.invert_images(*p, _y(2, 4, 4, 3)),
     ValueError, ["x", "(2, 4, 4, 3)"]),
    ("invert-images-pixels-outside-unit-interval",
     lambda p, s, t: flowinv.invert_images(*p, _y(2, *SHAPE, fill=1.5)), ValueError,
     ["x", "[0, 1]"]),
    ("invert-images-integer-dtype",
     lambda p, s, t: flowinv.invert_images(*p, jnp.zeros((2, *SHAPE), jnp.int32)), TypeError,
     ["x", "int32"]),
    ("prior-name-not-str", lambda p, s, t: flowinv.load_prior(3), TypeError, ["name"]),
    # data
    ("unknown-dataset", lambda p, s, t: data.load_dataset("imagenet"), ValueError,
     ["unknown dataset", "imagenet"]),
    ("unknown-split", lambda p, s, t: data.load_dataset("mnist", "validation"), ValueError,
     ["split"]),
    ("empty-image-folder", lambda p, s, t: data.load_dataset(f"folder:{t}"), ValueError,
     ["holds no", "png"]),
    ("unreadable-image-file", lambda p, s, t: data.load_dataset(
        f"folder:{_unreadable_image_folder(t)}"), ValueError, ["a.png"]),
    ("bad-image-shape", lambda p, s, t: data.load_dataset("mnist", image_shape=(28, 28)),
     ValueError, ["image_shape"]),
    ("limit-bool", lambda p, s, t: data.load_dataset("digits", limit=True), ValueError,
     ["limit", "true"]),
    ("bits-zero", lambda p, s, t: data.quantize(jnp.zeros(SHAPE), 0), ValueError, ["bits"]),
    ("quantize-uint8", lambda p, s, t: data.quantize(jnp.zeros(SHAPE, jnp.uint8)), TypeError,
     ["float image", "x / 255"]),
    ("dequantize-uint8", lambda p, s, t: data.dequantize(jax.random.PRNGKey(0),
                                                         jnp.zeros(SHAPE, jnp.uint8)),
     TypeError, ["float image"]),
    # the same checks without loading (command lines run them first)
    ("check-unknown-dataset", lambda p, s, t: data.check_dataset("imagenet"), ValueError,
     ["unknown dataset", "imagenet"]),
    ("check-missing-folder", lambda p, s, t: data.check_dataset(f"folder:{t / 'nowhere'}"),
     FileNotFoundError, ["does not exist", "nowhere"]),
    ("check-empty-folder", lambda p, s, t: data.check_dataset(f"folder:{t}"), ValueError,
     ["holds no", "png"]),
    ("check-unknown-split", lambda p, s, t: data.check_dataset("mnist", "validation"),
     ValueError, ["split"]),
    ("folder-files-of-a-builtin", lambda p, s, t: data.folder_files("mnist"), ValueError,
     ["not a 'folder:"]),
    ("find-unknown-prior", lambda p, s, t: checkpoints.find_checkpoint("glow-imagenet", "flow"),
     ValueError, ["unknown prior", "glow-imagenet"]),
    ("find-gan-in-flow-checkpoint", lambda p, s, t: checkpoints.find_checkpoint(s, "dcgan"),
     ValueError, ["not a dcgan"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(case, prior, saved_prior, tmp_path):
    _, fn, exc, words = case
    with pytest.raises(exc) as e:
        fn(prior, saved_prior, tmp_path)
    message = str(e.value).lower()

    def mentions(word: str) -> bool:  # an argument's name as a word: "m" is not in "must"
        word = word.lower()
        if word.isidentifier():
            return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", message) is not None
        return word in message

    missing = [w for w in words if not mentions(w)]
    assert not missing, f"message {str(e.value)!r} does not mention {missing}"


CLI_CASES = [
    ("experiments.denoise", ["--sigmas", "-0.1"]),
    ("experiments.denoise", ["--sigmas", "abc"]),
    ("experiments.denoise", ["--num-images", "0"]),
    ("experiments.denoise", ["--maxiter", "-3"]),
    ("experiments.denoise", ["--gammas", "nan"]),
    ("experiments.denoise", ["--no-such-flag"]),
    ("experiments.train", ["--prior", "glow-imagenet"]),
    ("experiments.train", ["--prior", "glow-mnist", "--lr", "0"]),
    ("experiments.train", ["--prior", "glow-mnist", "--actnorm-eps", "-1"]),
    ("experiments.train", ["--prior", "realnvp-mnist", "--actnorm-eps", "0"]),
    ("experiments.train", ["--prior", "glow-mnist", "--dataset", "digits", "--export"]),
    ("experiments.train", ["--prior", "glow-mnist", "--image-shape", "28,28"]),
    ("experiments.train", ["--prior", "glow-mnist", "--image-shape", "30,30,1"]),
    ("experiments.train", ["--prior", "glow-mnist", "--dataset", "imagenet"]),
    ("experiments.train_gan", ["--gan", "dcgan-imagenet"]),
    ("experiments.train_gan", ["--gan", "dcgan-mnist", "--dataset", "digits", "--export"]),
    ("experiments.train_gan", ["--gan", "dcgan-mnist", "--r1", "-1"]),
    ("experiments.train_gan", ["--gan", "dcgan-mnist", "--method", "wgan"]),
    ("experiments.compressed_sensing", ["--num-images", "x"]),
    ("experiments.stabilisers", ["--clip", "0"]),
    ("experiments.samples", ["--priors", "glow-imagenet"]),
    ("experiments.samples", ["--diversity-num", "1"]),
    ("experiments.stabilisers", ["--train-prior", "glow-imagenet"]),
    # sources that cannot be found fail before any work, with the loader's message
    ("experiments.denoise", ["--dataset", "imagenet"]),
    ("experiments.denoise", ["--dataset", "folder:/nonexistent/flowinv-test-folder"]),
    ("experiments.denoise", ["--prior", "glow-imagenet"]),
    ("experiments.denoise", ["--gan", "glow-mnist"]),  # a flow, not a DCGAN
    ("experiments.denoise", ["--prior", "dcgan-mnist"]),  # a DCGAN, not a flow
    # lfw has 100 images and no training split: none would be left for validation
    ("experiments.denoise", ["--dataset", "lfw", "--num-images", "100"]),
    ("experiments.compressed_sensing", ["--ood-dataset", "imagenet"]),
    ("experiments.structured_noise", ["--noise-flow", "realnvp-imagenet"]),
    # the only noise asked for cannot run: realnvp-mnist is 28x28, digits' prior 8x8
    ("experiments.structured_noise", ["--dataset", "digits", "--noises", "digits"]),
    ("experiments.subpixel", ["--dataset", "folder:/nonexistent/flowinv-test-folder"]),
    ("experiments.denoise", ["--val-split", "dev"]),
    # a seed past JAX's 32-bit keys would be another seed's key, or overflow inside JAX
    ("experiments.denoise", ["--seed", str(2**32)]),
    ("experiments.denoise", ["--seed", "-1"]),
    ("experiments.samples", ["--seed", "99999999999999999999"]),
    ("experiments.denoise", ["--out", ""]),  # would write into the current folder
    # runs with nothing to do: no method, or only GAN methods with --gan none
    ("experiments.compressed_sensing", ["--methods", ","]),
    ("experiments.compressed_sensing", ["--gan", "none", "--methods", "dcgan,iagan"]),
    ("experiments.noisy_cs", ["--gan", "none", "--methods", "bora"]),
    ("experiments.one_bit_cs", ["--gan", "none", "--methods", "mle,bora"]),
    ("experiments.structured_noise", ["--gan", "none", "--methods", "bora"]),
    # no training split of its own, or one split named for both
    ("experiments.train", ["--prior", "glow-mnist", "--dataset", "lfw"]),
    ("experiments.train_gan", ["--gan", "dcgan-mnist", "--dataset", "lfw"]),
    ("experiments.train", ["--prior", "glow-mnist", "--dataset", "tfds:mnist:train"]),
]


@pytest.mark.parametrize("module,argv", CLI_CASES, ids=[f"{m}:{' '.join(a)}" for m, a in
                                                        CLI_CASES])
def test_bad_cli_values_are_usage_errors(module, argv, capsys):
    _cli(module, argv)
    err = capsys.readouterr().err
    assert "usage:" in err and "error:" in err
    if argv != ["--no-such-flag"]:
        assert "unrecognized arguments" not in err  # the value was refused, not the flag


def _pngs(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i}.png").write_bytes(b"counted by name only")


def test_a_flat_folder_too_small_for_validation_images_is_a_usage_error(tmp_path, capsys):
    _pngs(tmp_path / "flat", 3)
    _cli("experiments.denoise", ["--dataset", f"folder:{tmp_path / 'flat'}", "--num-images", "3"])
    err = capsys.readouterr().err
    assert "holds 3 images" in err and "at most 2 test images" in err


def test_val_split_test_without_test_images_left_over_is_a_usage_error(capsys):
    # digits has 180 test images; mnist's training split would not matter here
    _cli("experiments.denoise", ["--dataset", "digits", "--val-split", "test",
                                 "--num-images", "180"])
    err = capsys.readouterr().err
    assert "--val-split test" in err and "at most 179 test images" in err


def test_val_split_test_counts_a_folders_files_without_loading_them(tmp_path, capsys):
    # files of any size (or, here, not yet images at all): the run resizes them, the check
    # only counts them
    from experiments import common, denoise

    _pngs(tmp_path / "flat", 3)
    flat = f"folder:{tmp_path / 'flat'}"
    common.check_sources(denoise.Config(dataset=flat, num_images=2, val_split="test",
                                        out=str(tmp_path / "o")))
    _cli("experiments.denoise", ["--dataset", flat, "--val-split", "test", "--num-images", "3",
                                 "--out", str(tmp_path / "o")])
    assert "at most 2 test images" in capsys.readouterr().err


def test_init_study_inverse_train_starts_on_a_too_small_flat_folder_are_a_usage_error(
        tmp_path, capsys):
    from experiments import common, init_study

    _pngs(tmp_path / "flat", 2)
    flat = f"folder:{tmp_path / 'flat'}"
    _cli("experiments.init_study", ["--dataset", flat, "--num-images", "2"])
    err = capsys.readouterr().err
    assert "'inverse-train' starts come from those after" in err and "at most 1 test" in err
    # the other starts need no image beyond the test images
    common.check_sources(init_study.Config(dataset=flat, prior=None, num_images=2,
                                           inits=("zeros", "normal"), out=str(tmp_path / "o")))


def test_training_on_a_flat_folder_is_a_usage_error(tmp_path, capsys):
    _pngs(tmp_path / "flat", 3)
    flat = f"folder:{tmp_path / 'flat'}"
    _cli("experiments.train", ["--prior", "glow-digits", "--dataset", flat])
    assert "no train/ and test/ subfolders" in capsys.readouterr().err
    _cli("experiments.train_gan", ["--gan", "dcgan-mnist", "--dataset", flat])
    assert "no train/ and test/ subfolders" in capsys.readouterr().err


def test_an_export_folder_that_is_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    """It used to fail in checkpoints.save, after the whole training run."""
    from experiments import train, train_gan

    (tmp_path / "file").write_text("not a folder")
    trained = []
    monkeypatch.setattr(train, "run", lambda *a, **k: trained.append(a))
    monkeypatch.setattr(train_gan, "run", lambda *a, **k: trained.append(a))
    _cli("experiments.train", ["--prior", "glow-digits", "--workdir", str(tmp_path / "w"),
                               "--export-to", str(tmp_path / "file")])
    assert "cannot export to --export-to" in capsys.readouterr().err
    _cli("experiments.train_gan", ["--gan", "dcgan-mnist", "--export-to", str(tmp_path / "file")])
    assert "cannot export to --export-to" in capsys.readouterr().err
    assert not trained
    train.main(["--prior", "glow-digits", "--workdir", str(tmp_path / "w"),
                "--export-to", str(tmp_path / "new" / "prior")])
    assert len(trained) == 1 and not (tmp_path / "new" / "prior").exists()


_TESTS_FOLDER = str(pathlib.Path(__file__).parent)  # a folder, but no checkpoint

#: Command lines that an earlier version accepted (or refused only once the run had loaded its
#: data), with the message each now fails with before any work.
REFUSED_BEFORE_RUNNING = [
    ("experiments.denoise", ["--sigmas", "0.1,,0.2"], "an empty entry"),
    ("experiments.theorem1", ["--ms", "3,,4"], "--ms: an empty entry"),
    ("experiments.compressed_sensing", ["--methods", "glow,"], "--methods: an empty entry"),
    ("experiments.init_study", ["--inits", ","], "--inits: name at least one of"),
    ("experiments.inpainting", ["--masks", "box,nope"], "--masks: unknown 'nope'"),
    ("experiments.samples", ["--priors", _TESTS_FOLDER], "no metadata.json sidecar"),
    ("experiments.stabilisers", ["--prior", "realnvp-mnist"], "must be a Glow"),
    # mnist's 500 test images: 499 to test, so 500 disjoint noise digits cannot be found
    ("experiments.structured_noise", ["--num-images", "499", "--val-images", "1",
                                      "--noises", "digits"], "is too small for"),
]


@pytest.mark.parametrize("module,argv,message", REFUSED_BEFORE_RUNNING,
                         ids=[f"{m}:{' '.join(a)}" for m, a, _ in REFUSED_BEFORE_RUNNING])
def test_bad_command_lines_are_refused_before_running(module, argv, message, capsys,
                                                      monkeypatch, tmp_path):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), "run",
                        lambda config: pytest.fail("the run started"))
    _cli(module, [*argv, "--out", str(tmp_path / "o")])
    assert message in capsys.readouterr().err


def test_a_skipped_digit_noise_is_not_counted(tmp_path):
    """patches64's prior is 64x64x3, the noise flow 28x28x1: the run skips the digit noise with
    a note and runs the other two, so mnist's 500 noise digits need not cover 550 images (the
    count refused this command line)."""
    from experiments import common, structured_noise

    config = common.parse_config(
        structured_noise.build_parser(), structured_noise._checked_config,
        ["--dataset", "patches64", "--num-images", "100", "--val-images", "450",
         "--out", str(tmp_path / "o")])
    assert "digits" in config.noises


def test_list_entries():
    from experiments import common

    assert common.list_entries(" a, b,a ") == ("a", "b")
    assert common.list_entries("b,a", "--x", ("a", "b")) == ("b", "a")
    for text, message in ((",", "name at least one"), ("", "name at least one"),
                          ("a,,b", "an empty entry"), ("a,", "an empty entry"),
                          ("a,c", "unknown 'c'")):
        with pytest.raises(ValueError, match=message):
            common.list_entries(text, "--x", ("a", "b"))
    with pytest.raises(argparse_error(), match="an empty entry"):
        common.float_list("0.1,,0.2")


def argparse_error():
    import argparse

    return argparse.ArgumentTypeError


def test_a_tfds_set_that_cannot_load_is_a_usage_error(monkeypatch, capsys, tmp_path):
    """Whether TFDS knows a name, and can fetch it, shows only when loading: the command line
    loads one image before any work (it was a traceback from the run)."""
    pytest.importorskip("tensorflow_datasets")
    from flowinv.data import specs

    def missing(name, split, **kwargs):
        raise ValueError(f"'tfds:{name}': TFDS has no dataset {name!r}")

    monkeypatch.setattr(specs, "load_tfds", missing)
    _cli("experiments.denoise", ["--dataset", "tfds:flowinv_no_such_set",
                                 "--out", str(tmp_path / "o")])
    assert "TFDS has no dataset 'flowinv_no_such_set'" in capsys.readouterr().err


def test_a_one_image_folder_is_refused_before_running(tmp_path, capsys, monkeypatch):
    from experiments import jacobian_spectrum

    _pngs(tmp_path / "one", 1)
    one = f"folder:{tmp_path / 'one'}"
    _cli("experiments.denoise", ["--dataset", one, "--num-images", "1"])
    assert "needs at least 2 images" in capsys.readouterr().err  # not "at most 0"
    monkeypatch.setattr(jacobian_spectrum, "run", lambda config: pytest.fail("the run started"))
    _cli("experiments.jacobian_spectrum", ["--dataset", one, "--out", str(tmp_path / "o")])
    assert "fewer than 2 test images" in capsys.readouterr().err


def test_options_another_experiment_accepts_are_accepted(tmp_path, capsys):
    from experiments import common, denoise, stabilisers, subpixel

    out = ["--out", str(tmp_path / "o")]
    parse = lambda m, argv: common.parse_config(m.build_parser(), m.config_from_args, argv + out)
    assert parse(subpixel, ["--solver", "jaxopt-lbfgs"]).solver == "jaxopt-lbfgs"
    parse(stabilisers, ["--gan", "dcgan-mnist"])
    assert "--gan is not used by stabilisers" in capsys.readouterr().out
    config = parse(denoise, ["--init-scale", "0.3", "--zero-start"])
    assert "--init-scale and --zero-start are used only with --restarts > 1" in \
        capsys.readouterr().out
    assert config.init_scale == 0.3
    assert parse(denoise, []).init_scale == denoise.Config.init_scale
    parse(denoise, ["--init-scale", "0.3", "--restarts", "2"])
    assert "used only with" not in capsys.readouterr().out


def test_folder_sizes_that_leave_validation_images_pass(tmp_path):
    from experiments import common, denoise

    _pngs(tmp_path / "flat", 4)
    _pngs(tmp_path / "split" / "test", 3)
    _pngs(tmp_path / "split" / "train", 1)
    for spec in (f"folder:{tmp_path / 'flat'}", f"folder:{tmp_path / 'split'}"):
        common.check_sources(denoise.Config(dataset=spec, prior=None, num_images=3,
                                            out=str(tmp_path / "out")))
    names = [f.name for f in data.folder_files(f"folder:{tmp_path / 'split'}", "train")]
    assert names == ["0.png"]


def test_an_unwritable_out_folder_is_a_usage_error(tmp_path, capsys):
    from experiments import common, denoise

    (tmp_path / "file").write_text("not a folder")
    for out, reason in ((tmp_path / "file", "it is a file, not a folder"),
                        (tmp_path / "file" / "sub", "NotADirectoryError")):
        _cli("experiments.denoise", ["--out", str(out)])
        err = capsys.readouterr().err
        assert f"cannot write results to --out '{out}'" in err and reason in err
    _cli("experiments.train", ["--prior", "glow-digits", "--workdir", str(tmp_path / "file")])
    assert "cannot write results to --workdir" in capsys.readouterr().err
    common.check_sources(denoise.Config(out=str(tmp_path / "new" / "deep")))
    assert (tmp_path / "new" / "deep").is_dir() and not any((tmp_path / "new" / "deep").iterdir())


def test_source_checks_pass_what_the_loaders_read(saved_prior, tmp_path, monkeypatch):
    for spec in data.DATASETS:
        data.check_dataset(spec)
    (tmp_path / "a.png").write_bytes(b"checked by name, read only by load_folder")
    data.check_dataset(f"folder:{tmp_path}")
    path, meta = checkpoints.find_checkpoint(saved_prior, "flow")
    assert path == saved_prior and "architecture" in meta
    assert checkpoints.find_checkpoint("dcgan-mnist", "dcgan")[1]["kind"] == "dcgan"
    # tfds: only whether tensorflow_datasets is importable is known without loading
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(RuntimeError, match="tensorflow_datasets is not installed"):
        data.check_dataset("tfds:mnist")


def test_a_noise_model_given_to_a_least_squares_method_is_warned_about(prior):
    """asim and bora have no noise term: a noise model passed to them would be ignored
    silently (someone who meant method='map')."""
    for method in ("asim", "bora"):
        with pytest.warns(UserWarning, match=f"method='{method}' ignores noise"):
            _recover(prior, method=method, noise=noise.gaussian(0.1))


def test_checks_run_before_compilation(prior, monkeypatch):
    """A bad argument must fail fast: the batched solve is never traced."""
    import sys

    recover_module = sys.modules["flowinv.recover"]  # flowinv.recover is also the function

    def boom(*a, **k):
        raise AssertionError("compiled before validating")

    monkeypatch.setattr(recover_module, "_solve_batch", boom)
    with pytest.raises(ValueError):
        _recover(prior, gamma=-1.0)
    with pytest.raises(ValueError):
        _recover(prior, _y().at[0, 0, 0].set(jnp.nan))


def test_unknown_dataset_in_experiment_is_an_error_not_a_trace(tmp_path):
    from experiments import denoise

    with pytest.raises(ValueError, match="imagenet"):
        denoise.run(denoise.Config(dataset="imagenet", prior=None, gan="none",
                                   out=str(tmp_path), progress=False))


def test_checkpoint_path_written_by_us_loads(saved_prior, prior):
    flow, params = flowinv.load_prior(saved_prior)
    x = jnp.full(SHAPE, 0.5)
    np.testing.assert_allclose(flow.log_prob(params, x), prior[0].log_prob(prior[1], x),
                               rtol=1e-6)
    assert pathlib.Path(saved_prior).is_dir()


def test_a_noise_flow_without_an_architecture_is_skipped_or_a_usage_error(tmp_path):
    """The run skips the digit noise of a noise flow it cannot build (load_prior's
    ValueError), so beside other noises the command line is accepted, and alone it is a usage
    error; both were a KeyError traceback from the parse-time check."""
    from experiments import common, structured_noise

    checkpoints.save(tmp_path / "noarch", {"w": np.zeros(3, np.float32)}, {})
    argv = ["--noise-flow", str(tmp_path / "noarch"), "--num-images", "2", "--val-images", "2",
            "--out", str(tmp_path / "o")]
    config = common.parse_config(structured_noise.build_parser(),
                                 structured_noise._checked_config, argv)
    assert "digits" in config.noises
    with pytest.raises(SystemExit) as e:
        common.parse_config(structured_noise.build_parser(), structured_noise._checked_config,
                            [*argv, "--noises", "digits"])
    assert e.value.code == 2
