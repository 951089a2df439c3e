"""Tests of flowinv.theory (Theorem 1 of Asim et al. 2020) and experiments/theorem1.py.

Precision-sensitive checks run in float64 (``jax.enable_x64``) so that rounding (≈1e-16 times a
condition number) stays far below the tolerances; Monte Carlo checks use margins of several
standard errors, with fixed seeds.
"""

import csv
import pathlib

import jax
import jax.numpy as jnp
import jaxopt
import numpy as np
import pytest

from flowinv import solvers, theory


def _problem(n, m, spectrum, seed=0):
    """float64 G with the given spectrum, Gaussian A (m, n), and y = A G z_true."""
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    g = theory.linear_model(k1, jnp.asarray(spectrum, jnp.float64))
    a = jax.random.normal(k2, (m, n), jnp.float64)
    z_true = jax.random.normal(k3, (n,), jnp.float64)
    return g, a, z_true, a @ g @ z_true


# ------------------------------------------------------------------------------------------
# mle_estimate / minimum_norm_latent


@pytest.mark.parametrize("n,m", [(10, 4), (10, 9), (10, 10), (6, 1)])
def test_mle_estimate_matches_numpy_pinv(n, m):
    with jax.enable_x64(True):
        g, a, z_true, y = _problem(n, m, np.linspace(1.0, 0.3, n))
        x_hat = np.asarray(theory.mle_estimate(g, a, y))
        z_hat = np.asarray(theory.minimum_norm_latent(g, a, y))
    gn, an, yn = (np.asarray(v) for v in (g, a, y))
    b = an @ gn
    ref = gn @ np.linalg.pinv(b) @ yn  # independent route: numpy's SVD pseudo-inverse
    kappa = np.linalg.cond(b)
    # Both routes are backward stable, so they agree to ~κ(AG)·eps ≈ 1e-14 here; the fixture
    # keeps κ small (asserted) and 1e-10 leaves 4 orders of margin, while any error in the
    # formula (e.g. a missing G Gᵀ factor) changes x̂ at O(1).
    assert kappa < 1e3
    np.testing.assert_allclose(x_hat, ref, rtol=1e-10, atol=1e-10 * np.linalg.norm(ref))
    np.testing.assert_allclose(z_hat, np.linalg.pinv(b) @ yn, rtol=1e-10,
                               atol=1e-10 * np.linalg.norm(z_hat))
    np.testing.assert_allclose(an @ x_hat, yn, rtol=1e-10, atol=1e-10 * np.linalg.norm(yn))
    if m == n:  # A G invertible: the measurements determine x₀ exactly
        np.testing.assert_allclose(x_hat, gn @ np.asarray(z_true), rtol=1e-9, atol=1e-9)
    else:  # the minimum-norm latent is not the true one, so recovery is inexact
        assert np.linalg.norm(z_hat - np.asarray(z_true)) > 1e-3


def test_mle_estimate_is_vmappable():
    with jax.enable_x64(True):
        g, a, _, _ = _problem(8, 5, np.linspace(1.0, 0.5, 8))
        ys = jax.random.normal(jax.random.PRNGKey(9), (3, 5), jnp.float64)
        batched = jax.jit(jax.vmap(theory.mle_estimate, in_axes=(None, None, 0)))(g, a, ys)
        single = jnp.stack([theory.mle_estimate(g, a, y) for y in ys])
    # Same arithmetic per problem; only reduction order may differ (≈1e-16 relative).
    np.testing.assert_allclose(batched, single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shapes,arg", [
    (((3, 4), (2, 4), (2,)), "G"),       # G not square
    (((4, 4), (2, 3), (2,)), "A"),       # A columns != n
    (((4, 4), (5, 4), (5,)), "A"),       # m > n
    (((4, 4), (2, 4), (3,)), "y"),       # y length != m
    (((4, 4), (4,), (4,)), "A"),         # A not 2-D
])
def test_mle_estimate_rejects_bad_shapes(shapes, arg):
    g, a, y = (jnp.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=f"^{arg} "):
        theory.mle_estimate(g, a, y)


# ------------------------------------------------------------------------------------------
# theorem1_bounds


def test_bounds_hand_computed():
    # σ = (4, 3, 2, 1) given out of order; σ² = (16, 9, 4, 1), total 30.
    sigma = jnp.array([2.0, 4.0, 1.0, 3.0])
    expected = {
        1: (9 + 4 + 1, 1 * 30),          # m − 2 < 0: the upper sum runs over all i
        2: (4 + 1, 2 * 30),              # m − 2 = 0: still all i
        3: (1, 3 * (9 + 4 + 1)),         # i > 1
        4: (0, 4 * (4 + 1)),             # m = n: lower 0, upper sums i > 2
    }
    for m, (lo, up) in expected.items():
        lower, upper = theory.theorem1_bounds(sigma, m)
        assert float(lower) == pytest.approx(lo, rel=1e-6), m
        assert float(upper) == pytest.approx(up, rel=1e-6), m
    # Within the theorem's range 4 ≤ m < n: σ = (6, …, 1), m = 4.
    lower, upper = jax.jit(theory.theorem1_bounds, static_argnums=1)(
        jnp.arange(6.0, 0.0, -1.0), 4)
    assert float(lower) == pytest.approx(2**2 + 1**2)
    assert float(upper) == pytest.approx(4 * (4**2 + 3**2 + 2**2 + 1**2))


@pytest.mark.parametrize("sigma,m,err,match", [
    (jnp.ones(4), 0, ValueError, "^m "),
    (jnp.ones(4), 5, ValueError, "^m "),
    (jnp.ones(4), 2.0, TypeError, "^m "),
    (jnp.ones((2, 2)), 1, ValueError, "^singular_values "),
    (jnp.array([1.0, 0.0, 2.0]), 1, ValueError, "^singular_values "),
])
def test_bounds_reject_bad_input(sigma, m, err, match):
    with pytest.raises(err, match=match):
        theory.theorem1_bounds(sigma, m)


# ------------------------------------------------------------------------------------------
# linear_model


def test_linear_model_has_prescribed_spectrum():
    with jax.enable_x64(True):
        sigma = jnp.array([0.2, 3.0, 1.0, 0.5, 2.0], jnp.float64)
        g1 = theory.linear_model(jax.random.PRNGKey(0), sigma)
        g2 = theory.linear_model(jax.random.PRNGKey(1), sigma)
    # SVD in float64 is accurate to ~eps·σ₁ ≈ 1e-15 absolute.
    np.testing.assert_allclose(np.linalg.svd(np.asarray(g1), compute_uv=False),
                               np.sort(np.asarray(sigma))[::-1], atol=1e-12)
    assert not np.allclose(g1, g2)  # random U, V
    assert not np.allclose(g1, np.diag(np.diag(g1)))  # not diagonal
    with pytest.raises(ValueError, match="^singular_values "):
        theory.linear_model(jax.random.PRNGKey(0), jnp.array([1.0, -1.0]))


# ------------------------------------------------------------------------------------------
# expected_error (Monte Carlo) against the bounds and against an independent computation


@pytest.mark.parametrize("name,n,m,sigma_fn", [
    ("geometric 0.5^i", 16, 6, lambda i: 0.5 ** (i - 1)),
    ("i^-1", 32, 8, lambda i: 1.0 / i),
])
def test_monte_carlo_between_bounds(name, n, m, sigma_fn):
    sigma = sigma_fn(np.arange(1, n + 1, dtype=np.float64))
    with jax.enable_x64(True):
        g = theory.linear_model(jax.random.PRNGKey(1), jnp.asarray(sigma))
        mean, se = theory.expected_error(g, m, jax.random.PRNGKey(2), 4000)
        lower, upper = (float(v) for v in theory.theorem1_bounds(jnp.asarray(sigma), m))
    mean, se = float(mean), float(se)
    # The test cannot pass by accident: the band [lower, upper] excludes the errors of the
    # obvious wrong estimators, so a broken x̂ lands outside it:
    #   x̂ = 0                 → E‖x₀‖² = Σσᵢ²,
    #   x̂ = Aᵀ(AAᵀ)⁻¹y (no prior) → (n − m)/n · Σσᵢ²  (projection onto a random m-subspace),
    #   x̂ = x₀ (cheating)      → 0 < lower.
    total = float(np.sum(sigma**2))
    assert (n - m) / n * total > 1.2 * upper and total > upper and lower > 0
    # The standard error is small against the gap (≤ 5% of the distance to either bound), so
    # requiring 4 standard errors of clearance has a false-failure rate < 1e-4 per bound.
    assert se < 0.05 * min(mean - lower, upper - mean), (name, mean, se, lower, upper)
    assert lower < mean - 4 * se
    assert mean + 4 * se < upper


def test_monte_carlo_matches_independent_numpy_estimate():
    """expected_error vs E_A ‖G(I − (AG)⁺AG)‖_F² (inner expectation exact, Lemma 1) in numpy."""
    n, m = 12, 5
    sigma = 0.7 ** np.arange(n, dtype=np.float64)
    with jax.enable_x64(True):
        g = theory.linear_model(jax.random.PRNGKey(3), jnp.asarray(sigma))
        mean, se = theory.expected_error(g, m, jax.random.PRNGKey(4), 10000)
    gn = np.asarray(g)
    rng = np.random.default_rng(0)
    vals = []
    for _ in range(3000):
        b = rng.standard_normal((m, n)) @ gn
        vals.append(np.sum((gn @ (np.eye(n) - np.linalg.pinv(b) @ b)) ** 2))
    ref, ref_se = np.mean(vals), np.std(vals, ddof=1) / np.sqrt(len(vals))
    # Two independent unbiased estimates of one number: they differ by less than 5 combined
    # standard errors except with probability < 1e-6 (normal approximation, 1000+ draws).
    assert abs(float(mean) - ref) < 5 * np.hypot(float(se), ref_se), (mean, se, ref, ref_se)
    # …and the comparison has power: 5 combined standard errors are < 10% of the value, while
    # e.g. ignoring the prior (x̂ = Aᵀ(AAᵀ)⁻¹y) gives (n − m)/n·Σσᵢ², several times larger.
    assert 5 * np.hypot(float(se), ref_se) < 0.1 * ref
    assert (n - m) / n * np.sum(sigma**2) > 2 * ref


def test_expected_error_chunking_and_validation():
    with jax.enable_x64(True):
        g = theory.linear_model(jax.random.PRNGKey(0), jnp.linspace(1.0, 0.1, 6))
        key = jax.random.PRNGKey(5)
        full = theory.expected_error(g, 3, key, 40)
        chunked = theory.expected_error(g, 3, key, 40, batch_size=16)
    # Same per-trial keys; chunking only changes batching (rounding ≈1e-16).
    np.testing.assert_allclose(np.array(full), np.array(chunked), rtol=1e-10)
    with pytest.raises(ValueError, match="^m "):
        theory.expected_error(g, 7, key, 10)
    with pytest.raises(ValueError, match="^trials "):
        theory.expected_error(g, 3, key, 1)
    with pytest.raises(ValueError, match="^G "):
        theory.expected_error(jnp.ones((3, 4)), 2, key, 10)
    with pytest.raises(TypeError, match="^batch_size "):
        theory.expected_error(g, 3, key, 10, batch_size=2.5)


def test_expected_error_standard_error_is_the_sample_std_over_root_trials():
    """With two trials the sample std (ddof = 1) over √2 is exactly |e₁ − e₂|/2 (ddof = 0 would
    give |e₁ − e₂|/(2√2)); the trials recomputed with the function's own keys. float64."""
    with jax.enable_x64(True):
        g = jnp.asarray(np.random.default_rng(2).normal(size=(6, 6)))
        key = jax.random.PRNGKey(3)
        mean, stderr = theory.expected_error(g, 3, key, trials=2, batch_size=2)
        e1, e2 = (float(theory._trial_error(g, k, 3)) for k in jax.random.split(key, 2))
    assert float(mean) == pytest.approx((e1 + e2) / 2, rel=1e-12)
    assert float(stderr) == pytest.approx(abs(e1 - e2) / 2, rel=1e-12)


# ------------------------------------------------------------------------------------------
# Algorithmic regularisation: solvers from z = 0 find the minimum-norm latent


def test_lbfgs_and_gradient_descent_from_zero_reach_minimum_norm_latent():
    n, m = 8, 5
    with jax.enable_x64(True):
        g, a, z_true, y = _problem(n, m, np.linspace(1.0, 0.5, n), seed=3)
        b = a @ g
        loss = lambda z: jnp.sum((b @ z - y) ** 2)
        bn = np.asarray(b)
        z_mn = np.linalg.pinv(bn) @ np.asarray(y)
        s = np.linalg.svd(bn, compute_uv=False)
        # Sanity: z_true is a different solution, so reaching z_mn is a real property.
        assert np.linalg.norm(np.asarray(z_true) - z_mn) > 0.1 * np.linalg.norm(z_mn)

        # Gradient descent, step 1/L with L = 2 s_max². Its iterates stay in the row space of
        # B = AG (z₀ = 0 and every gradient 2Bᵀ(Bz − y) lies there), where the error contracts
        # by at most 1 − s_min²/s_max² per step; run enough steps to shrink it by 1e-13.
        rate = 1 - (s[-1] / s[0]) ** 2
        steps = int(np.ceil(np.log(1e-13) / np.log(rate)))
        assert steps < 200_000
        step = 1 / (2 * s[0] ** 2)
        z_gd = jax.lax.fori_loop(0, steps, lambda _, z: z - step * jax.grad(loss)(z),
                                 jnp.zeros(n))

        # L-BFGS from zero also stays in the row space: its direction −H_k g_k comes from the
        # two-loop recursion, i.e. a linear combination of the current gradient g_k, the steps
        # s_i = z_{i+1} − z_i and the gradient differences y_i = g_{i+1} − g_i (H_0 = γI).
        # Gradients are in row(B); by induction from z₀ = 0 so are all iterates, hence all s_i,
        # and the line search only scales the direction. The unique minimiser of ‖Bz − y‖² in
        # row(B) is the minimum-norm solution B⁺y.
        solver = jaxopt.LBFGS(fun=loss, maxiter=500, tol=1e-12)
        z_lbfgs = solver.run(jnp.zeros(n)).params
        # flowinv's own L-BFGS, which recover runs (its capped first step only scales the
        # first direction, so the argument holds for it too); not Adam, whose elementwise
        # scaling of the gradient leaves the row space
        ours = solvers.lbfgs(lambda z, _: loss(z), jnp.zeros(n), y, maxiter=500, tol=1e-12)
        assert bool(ours.converged)

        # Control: from a random start L-BFGS converges to B⁺y plus the start's null-space part.
        z_init = jax.random.normal(jax.random.PRNGKey(7), (n,), jnp.float64)
        z_other = solver.run(z_init).params

    # Tolerance: float64 with gradient tolerance 1e-12 → ‖z − z*‖ ≤ ‖g‖/(2 s_min²) ≪ 1e-8.
    for z in (z_gd, z_lbfgs, ours.z):
        np.testing.assert_allclose(np.asarray(z), z_mn, rtol=0, atol=1e-8 * np.linalg.norm(z_mn))
    null_part = np.asarray(z_init) - np.linalg.pinv(bn) @ bn @ np.asarray(z_init)
    np.testing.assert_allclose(np.asarray(z_other), z_mn + null_part, atol=1e-7)
    assert np.linalg.norm(null_part) > 0.1


# ------------------------------------------------------------------------------------------
# experiments/theorem1.py smoke test


@pytest.fixture
def theorem1(monkeypatch):
    # `experiments` is a top-level package of the repository; make it importable whichever way
    # pytest was started (the editable install may predate it).
    monkeypatch.syspath_prepend(str(pathlib.Path(__file__).resolve().parents[1]))
    from experiments import theorem1

    return theorem1


def test_experiment_run_smoke(tmp_path, theorem1):
    config = theorem1.Config(n=8, ms=(4, 7), trials=20, batch_size=8, out=str(tmp_path),
                             progress=False)
    result = theorem1.run(config)
    rows = result["rows"]
    assert len(rows) == len(theorem1.SPECTRA) * 2
    for r in rows:
        assert np.isfinite(r["mc_error"]) and r["mc_error"] > 0 and r["mc_stderr"] >= 0
        assert 0 <= r["lower"] <= r["upper"]
        assert r["violation"] == theorem1.violation(r["mc_error"], r["mc_stderr"], r["lower"],
                                                    r["upper"])
    with open(tmp_path / "results.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == theorem1.COLUMNS
        assert len(list(reader)) == len(rows)
    assert (tmp_path / "summary.csv").stat().st_size > 0
    assert (tmp_path / "theorem1.png").stat().st_size > 0
    assert len(result["summary"]) == len(theorem1.SPECTRA)


def test_violation_needs_more_than_three_standard_errors_beyond_a_bound(theorem1):
    assert theorem1.Z_VIOLATION == 3
    lower, upper = 1.0, 2.0
    assert theorem1.violation(1.5, 0.1, lower, upper) == "none"
    assert theorem1.violation(0.6, 0.1, lower, upper) == "below_lower"   # 4 s.e. below
    assert theorem1.violation(0.8, 0.1, lower, upper) == "none"          # 2 s.e. below
    assert theorem1.violation(2.4, 0.1, lower, upper) == "above_upper"   # 4 s.e. above
    assert theorem1.violation(2.2, 0.1, lower, upper) == "none"          # 2 s.e. above
    assert theorem1.violation(0.9, 0.0, lower, upper) == "below_lower"


def test_experiment_cli_rejects_bad_arguments(tmp_path, theorem1, capsys):
    for argv in (["--ms", "0,4"], ["--spectra", "nope"], ["--trials", "1"], ["--n", "4"]):
        with pytest.raises(SystemExit) as info:
            theorem1.main([*argv, "--out", str(tmp_path)])
        assert info.value.code == 2  # argparse's usage error, before any work
        err = capsys.readouterr().err
        assert "error:" in err and argv[0].lstrip("-") in err, err


def test_experiment_at_m_equal_n_recovers_exactly_and_summarises(theorem1):
    """m = n is valid ([1, n]): x̂ = x₀, an error of exactly 0, which summarise divided by."""
    result = theorem1.run(theorem1.Config(n=1, ms=(1,), spectra=("inv_i",), trials=2,
                                          out=None, progress=False))
    (row,) = result["rows"]
    assert row["mc_error"] == 0.0 and row["violation"] == "none"
    assert result["summary"][0]["max_rel_stderr"] == 0.0
