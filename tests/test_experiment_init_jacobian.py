"""Smoke tests of ``experiments.init_study`` and ``experiments.jacobian_spectrum`` on a tiny prior.

The prior is an 8×8×1 Glow (1 level, 1 step, width 8) initialised on random images and then
moved off its identity-like initialisation (the zero-initialised coupling outputs make a fresh
Glow's Jacobian a per-pixel linear map), saved as a checkpoint folder and loaded by the
experiments like any shipped prior.
"""

from __future__ import annotations

import csv
import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from experiments import common, init_study, jacobian_spectrum
from flowinv import checkpoints


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory, perturb_params) -> str:
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
    params = perturb_params(flow.init(jax.random.PRNGKey(1), images), jax.random.PRNGKey(2))
    path = tmp_path_factory.mktemp("prior") / "glow-tiny"
    checkpoints.save(path, params, {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    return str(path)


def _read(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _header(path: pathlib.Path) -> list[str]:
    with open(path, newline="") as f:
        return next(csv.reader(f))


# ---- init_study ------------------------------------------------------------------------------


def test_init_study_runs_and_writes_tables(tiny_prior, tmp_path):
    config = init_study.Config(dataset="digits", prior=tiny_prior, num_images=2, maxiter=3,
                               ratios=(0.25,), gammas=(0.0, 0.01), normal_scales=(0.1,),
                               pocs_iters=5, out=str(tmp_path), progress=False)
    result = init_study.run(config)
    inits = ["zeros", "normal(0.1)", "lasso-wavelet", "null-space", "inverse-train"]
    for name in ("results.csv", "summary.csv", "latents.csv", "znorm_history.csv",
                 "psnr_vs_gamma.png", "znorm_vs_iteration.png", "psnr_vs_z0norm.png",
                 "samples_m16.png"):
        assert (tmp_path / name).is_file(), name

    rows = _read(tmp_path / "results.csv")
    assert _header(tmp_path / "results.csv") == list(common.RESULT_COLUMNS)
    assert len(rows) == len(result["rows"]) == 2 * 2 * len(inits)  # images × γ × inits
    assert {r["setting_value"] for r in rows} == set(inits)
    assert {r["param_name"] for r in rows} == {"gamma"}
    assert {float(r["param_value"]) for r in rows} == {0.0, 0.01}
    assert all(math.isfinite(float(r["psnr"])) and math.isfinite(float(r["ssim"]))
               for r in rows)

    summary = _read(tmp_path / "summary.csv")
    assert len(summary) == len(result["summary"]) == 2 * len(inits)
    lat = _read(tmp_path / "latents.csv")
    assert len(lat) == len(rows)
    for r in lat:
        for k in ("z0_norm", "zhat_norm", "init_psnr", "psnr", "init_datafit", "datafit"):
            assert math.isfinite(float(r[k])), (k, r)
        assert r["diverged"] == "False"

    by_init = {}
    for r in lat:
        by_init.setdefault(r["init"], []).append(r)
    assert all(float(r["z0_norm"]) == 0.0 for r in by_init["zeros"])
    # ‖z₀‖ of N(0, σ²I) in n = 64 dimensions: σ·χ₆₄, within [0.5, 1.5]·σ√n with overwhelming
    # probability (the χ₆₄ has mean ≈ 7.97 and std ≈ 0.71)
    for r in by_init["normal(0.1)"]:
        assert 0.5 * 0.1 * 8 < float(r["z0_norm"]) < 1.5 * 0.1 * 8
    # the null-space init is (after POCS) close to measurement-consistent, unlike a random
    # training image: its data fit ‖A G(z₀) − y‖ is far smaller
    ns = np.mean([float(r["init_datafit"]) for r in by_init["null-space"]])
    tr = np.mean([float(r["init_datafit"]) for r in by_init["inverse-train"]])
    assert ns < 0.5 * tr

    hist = _read(tmp_path / "znorm_history.csv")
    zeros0 = [r for r in hist if r["init"] == "zeros" and r["iteration"] == "0"]
    assert len(zeros0) == 2 and all(float(r["znorm"]) == 0.0 for r in zeros0)
    assert max(int(r["iteration"]) for r in hist) <= 3  # maxiter 3, plus the initial point


def test_null_space_images_are_consistent_and_in_box():
    from flowinv import operators

    shape = (8, 8, 1)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, *shape), minval=0.2, maxval=0.8)
    op = operators.gaussian_cs(jax.random.PRNGKey(1), shape, 16)
    xs = init_study.null_space_images(jax.random.PRNGKey(2), op, x, 0.05, 20)
    assert float(xs.min()) >= 0.0 and float(xs.max()) <= 1.0
    # interior truth, small perturbation: the box is inactive, so x_ns − x₀ is exactly in the
    # null space (up to the CG solve) and nonzero
    resid = jnp.linalg.norm(jax.vmap(op)(xs) - jax.vmap(op)(x), axis=1)
    assert float(resid.max()) < 1e-3
    assert float(jnp.linalg.norm((xs - x).reshape(2, -1), axis=1).min()) > 0.1


def test_init_study_cli(capsys):
    for bad in (["--ratios", "0"], ["--ratios", "1.5"], ["--inits", "zeros,bogus"],
                ["--normal-scales", "0"], ["--gammas", "-1"], ["--maxiter", "0"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            init_study.main(bad)
        assert e.value.code == 2 and bad[0] in capsys.readouterr().err, bad


# ---- jacobian_spectrum -----------------------------------------------------------------------


def test_jacobian_spectrum_runs_and_checks_out(tiny_prior, tmp_path):
    eps = (1e-3, 1e-2, 0.1, 1.0)
    config = jacobian_spectrum.Config(dataset="digits", prior=tiny_prior, num_images=2,
                                      spectrum_images=2, directions=1, eps=eps,
                                      out=str(tmp_path), progress=False)
    result = jacobian_spectrum.run(config)
    for name in ("results.csv", "spectrum.csv", "perturbation.csv", "summary.csv",
                 "perturbation_summary.csv", "spectrum.png", "perturbation.png",
                 "samples_perturbation.png"):
        assert (tmp_path / name).is_file(), name

    rows = _read(tmp_path / "results.csv")
    assert _header(tmp_path / "results.csv") == list(common.RESULT_COLUMNS)
    assert len(rows) == 2 + 2 * 2  # svd per image; perturbation per image × direction kind
    assert all(math.isnan(float(r["psnr"])) for r in rows)

    spec = _read(tmp_path / "spectrum.csv")
    assert len(spec) == 2 * 64
    sig = {b: np.array([float(r["sigma"]) for r in spec if r["image_id"] == str(b)])
           for b in range(2)}
    for s in sig.values():
        assert np.all(np.isfinite(s)) and np.all(s > 0) and np.all(np.diff(s) <= 0)

    # |det J| = ∏σ_i: Σ log σ_i must equal the flow's explicitly computed log-det at z. Both
    # are float64 here (the default); each log σ_i then carries an error of about
    # 1e-16 · cond(J) (cond ≈ 10-100 for this flow), so 64 of them agree with the log-det far
    # inside the 1e-6 allowed (a float32 Jacobian would only reach ~1e-4).
    for r in result["summary"]:
        b = r["image_id"]
        assert r["solver"] == "dense-float64"
        assert r["logdet_gap"] <= 1e-6, r
        # exact negatives in float64 (G⁻¹ then G at the same point), each rounded to 4 decimals
        # in the summary: at most 2 · 5e-5 apart
        assert r["minus_logdet_inverse"] == pytest.approx(r["logdet"], abs=1.1e-4)
        assert r["sigma_max"] == pytest.approx(sig[b][0])
        assert r["condition"] == pytest.approx(sig[b][0] / sig[b][-1])

    pert = _read(tmp_path / "perturbation.csv")
    assert len(pert) == 2 * 2 * len(eps)  # images × (1 natural + 1 random) × ε
    for r in pert:
        assert math.isfinite(float(r["delta_norm"])) and float(r["delta_norm"]) > 0
        b, g = int(r["image_id"]), float(r["jv_norm"])
        # for a unit v, σ_min ≤ ‖J v‖ ≤ σ_max
        assert sig[b][-1] * (1 - 1e-4) <= g <= sig[b][0] * (1 + 1e-4)
        if float(r["eps"]) == eps[0]:  # linear regime: Δ(ε)/ε ≈ ‖Jv‖
            assert float(r["delta_norm"]) / eps[0] == pytest.approx(g, rel=2e-2)
    assert {r["direction"] for r in result["perturbation_summary"]} == {"natural", "random"}


def test_dense_jacobian_matches_jacfwd_and_randomized_svd(tiny_prior):
    flow, params = flowinv.load_prior(tiny_prior)
    zs = jax.random.normal(jax.random.PRNGKey(3), (2, flow.dim))
    jac = jacobian_spectrum.dense_jacobians(flow, params, zs, chunk=24)  # 64 = 2·24 + 16
    ref = jax.vmap(jax.jacfwd(lambda z: flow.forward(params, z)[0].ravel()))(zs)
    np.testing.assert_allclose(np.asarray(jac), np.asarray(ref), rtol=1e-5, atol=1e-6)

    # with rank + oversample = n the sketch spans Rⁿ, so the randomized SVD is exact: this
    # checks the jvp/vjp plumbing and σ_{n+1−i}(∂G/∂z) = 1/σ_i(∂G⁻¹/∂x) against the dense SVD
    # (float32 QR and SVD of 64×64 matrices: measured 2.7e-7 (top) and 4.0e-7 (bottom)
    # relative, checked at 1e-5; a plumbing error, a transposed jvp/vjp or a missed
    # reciprocal, is off by O(1))
    dense = jacobian_spectrum.dense_singular_values(flow, params, zs)
    top, bottom = jacobian_spectrum.randomized_singular_values(
        flow, params, zs, jax.random.PRNGKey(4), rank=6, oversample=flow.dim - 6,
        power_iters=1)
    np.testing.assert_allclose(np.asarray(top), dense[:, :6], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bottom), dense[:, -6:], rtol=1e-5)


def test_jacobian_spectrum_cli(capsys):
    for bad in (["--eps", "0,1"], ["--num-images", "1"], ["--solver", "qr"],
                ["--directions", "0"], ["--rank", "x"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            jacobian_spectrum.main(bad)
        assert e.value.code == 2 and bad[0] in capsys.readouterr().err, bad


def test_perturbation_band_is_a_t_interval():
    """The plot's "95% CI" band: Student's t on count − 1 degrees of freedom, not 1.96."""
    from scipy import stats

    from experiments import jacobian_spectrum as js

    delta = np.random.default_rng(0).uniform(1, 2, (12, 3))
    delta[0, 2] = np.nan  # left out of its column
    mean, half = js._mean_band(delta)
    for j in range(3):
        col = delta[:, j][np.isfinite(delta[:, j])]
        assert mean[j] == pytest.approx(col.mean())
        lo, hi = stats.t.interval(0.95, len(col) - 1, loc=col.mean(), scale=stats.sem(col))
        assert half[j] == pytest.approx((hi - lo) / 2)
