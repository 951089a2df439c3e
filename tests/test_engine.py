"""Losses, per-image solvers and ``flowinv.recover`` on tiny flows.

Tolerances: float32 solves of tiny convex problems converge to ~1e-4 relative; comparisons of a
vmapped solve against per-image solves use 1e-4 (same arithmetic, different batching order in
XLA's reductions). Loss identities are checked in float64 to 1e-9.
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from flowinv import losses, noise, operators, solvers
from flowinv.recover import _solve_batch


@pytest.fixture(scope="module")
def tiny(perturbed_tiny_glow):
    return perturbed_tiny_glow


def _quadratic(a, b):
    return lambda z, y: jnp.sum((a @ z - y) ** 2) + b * jnp.sum(z**2)


@pytest.mark.parametrize("name", solvers.SOLVERS)
def test_solver_reaches_the_minimiser_of_a_convex_quadratic(name):
    # float64: in float32 the loss itself stops resolving changes once ‖z − z*‖ ~ √eps ≈ 3e-4,
    # so only float64 can check the solvers converge to the minimiser to 1e-6.
    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.PRNGKey(0), (12, 8), jnp.float64) / 3
        y = jax.random.normal(jax.random.PRNGKey(1), (12,), jnp.float64)
        loss = _quadratic(a, 0.1)
        exact = jnp.linalg.solve(a.T @ a + 0.1 * jnp.eye(8), a.T @ y)
        kw = {"learning_rate": 0.05} if name == "adam" else {}
        r = jax.jit(lambda z0, y: solvers.get_solver(name)(loss, z0, y, maxiter=3000,
                                                          tol=1e-10, **kw))(jnp.zeros(8), y)
    # Adam has no line search and a fixed step: it hovers around the minimiser; 1e-2 shows it
    # minimises. L-BFGS must reach the minimiser to 1e-6.
    tol = 1e-2 if name == "adam" else 1e-6
    np.testing.assert_allclose(r.z, exact, rtol=tol, atol=tol)
    assert bool(r.converged) or name == "adam"
    assert not bool(r.diverged)
    hist = np.asarray(r.loss_history)[: int(r.iterations)]
    assert np.all(np.isfinite(hist)) and np.all(np.isnan(np.asarray(r.loss_history)[
        int(r.iterations):]))


def _rosenbrock(z, y):
    """Rosenbrock's valley shifted by ``y``: non-convex, so L-BFGS backtracks on it."""
    v = z - y
    return jnp.sum(100.0 * (v[1:] - v[:-1] ** 2) ** 2 + (1.0 - v[:-1]) ** 2)


LBFGS_SOLVERS = ("lbfgs", "jaxopt-lbfgs")
ROSENBROCK_START = (-1.2, 1.0, -0.5, 0.3, 2.0, -1.0)


def test_lbfgs_takes_the_iterates_of_jaxopt_lbfgs():
    """``lbfgs`` (one evaluation per loop pass) with ``first_step=None`` is jaxopt's L-BFGS
    with the same Armijo backtracking and pair skipping, rearranged: every iterate must agree.

    float64, so rounding (≈1e-16 per operation) stays far below 1e-9 over 25 iterations of a
    problem on which both backtrack; a different trial step, acceptance rule or memory order
    would change the loss history at O(1)."""
    with jax.enable_x64(True):
        z0 = jnp.asarray(ROSENBROCK_START, jnp.float64)
        run = lambda name, **kw: jax.jit(lambda z: solvers.get_solver(name)(
            _rosenbrock, z, 0.0, maxiter=25, tol=0.0, history_size=3, **kw))(z0)
        ours, ref = run("lbfgs", first_step=None), run("jaxopt-lbfgs")
    assert int(ours.iterations) == int(ref.iterations) == 25
    np.testing.assert_allclose(ours.loss_history, ref.loss_history, rtol=1e-9)
    np.testing.assert_allclose(ours.znorm_history, ref.znorm_history, rtol=1e-9)
    np.testing.assert_allclose(ours.z, ref.z, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", LBFGS_SOLVERS)
def test_vmapped_solver_equals_per_image_solves(name):
    """Each image keeps its own L-BFGS state: batching must not change any result.

    On shifted Rosenbrock valleys the images backtrack at different iterations, so in ``lbfgs``
    they are in different phases of the loop at the same pass. float64, so that
    reduction-order rounding (≈1e-16) stays far below the 1e-9 tolerance; a shared curvature
    memory or step would change the iterates at O(1).
    """
    with jax.enable_x64(True):
        ys = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (5, 6), jnp.float64)
        z0 = jnp.asarray(ROSENBROCK_START, jnp.float64)
        solve = lambda z, y: solvers.get_solver(name)(_rosenbrock, z, y, maxiter=15, tol=0.0)
        batched = jax.jit(jax.vmap(solve))(jnp.tile(z0, (5, 1)), ys)
        singles = [jax.jit(solve)(z0, ys[i]) for i in range(5)]
    for i, single in enumerate(singles):
        np.testing.assert_allclose(batched.z[i], single.z, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(batched.loss_history[i], single.loss_history, rtol=1e-9)
        assert int(batched.iterations[i]) == int(single.iterations)


@pytest.mark.parametrize("name", LBFGS_SOLVERS)
@pytest.mark.parametrize("coupling,stored", [(1e5, False), (1e3, True)])
def test_lbfgs_skips_a_curvature_pair_nearly_orthogonal_to_its_step(name, coupling, stored):
    """``f(z) = ½δz₁² + k·z₁z₂ + ½z₂² + z₁`` with δ = 10⁻⁴, from ``z0 = 0`` with ``H₀ = I``:
    the first step is ``s = (−1, 0)`` (accepted at t = 1) and ``y = (−δ, −k)``, so
    ``sᵀy/(‖s‖‖y‖) ≈ δ/k``. At k = 10⁵ (10⁻⁹) the pair is below the 10⁻⁸ threshold and is not
    stored: the second step is the steepest-descent one, ``z1 − ∇f(z1)``, which Armijo
    accepts at t = 1. At k = 10³ (10⁻⁷) the pair is stored and the second iterate is another
    point. float64, so the hand computation holds to rounding (1e-12 relative)."""
    delta = 1e-4
    loss = lambda z, y: (0.5 * delta * z[0] ** 2 + coupling * z[0] * z[1] + 0.5 * z[1] ** 2
                         + z[0] + 0.0 * y)
    z1 = np.array([-1.0, 0.0])
    g1 = np.array([delta * z1[0] + coupling * z1[1] + 1.0, coupling * z1[0] + z1[1]])
    steepest = z1 - g1
    with jax.enable_x64(True):
        kwargs = {"first_step": None} if name == "lbfgs" else {}
        r = jax.jit(lambda z0: solvers.get_solver(name)(
            loss, z0, 0.0, maxiter=2, tol=0.0, **kwargs))(jnp.zeros(2, jnp.float64))
        f = lambda z: float(loss(jnp.asarray(z), 0.0))
        assert int(r.iterations) == 2
        np.testing.assert_allclose(r.loss_history[0], f(z1), rtol=1e-12)
        if stored:
            assert abs(float(r.loss_history[1]) - f(steepest)) > 1e-3 * abs(f(steepest))
        else:
            np.testing.assert_allclose(r.loss_history[1], f(steepest), rtol=1e-12)
            np.testing.assert_allclose(r.z, steepest, rtol=1e-12)


def test_adam_returns_its_best_iterate_not_its_last():
    """Adam is not monotone: at learning rate 1 on ``Σ(z − y)²`` from ``z0 = (0.3, −0.2)``
    every step overshoots (losses 1.13, 0.14, 0.19, 0.58, 0.36 against f(z0) = 0.13), so the
    best finite iterate is the start, returned exactly (a stored copy, nothing recomputed)."""
    f = lambda z, y: jnp.sum((z - y) ** 2)
    z0 = jnp.array([0.3, -0.2])
    r = jax.jit(lambda z: solvers.adam(f, z, 0.0, maxiter=5, tol=0.0, learning_rate=1.0))(z0)
    assert float(jnp.nanmin(r.loss_history)) > float(f(z0, 0.0))  # the premise: no step helps
    assert float(r.loss) == float(f(z0, 0.0))
    np.testing.assert_array_equal(r.z, z0)


def test_lbfgs_forces_the_step_at_the_max_trials_th_trial():
    """With ``max_trials=1`` the only trial, ``t = 1`` along ``−∇f = −2z`` from ``(1, 1)``,
    lands on ``(−1, −1)``: no decrease, so Armijo rejects it and it is forced at once (jaxopt's
    rule); the loss is unchanged, so the solve is stalled, not converged. Exact: t is 1."""
    f = lambda z, y: jnp.sum(z**2)
    r = jax.jit(lambda z: solvers.lbfgs(f, z, 0.0, maxiter=1, tol=0.0, max_trials=1,
                                        first_step=None))(jnp.ones(2))
    assert float(r.loss_history[0]) == 2.0 and r.znorm_history[0] == np.float32(np.sqrt(2.0))
    np.testing.assert_array_equal(r.z, [1.0, 1.0])  # the best iterate: f(−z0) = f(z0)
    assert bool(r.stalled) and not bool(r.converged)


@pytest.mark.parametrize("name", LBFGS_SOLVERS)
def test_lbfgs_accepts_the_last_trial_and_stops_when_no_step_is_finite(name):
    """Every trial point ``t > 0`` of the first line search is NaN: after ``max_trials``
    halvings the solver takes the last one (as jaxopt does), flags the divergence and returns
    the initial point, the best finite iterate."""
    loss = lambda z, y: jnp.where(z[0] > 0.0, jnp.nan, -z[0]) + 0.0 * y
    r = jax.jit(lambda z0: solvers.get_solver(name)(loss, z0, 0.0, maxiter=50))(jnp.zeros(2))
    assert bool(r.diverged) and not bool(r.converged)
    assert int(r.iterations) == 1
    np.testing.assert_array_equal(r.z, np.zeros(2))
    assert float(r.loss) == 0.0
    assert np.isnan(float(r.loss_history[0])) and np.all(np.isnan(r.loss_history[1:]))


def test_lbfgs_first_step_bounds_the_first_trial_and_escapes_saturation():
    """``f(z) = 10¹²‖tanh(z) − y‖²`` has ``‖∇f(0)‖ ≈ 10¹²``. From ``t = 1`` every one of 30
    halvings still saturates ``tanh`` (a step of norm ≥ 10³), Armijo rejects them all and the
    forced step lands where ``∇f ≈ 0`` without lowering the loss: the solve stops there, far
    from the minimum, and must not report convergence (the gradient test alone would). With
    ``first_step = 1`` (the default) the first accepted iterate has norm exactly 1 (here the
    first trial passes Armijo) and the solve reaches the minimum ``z = artanh(y)``."""
    y = jnp.array([0.5, -0.3, 0.2])
    loss = lambda z, y: 1e12 * jnp.sum((jnp.tanh(z) - y) ** 2)
    solve = lambda **kw: jax.jit(lambda z0: solvers.lbfgs(loss, z0, y, maxiter=50, **kw))(
        jnp.zeros(3))
    unit, scaled = solve(first_step=None), solve()
    loss0 = float(loss(jnp.zeros(3), y))
    assert float(unit.loss) > 0.1 * loss0
    assert bool(unit.stalled) and not bool(unit.converged) and int(unit.iterations) < 50
    assert bool(scaled.converged) and not bool(scaled.stalled)
    assert float(scaled.znorm_history[0]) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(scaled.z, np.arctanh(np.asarray(y)), atol=1e-4)
    with pytest.raises(ValueError, match="first_step"):
        solvers.lbfgs(loss, jnp.zeros(3), y, first_step=0.0)


def test_lbfgs_first_step_survives_a_gradient_whose_squared_norm_overflows():
    """``f(z) = 10²⁰‖z − y‖²`` in float32 from ``z0 = 0``: ``‖∇f(0)‖ = 1.6·10²¹``, so
    ``Σ gᵢ²`` overflows to inf. The first step's scale ``1/‖g‖`` then read 0: the direction
    was 0, its "step" was accepted with an unchanged loss, and the solve reported
    ``converged`` after one iteration at ``z0`` (a numerics review). Now the first step's norm
    is taken scaled where the plain one overflows: the solve reaches ``y``. (A pair whose
    ``‖y‖`` overflows is skipped by the curvature test, whose norms overflow too.)"""
    y = jnp.ones(64)
    result = jax.jit(lambda z0: solvers.lbfgs(lambda z, y: 1e20 * jnp.sum((z - y) ** 2), z0, y,
                                              maxiter=50))(jnp.zeros(64))
    assert float(result.znorm_history[0]) == pytest.approx(1.0, rel=1e-6)
    assert bool(result.converged) and not bool(result.stalled)
    np.testing.assert_allclose(result.z, y, atol=1e-3)


def test_lbfgs_an_unchanged_loss_along_a_zero_direction_is_not_convergence(monkeypatch):
    """The second guard against the overflow above: were the first step's scale still to read
    0 (here forced, by making the scaled norm infinite as well), the direction is 0 and every
    "step" leaves the loss unchanged. That is no evidence of a minimum: the solve must not
    report ``converged`` at ``z0`` (it did before the guard), but run out of iterations,
    unconverged, where a caller sees it."""
    monkeypatch.setattr(solvers, "_scaled_norm", lambda v: jnp.inf)
    y = jnp.ones(64)
    result = jax.jit(lambda z0: solvers.lbfgs(lambda z, y: 1e20 * jnp.sum((z - y) ** 2), z0, y,
                                              maxiter=5))(jnp.zeros(64))
    assert float(result.znorm_history[0]) == 0.0  # the first step went nowhere
    assert not bool(result.converged)
    assert int(result.iterations) == 5


def _record_points(seen: list):
    """``‖A·tanh(z) − b‖²`` for ``y = (A, b)``, appending every evaluated ``(z, loss, ∇loss)``
    to ``seen`` in order. The gradient is a custom VJP that records what it returns, so it is
    the solver's own float32 gradient, which a replay cannot recompute: at a minimum it is
    mostly rounding, and another program (or JAX version) rounds it otherwise."""
    def value(z, a, b):
        return jnp.sum((a @ jnp.tanh(z) - b) ** 2)

    @jax.custom_vjp
    def loss(z, a, b):
        return value(z, a, b)

    def forward(z, a, b):
        v = value(z, a, b)
        return v, (z, a, b, v)

    def backward(res, cotangent):
        z, a, b, v = res
        g = cotangent * jax.grad(value)(z, a, b)
        jax.debug.callback(
            lambda p, f, d: seen.append((np.asarray(p), float(f), np.asarray(d))), z, v, g,
            ordered=True)
        return g, jnp.zeros_like(a), jnp.zeros_like(b)

    loss.defvjp(forward, backward)
    return lambda z, y: loss(z, *y)


@pytest.mark.parametrize("shape, noise", [((5, 20), 0.0), ((20, 5), 0.1)],
                         ids=["exact-fit", "noise-floor"])
def test_lbfgs_stops_at_the_first_rejected_trial_below_the_float_resolution(shape, noise):
    """Least squares through ``tanh`` in float32 with ``tol = 0``, so neither the gradient nor
    the loss-change stop can end a solve before rounding does: 5 equations in 20 unknowns,
    noiseless (the loss falls to its rounding floor near 0), or 20 in 5 with noise (the loss
    settles at the noise's energy, where its rounding is ``ε|f|``). There Armijo compares
    noise; each solve must stop, converged, at the FIRST rejected trial ``p = z + t·d`` below
    the float resolution, of the iterate (``‖p − z‖ ≤ ε‖z‖``) or of the loss (the predicted
    decrease ``|t·∇f(z)ᵀd| ≤ ε|f(z)|``), ``ε`` float32's machine epsilon, and not at a
    rejected trial above both (before these stops a solve went on until a loss happened to
    repeat exactly). Every evaluated point is recorded, so the test replays the final line
    search. For the exact fits it checks the stop fell at the first trial below the iterate's
    resolution (whether one above it came first depends on rounding: measured, 3 of 16). For
    the noisy ones, that the stop came on the loss's test, far above the iterate's resolution,
    at a loss within 1e-4 of the float64 minimum nearby (measured: ≤ 2e-6 but for one solve
    with two latents in tanh's flat tails, at 6.6 and 7.7, which float32 cannot resolve:
    1.2e-5, the same as with the iterate's stop alone, which came within 2e-9 of this stop
    on the 15 others). The replay uses the solver's own float32 gradients
    (:func:`_record_points`): a float64 gradient could not re-decide the loss's test, since
    at a minimum the float32 one is mostly rounding (a float64 replay read up to 4.8 ε|f| with
    jax 0.10 and 30 ε|f| with jax 0.8.1, the floor in setup.cfg). Where the float32 residual
    rounds to exactly 0 (with jax 0.8.1, one exact fit), the gradient test ends the solve on
    that accepted step instead."""
    from scipy.optimize import minimize

    seen = []
    solve = jax.jit(lambda y: solvers.lbfgs(_record_points(seen), jnp.zeros(shape[1]), y,
                                            maxiter=500, tol=0.0))
    eps = float(np.finfo(np.float32).eps)
    longer = accepted_stops = 0
    for seed in range(16):
        a = jax.random.normal(jax.random.PRNGKey(seed), shape) / np.sqrt(shape[0])
        b = a @ jnp.tanh(jax.random.normal(jax.random.PRNGKey(100 + seed), (shape[1],)))
        b = b + noise * jax.random.normal(jax.random.PRNGKey(200 + seed), (shape[0],))
        seen.clear()
        r = jax.block_until_ready(solve((a, b)))
        k = int(r.iterations)
        assert bool(r.converged) and not bool(r.stalled) and not bool(r.diverged), seed
        assert 0 < k < 500, seed
        f_end, f_last = seen[-1][1], float(r.loss_history[k - 1])
        if f_end == 0.0:  # an exact fit: a float32 gradient of exactly 0 (the gradient test)
            assert noise == 0.0 and f_last == 0.0 and not np.any(seen[-1][2]), seed
            accepted_stops += 1
            continue
        if f_end == f_last:
            # A final trial that repeats the iterate's loss exactly was accepted where Armijo's
            # required decrease c1·t·gᵀd is below the loss's rounding (a step that changes
            # nothing passes it; the loss-change test, at tol = 0, then stops the solve), and
            # rejected where it is far above (a trial within rounding of z). Replayed with the
            # iterate's recorded gradient: below one ulp of f(z), or ≥ 100 ulps in these solves.
            z, _, g = seen[max(i for i, (_, v, _) in enumerate(seen[:-1]) if v == f_end)]
            required = 1e-4 * abs(g.astype(np.float64) @ (seen[-1][0] - z).astype(np.float64))
            if required <= np.spacing(np.float32(f_end)):
                assert k >= 2 and float(r.loss_history[k - 2]) == f_end, seed
                accepted_stops += 1
                continue
        # The current iterate: the last point before the final (rejected) trial with the last
        # accepted loss (a trial within rounding of z may repeat its loss exactly); the
        # trials after it, z + t·d for t = 1, 1/2, …, must shrink.
        last = [i for i, (_, v, _) in enumerate(seen[:-1]) if v == f_last]
        z, fz, g = (v.astype(np.float64) if isinstance(v, np.ndarray) else v
                    for v in seen[last[-1]])
        a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
        points = [p.astype(np.float64) for p, _, _ in seen[last[-1] + 1:]]
        trials = [p - z for p in points]
        steps = np.array([np.linalg.norm(s) for s in trials]) / (eps * np.linalg.norm(z))
        decreases = np.array([abs(g @ s) for s in trials]) / (eps * abs(fz))
        # The solver tested |t·fl(gᵀd)| ≤ ε|f| at p = fl(z + t·d); this replay reads gᵀ(p − z)
        # in float64, which differs from it by at most the rounding of p, ε/2·‖g‖‖p‖, and of
        # the float32 dot product, n·ε/2·Σ|gᵢsᵢ| (in units of ε|f|: `slack`).
        slack = np.array([(np.linalg.norm(g) * np.linalg.norm(p) + len(g) * np.abs(g) @ np.abs(s))
                          / (2 * abs(fz)) for p, s in zip(points, trials, strict=True)])
        assert np.all(steps[1:] < steps[:-1]), (seed, steps)
        if noise == 0.0:  # the iterate's resolution ends it, at the first trial below it
            assert steps[-1] <= 1.0 and np.all(steps[:-1] > 1.0), (seed, steps)
            assert float(r.loss) < 1e-9 * seen[0][1], seed
            longer += len(trials) > 1
        else:  # the loss's resolution ends it, far above the iterate's, at the minimum
            assert np.all(steps > 1.0), (seed, steps)
            assert decreases[-1] <= 1.0 + slack[-1], (seed, decreases, slack)
            assert np.all(decreases[:-1] > 1.0 - slack[:-1]), (seed, decreases, slack)
            f64 = lambda v, a64=a64, b64=b64: np.sum((a64 @ np.tanh(v) - b64) ** 2)
            polished = minimize(f64, z, method="BFGS", options={"gtol": 1e-12})
            found = f64(np.asarray(r.z, np.float64))
            assert found <= polished.fun * (1.0 + 1e-4), (seed, found, polished.fun)
            longer += 1
    assert longer > 0  # the case "not before" is about


def _nan_outside(box_loss, lower, upper):
    """``box_loss`` inside ``[lower, upper]``, NaN outside: a solve that ever evaluates a point
    outside the box shows as diverged."""
    lo, hi = (-np.inf if lower is None else lower), (np.inf if upper is None else upper)
    return lambda z, y: jnp.where(jnp.all((z >= lo) & (z <= hi)), box_loss(z, y), jnp.nan)


@pytest.mark.parametrize("lower, upper", [(0.0, 1.0), (0.0, None), (None, 0.5)])
def test_lbfgs_in_a_box_reaches_the_constrained_minimiser(lower, upper):
    """Projected L-BFGS on ridge least squares in a box, against SciPy's L-BFGS-B: the same
    constrained minimiser to 1e-6 in float64 (as the unconstrained quadratic test), with bounds
    active at the solution, and no point outside the box ever evaluated (the loss is NaN
    there). ``y`` is scaled by 3 so the unconstrained minimiser leaves the box."""
    from scipy.optimize import minimize

    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.PRNGKey(0), (12, 8), jnp.float64) / 3
        y = 3.0 * jax.random.normal(jax.random.PRNGKey(1), (12,), jnp.float64)
        quadratic = _quadratic(a, 0.1)
        z0 = jnp.full(8, 0.25)
        r = jax.jit(lambda z0, y: solvers.lbfgs(
            _nan_outside(quadratic, lower, upper), z0, y, maxiter=500, tol=1e-10,
            lower=lower, upper=upper))(z0, y)
        ref = minimize(lambda z: float(quadratic(z, y)), np.asarray(z0),
                       jac=lambda z: np.asarray(jax.grad(quadratic)(z, y)), method="L-BFGS-B",
                       bounds=[(lower, upper)] * 8,
                       options={"ftol": 1e-15, "gtol": 1e-12, "maxiter": 1000})
    assert ref.success
    active = np.isclose(ref.x, -np.inf if lower is None else lower) | np.isclose(
        ref.x, np.inf if upper is None else upper)
    assert active.any()  # the case this test is about
    assert bool(r.converged) and not bool(r.diverged) and not bool(r.stalled)
    np.testing.assert_allclose(r.z, ref.x, rtol=1e-6, atol=1e-6)


def test_lbfgs_in_a_box_starts_from_the_projection_of_z0():
    """A start outside the box is projected first: the first evaluated point is inside, so
    the NaN outside is never seen. Nonnegative least squares, against SciPy's NNLS."""
    from scipy.optimize import nnls

    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.PRNGKey(2), (10, 6), jnp.float64)
        y = jax.random.normal(jax.random.PRNGKey(3), (10,), jnp.float64)
        loss = lambda z, y: jnp.sum((a @ z - y) ** 2)
        r = jax.jit(lambda z0: solvers.lbfgs(_nan_outside(loss, 0.0, None), z0, y,
                                             maxiter=500, tol=1e-10, lower=0.0))(-jnp.ones(6))
    exact, _ = nnls(np.asarray(a), np.asarray(y))
    assert np.sum(exact == 0) >= 1
    assert np.isfinite(float(r.loss_history[0])) and not bool(r.diverged)
    np.testing.assert_allclose(r.z, exact, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="lower must be <= upper"):
        solvers.lbfgs(loss, jnp.zeros(6), y, lower=1.0, upper=0.0)


def test_map_in_x_within_the_unit_box(tiny):
    """``space="x"`` with ``solver_kwargs`` bounds: the recovered image is the variable
    itself, inside ``[0, 1]`` although a fifth of ``y`` lies outside, and its reported loss
    is the MAP loss of the returned image."""
    flow, params, x = tiny
    rng = np.random.default_rng(0)
    y = np.asarray(x[:3]) + 0.3 * rng.standard_normal(x[:3].shape).astype(np.float32)
    assert np.mean((y < 0) | (y > 1)) > 0.1
    op, nz = operators.identity(flow.image_shape), noise.gaussian(0.3)
    r = flowinv.recover((flow, params), y, operator=op, method="map", beta=0.5, noise=nz,
                        space="x", init="inverse", x0=np.clip(y, 0.0, 1.0), maxiter=40,
                        solver_kwargs={"lower": 0.0, "upper": 1.0})
    assert not np.any(np.asarray(r.diverged))
    assert np.all((np.asarray(r.x) >= 0) & (np.asarray(r.x) <= 1))
    assert np.any(np.asarray(r.x) == 0) and np.any(np.asarray(r.x) == 1)
    loss = losses.map_loss(flow, params, op, nz, beta=0.5, space="x")
    np.testing.assert_allclose(jax.vmap(loss)(r.x.reshape(3, -1), y), r.loss, rtol=1e-5)


def test_solver_flags_divergence_and_keeps_best_finite_iterate():
    # Finite while z < 3 and decreasing towards it, NaN beyond: the solver walks into NaN.
    loss = lambda z, y: jnp.where(z[0] < 3.0, -z[0] + 0.0 * y, jnp.nan)
    r = jax.jit(lambda z0: solvers.adam(loss, z0, 0.0, maxiter=500, learning_rate=0.5))(
        jnp.zeros(1))
    assert bool(r.diverged)
    assert np.isfinite(float(r.loss)) and float(r.z[0]) < 3.0


def test_map_loss_in_z_and_x_agree(tiny):
    """log p_G(G(z)) from the forward log-det equals log_prob(G(z)) from the inverse pass."""
    flow, params, x = tiny
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        op = operators.identity(flow.image_shape)
        nz = noise.gaussian(0.1)
        z = 0.3 * jax.random.normal(jax.random.PRNGKey(3), (flow.dim,), jnp.float64)
        y = x[0].astype(jnp.float64)
        lz = losses.map_loss(flow, p64, op, nz, beta=0.7, space="z")(z, y)
        xg = flow.forward(p64, z)[0]
        lx = losses.map_loss(flow, p64, op, nz, beta=0.7, space="x")(xg.ravel(), y)
        np.testing.assert_allclose(lz, lx, rtol=1e-9)


def test_map_in_x_with_a_logit_flow_follows_an_observation_out_of_the_box():
    """The image variable of the ``space="x"`` MAP may leave ``[0, 1]``, where a logit flow's
    density is NaN; the prior is read at ``into_box(x)``, so the solve stays finite and the
    recovery lies in the box. Dark images under σ = 0.2 noise: a third of ``y`` is below 0,
    and the logit's density, rising towards the edges, pushes dark pixels out (read at ``x``
    itself, every solve here diverged within a few iterations)."""
    flow = flowinv.glow((8, 8, 1), levels=2, steps=2, width=8, preprocess="logit")
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (4, 8, 8, 1)) ** 3
    params = jax.jit(flow.init)(jax.random.key(0), x)
    y = (x + 0.2 * rng.standard_normal(x.shape)).astype(np.float32)
    assert np.mean(y < 0) > 0.2
    r = flowinv.recover((flow, params), y, operator=operators.identity(flow.image_shape),
                        method="map", beta=1.0, noise=noise.gaussian(0.2), space="x",
                        init="inverse", x0=np.clip(y, 0.0, 1.0), maxiter=30)
    assert not np.any(np.asarray(r.diverged)), np.asarray(r.iterations)
    assert np.all(np.isfinite(np.asarray(r.loss))) and np.all(np.isfinite(np.asarray(r.z)))
    assert np.all((np.asarray(r.x) >= 0) & (np.asarray(r.x) <= 1))
    assert np.all(np.asarray(r.loss) < np.asarray(r.loss_history)[:, 0])
    # the latent is that of the returned image
    np.testing.assert_allclose(jax.vmap(lambda z: flow.forward(params, z)[0])(r.z), r.x,
                               atol=1e-4)


def test_asim_loss_matches_its_formula(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    z = jax.random.normal(jax.random.PRNGKey(4), (flow.dim,))
    g = flow.forward(params, z)[0]
    for penalty, reg in (("sq", jnp.sum(z**2)), ("norm", jnp.linalg.norm(z))):
        val = losses.asim_loss(losses.flow_generator(flow, params), op, gamma=0.3,
                               penalty=penalty)(z, x[0])
        np.testing.assert_allclose(val, jnp.sum((g - x[0]) ** 2) + 0.3 * reg, rtol=1e-5)


def test_bora_and_mle_losses_match_their_formulas(tiny):
    """CSGM's ``‖f(G(z)) − y‖² + λ‖z‖²`` and the MLE ``−log p_Δ(y − f(G(z)))``, the latter under
    a noise with a positive mean, whose density tells ``y − f(G(z))`` from its negative."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    gen = losses.flow_generator(flow, params)
    z = jax.random.normal(jax.random.PRNGKey(4), (flow.dim,))
    g = gen(z)
    np.testing.assert_allclose(losses.bora_loss(gen, op, lam=0.3)(z, x[0]),
                               jnp.sum((g - x[0]) ** 2) + 0.3 * jnp.sum(z**2), rtol=1e-5)
    sd, mu = 0.2, 0.1
    nz = noise.diagonal_gaussian(jnp.full(flow.image_shape, sd), mean=mu)
    residual = x[0] - g
    by_hand = jnp.sum(0.5 * ((residual - mu) / sd) ** 2 + np.log(sd) + 0.5 * np.log(2 * np.pi))
    np.testing.assert_allclose(losses.mle_loss(gen, op, nz)(z, x[0]), by_hand, rtol=1e-5)


def test_map_loss_matches_its_formula(tiny):
    """Whang et al.'s ``−log p_Δ(y − f(G(z))) − β log p_G(G(z))`` at β = 0.7 (a dropped or
    squared β would show), by hand: the noise's Gaussian density with a positive mean, and
    ``log p_G(G(z)) = log N(z; 0, I) − log|det ∂G/∂z|`` from ``flow.forward``; in x-space the
    prior is read by the inverse pass, ``log N(G⁻¹(x); 0, I) + log|det ∂G⁻¹/∂x|``. float32,
    sums of O(10³) terms: 1e-5 relative, as for the other losses."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(4), (flow.dim,))
    sd, mu, beta = 0.2, 0.1, 0.7
    nz = noise.diagonal_gaussian(jnp.full(flow.image_shape, sd), mean=mu)
    nll = lambda r: jnp.sum(0.5 * ((r - mu) / sd) ** 2 + np.log(sd) + 0.5 * np.log(2 * np.pi))
    log_normal = lambda u: -0.5 * jnp.sum(u**2) - 0.5 * u.size * np.log(2 * np.pi)
    g, logdet_forward = flow.forward(params, z)
    by_hand = nll(x[0] - g) - beta * (log_normal(z) - logdet_forward)
    np.testing.assert_allclose(losses.map_loss(flow, params, op, nz, beta=beta)(z, x[0]),
                               by_hand, rtol=1e-5)
    u, logdet_inverse = flow.inverse(params, x[1])
    by_hand_x = nll(x[0] - x[1]) - beta * (log_normal(u) + logdet_inverse)
    np.testing.assert_allclose(
        losses.map_loss(flow, params, op, nz, beta=beta, space="x")(x[1].ravel(), x[0]),
        by_hand_x, rtol=1e-5)


@pytest.mark.parametrize("penalty", ["sq", "norm"])
def test_latent_map_loss_matches_its_formula(tiny, penalty):
    """``−log p_Δ(y − f(G(z))) + β‖z‖²`` (or ``β‖z‖``) at β = 0.7, by hand, under a noise with
    a positive mean; MAP's loss at β = 1 exceeds it at β = ½ (``sq``) by exactly the log-det
    ``log|det ∂G/∂z|`` plus the Gaussian's constant."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    gen = losses.flow_generator(flow, params)
    z = 0.5 * jax.random.normal(jax.random.PRNGKey(4), (flow.dim,))
    sd, mu, beta = 0.2, 0.1, 0.7
    nz = noise.diagonal_gaussian(jnp.full(flow.image_shape, sd), mean=mu)
    g, logdet_forward = flow.forward(params, z)
    nll = jnp.sum(0.5 * ((x[0] - g - mu) / sd) ** 2 + np.log(sd) + 0.5 * np.log(2 * np.pi))
    reg = jnp.sum(z**2) if penalty == "sq" else jnp.linalg.norm(z)
    np.testing.assert_allclose(
        losses.latent_map_loss(gen, op, nz, beta=beta, penalty=penalty)(z, x[0]),
        nll + beta * reg, rtol=1e-5)
    if penalty == "sq":
        half = losses.latent_map_loss(gen, op, nz, beta=0.5)(z, x[0])
        whang = losses.map_loss(flow, params, op, nz, beta=1.0)(z, x[0])
        np.testing.assert_allclose(whang - half,
                                   logdet_forward + 0.5 * flow.dim * np.log(2 * np.pi),
                                   rtol=1e-4)
    with pytest.raises(ValueError, match="penalty"):
        losses.latent_map_loss(gen, op, nz, beta=beta, penalty="l1")


def test_recover_latent_map_minimises_its_loss(tiny):
    """``recover(method="latent-map")`` solves the loss above (its reported loss is that loss
    at the returned latent, and lower than at the start), takes ``beta`` and ``penalty``, and
    needs a noise model."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    nz = noise.gaussian(0.1)
    gen = losses.flow_generator(flow, params)
    for penalty, beta in (("sq", 0.5), ("norm", 3.0)):
        r = flowinv.recover((flow, params), x[:2], operator=op, noise=nz, method="latent-map",
                            beta=beta, penalty=penalty, maxiter=30)
        loss = losses.latent_map_loss(gen, op, nz, beta=beta, penalty=penalty)
        for i in range(2):
            np.testing.assert_allclose(r.loss[i], loss(r.z[i], x[i]), rtol=1e-5)
            assert float(r.loss[i]) < float(loss(jnp.zeros(flow.dim), x[i]))
    with pytest.raises(ValueError, match="noise model"):
        flowinv.recover((flow, params), x[0], operator=op, method="latent-map")


def test_recover_single_and_batch_shapes(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    r1 = flowinv.recover((flow, params), x[0], operator=op, gamma=0.1, maxiter=5)
    assert r1.x.shape == flow.image_shape and r1.z.shape == (flow.dim,)
    assert r1.loss_history.shape == (5,)
    rb = flowinv.recover((flow, params), x[:3], operator=op, gamma=0.1, maxiter=5)
    assert rb.x.shape == (3, *flow.image_shape) and rb.converged.shape == (3,)
    np.testing.assert_allclose(rb.x[0], r1.x, rtol=1e-4, atol=1e-5)


def test_recover_denoises_in_the_range_of_the_prior(tiny):
    """An image G(z*) with small noise: recovery gets closer to it than the noisy input."""
    flow, params, _ = tiny
    z_true = 0.5 * jax.random.normal(jax.random.PRNGKey(5), (4, flow.dim))
    x_true = jax.vmap(lambda z: flow.forward(params, z)[0])(z_true)
    y = x_true + 0.1 * jax.random.normal(jax.random.PRNGKey(6), x_true.shape)
    r = flowinv.recover((flow, params), y, operator=operators.identity(flow.image_shape),
                        gamma=0.02, maxiter=200)
    err_rec = jnp.sum((r.x - x_true) ** 2, axis=(1, 2, 3))
    err_noisy = jnp.sum((y - x_true) ** 2, axis=(1, 2, 3))
    assert bool(jnp.all(err_rec < err_noisy))


def test_recover_does_not_recompile_for_new_values(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    flowinv.recover((flow, params), x[:2], operator=op, gamma=0.1, maxiter=3)
    before = _solve_batch._cache_size()
    flowinv.recover((flow, params), x[2:4] * 0.9, operator=op, gamma=0.5, maxiter=3)
    assert _solve_batch._cache_size() == before


def test_per_image_weights_equal_separate_solves(tiny):
    """γ (and β) given per image solve each image with its own weight, in one batch."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    gammas = jnp.array([0.0, 0.3, 3.0])
    rb = flowinv.recover((flow, params), x[:3], operator=op, gamma=gammas, maxiter=6)
    for i, g in enumerate(gammas):
        ri = flowinv.recover((flow, params), x[i], operator=op, gamma=float(g), maxiter=6)
        np.testing.assert_allclose(rb.z[i], ri.z, rtol=1e-4, atol=1e-5)
    nz = flowinv.noise.gaussian(0.1)
    betas = jnp.array([0.0, 1.0])
    rm = flowinv.recover((flow, params), x[:2], operator=op, method="map", noise=nz,
                         beta=betas, maxiter=4)
    for i, b in enumerate(betas):
        ri = flowinv.recover((flow, params), x[i], operator=op, method="map", noise=nz,
                             beta=float(b), maxiter=4)
        np.testing.assert_allclose(rm.z[i], ri.z, rtol=1e-4, atol=1e-5)
    # the weights matter: swapped, the batch's first image differs from its β = 0 solve
    swapped = flowinv.recover((flow, params), x[:2], operator=op, method="map", noise=nz,
                              beta=betas[::-1], maxiter=4)
    assert float(jnp.max(jnp.abs(swapped.z[0] - rm.z[0]))) > 1e-3


def test_chunked_batch_equals_whole_batch(tiny, capsys):
    """Chunks of 2 (the last one padded) give the whole-batch result with one compile; with
    ``progress=True`` a bar counts the iterations of all chunks and the result is the same."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    gammas = jnp.array([0.0, 0.1, 0.3, 1.0, 3.0])
    whole = flowinv.recover((flow, params), x[:5], operator=op, gamma=gammas, maxiter=5)
    before = _solve_batch._cache_size()
    chunked = flowinv.recover((flow, params), x[:5], operator=op, gamma=gammas, maxiter=5,
                              chunk_size=2)
    assert _solve_batch._cache_size() == before + 1
    assert chunked.x.shape == whole.x.shape
    np.testing.assert_allclose(chunked.z, whole.z, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(chunked.iterations, whole.iterations)
    capsys.readouterr()
    shown = flowinv.recover((flow, params), x[:5], operator=op, gamma=gammas, maxiter=5,
                            chunk_size=2, progress=True)
    np.testing.assert_allclose(shown.z, chunked.z, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(shown.iterations, chunked.iterations)
    err = capsys.readouterr().err
    assert "recover" in err and "15/15" in err and "done" in err  # 3 chunks × maxiter 5
    # A bar over the chunks runs the plain program: no new compilation, the same numbers.
    before = _solve_batch._cache_size()
    by_chunk = flowinv.recover((flow, params), x[:5], operator=op, gamma=gammas, maxiter=5,
                               chunk_size=2, progress="chunks")
    assert _solve_batch._cache_size() == before
    np.testing.assert_array_equal(by_chunk.z, chunked.z)
    err = capsys.readouterr().err
    assert "15/15" in err and "chunk 3/3 done" in err and "compiling" not in err


@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_progress_is_reported_while_the_batch_solves(tiny, monkeypatch, solver):
    """``progress=True``: the compiled solve reports to the host on every loop pass, once for
    the whole batch (not once per image), the furthest image's iteration rising to the last
    one; the results are those of ``progress=False``. ``tol=0`` on 3 images with different
    weights: every image runs all ``maxiter`` iterations, so the reports must reach it."""
    from flowinv import _progress

    flow, params, x = tiny
    reports, real = [], _progress.IterationBar.report
    monkeypatch.setattr(_progress.IterationBar, "report", lambda self, *a: (
        reports.append(a) or real(self, *a)))
    kw = dict(operator=operators.identity(flow.image_shape), gamma=jnp.array([0.0, 0.1, 1.0]),
              maxiter=6, tol=0.0, solver=solver)
    plain = flowinv.recover((flow, params), x[:3], **kw)
    assert reports == []  # no bar, and none compiled in
    shown = flowinv.recover((flow, params), x[:3], progress=True, **kw)
    np.testing.assert_allclose(shown.z, plain.z, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(shown.iterations, plain.iterations)
    assert list(np.asarray(plain.iterations)) == [6, 6, 6]
    iterations = [r[0] for r in reports]
    assert len(reports) >= 6 and iterations[-1] == 6 and iterations == sorted(iterations)
    assert iterations[0] <= 1  # the first report comes from the first pass, not the end
    assert {r[2:] for r in reports} == {(3, 0)}  # the whole batch in each call; one shard
    assert reports[0][1] == 3  # all three running at the start


def test_progress_bar_without_a_solve_does_nothing_and_closes():
    """A solve compiled with progress, run with no bar current, reports to nobody."""
    from flowinv import _progress

    z = solvers.lbfgs(_quadratic(jnp.eye(2), 0.0), jnp.ones(2), jnp.zeros(2), maxiter=3,
                      progress=True).z
    np.testing.assert_allclose(z, 0.0, atol=1e-6)
    bar = _progress.IterationBar(maxiter=4, chunks=2)
    with _progress.showing(bar):
        assert _progress._current is bar
        bar.report(2, 1, 2)
        bar.chunk_done()
        bar.report(9, 0, 2)  # an out-of-range count is clamped to the chunk's maxiter
    assert _progress._current is None and bar.position == 8


def test_chunks_are_as_few_and_as_even_as_chunk_size_allows(tiny, monkeypatch):
    """5 images in chunks of at most 4: two chunks of 3 (one padded), not 4 + a padded 4."""
    flow, params, x = tiny
    module = sys.modules["flowinv.recover"]
    sizes, real = [], module._solve_batch
    monkeypatch.setattr(module, "_solve_batch", lambda spec, params, y, *a, **kw: (
        sizes.append(y.shape[0]) or real(spec, params, y, *a, **kw)))
    r = flowinv.recover((flow, params), x[:5], operator=operators.identity(flow.image_shape),
                        maxiter=2, chunk_size=4)
    assert sizes == [3, 3] and r.x.shape == x[:5].shape


def test_progress_counts_the_callers_images_not_the_padding(tiny, monkeypatch):
    """5 images in chunks of at most 4: two chunks of 3, the second padded by repeating the
    last image; its reports count 2 images, not 3."""
    from flowinv import _progress

    flow, params, x = tiny
    reports, real = [], _progress.IterationBar.report
    monkeypatch.setattr(_progress.IterationBar, "report", lambda self, *a: (
        reports.append((self.chunk, *a)) or real(self, *a)))
    flowinv.recover((flow, params), x[:5], operator=operators.identity(flow.image_shape),
                    maxiter=3, tol=0.0, chunk_size=4, progress=True)
    sizes = {(chunk, size) for chunk, _, _, size, _ in reports}
    assert sizes == {(0, 3), (1, 2)}
    assert all(running <= size for _, _, running, size, _ in reports)


def test_progress_bar_drops_the_padding_of_each_shard():
    """Shard ``s`` of a chunk holds problems ``s·len …``; of a chunk of 5 images padded to 6
    over 2 shards, shard 1 has 2 of them. The padding's counters (here a larger iteration and
    a running flag) are ignored."""
    from flowinv import _progress

    bar = _progress.IterationBar(maxiter=9, chunks=2, chunk_images=[6, 5])
    seen, real = [], bar.report
    bar.report = lambda *a: seen.append(a) or real(*a)
    bar.observe(np.array([2, 3, 1]), np.array([True, False, True]), shard=1)
    bar.chunk_done()
    bar.observe(np.array([4, 5, 1]), np.array([True, True, False]), shard=0)
    bar.observe(np.array([2, 1, 8]), np.array([False, False, True]), shard=1)
    bar.observe(np.array([2, 1, 8]), np.array([False, False, True]), shard=2)
    bar.close()
    assert seen == [(3, 2, 3, 1), (5, 2, 3, 0), (2, 0, 2, 1), (0, 0, 0, 2)]
    with pytest.raises(ValueError, match="chunk_images"):
        _progress.IterationBar(maxiter=3, chunks=2, chunk_images=[4])


def test_ctrl_c_stops_a_solve_shown_with_the_iteration_bar(tmp_path):
    """A SIGINT during ``recover(progress=True)`` raises ``KeyboardInterrupt`` within a few
    loop passes and ends the compiled solve there; nothing of it reports afterwards, and the
    next solve runs as usual. On the CPU the program runs inside the dispatching call, so
    without the cancellation the interrupt would wait for all 200,000 Adam iterations. In a
    subprocess, so that the signal is real and pytest's own Ctrl-C handling stays out."""
    script = textwrap.dedent("""
        import os, signal, time
        # A user's Python: its own SIGINT handler, SIGINT not blocked. A child inherits the
        # disposition and mask of the process that starts it, and a Python started with
        # SIGINT ignored keeps it ignored: in the whole suite under pytest-xdist this child
        # inherited SIG_IGN (recorded in inherited.txt), and the solve ran to its end.
        with open("inherited.txt", "w") as f:
            print(signal.getsignal(signal.SIGINT), signal.pthread_sigmask(signal.SIG_BLOCK, []),
                  file=f)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        import jax, numpy as np, flowinv
        from flowinv import _progress, operators
        flow = flowinv.glow((8, 8, 1), levels=1, steps=2, width=8)
        x = jax.random.uniform(jax.random.PRNGKey(0), (2, 8, 8, 1))
        params = flow.init(jax.random.PRNGKey(1), x)
        kw = dict(operator=operators.identity((8, 8, 1)), gamma=0.1, solver="adam",
                  maxiter=200_000, tol=0.0, progress=True)
        reports, real = [], _progress.IterationBar.report
        def report(self, *a):
            reports.append(a)
            if len(reports) == 20:
                os.kill(os.getpid(), signal.SIGINT)
            return real(self, *a)
        _progress.IterationBar.report = report
        try:
            flowinv.recover((flow, params), x, **kw)
            raise SystemExit("the solve ran to its end")
        except KeyboardInterrupt:
            pass
        n = len(reports)
        time.sleep(0.5)
        assert len(reports) == n, (n, len(reports))  # the solve has ended
        assert n < 200, n
        assert _progress._current is None
        r = flowinv.recover((flow, params), x, **dict(kw, maxiter=30))
        assert list(np.asarray(r.iterations)) == [30, 30]
        assert len(reports) > n + 1 and reports[-1][0] == 30
        print("interrupted after", n, "reports")
    """)
    env = dict(os.environ, XLA_FLAGS="")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "interrupted after" in done.stdout
    assert "Traceback" not in done.stderr  # the cancellation is not logged as an error


def test_an_interrupted_wait_cancels_the_bar_and_waits_for_the_solve(monkeypatch):
    """Where dispatch is asynchronous (a GPU), the main thread waits for a chunk in
    ``_progress.wait``'s poll. A ``KeyboardInterrupt`` there must cancel the bar (so the solve's
    next report ends it), wait until the program has ended, and propagate. A plain program
    stands in for the solve: on the CPU it is dispatched asynchronously, as a solve is on a
    GPU (one holding a host callback runs inside the dispatching call on the CPU)."""
    from flowinv import _progress

    slow = jax.jit(lambda a: jax.lax.fori_loop(0, 3000, lambda i, b: jnp.tanh(b @ b), a))
    a = jnp.full((128, 128), 1.0 / 128)
    slow(a).block_until_ready()  # compiled here, so the call below only dispatches
    out = slow(a)
    assert not out.is_ready()  # else the poll below is never entered: lengthen the loop

    def interrupt(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(_progress.time, "sleep", interrupt)
    bar = _progress.IterationBar(maxiter=3)
    with pytest.raises(KeyboardInterrupt):
        _progress.wait({"x": out, "label": "not an array"}, bar)
    assert bar.cancelled and out.is_ready()
    bar.close()


def test_recover_is_deterministic_given_the_key(tiny):
    """Same key, same device: bit-identical recoveries (random init included); another key
    gives another start, so the check can fail."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    kw = dict(operator=op, gamma=0.1, init="normal", init_scale=0.5, maxiter=4)
    a = flowinv.recover((flow, params), x[:3], key=jax.random.PRNGKey(5), **kw)
    b = flowinv.recover((flow, params), x[:3], key=jax.random.PRNGKey(5), **kw)
    c = flowinv.recover((flow, params), x[:3], key=jax.random.PRNGKey(6), **kw)
    for field in ("x", "z", "loss", "iterations", "diverged"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.z, c.z)


def _assert_losses_match(actual, desired, start):
    """Batched and separate solves round differently (XLA picks its kernels by batch size), and
    L-BFGS carries that rounding along: beyond ``rtol=1e-4`` allow 1e-5 of each image's starting
    loss, about 100 float32 ulps of the scale the loss was computed at (a loss that fell 3,000×
    in 10 iterations differs by ~1 ulp of its start, 3e-4 of its end)."""
    actual, desired, start = (np.asarray(a, np.float64) for a in (actual, desired, start))
    assert np.all(np.abs(actual - desired) <= 1e-4 * np.abs(desired) + 1e-5 * np.abs(start)), (
        actual, desired)


@pytest.mark.parametrize("per_image", [False, True], ids=["shared-operator", "per-image"])
def test_restarts_keep_each_images_lowest_loss_start(tiny, per_image):
    """``restarts=R`` equals R separate solves from ``fold_in(key, r)`` with the lowest-loss
    start kept per image (weights and per-image operators tiled with the batch)."""
    flow, params, x = tiny
    keys = jax.random.split(jax.random.PRNGKey(21), 4)
    if per_image:
        op = jax.vmap(lambda k: operators.gaussian_cs(k, flow.image_shape, 12))(keys)
        y = jax.vmap(lambda o, xx: o(xx))(op, x[:4])
    else:
        op = operators.gaussian_cs(keys[0], flow.image_shape, 12)
        y = jax.vmap(op)(x[:4])
    key = jax.random.PRNGKey(3)
    kw = dict(operator=op, per_image_operator=per_image, gamma=jnp.array([0.0, 0.01, 0.1, 0.3]),
              init="normal", init_scale=1.0, maxiter=6)
    best = flowinv.recover((flow, params), y, key=key, restarts=3, **kw)
    each = [flowinv.recover((flow, params), y, key=jax.random.fold_in(key, r), **kw)
            for r in range(3)]
    losses_ = np.stack([np.asarray(e.loss) for e in each])  # (start, image)
    winner = np.argmin(losses_, axis=0)
    # Non-vacuous: the starts end at different losses, and not every image keeps the first.
    assert np.all(np.ptp(losses_, axis=0) > 1e-3 * np.abs(losses_).max(axis=0))
    assert np.any(winner != 0)
    start = np.stack([np.asarray(e.loss_history)[:, 0] for e in each]).max(axis=0)
    _assert_losses_match(best.loss, losses_.min(axis=0), start)
    for i, r in enumerate(winner):
        np.testing.assert_allclose(best.z[i], each[r].z[i], rtol=1e-4, atol=1e-5)
        assert int(best.iterations[i]) == int(each[r].iterations[i])
    assert best.loss_history.shape == each[0].loss_history.shape


def test_restarts_from_a_deterministic_first_start(tiny):
    """``init="zeros", restart_init="normal"``: start 0 is z0 = 0 and starts 1…R−1 are draws
    from ``fold_in(key, r)``; each image keeps the lowest-loss start, so none ends above its
    z0 = 0 loss."""
    flow, params, x = tiny
    op = operators.gaussian_cs(jax.random.PRNGKey(8), flow.image_shape, 32)
    y = jax.vmap(op)(x[:4])
    key = jax.random.PRNGKey(4)
    kw = dict(operator=op, gamma=0.0, init_scale=1.0, maxiter=10)
    best = flowinv.recover((flow, params), y, key=key, restarts=3, init="zeros",
                           restart_init="normal", **kw)
    each = [flowinv.recover((flow, params), y, init="zeros", **kw)] + [
        flowinv.recover((flow, params), y, key=jax.random.fold_in(key, r), init="normal", **kw)
        for r in (1, 2)]
    losses_ = np.stack([np.asarray(e.loss) for e in each])  # (start, image)
    winner = np.argmin(losses_, axis=0)
    # Non-vacuous: some image keeps z0 = 0 and some a random start.
    assert np.any(winner == 0) and np.any(winner != 0)
    start = np.stack([np.asarray(e.loss_history)[:, 0] for e in each]).max(axis=0)
    _assert_losses_match(best.loss, losses_.min(axis=0), start)
    assert np.all(np.asarray(best.loss) <= losses_[0] + 1e-4 * losses_[0] + 1e-5 * start)
    for i, r in enumerate(winner):
        np.testing.assert_allclose(best.z[i], each[r].z[i], rtol=1e-4, atol=1e-5)


def test_best_start_ranks_a_nan_loss_last():
    """Of a restart-major batch (2 starts × 2 images), each image keeps its lowest finite
    loss: a NaN, which argmin would pick, ranks last."""
    from flowinv.recover import Recovery, _best_start

    loss = jnp.array([jnp.nan, 2.0, 1.0, jnp.nan])
    z = jnp.array([[10.0], [11.0], [12.0], [13.0]])
    fields = {name: jnp.zeros(4) for name in Recovery._fields}
    best = _best_start(Recovery(**{**fields, "loss": loss, "z": z, "x": z}), 2)
    np.testing.assert_array_equal(best.loss, [1.0, 2.0])
    np.testing.assert_array_equal(best.z, [[12.0], [11.0]])


def test_restarts_of_one_unbatched_image(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    one = flowinv.recover((flow, params), x[0], operator=op, init="normal", restarts=2,
                          maxiter=2)
    assert one.x.shape == x[0].shape and one.loss.shape == ()
    batch = flowinv.recover((flow, params), x[:1], operator=op, init="normal", restarts=2,
                            maxiter=2)  # the same solves, as a batch of one
    np.testing.assert_allclose(one.z, batch.z[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one.loss, batch.loss[0], rtol=1e-4)


@pytest.mark.parametrize("kwargs, match", [
    (dict(method="nope"), "method"),
    (dict(solver="sgd"), "solver"),
    (dict(gamma=-1.0), "gamma"),
    (dict(method="map"), "noise"),
    (dict(init="random"), "init"),
    (dict(maxiter=0), "maxiter"),
    (dict(restarts=0), "restarts"),
    (dict(restarts=2), "random init"),
    (dict(restarts=2, restart_init="zeros"), "restart_init"),
])
def test_recover_rejects_bad_options(tiny, kwargs, match):
    flow, params, x = tiny
    with pytest.raises(ValueError, match=match):
        flowinv.recover((flow, params), x[0], operator=operators.identity(flow.image_shape),
                        **kwargs)


def test_recover_rejects_bad_measurements(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    with pytest.raises(ValueError, match="NaN"):
        flowinv.recover((flow, params), x[0].at[0, 0, 0].set(jnp.nan), operator=op)
    with pytest.raises(ValueError, match="shape"):
        flowinv.recover((flow, params), x[0, :4], operator=op)
    with pytest.raises(ValueError, match="in_shape"):
        flowinv.recover((flow, params), jnp.zeros((4, 4, 1)),
                        operator=operators.identity((4, 4, 1)))


def test_an_operator_per_image_needs_the_flag(tiny):
    """A batch of operators (a vmapped construction) passed as if shared would map each image
    to all B measurements, and the loss would fit every image to every operator: refused, in
    recover and in recover_one, with the flag named."""
    flow, params, x = tiny
    ops = jax.vmap(lambda k: operators.gaussian_cs(k, flow.image_shape, 20))(
        jax.random.split(jax.random.PRNGKey(5), 3))
    y = jax.vmap(lambda o, a: o(a))(ops, x[:3])
    with pytest.raises(ValueError, match="per_image_operator=True"):
        flowinv.recover((flow, params), y, operator=ops, maxiter=2)
    with pytest.raises(ValueError, match="per_image_operator=True"):
        flowinv.recover_one((flow, params), y[0], operator=ops, maxiter=2)
    # per image, every array must carry the batch axis: a std map for the batch that is not
    # one noise model per image is refused before any vmap
    stds = jnp.full((3, *flow.image_shape), 0.1)
    with pytest.raises(ValueError, match=r"leading axes \[3, None\]"):
        flowinv.recover((flow, params), y, operator=ops, per_image_operator=True, method="map",
                        noise=noise.diagonal_gaussian(stds), per_image_noise=True, maxiter=2)
    r = flowinv.recover((flow, params), y, operator=ops, per_image_operator=True, maxiter=2)
    one = jax.vmap(lambda o, yy: flowinv.recover_one((flow, params), yy, operator=o,
                                                     maxiter=2).z)(ops, y)
    np.testing.assert_allclose(r.z, one, rtol=1e-4, atol=1e-5)


def test_null_space_starts_differ_per_image_with_per_image_operators(tiny):
    """Each image draws its own null-space perturbation, also when its operator is its own:
    equal images with equal operators get different starts, as with a shared operator."""
    flow, params, _ = tiny
    a = operators.gaussian_cs(jax.random.PRNGKey(7), flow.image_shape, 20)
    ops = jax.tree.map(lambda leaf: jnp.stack([leaf] * 3), a)
    x0 = jnp.full((3, *flow.image_shape), 0.5)
    y = jax.vmap(a)(x0)
    kw = dict(init="null-space", x0=x0, key=jax.random.PRNGKey(1), maxiter=1)
    per_image = flowinv.recover((flow, params), y, operator=ops, per_image_operator=True, **kw)
    shared = flowinv.recover((flow, params), y, operator=a, **kw)
    for r in (per_image, shared):
        assert float(jnp.abs(r.z[0] - r.z[1]).max()) > 0.1


@pytest.mark.parametrize("case", ["bfloat16-y", "x64-float64-noise", "x64-float64-params"])
@pytest.mark.parametrize("solver", solvers.SOLVERS)
def test_solves_run_in_the_promoted_precision(tiny, case, solver):
    """y, params and the noise model may differ in precision: the solve runs in their promoted
    dtype (a bfloat16 y with float32 params, float32 data with a float64 σ or float64 params
    under x64), where the default L-BFGS's loop once failed on its carry's dtype."""
    flow, params, x = tiny
    kw = dict(operator=operators.identity(flow.image_shape), maxiter=3, solver=solver)
    with jax.enable_x64(case.startswith("x64")):
        y = x[:2]
        if case == "bfloat16-y":
            y = y.astype(jnp.bfloat16)
        elif case == "x64-float64-noise":
            kw.update(method="map", noise=noise.gaussian(0.1), beta=0.1)
            assert noise.gaussian(0.1).std.dtype == jnp.float64
        else:
            params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
        r = flowinv.recover((flow, params), y, **kw)
        assert bool(jnp.all(jnp.isfinite(r.x))) and not bool(jnp.any(r.diverged))
        assert r.z.dtype == jnp.result_type(y.dtype, r.loss.dtype)


def test_adam_iteration_k_returns_the_point_after_k_updates():
    """``maxiter=N`` makes N Adam updates from z0, as N plain optax steps do; the loss history
    holds the loss of each of those points (z0 is not one of them)."""
    import optax

    with jax.enable_x64(True):
        a = jax.random.normal(jax.random.PRNGKey(0), (12, 8), jnp.float64) / 3
        y = jax.random.normal(jax.random.PRNGKey(1), (12,), jnp.float64)
        loss, z0 = _quadratic(a, 0.1), jnp.zeros(8)
        r = solvers.adam(loss, z0, y, maxiter=5, tol=0.0, learning_rate=0.05)
        opt, z, state, history = optax.adam(0.05), z0, None, []
        state = opt.init(z0)
        for _ in range(5):
            updates, state = opt.update(jax.grad(loss)(z, y), state, z)
            z = z + updates
            history.append(float(loss(z, y)))
        # a small step on a convex quadratic: the loss falls at every step, so the best point
        # is the last
        assert int(r.iterations) == 5 and all(np.diff(history) < 0)
        np.testing.assert_allclose(r.z, z, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(r.loss_history, history, rtol=1e-12)


def test_initialisations(tiny):
    flow, params, x = tiny
    key = jax.random.PRNGKey(0)
    op = operators.gaussian_cs(key, flow.image_shape, 20)
    y = jax.vmap(op)(x[:2])
    r = flowinv.recover((flow, params), y, operator=op, init="inverse", x0=x[:2], maxiter=1)
    z_inv = jax.vmap(lambda a: flow.inverse(params, a)[0])(x[:2])
    # one iteration from G⁻¹(x): the starting loss is ~0 (x is consistent with y), and the
    # best iterate stays at the start to float32 rounding of G⁻¹ (measured 2.4e-7 on |z| ≤ 2.2)
    assert float(jnp.max(r.loss)) < 1e-3
    np.testing.assert_allclose(r.z, z_inv, rtol=0, atol=1e-5)
    r = flowinv.recover((flow, params), y, operator=op, init="null-space", x0=x[:2],
                        init_scale=0.1, maxiter=1)
    assert bool(jnp.all(jnp.isfinite(r.x)))
    r = flowinv.recover((flow, params), y, operator=op, init="normal", key=key, maxiter=2)
    assert bool(jnp.all(jnp.isfinite(r.x)))


def test_random_starts_are_what_they_say(tiny):
    """``"null-space"``: ``G(z0) = x0 + p`` with ``A p = 0`` and ``‖p‖ = init_scale·√n``
    (images in [0.2, 0.8] and a small scale, so the clip to [0, 1] never acts); ``"normal"``:
    ``z0 ~ N(0, init_scale²)``."""
    from flowinv.recover import initial_latents

    flow, params, x = tiny
    n = int(np.prod(flow.image_shape))
    op = operators.gaussian_cs(jax.random.PRNGKey(0), flow.image_shape, 20)
    x0 = 0.2 + 0.6 * x[:2]
    y = jax.vmap(op)(x0)
    kw = dict(key=jax.random.PRNGKey(3), init_scale=0.01, dim=n)
    z0 = initial_latents(flow, params, y, op, init="null-space", x0=x0, **kw)
    p = jax.vmap(lambda z: flow.forward(params, z)[0])(z0) - x0
    # the round trip G(G⁻¹(·)) is exact to ~1e-6 in float32; ‖p‖ = 0.01·√64 = 0.08, and a
    # random p of that norm would leave ‖A p‖ ≈ 0.08·√(20/64) ≈ 0.045
    np.testing.assert_allclose(jnp.linalg.norm(p.reshape(2, -1), axis=1), 0.01 * np.sqrt(n),
                               rtol=1e-4)
    assert float(jnp.max(jnp.linalg.norm(jax.vmap(op)(p), axis=1))) < 1e-4
    z0 = initial_latents(flow, params, y, op, init="normal", x0=None, **dict(kw, init_scale=0.3))
    # the sample std of 2·64 normals has relative standard error 1/√(2·127) ≈ 0.063: 5 of them
    assert abs(float(jnp.std(z0)) / 0.3 - 1) < 5 * 0.063


@pytest.mark.parametrize("preprocess", ["logit", "center"])
def test_image_initialisations_use_the_flows_support(preprocess):
    """``init="inverse"`` and ``invert_images`` invert logit flows at the 8-bit bin centres
    ``x(1 − 2δ) + δ`` (``δ = 1/512``), so saturated pixels do not land at
    ``logit(α) ≈ ±13.8``; centred flows invert ``x`` itself."""
    from flowinv.recover import initial_latents

    flow = flowinv.glow((4, 4, 1), levels=1, steps=1, width=4, preprocess=preprocess)
    x = jnp.stack([jnp.zeros((4, 4, 1)), jnp.ones((4, 4, 1))])
    params = flow.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(1),
                                                                 (4, 4, 4, 1)))
    z0 = initial_latents(flow, params, x, operators.identity((4, 4, 1)), init="inverse",
                         key=None, init_scale=0.0, x0=x, dim=flow.dim)
    d = 1 / 512 if preprocess == "logit" else 0.0
    expect, expect_logdet = jax.vmap(flow.inverse, in_axes=(None, 0))(params, x * (1 - 2 * d) + d)
    np.testing.assert_allclose(z0, expect, rtol=1e-5, atol=1e-5)
    z, logdet = flowinv.invert_images(flow, params, x)
    assert z.shape == (2, flow.dim) and logdet.shape == (2,)
    np.testing.assert_allclose(z, expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logdet, expect_logdet, rtol=1e-5, atol=1e-4)
    if preprocess == "logit":  # logit(1/512) ≈ −6.2 instead of logit(1e-6) ≈ −13.8
        raw = jax.vmap(lambda a: flow.inverse(params, a)[0])(x)
        assert float(jnp.abs(z0).max()) < 0.6 * float(jnp.abs(raw).max())


def test_recover_one_composes_with_vmap_and_jit(tiny):
    """recover_one is recover's solve of one image as a pure function: vmapped over a batch it
    equals recover of that batch, a jitted γ sweep equals recover's per-image γ, and an eager
    call equals recover of one image."""
    flow, params, x = tiny
    op = operators.gaussian_cs(jax.random.PRNGKey(3), flow.image_shape, 30)
    y = jax.vmap(op)(x[:3])
    kw = dict(operator=op, gamma=0.1, maxiter=6)
    batch = flowinv.recover((flow, params), y, **kw)
    mapped = jax.vmap(lambda yy: flowinv.recover_one((flow, params), yy, **kw))(y)
    for field in ("z", "x", "loss"):
        np.testing.assert_allclose(getattr(mapped, field), getattr(batch, field), rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_array_equal(mapped.iterations, batch.iterations)
    assert float(jnp.abs(batch.z).max()) > 0  # it moved

    gammas = jnp.array([0.0, 0.3, 3.0])
    sweep = jax.jit(jax.vmap(lambda g: flowinv.recover_one(
        (flow, params), y[0], operator=op, gamma=g, maxiter=6).z))
    ref = flowinv.recover((flow, params), jnp.stack([y[0]] * 3), operator=op, gamma=gammas,
                          maxiter=6)
    np.testing.assert_allclose(sweep(gammas), ref.z, rtol=1e-4, atol=1e-5)

    z0 = 0.1 * jax.random.normal(jax.random.PRNGKey(4), (flow.dim,))
    one = flowinv.recover_one((flow, params), y[1], z0=z0, **kw)
    start = jax.vmap(lambda yy, zz: flowinv.recover_one((flow, params), yy, z0=zz, **kw))(
        y[1:2], z0[None])
    np.testing.assert_allclose(one.z, start.z[0], rtol=1e-4, atol=1e-5)
    assert one.z.shape == (flow.dim,) and one.loss_history.shape == (6,)


def test_recover_refuses_traced_arrays_and_recover_one_checks_shapes(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    with pytest.raises(TypeError, match="recover_one"):
        jax.jit(lambda y: flowinv.recover((flow, params), y, operator=op, maxiter=2).x)(x[0])
    with pytest.raises(TypeError, match="recover_one"):
        jax.vmap(lambda g: flowinv.recover((flow, params), x[0], operator=op, gamma=g,
                                           maxiter=2).x)(jnp.ones(2))
    one = functools.partial(flowinv.recover_one, (flow, params), operator=op, maxiter=2)
    for kwargs, words in ((dict(y=x[:2]), "vmap recover_one"),
                          (dict(y=x[0], z0=jnp.zeros(3)), "z0 must have shape"),
                          (dict(y=x[0], gamma=jnp.ones(2)), "scalar"),
                          (dict(y=x[0], method="lasso"), "method"),
                          (dict(y=x[0], method="map"), "noise model")):
        with pytest.raises(ValueError, match=words):
            one(**kwargs)
    with pytest.raises(TypeError, match="floating"):
        one(y=jnp.ones(flow.image_shape, jnp.int32))


def _matmul(x, a):
    return a @ x.reshape(-1)


def test_recover_with_a_function_operator_equals_the_built_in_operator(tiny):
    """An operator of the user's own (operators.from_function) solves as the built-in operator
    it re-implements: shared, per image, and with the null-space start that needs its
    adjoint."""
    flow, params, x = tiny
    n = x[0].size
    mats = jax.random.normal(jax.random.PRNGKey(7), (3, 20, n)) / np.sqrt(20)
    mine = operators.from_function(_matmul, flow.image_shape, params=mats[0], linear=True)
    ref = operators.matrix_operator(mats[0], flow.image_shape)
    y = jax.vmap(ref)(x[:3])
    kw = dict(gamma=0.1, maxiter=5)
    a = flowinv.recover((flow, params), y, operator=mine, **kw)
    b = flowinv.recover((flow, params), y, operator=ref, **kw)
    np.testing.assert_allclose(a.z, b.z, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(a.z).max()) > 0  # it moved
    mine_b = jax.vmap(lambda m: operators.from_function(_matmul, flow.image_shape, params=m,
                                                        linear=True))(mats)
    ref_b = jax.vmap(lambda m: operators.matrix_operator(m, flow.image_shape))(mats)
    yb = jax.vmap(lambda o, xx: o(xx))(ref_b, x[:3])
    kw = dict(gamma=0.1, maxiter=5, per_image_operator=True, init="null-space", x0=x[3:6],
              key=jax.random.PRNGKey(8))
    a = flowinv.recover((flow, params), yb, operator=mine_b, **kw)
    b = flowinv.recover((flow, params), yb, operator=ref_b, **kw)
    np.testing.assert_allclose(a.z, b.z, rtol=1e-4, atol=1e-5)


def _gaussian_log_prob(delta, sigma):
    """noise.gaussian's density written by hand: the same sum, entry by entry."""
    z = delta / sigma
    return jnp.sum(-0.5 * z * z - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi))


def test_map_with_a_noise_density_of_ones_own_equals_the_built_in(tiny):
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    y = x[:2] + 0.1 * jax.random.normal(jax.random.PRNGKey(9), x[:2].shape)
    mine = noise.from_log_prob(_gaussian_log_prob, flow.image_shape, params=jnp.asarray(0.1))
    kw = dict(operator=op, method="map", beta=0.5, maxiter=5)
    a = flowinv.recover((flow, params), y, noise=mine, **kw)
    b = flowinv.recover((flow, params), y, noise=noise.gaussian(0.1), **kw)
    np.testing.assert_allclose(a.loss, b.loss, rtol=1e-5)
    np.testing.assert_allclose(a.z, b.z, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(a.z).max()) > 0


def test_null_space_projection_is_in_the_null_space():
    op = operators.gaussian_cs(jax.random.PRNGKey(0), (4, 4, 1), 6)
    v = jax.random.normal(jax.random.PRNGKey(1), (4, 4, 1))
    from flowinv.recover import null_space_projection

    p = null_space_projection(op, v)
    # CG on the 6×6 Gram system converges to float32 precision relative to ‖Av‖.
    assert float(jnp.linalg.norm(op.A(p))) < 1e-4 * float(jnp.linalg.norm(op.A(v)))


def test_sharded_batch_matches_single_device():
    """The batch is sharded over 4 forced host devices; results equal the 1-device run, and
    with ``progress=True`` each device reports its own slice and the results are the same.

    Three iterations with ``tol=0``: this tiny problem reaches its float32 floor by the fourth,
    where whether an image stops (relative loss change exactly 0) is decided by one ulp, which
    reduction order may flip; before it, the runs agree to rounding (measured ≤ 6e-8)."""
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np, flowinv
        from flowinv import noise, operators
        assert jax.device_count() == 4, jax.device_count()
        flow = flowinv.glow((8, 8, 1), levels=1, steps=2, width=8)
        x = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1))
        params = flow.init(jax.random.PRNGKey(1), x)
        r = flowinv.recover((flow, params), x, operator=operators.identity((8, 8, 1)),
                            gamma=0.1, maxiter=3, tol=0.0)
        from flowinv import _progress
        reports, real = [], _progress.IterationBar.report
        _progress.IterationBar.report = lambda self, *a: reports.append(a) or real(self, *a)
        shown = flowinv.recover((flow, params), x, operator=operators.identity((8, 8, 1)),
                                gamma=0.1, maxiter=3, tol=0.0, progress=True)
        np.testing.assert_allclose(shown.x, r.x, rtol=1e-6, atol=1e-7)
        if jax.device_count() == 4:  # each device reports its own image, under shard_map
            assert {a[3] for a in reports} == {0, 1, 2, 3} and {a[2] for a in reports} == {1}
            assert len(shown.x.sharding.device_set) == 4
        # per-image operators, noise models and weights are split over the devices too
        masks = jax.random.bernoulli(jax.random.PRNGKey(2), 0.7, (4, 8, 8, 1))
        ops = jax.vmap(operators.inpainting)(masks.astype(jnp.float32))
        nz = jax.vmap(noise.gaussian)(jnp.array([0.1, 0.2, 0.1, 0.3]))
        kw = dict(operator=ops, per_image_operator=True, noise=nz, per_image_noise=True,
                  method="map", beta=jnp.array([0.1, 0.2, 0.3, 0.4]), maxiter=3, tol=0.0)
        y = jax.vmap(lambda o, a: o(a))(ops, x)
        m_plain = flowinv.recover((flow, params), y, **kw)
        m_shown = flowinv.recover((flow, params), y, progress=True, **kw)
        np.testing.assert_allclose(m_shown.x, m_plain.x, rtol=1e-6, atol=1e-7)
        assert len(m_shown.x.sharding.device_set) == jax.device_count()
        # 3 images on 4 devices: padded to 4 and sharded, not solved on one device
        import sys
        module, meshes = sys.modules["flowinv.recover"], []
        real_mesh = module._batch_mesh
        module._batch_mesh = lambda size: meshes.append(real_mesh(size)) or meshes[-1]
        odd = flowinv.recover((flow, params), x[:3], operator=operators.identity((8, 8, 1)),
                              gamma=0.1, maxiter=3, tol=0.0)
        module._batch_mesh = real_mesh
        np.testing.assert_allclose(odd.x, r.x[:3], rtol=1e-6, atol=1e-7)
        assert odd.x.shape == (3, 8, 8, 1)
        if jax.device_count() == 4:
            assert meshes and all(m is not None for m in meshes), meshes
        print(len(r.x.sharding.device_set))
        np.save("out.npy", np.asarray(r.x))
    """)
    env = dict(os.environ)
    outs = []
    for flags in ("--xla_force_host_platform_device_count=4", ""):
        env["XLA_FLAGS"] = flags
        cwd = os.path.join(os.environ.get("PYTEST_TMP", "/tmp"), f"shard{len(flags)}")
        os.makedirs(cwd, exist_ok=True)
        code = script if flags else script.replace("assert jax.device_count() == 4", "#")
        res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-2000:]
        # A host callback on the whole sharded batch would make XLA gather it on device 0
        # every pass, and say so.
        assert "rematerialization" not in res.stderr
        outs.append((res.stdout.strip().splitlines()[-1], np.load(os.path.join(cwd, "out.npy"))))
    assert outs[0][0] == "4"  # the result lives on all four devices
    # 1e-6: ~16× the measured difference, room for another CPU's reduction order
    np.testing.assert_allclose(outs[0][1], outs[1][1], rtol=1e-6, atol=1e-6)


def test_batched_recovery_of_patches64_finishes():
    """A vmapped solve of two 64×64×3 patches with the shipped ``glow-patches64`` returns.

    It used to deadlock on a 2-core CPU with either L-BFGS (a batch of one, or Adam, did not):
    the 1×1 convolutions' ``W⁻¹`` came from LAPACK triangular solves, custom calls that wait on
    XLA's intra-op thread pool from inside it (see
    ``test_flows.py::test_flows_compile_without_lapack_calls``, which checks both directions of
    every flow for such calls, whatever the solver). Run in a subprocess so a hang fails this
    test after ``timeout`` seconds instead of stalling the suite. Only the default solver runs
    here: its solve of the current ``glow-patches64`` takes ~37 s on 2 cores, compilation
    nearly all of it, and ``optax-lbfgs``'s (whose zoom line search puts the loss in the
    program several times) ~100 s more.
    """
    script = textwrap.dedent("""
        import jax.numpy as jnp, numpy as np, flowinv
        from flowinv import data, operators
        prior = flowinv.load_prior("glow-patches64")
        x = jnp.asarray(data.load_dataset("patches64", "test", limit=2))
        r = flowinv.recover(prior, x, operator=operators.identity(x.shape[1:]),
                            gamma=0.01, maxiter=3)
        assert r.x.shape == x.shape and bool(np.all(np.isfinite(np.asarray(r.x))))
        print("lbfgs", "ok", flush=True)
    """)
    timeout = 360
    env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS="0")  # compiled as users run it
    try:
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"batched glow-patches64 recovery did not return in {timeout} s "
                    f"(stdout: {e.stdout!r})")
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split() == ["lbfgs", "ok"]


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_a_low_precision_y_solves_the_problem_of_its_values(tiny, dtype):
    """A bfloat16/float16 ``y`` is solved as the float32 array of the same values: weights,
    starts and ``x0`` are not rounded to ``y``'s dtype (γ = 0.03 in bfloat16 is 0.030029…, and
    γ = 1e-8 in float16 is 0), and ``init="inverse"`` inverts a float32 ``x0`` (a bfloat16 one
    failed inside the flow's scan)."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    low = (x[:2] + 0.05).astype(dtype)
    kw = dict(operator=op, maxiter=4)
    for extra in (dict(gamma=0.03), dict(gamma=1e-8), dict(gamma=0.03, init="normal"),
                  dict(gamma=0.03, init="inverse", x0=x[:2])):
        a = flowinv.recover((flow, params), low, **kw, **extra)
        b = flowinv.recover((flow, params), low.astype(jnp.float32), **kw, **extra)
        np.testing.assert_array_equal(a.z, b.z, err_msg=str(extra))
    one = flowinv.recover_one((flow, params), low[0], gamma=1e-8, **kw)
    ref = flowinv.recover_one((flow, params), low[0].astype(jnp.float32), gamma=1e-8, **kw)
    np.testing.assert_array_equal(one.z, ref.z)


def test_null_space_start_of_an_operator_without_a_null_space_is_x0(tiny):
    """``m = n`` Gaussian CS has no null space: the only null-space perturbation is ``p = 0``,
    so the start is ``G⁻¹(x0)``. The conjugate gradients' rounding (‖p‖ ~ 1e-5‖ε‖) used to be
    scaled up to ``‖p‖ = init_scale·√n``, a perturbation with ``‖A p‖ ≈ ‖p‖`` that changes the
    measurements, which the null-space start is defined not to do."""
    from flowinv.recover import initial_latents

    flow, params, x = tiny
    n = int(np.prod(flow.image_shape))
    op = operators.gaussian_cs(jax.random.PRNGKey(0), flow.image_shape, n)
    x0 = 0.2 + 0.6 * x[:2]
    z0 = initial_latents(flow, params, jax.vmap(op)(x0), op, init="null-space", x0=x0,
                         key=jax.random.PRNGKey(3), init_scale=0.01, dim=n)
    p = jax.vmap(lambda z: flow.forward(params, z)[0])(z0) - x0
    # the round trip G(G⁻¹(x0)) is exact to ~1e-6 in float32; the scaled rounding was 0.08
    assert float(jnp.max(jnp.linalg.norm(p.reshape(2, -1), axis=1))) < 1e-4


def test_optax_lbfgs_tests_convergence_on_the_new_iterates_gradient():
    """On ``Σ(z − y)²`` with ``tol = 1e-3`` the second iterate of ``optax-lbfgs`` has
    ``|∇f| ≈ 5e-7``: the solve stops there, as ``lbfgs`` does at its own first iterate below
    ``tol`` (it ran a third iteration, testing the gradient of the iterate before)."""
    y = jnp.array([1.0, -2.0, 0.5])
    f = lambda z, y: jnp.sum((z - y) ** 2)
    r = jax.jit(lambda z0: solvers.optax_lbfgs(f, z0, y, maxiter=20, tol=1e-3))(jnp.zeros(3))
    k = int(r.iterations)
    grads = 2.0 * np.sqrt(np.asarray(r.loss_history[:k], np.float64))  # |∇f| = 2√f here
    assert bool(r.converged) and grads[-1] <= 1e-3 and np.all(grads[:-1] > 1e-3), grads


def test_recover_does_not_recompile_for_a_new_tolerance(tiny):
    """``tol`` is a value of the solve, not part of its program: a tolerance sweep compiles
    once (each new ``tol`` recompiled the whole solve: 3 s for glow-digits on 2 cores)."""
    flow, params, x = tiny
    op = operators.identity(flow.image_shape)
    a = flowinv.recover((flow, params), x[:2], operator=op, gamma=0.1, maxiter=30, tol=1e-5)
    before = _solve_batch._cache_size()
    b = flowinv.recover((flow, params), x[:2], operator=op, gamma=0.1, maxiter=30, tol=1e-1)
    assert _solve_batch._cache_size() == before
    assert np.all(np.asarray(b.iterations) < np.asarray(a.iterations))  # the value is used
    one = flowinv.recover_one((flow, params), x[0], operator=op, gamma=0.1, maxiter=30, tol=1e-1)
    assert int(one.iterations) == int(b.iterations[0])


def test_options_a_solve_would_ignore_or_misread_are_refused(tiny):
    """Bounds with ``lower > upper`` given as NumPy scalars or arrays (only two Python numbers
    were checked: the rest put every coordinate at ``upper``), and a ``penalty`` for a method
    that has none (``bora``'s is fixed at ``λ‖z‖²``; ``penalty="norm"`` was silently ignored)."""
    flow, params, x = tiny
    f = lambda z, y: jnp.sum(z**2)
    for lower, upper in ((np.float32(1.0), np.float32(0.0)), (jnp.ones(2), jnp.zeros(2)),
                         (0.0, np.array([1.0, -1.0]))):
        with pytest.raises(ValueError, match="lower must be <= upper"):
            solvers.lbfgs(f, jnp.zeros(2), 0.0, lower=lower, upper=upper, maxiter=2)
    op = operators.identity(flow.image_shape)
    with pytest.raises(ValueError, match="penalty"):
        flowinv.recover((flow, params), x[0], operator=op, method="bora", penalty="norm")
    with pytest.raises(ValueError, match="penalty"):
        flowinv.recover_one((flow, params), x[0], operator=op, method="map", penalty="norm",
                            noise=noise.gaussian(0.1))


def test_inverted_bounds_are_refused_inside_jit_and_through_recover(tiny):
    """recover always runs lbfgs under jit, where jnp.asarray makes a tracer even of a Python
    float: checking the converted bounds refused nothing there, not even two Python numbers
    (which the check before the engine review did refuse)."""
    flow, params, x = tiny
    f = lambda z, y: jnp.sum(z**2)
    for lower, upper in ((1.0, 0.0), (np.float32(1.0), np.float32(0.0)),
                         (0.0, np.array([1.0, -1.0]))):
        with pytest.raises(ValueError, match="lower must be <= upper"):
            jax.jit(lambda z0, lo=lower, hi=upper: solvers.lbfgs(
                f, z0, 0.0, lower=lo, upper=hi, maxiter=2))(jnp.zeros(2))
    with pytest.raises(ValueError, match="lower must be <= upper"):
        flowinv.recover((flow, params), x[:1], operator=operators.identity(flow.image_shape),
                        maxiter=2, solver_kwargs=dict(lower=1.0, upper=0.0))
    # a valid box still solves, inside jit too
    r = jax.jit(lambda z0: solvers.lbfgs(f, z0, 0.0, lower=-1.0, upper=np.float32(1.0),
                                         maxiter=2))(jnp.ones(2))
    assert bool(jnp.all(jnp.abs(r.z) <= 1.0))


@pytest.mark.parametrize("shape,x64", [((28, 28, 1), False), ((8, 8, 1), True)])
def test_null_space_start_without_a_null_space_at_mnist_size_and_in_float64(shape, x64):
    """m = n Gaussian CS has no null space at any size and in any precision. The rounding test
    caught only the 8×8 float32 case: at 28×28 the conjugate gradients leave ~5 % of the draw
    (float32) and at 8×8 in float64 ~10 %, which were scaled up to ‖p‖ = init_scale·√n."""
    from flowinv.recover import initial_latents

    with jax.enable_x64(x64):
        dtype = jnp.float64 if x64 else jnp.float32
        flow = flowinv.glow(shape, levels=2, steps=1, width=8)
        x = jax.random.uniform(jax.random.PRNGKey(0), (2, *shape), dtype)
        params = flow.init(jax.random.PRNGKey(1), x)
        n = int(np.prod(shape))
        op = operators.gaussian_cs(jax.random.PRNGKey(0), shape, n, dtype=dtype)
        x0 = 0.2 + 0.6 * x
        z0 = initial_latents(flow, params, jax.vmap(op)(x0), op, init="null-space", x0=x0,
                             key=jax.random.PRNGKey(3), init_scale=0.01, dim=n)
        p = jax.vmap(lambda z: flow.forward(params, z)[0])(z0) - x0
    # init_scale·√n is 0.28 (28×28) and 0.08 (8×8); the round trip is exact to ~1e-5
    assert float(jnp.max(jnp.linalg.norm(p.reshape(2, -1), axis=1))) < 1e-3


@pytest.mark.parametrize("rows", ["zero-padded", "repeated"])
def test_null_space_start_of_a_dense_matrix_with_m_ge_n_that_has_a_null_space(rows):
    """A dense matrix with m ≥ n is not always of full rank: zero-padded to more rows (as
    experiments/_whang_cs.py pads its matrices to m_max) or with repeated rows, it keeps the
    null space of its m/2 Gaussian rows. The start must perturb along it, as the conjugate
    gradients did before the shape test (‖p‖ = init_scale·√n, A p ≈ 0), not start at x0."""
    from flowinv.recover import initial_latents

    shape, n = (8, 8, 1), 64
    flow = flowinv.glow(shape, levels=2, steps=1, width=8)
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, *shape))
    params = flow.init(jax.random.PRNGKey(1), x)
    half = operators.gaussian_cs(jax.random.PRNGKey(0), shape, n // 2).matrix
    matrix = (jnp.pad(half, ((0, n // 2), (0, 0))) if rows == "zero-padded"
              else jnp.concatenate([half, half]))
    op = operators.matrix_operator(matrix, shape)
    x0 = 0.2 + 0.6 * x  # ‖p‖ = 0.8 stays inside [0, 1] only partly: measure before the clip
    z0 = initial_latents(flow, params, jax.vmap(op)(x0), op, init="null-space", x0=x0,
                         key=jax.random.PRNGKey(3), init_scale=0.02, dim=n)
    p = jax.vmap(lambda z: flow.forward(params, z)[0])(z0) - x0
    norms = np.linalg.norm(np.asarray(p).reshape(2, -1), axis=1)
    np.testing.assert_allclose(norms, 0.02 * np.sqrt(n), rtol=1e-2)  # 0.16, no clipping
    assert float(jnp.max(jnp.abs(jax.vmap(op)(p)))) < 1e-3  # consistent with y


def test_nan_bounds_and_a_non_positive_adam_rate_are_refused(tiny):
    """A NaN bound passed every check, and clip made the iterate NaN: the solve reported a
    divergence from its first step. A learning rate of 0 never moves, a negative one climbs
    the loss; both ran to maxiter without a word."""
    flow, params, x = tiny
    f = lambda z, y: jnp.sum(z**2)
    for bounds in (dict(lower=float("nan")), dict(upper=np.array([0.0, np.nan]))):
        with pytest.raises(ValueError, match="must not be NaN"):
            solvers.lbfgs(f, jnp.zeros(2), 0.0, maxiter=2, **bounds)
    with pytest.raises(ValueError, match="must not be NaN"):
        flowinv.recover((flow, params), x[:1], operator=operators.identity(flow.image_shape),
                        maxiter=2, solver_kwargs=dict(lower=float("nan")))
    for rate in (0.0, -0.05, float("nan")):
        with pytest.raises(ValueError, match="learning_rate must be positive"):
            solvers.adam(f, jnp.ones(2), 0.0, maxiter=2, learning_rate=rate)
    r = solvers.adam(f, jnp.ones(2), 0.0, maxiter=2, learning_rate=lambda step: 0.1)  # schedule
    assert bool(jnp.all(jnp.abs(r.z) < 1.0))
