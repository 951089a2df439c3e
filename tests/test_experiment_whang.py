"""Smoke tests of the Whang et al. experiments (structured noise, noisy CS, 1-bit CS): each runs
end to end on a tiny prior, which also serves as the digit-noise flow, and writes the tidy
outputs every experiment promises; plus the pieces the experiments add (digit noise model,
1-bit channel, scaled identity) and the CLI contract."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from experiments import common
from flowinv import checkpoints, noise, operators


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    # jit: one compilation instead of one per primitive dispatched eagerly
    params = jax.jit(flow.init)(jax.random.PRNGKey(0),
                                jax.random.uniform(jax.random.PRNGKey(1), (8, 8, 8, 1)))
    path = tmp_path_factory.mktemp("prior") / "tiny-glow"
    checkpoints.save(path, params, {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    return str(path)


def _check_results(out, n_rows):
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == common.RESULT_COLUMNS
    assert len(rows) == n_rows
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    return rows


def _comparison(out):
    with open(out / "comparison.csv") as f:
        return list(csv.DictReader(f))


def test_structured_noise_runs_end_to_end(tiny_prior, tmp_path):
    from experiments import structured_noise as sn

    config = sn.Config(dataset="digits", prior=tiny_prior, gan="none", noise_flow=tiny_prior,
                       noise_digits="digits", digit_scales=(1.0,), sine_scales=(0.2,),
                       radial_scales=(0.1, 0.2), num_images=2, val_images=1, maxiter=3,
                       betas=(1.0,), gammas=(0.1,), out=str(tmp_path), progress=False)
    result = sn.run(config)
    # 4 (noise, scale) pairs × (map, asim, bm3d, noisy) × 2 test images
    rows = _check_results(tmp_path, 4 * 4 * 2)
    assert {r["method"] for r in rows} == {"map", "asim", "bm3d", "noisy"}
    assert {r["setting_name"] for r in rows} == {"digits_scale", "sinusoidal_scale",
                                                 "radial_scale"}
    assert len(result["summary"]) == 4 * 4
    assert all(math.isfinite(r["psnr"]) for r in result["summary"])
    for name in ("summary.csv", "curves.csv", "psnr_vs_scale.png", "samples_digits.png",
                 "samples_sinusoidal.png", "samples_radial.png", "psnr_vs_weight.png"):
        assert (tmp_path / name).stat().st_size > 0
    # one weight per method: the curve is a point, nothing to lose, nothing to regret
    with open(tmp_path / "sensitivity.csv") as f:
        sens = list(csv.DictReader(f))
    assert sorted((r["noise"], r["scale"], r["method"]) for r in sens) == sorted(
        (k, sc, m) for k, sc in (("digits", "1.0"), ("sinusoidal", "0.2"), ("radial", "0.1"),
                                 ("radial", "0.2")) for m in ("map", "asim"))
    assert all((r["weights"], r["near_best"], float(r["drop_db"]), float(r["regret_db"]))
               == ("1", "1", 0.0, 0.0) for r in sens)
    # comparison.csv: MAP minus Asim and BM3D per (noise, scale), recomputed from results.csv
    comparison = _comparison(tmp_path)
    assert sorted((c["noise"], c["scale"], c["vs"]) for c in comparison) == sorted(
        (k, sc, vs) for k, sc in (("digits", "1.0"), ("sinusoidal", "0.2"), ("radial", "0.1"),
                                  ("radial", "0.2")) for vs in ("asim", "bm3d"))
    for c in comparison:
        psnr = {(r["method"], r["image_id"]): float(r["psnr"]) for r in rows
                if r["setting_name"] == f"{c['noise']}_scale" and r["setting_value"] == c["scale"]}
        d = [psnr[("map", i)] - psnr[(c["vs"], i)] for i in ("0", "1")]
        assert float(c["diff_db"]) == pytest.approx(np.mean(d), abs=0.006)
        assert int(c["ahead"]) == sum(v > 0 for v in d) and c["images"] == "2"


def test_structured_noise_runs_the_latent_map_ablation_only_when_asked(tiny_prior, tmp_path,
                                                                       monkeypatch):
    """``latent-map`` (MAP's noise model with Asim's penalty) is not in the default methods; with
    ``--methods`` it solves each of ``--latent-betas`` with Asim's penalty, is picked on
    validation like the others, compared with MAP and measured for sensitivity."""
    import flowinv
    from experiments import structured_noise as sn

    args = sn.build_parser().parse_args([])
    assert "latent-map" not in sn.config_from_args(args).methods
    args = sn.build_parser().parse_args(["--methods", "map,latent-map", "--latent-betas", "2,5"])
    config = sn.config_from_args(args)
    assert config.methods == ("map", "latent-map") and config.latent_betas == (2.0, 5.0)

    calls, recover = [], flowinv.recover

    def spy(prior, y, **kw):
        calls.append((kw["method"], kw.get("beta"), kw.get("penalty")))
        return recover(prior, y, **kw)

    monkeypatch.setattr(flowinv, "recover", spy)
    config = sn.Config(dataset="digits", prior=tiny_prior, gan="none", noises=("sinusoidal",),
                       sine_scales=(0.2,), methods=("map", "asim", "latent-map"), betas=(1.0,),
                       gammas=(0.1,), latent_betas=(2.0, 5.0), asim_penalty="sq", num_images=2,
                       val_images=1, maxiter=3, out=str(tmp_path), progress=False)
    result = sn.run(config)
    assert sorted(c for c in calls if c[0] == "latent-map") == [("latent-map", 2.0, "sq"),
                                                                ("latent-map", 5.0, "sq")]
    rows = _check_results(tmp_path, (1 + 1 + 2) * 2)
    assert sorted({float(r["param_value"]) for r in rows if r["method"] == "latent-map"}) == [
        2.0, 5.0]
    assert [r["method"] for r in result["summary"]] == ["map", "asim", "latent-map"]
    assert [r["edge"] for r in result["summary"]] == ["", "", ("low" if result["summary"][2][
        "param_value"] == 2.0 else "high")]  # a lone weight has no edge; 2 or 5 of (2, 5) has
    # MAP against both; latent-map against Asim (what the noise model alone is worth)
    assert [(c["method"], c["vs"]) for c in _comparison(tmp_path)] == [
        ("map", "asim"), ("map", "latent-map"), ("latent-map", "asim")]
    with open(tmp_path / "sensitivity.csv") as f:
        sens = {r["method"]: r for r in csv.DictReader(f)}
    assert sens["latent-map"]["weights"] == "2" and sens["latent-map"]["param"] == "β"


def test_structured_noise_skips_digits_without_noise_flow(tiny_prior, tmp_path, capsys):
    from experiments import structured_noise as sn

    config = sn.Config(dataset="digits", prior=tiny_prior, gan="none",
                       noise_flow=str(tmp_path / "missing"), noises=("digits", "sinusoidal"),
                       sine_scales=(0.2,), methods=("noisy",), num_images=2, val_images=1,
                       out=str(tmp_path / "out"), progress=False)
    sn.run(config)
    assert "note: digit noise skipped" in capsys.readouterr().out
    rows = _check_results(tmp_path / "out", 2)
    assert {r["setting_name"] for r in rows} == {"sinusoidal_scale"}


def test_structured_noise_refuses_when_its_only_noise_cannot_run(tiny_prior, tmp_path):
    from experiments import structured_noise as sn

    config = sn.Config(dataset="digits", prior=tiny_prior, gan="none", noises=("digits",),
                       methods=("noisy",), num_images=2, val_images=1,
                       out=str(tmp_path / "out"), progress=False)
    with pytest.raises(ValueError, match=r"--noises digits: the noise flow 'realnvp-mnist' "
                                         r"models images of shape \(28, 28, 1\)"):
        sn.run(config)
    assert not (tmp_path / "out").exists()  # refused before anything was loaded or written


def test_structured_noise_draws_do_not_depend_on_the_other_noises_run(tiny_prior, tmp_path):
    """The radial noise of a ``--noises radial`` run is the radial noise of a run of all the
    Gaussian noises: the noisy input, image by image, is the same (it was not while draws
    were keyed by the position in the run's own list)."""
    from experiments import structured_noise as sn

    def noisy_psnr(noises, out):
        sn.run(sn.Config(dataset="digits", prior=tiny_prior, gan="none", noises=noises,
                         sine_scales=(0.2,), radial_scales=(0.2,), methods=("noisy",),
                         num_images=2, val_images=1, out=str(out), progress=False))
        return {r["image_id"]: r["psnr"] for r in _check_results(out, 2 * len(noises))
                if r["setting_name"] == "radial_scale"}

    assert noisy_psnr(("radial",), tmp_path / "a") == noisy_psnr(("sinusoidal", "radial"),
                                                                tmp_path / "b")


def test_noise_digits_are_never_test_or_validation_images():
    """The noise digits come from the end of the test split; the test images, and with
    ``--val-split test`` the validation images, from its head. 180 digits, 80 test and 20
    validation images: 100 noise digits leave 80, enough for the test images alone but not for
    both. And a noise digit that is one of the images is refused whatever their split."""
    from experiments import structured_noise as sn
    from flowinv import data

    split = data.load_dataset("digits", "test")
    config = sn.Config(dataset="digits", noise_digits="digits", num_images=80, val_images=20)
    train = data.load_dataset("digits", "train", limit=20)
    digits = sn._noise_digits(config, (8, 8, 1), np.concatenate([split[:80], train]))
    np.testing.assert_array_equal(digits, split[80:][::-1])
    with pytest.raises(ValueError, match="first 100 images"):
        sn._noise_digits(replace(config, val_split="test"), (8, 8, 1), split[:100])
    with pytest.raises(ValueError, match="include a test or validation image"):
        sn._noise_digits(replace(config, num_images=1, val_images=1), (8, 8, 1),
                         np.concatenate([split[:1], split[-2:-1]]))


def test_noisy_cs_runs_end_to_end(tiny_prior, tmp_path):
    from experiments import noisy_cs

    config = noisy_cs.Config(dataset="digits", prior=tiny_prior, gan="none", num_images=2,
                             val_images=1, maxiter=3, ratios=(0.25, 0.5), betas=(1.0,),
                             gammas=(0.0,), out=str(tmp_path), progress=False)
    result = noisy_cs.run(config)
    rows = _check_results(tmp_path, 2 * 2 * 2)  # m ∈ {16, 32} × (map, asim) × 2 images
    assert {r["setting_value"] for r in rows} == {"16", "32"}  # m = ratio · 64
    assert {r["method"] for r in rows} == {"map", "asim"}
    assert len(result["summary"]) == 4
    for name in ("summary.csv", "psnr_vs_m.png", "samples_m16.png", "samples_m32.png",
                 "sensitivity.csv", "psnr_vs_weight.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert sorted((c["setting_value"], c["method"], c["vs"]) for c in _comparison(tmp_path)) == [
        ("16", "map", "asim"), ("32", "map", "asim")]


def test_noisy_cs_asim_centred_fits_the_measurements_less_the_noise_mean(tiny_prior, tmp_path,
                                                                         monkeypatch):
    """The control ``asim-centred`` (only with ``--methods``) runs Asim's loss on ``y − μ``:
    the same measurements as ``asim`` less the noise's mean ``s`` on each of the ``m`` rows,
    and 0 on the padding up to the largest m; it is compared with MAP like the others."""
    import flowinv
    from experiments import noisy_cs

    args = noisy_cs.build_parser().parse_args([])
    assert "asim-centred" not in noisy_cs.config_from_args(args).methods
    calls, recover = [], flowinv.recover

    def spy(prior, y, **kw):
        calls.append(np.asarray(y))
        return recover(prior, y, **kw)

    monkeypatch.setattr(flowinv, "recover", spy)
    config = noisy_cs.Config(dataset="digits", prior=tiny_prior, gan="none", num_images=2,
                             val_images=1, maxiter=3, ratios=(0.25, 0.5), noise_scale=0.5,
                             methods=("map", "asim", "asim-centred"), betas=(1.0,),
                             gammas=(0.0,), out=str(tmp_path), progress=False)
    noisy_cs.run(config)
    for m, (_, plain, centred) in zip((16, 32), (calls[0:3], calls[3:6]), strict=True):
        shift = plain - centred
        np.testing.assert_allclose(shift[:, :m], 0.5, atol=1e-6)
        np.testing.assert_array_equal(shift[:, m:], 0.0)
    # MAP against both, and the control against plain Asim (what the mean alone is worth)
    assert sorted((c["setting_value"], c["method"], c["vs"]) for c in _comparison(tmp_path)) == [
        (m, lead, vs) for m in ("16", "32") for lead, vs in (
            ("asim-centred", "asim"), ("map", "asim"), ("map", "asim-centred"))]


def test_one_bit_cs_runs_end_to_end(tiny_prior, tmp_path):
    from experiments import one_bit_cs

    config = one_bit_cs.Config(dataset="digits", prior=tiny_prior, gan="none", num_images=2,
                               val_images=1, maxiter=3, ratios=(0.5, 2.0), betas=(1.0,),
                               gammas=(0.0,), out=str(tmp_path), progress=False)
    one_bit_cs.run(config)
    # m ∈ {32, 128} (more bits than pixels too) × (map, map-probit, asim) × 2 images
    rows = _check_results(tmp_path, 2 * 3 * 2)
    assert {r["setting_value"] for r in rows} == {"32", "128"}
    assert {r["method"] for r in rows} == {"map", "map-probit", "asim"}
    assert (tmp_path / "psnr_vs_m.png").stat().st_size > 0
    # each MAP against the others, the two MAPs compared once
    pairs = sorted((c["setting_value"], c["method"], c["vs"]) for c in _comparison(tmp_path))
    assert pairs == sorted((m, a, b) for m in ("32", "128") for a, b in (
        ("map", "map-probit"), ("map", "asim"), ("map-probit", "asim")))


def _curve(setting_value, method, weight, test_psnr, val_psnr, setting_name="sine_scale"):
    from experiments._whang_cs import PARAM_NAMES

    return dict(setting_name=setting_name, setting_value=setting_value, method=method,
                param_name=PARAM_NAMES[method], param_value=weight, test_psnr=test_psnr,
                test_ssim=0.5, val_psnr=val_psnr)


def test_sensitivity_reads_each_weighted_methods_curve_over_its_grid(tmp_path):
    from experiments import _whang_cs

    curves = [
        # validation picks β = 0.01, the test images prefer 0.1
        _curve(0.1, "map", 0.01, 30.0, 29.0), _curve(0.1, "map", 0.1, 31.0, 28.0),
        _curve(0.1, "map", 1.0, 25.0, 20.0),
        # a failed solve (NaN) counts as the worst weight
        _curve(0.1, "asim", 0.0, float("nan"), 10.0), _curve(0.1, "asim", 0.3, 28.0, 27.0),
        _curve(0.1, "bm3d", 0.1, 27.0, 27.0), _curve(0.1, "noisy", "", 20.0, 20.0),
        _curve(0.3, "map", 0.01, 22.0, 21.0), _curve(0.3, "map", 0.1, 22.5, 22.0),
        _curve(0.3, "map", 1.0, 21.6, 20.0),
        _curve(16, "bora", 0.1, 24.0, 23.0, setting_name="m"),
    ]
    summary = _whang_cs.summarise(curves)
    rows = {(r["setting_value"], r["method"]): r for r in _whang_cs.sensitivity(curves, summary)}
    assert set(rows) == {(0.1, "map"), (0.1, "asim"), (0.3, "map"), (16, "bora")}
    m = rows[(0.1, "map")]
    assert (m["param"], m["weights"], m["best_weight"], m["worst_weight"], m["picked_weight"]) == (
        "β", 3, 0.1, 1.0, 0.01)
    assert (m["best_psnr"], m["worst_psnr"], m["drop_db"], m["near_best"], m["regret_db"]) == (
        31.0, 25.0, 6.0, 2, 1.0)
    a = rows[(0.1, "asim")]
    assert (a["param"], a["best_weight"], a["worst_weight"], a["picked_weight"]) == (
        "γ", 0.3, 0.0, 0.3)
    assert a["drop_db"] == math.inf and a["near_best"] == 1 and a["regret_db"] == 0.0
    flat = rows[(0.3, "map")]
    assert (flat["near_best"], flat["drop_db"], flat["regret_db"]) == (3, 0.9, 0.0)
    assert rows[(16, "bora")]["param"] == "λ"
    _whang_cs.plot_sensitivity(tmp_path / "w.png", curves, summary,
                               panel_title=lambda name, value: f"{name} {value}", title="t")
    assert (tmp_path / "w.png").stat().st_size > 0


@pytest.mark.parametrize("module, argv", [
    ("structured_noise", ["--noises", "snow"]),
    ("structured_noise", ["--sine-scales", "0"]),
    ("structured_noise", ["--digit-scales", "x"]),
    ("structured_noise", ["--methods", "lasso"]),
    ("structured_noise", ["--num-images", "0"]),
    ("noisy_cs", ["--ratios", "1.5"]),
    ("noisy_cs", ["--noise-scale", "0"]),
    ("noisy_cs", ["--methods", "map-probit"]),
    ("noisy_cs", ["--betas", "-1"]),
    ("one_bit_cs", ["--ratios", "0"]),
    ("one_bit_cs", ["--ratios", "9"]),
    ("one_bit_cs", ["--maxiter", "-3"]),
])
def test_bad_cli_values_exit_with_usage_error(module, argv, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"experiments.{module}").main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and argv[0] in err  # the value of that flag, not an unknown flag


# ---- the pieces the experiments add -------------------------------------------------------


def test_digit_noise_is_the_flow_density_inside_the_box_and_finite_outside(tiny_prior):
    import dataclasses

    from experiments.structured_noise import DigitNoise

    flow, params = flowinv.load_prior(tiny_prior)
    # the same weights behind a logit preprocessing (no parameters): density on (0, 1) only
    flow = dataclasses.replace(flow, preprocess="logit")
    scale = 0.7
    base = noise.flow_noise(flow, params, scale=scale)
    model = DigitNoise(base=base)
    base_lp, model_lp = jax.jit(base.log_prob), jax.jit(model.log_prob)
    inside = scale * jax.random.uniform(jax.random.PRNGKey(2), (8, 8, 1), minval=0.1,
                                        maxval=0.9)
    np.testing.assert_allclose(model_lp(inside), base_lp(inside), rtol=1e-6)
    outside = inside.at[0, 0, 0].set(-0.3 * scale).at[1, 1, 0].set(1.2 * scale)
    assert not np.isfinite(float(base_lp(outside)))  # what DigitNoise guards against
    value, grad = jax.jit(jax.value_and_grad(model.log_prob))(outside)
    assert np.isfinite(float(value)) and bool(jnp.all(jnp.isfinite(grad)))
    projected = scale * jnp.clip(outside / scale, model.eps, 1 - model.eps)
    assert float(value) < float(model_lp(projected))  # the Gaussian falloff outside
    assert float(grad[0, 0, 0]) > 0 > float(grad[1, 1, 0])  # pulled back into the box


def test_sign_channel_is_the_probit_likelihood_and_ignores_padding():
    from scipy.stats import norm

    from experiments._whang_cs import SignChannel

    rng = np.random.default_rng(0)
    ax = rng.normal(size=6).astype(np.float32)
    signs = np.array([1.0, -1.0, 1.0, -1.0, 0.0, 0.0], np.float32)  # last two: padding
    mean = np.full(6, 0.2, np.float32)
    std = rng.uniform(0.1, 1.0, size=6).astype(np.float32)
    channel = SignChannel(signs=jnp.asarray(signs), mean=jnp.asarray(mean),
                          std=jnp.asarray(std))
    # P(sign(a·x + δ) = y) = Φ(y (a·x + μ) / σ), δ ~ N(μ, σ²), over the 4 real entries
    want = norm.logcdf(signs[:4] * (ax[:4] + mean[:4]) / std[:4]).sum()
    np.testing.assert_allclose(float(channel.log_prob(jnp.asarray(signs - ax))), want,
                               rtol=1e-5)


def test_scaled_identity_is_linear_and_self_adjoint():
    from experiments.structured_noise import ScaledIdentity

    op = ScaledIdentity(in_shape=(4, 4, 1), factor=0.5)
    x = jnp.ones((4, 4, 1))
    np.testing.assert_allclose(op(x), 0.5 * x)
    assert float(operators.adjoint_check(op, jax.random.PRNGKey(0))) < 1e-6


# ---- Asim's penalty: γ‖z‖ (Whang et al. 2020 eq. (9)) by default ---------------------------


def _tiny_config(module: str, prior: str, out, **kw):
    """A config of ``module`` running only its ``asim`` method (subpixel: also MAP, one β), on
    one test and one validation image, 2 iterations."""
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    common_kw = dict(dataset="digits", prior=prior, num_images=1, val_images=1, maxiter=2,
                     gammas=(0.1,), out=str(out), progress=False, **kw)
    if module == "subpixel":
        return mod, mod.Config(betas=(1.0,), **common_kw)
    extra = dict(gan="none", methods=("asim",))
    if module == "structured_noise":
        extra.update(noises=("sinusoidal",), sine_scales=(0.2,))
    else:
        extra.update(ratios=(0.5,))
    return mod, mod.Config(**extra, **common_kw)


WHANG_EXPERIMENTS = ("structured_noise", "noisy_cs", "one_bit_cs", "subpixel")


@pytest.mark.parametrize("module", WHANG_EXPERIMENTS)
@pytest.mark.parametrize("penalty", [None, "sq"])
def test_asim_method_uses_the_configured_penalty(module, penalty, tiny_prior, tmp_path,
                                                 monkeypatch, capsys):
    """Every ``method="asim"`` solve gets ``penalty=config.asim_penalty``, which defaults to
    Whang et al.'s γ‖z‖ (``"norm"``); the printed summary and ``environment.json`` say which
    penalty γ weighs."""
    calls = []
    recover = flowinv.recover

    def spy(*args, **kw):
        if kw.get("method") == "asim":
            calls.append((kw.get("penalty", "<flowinv default>"), kw.get("gamma")))
        return recover(*args, **kw)

    monkeypatch.setattr(flowinv, "recover", spy)
    kw = {} if penalty is None else {"asim_penalty": penalty}
    mod, config = _tiny_config(module, tiny_prior, tmp_path, **kw)
    assert config.asim_penalty == (penalty or "norm")
    mod.run(config)
    assert calls and all(c == (config.asim_penalty, 0.1) for c in calls), calls
    record = (tmp_path / "environment.json").read_text()
    assert f'"asim_penalty": "{config.asim_penalty}"' in record
    printed = capsys.readouterr().out
    assert ("Asim's γ weighs ‖z‖² (γ‖z‖², Asim et al.'s form)" if penalty == "sq" else
            "Asim's γ weighs ‖z‖ (γ‖z‖, Whang et al. 2020 eq. (9))") in printed


@pytest.mark.parametrize("module", WHANG_EXPERIMENTS)
def test_asim_penalty_flag_is_parsed(module):
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    parser = mod.build_parser()
    assert mod.config_from_args(parser.parse_args([])).asim_penalty == "norm"
    for value in ("sq", "norm"):
        args = parser.parse_args(["--asim-penalty", value])
        assert mod.config_from_args(args).asim_penalty == value
    text = " ".join(parser.format_help().split())
    assert "--asim-penalty {norm,sq}" in text and "eq. (9)" in text


@pytest.mark.parametrize("module", WHANG_EXPERIMENTS)
def test_bad_asim_penalty_is_a_usage_error(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"experiments.{module}").main(["--asim-penalty", "l1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--asim-penalty" in err and "invalid choice: 'l1'" in err


@pytest.mark.parametrize("module", WHANG_EXPERIMENTS)
def test_a_config_with_a_bad_asim_penalty_is_refused_before_running(module, tiny_prior,
                                                                     tmp_path):
    mod, config = _tiny_config(module, tiny_prior, tmp_path / "out", asim_penalty="l1")
    with pytest.raises(ValueError, match="asim_penalty must be one of"):
        mod.run(config)
    assert not (tmp_path / "out").exists()


def test_gamma_grids_hold_whangs_grid():
    """Whang et al. 2020 appendix B: γ of their eq. (9) from {0, 0.1, 0.5, 1, 5}: every --full
    grid holds it, and every quick grid is a subset of its --full one (chosen for γ‖z‖, see
    the comments at each QUICK)."""
    import importlib

    for module in WHANG_EXPERIMENTS:
        mod = importlib.import_module(f"experiments.{module}")
        assert {0.0, 0.1, 0.5, 1.0, 5.0} <= set(mod.FULL["gammas"]), module
        assert set(mod.QUICK["gammas"]) <= set(mod.FULL["gammas"]), module
