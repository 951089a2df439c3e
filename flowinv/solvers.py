"""Per-problem optimisers for recovery losses, written to be ``jax.vmap``-ed over a batch.

Each solver minimises ``loss(z, y)`` for ONE problem and keeps its own state, so vmapping it
gives every image its own L-BFGS curvature memory and line search (the original Glow-prior code
shared one L-BFGS state across a batch of independent images, which corrupts the curvature
estimate). Every solver returns a :class:`SolveResult` with the best *finite* iterate, per
iteration diagnostics, and converged/diverged flags; a loss that becomes NaN or inf stops that
problem and keeps its best iterate.

Under ``vmap`` a ``while_loop`` keeps running its body for every problem until the last one
stops, and discards the results of the stopped ones. A solver with a line search nested in
its iteration loop would run every inner search until the slowest image accepts a step, so
the jaxopt and optax solvers below mask the loss of a stopped problem to ``-inf`` with zero
gradient, which any line search accepts at its first trial (measured on glow-mnist: without it
3.5× the time of the same solves run to completion). The default ``lbfgs`` has no nested loop.

Solvers:

* ``"lbfgs"`` (default): L-BFGS with a backtracking Armijo line search (halving from step 1, up
  to 30 trials; the very first step capped at norm 1, ``first_step``) that skips curvature pairs
  with ``sᵀy ≤ 10⁻⁸‖s‖‖y‖`` (Nocedal & Wright §7.2), so the inverse-Hessian estimate stays
  positive definite. Chosen by measurement (denoising 10 MNIST test images with glow-mnist, σ =
  0.1, γ = 0.01, 100 iterations, batched, with jaxopt's implementation): this method reached
  28.9 dB mean PSNR in 19.7 s; jaxopt's strong-Wolfe backtracking (its usual pairing) stalled at
  10–11 dB on 2 of the 10 (25.4 dB mean), jaxopt's zoom search likewise (25.1 dB, 729 s), and
  optax's L-BFGS reached 28.8 dB in 45.9 s. A backtracking step usually costs one
  value-and-gradient, while a vmapped zoom search runs until its slowest image ends. Written
  here as one flat loop with a single evaluation site (see :func:`lbfgs`): with
  ``first_step=None`` it takes jaxopt's iterates, and on glow-mnist (4 images, 100 iterations)
  compiles in 9.8 s instead of 31.1 s and runs in 5.0 s instead of 12.5 s. With ``lower``
  and/or ``upper`` it is a projected L-BFGS that keeps the variable in a box.
* ``"jaxopt-lbfgs"``: the same method through ``jaxopt.LBFGS`` (the reference the default is
  tested against; jaxopt is no longer maintained).
* ``"optax-lbfgs"``: optax's L-BFGS with its zoom line search (strong Wolfe).
* ``"adam"``: optax Adam with a fixed learning rate.

Every solver takes ``progress=False``; ``True`` (set by ``recover(..., progress=True)``)
hands the iteration count to the host on every loop pass, for a bar (:mod:`flowinv._progress`),
without changing an iterate.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from flowinv import _progress

Array = jax.Array

SOLVERS = ("lbfgs", "jaxopt-lbfgs", "optax-lbfgs", "adam")


class SolveResult(NamedTuple):
    """Outcome of one solve (leading batch axis on every field when vmapped).

    Attributes:
      z: best finite iterate ``(n,)``.
      loss: its loss.
      iterations: iterations run.
      converged: gradient norm fell below ``tol`` (or the relative loss change below
        ``tol·1e-3``: in float32 a loss repeated bit for bit, a stop for no progress that may
        come with a gradient far above ``tol``, see :func:`lbfgs`; or, for ``lbfgs``, the
        solve reached the loss's rounding floor); False for a solve that hit ``maxiter`` or
        (``lbfgs``) stalled after a failed line search.
      diverged: the loss became non-finite at some iteration (``z`` is still the best finite).
      loss_history: ``(maxiter,)`` loss after each iteration, NaN after the stop.
      znorm_history: ``(maxiter,)`` ``‖z‖`` after each iteration, NaN after the stop.
      stalled: (``lbfgs`` only; False for the others) the line search rejected all its trials
        and the forced step did not lower the loss, so the solve stopped there: not a
        certified minimum (a non-smooth one, such as ``z = 0`` under a huge ``γ‖z‖``, or a
        saturated plateau).
    """

    z: Array
    loss: Array
    iterations: Array
    converged: Array
    diverged: Array
    loss_history: Array
    znorm_history: Array
    stalled: Array


def _masked(loss: Callable[[Array, Array], Array]) -> Callable:
    """``loss(z, y)`` as ``f(z, (y, active))``: ``-inf`` (zero gradient) where not ``active``."""

    def f(z, y_active):
        y, active = y_active
        return jnp.where(active, loss(z, y), -jnp.inf)

    return f


def in_loss_precision(loss: Callable[[Array, Array], Array], z0: Array, y) -> Array:
    """``z0`` in the dtype the loss promotes it to (``z0``'s own if the loss does not).

    ``y``, the parameters and the noise model may be more precise than ``z0`` (float32 data
    with float64 params or a float64 σ under x64) or ``y`` less (bfloat16): every solver then
    iterates in the loss's precision, where a loop that kept ``z0``'s would change its carry's
    dtype (an error in ``while_loop`` and in optax's line search). Traces the loss once, for
    its output dtype only.
    """
    shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                          (z0, y))
    return z0.astype(jnp.result_type(z0.dtype, jax.eval_shape(loss, *shapes).dtype))


def _run(step: Callable, state0, z0: Array, loss0: Array, maxiter: int, tol: float,
         grad_norm: Callable, rel_change_stop: bool = True,
         progress: bool = False) -> SolveResult:
    """Generic loop: ``step(z, state, active) -> (z, state, loss)`` until a stop or ``maxiter``.

    Stops when the gradient norm is ≤ ``tol`` or (``rel_change_stop``) the relative loss change
    of one iteration is ≤ ``tol·1e-3``; stops at once on a non-finite loss or iterate.
    ``active`` is False once the problem has stopped (its step is then computed under ``vmap``
    and discarded: see the module docstring). ``progress``: report every loop pass to the host
    (:mod:`flowinv._progress`).
    """
    dtype = z0.dtype
    nan_hist = jnp.full((maxiter,), jnp.nan, dtype)
    finite0 = jnp.isfinite(loss0)
    init = dict(
        i=jnp.zeros((), jnp.int32), z=z0, state=state0, loss=loss0,
        best_z=z0, best_loss=jnp.where(finite0, loss0, jnp.inf),
        converged=jnp.zeros((), bool), diverged=~finite0,
        loss_history=nan_hist, znorm_history=nan_hist)

    def cond(c):
        return (c["i"] < maxiter) & ~c["converged"] & ~c["diverged"]

    def body(c):
        running = cond(c)
        z, state, loss = step(c["z"], c["state"], running)
        i = c["i"] + 1
        if progress:
            i = _progress.passing(jnp.where(running, i, c["i"]), running)
        finite = jnp.isfinite(loss) & jnp.all(jnp.isfinite(z))
        better = finite & (loss < c["best_loss"])
        rel_change = jnp.abs(c["loss"] - loss) / jnp.maximum(jnp.abs(loss), 1e-12)
        stalled = (rel_change <= tol * 1e-3) if rel_change_stop else False
        converged = finite & ((grad_norm(state) <= tol) | stalled)
        return dict(
            i=i, z=z, state=state, loss=loss,
            best_z=jnp.where(better, z, c["best_z"]),
            best_loss=jnp.where(better, loss, c["best_loss"]),
            converged=converged, diverged=~finite,
            loss_history=c["loss_history"].at[c["i"]].set(loss),
            znorm_history=c["znorm_history"].at[c["i"]].set(jnp.linalg.norm(z)))

    c = jax.lax.while_loop(cond, body, init)
    return SolveResult(c["best_z"], c["best_loss"], c["i"], c["converged"], c["diverged"],
                       c["loss_history"], c["znorm_history"], jnp.zeros((), bool))


def _two_loop(g: Array, s_hist: Array, y_hist: Array, rho: Array, gamma: Array,
              k: Array) -> Array:
    """L-BFGS direction ``d = −H g`` (Nocedal & Wright, Algorithm 7.4).

    ``s_hist``, ``y_hist``: ``(m, *g.shape)`` circular buffers whose oldest slot is ``k mod m``
    (pair ``i`` was written at iteration ``i``); ``rho[i] = 1/(s_iᵀy_i)``, 0 for an empty slot,
    which then contributes nothing; ``H₀ = gamma·I``.
    """
    m = rho.shape[0]
    order = (k + jnp.arange(m)) % m

    def newest_first(r, i):
        alpha = rho[i] * jnp.vdot(s_hist[i], r)
        return r - alpha * y_hist[i], alpha

    r, alphas = jax.lax.scan(newest_first, -g, order, reverse=True)
    r = gamma * r

    def oldest_first(r, i_alpha):
        i, alpha = i_alpha
        beta = rho[i] * jnp.vdot(y_hist[i], r)
        return r + (alpha - beta) * s_hist[i], None

    r, _ = jax.lax.scan(oldest_first, r, (order, alphas))
    return r


def _scaled_norm(v: Array) -> Array:
    """``‖v‖`` as ``a·‖v/a‖`` with ``a = max|vᵢ|``: finite also where ``Σ vᵢ²`` overflows the
    dtype (``‖v‖ > ~10¹⁹`` in float32)."""
    a = jnp.max(jnp.abs(v))
    return a * jnp.linalg.norm(v / jnp.where(a > 0, a, 1.0))


def lbfgs(loss: Callable[[Array, Array], Array], z0: Array, y: Array, *, maxiter: int = 300,
          tol: float = 1e-5, history_size: int = 10, max_trials: int = 30,
          c1: float = 1e-4, first_step: float | None = 1.0, lower: float | Array | None = None,
          upper: float | Array | None = None, progress: bool = False) -> SolveResult:
    """L-BFGS with Armijo backtracking from step 1 on ``loss(z, y)``, for one problem,
    optionally within a box ``lower ≤ z ≤ upper`` (projected L-BFGS, below).

    Each iteration tries ``z + t·d`` with ``t = 1, ½, ¼, …`` and accepts the first ``t`` with
    ``f(z + t·d) ≤ f(z) + c1·t·∇f(z)ᵀd`` (or the ``max_trials``-th, as jaxopt does), then
    stores the pair ``s = t·d``, ``y = ∇f(z + t·d) − ∇f(z)`` unless ``sᵀy ≤ 10⁻⁸‖s‖‖y‖``
    (Armijo steps do not guarantee ``sᵀy > 0``, and one such pair turns the two-loop
    direction uphill; a skipped pair leaves its slot of the circular memory as it was).
    The memory is ordered by iteration, as jaxopt orders it, so after a skip that slot's
    older pair is read as the newest, and then as newer than it is until it is overwritten
    ``history_size`` iterations later; every stored pair has
    ``sᵀy > 0``, so ``H`` stays positive definite. Ordering by stored pairs instead was
    measured and not adopted: on glow-mnist (8 test images, from ``z0 = 0``, 100 iterations;
    denoising at three σ, compressed sensing at m = 40 and 200, MAP under radial noise), solves
    skipped 0–11 pairs; the mean PSNR per setting moved by −0.15 to +0.94 dB, with images
    moving both ways in every setting, and the final loss was lower in 15 of the 30 solves that
    skipped a pair, so nothing says either order is better.
    ``H₀ = (sᵀy / yᵀy)·I`` from the newest stored pair; before the first stored pair
    ``H₀ = min(1, first_step / ‖∇f(z0)‖)·I``, so the first trial step has a norm of at most
    ``first_step`` (optax's and SciPy's L-BFGS scale their first step likewise), or with
    ``first_step=None`` ``H₀ = I`` (jaxopt's choice: a first trial step of norm ``‖∇f(z0)‖``).
    The cap matters for steep losses: the MLE loss of a DCGAN under the digit-noise model has
    ``‖∇f(0)‖ ≈ 10¹²``, and every one of 30 halvings from ``t = 1`` still saturates the
    generator; compressed sensing with glow-mnist from ``z0 = 0`` at ``m/n = 0.05`` sent one
    of 6 images so far that the forced step left its loss at 42 (0.02 with the cap).

    Stopping: converged, when the gradient norm is ≤ ``tol``, or the relative loss change of
    an accepted step along a downhill direction is ≤ ``tol·10⁻³``, or (whatever ``tol``) the
    line search rejects a trial below the dtype's resolution, of the iterate,
    ``‖t·d‖ ≤ ε‖z‖``, or of the loss, a predicted decrease ``|t·∇f(z)ᵀd| ≤ ε|f(z)|`` (``ε``
    the dtype's machine epsilon): no step
    along ``d`` that the dtype resolves lowered the loss, and halving further would compare
    only the loss's rounding noise; or ``stalled``, when the line search failed
    (``max_trials`` rejections) and the forced step did not lower the loss (``converged``
    False: not a certified minimum); or ``maxiter``; or a non-finite loss (diverged). Both
    ``tol`` tests are literal: the gradient's is absolute (a loss scaled by 10⁻¹² stops at its
    start; flowinv's losses are O(1)–O(10⁴)), and in float32 the relative change of a loss is
    either 0 or at least ~6·10⁻⁸, so at the default ``tol = 10⁻⁵`` (``10⁻⁸``) the relative
    test fires only on a loss repeated bit for bit (a numerics review). That is how most
    float32 solves end, and like SciPy's L-BFGS-B ``factr`` test it is a stop for no progress,
    not a certificate of a stationary point: Armijo's required decrease ``c1·t·|∇f(z)ᵀd|``
    rounds away against ``f`` long before the predicted decrease ``t·|∇f(z)ᵀd|`` does, so a
    step that overshoots to an equal loss is accepted, and ``converged`` may be set with
    ``‖∇f‖`` far above ``tol``. An engine review measured it on glow-digits (8 test digits,
    300 iterations): 7 of 8 Asim denoising solves ended this way, and 2 of 8 MAP solves, those
    with ``‖∇f‖`` of 12–25. Going on from such a step instead (counting an unchanged loss only
    where the predicted decrease was itself below ``ε|f|``) ran those solves 30–100 % longer,
    lowered the mean loss by 0.0002 (Asim) and 0.09 nats (MAP), and moved mean PSNR by −0.01
    to −0.02 dB, so the cheaper stop stays. The rounding-floor stops matter where a solve
    reaches that floor, which is where Armijo's test compares noise. Noiseless compressed
    sensing with ``m < n`` fits its loss down to rounding near 0 (the iterate's test ends it):
    before, the last few iterations of such a
    solve took 3 to 13 rejected trials each; on the benchmark's ``tiny16`` and ``tiny32``
    flows a batch of 8 made 69 and 105 loop passes for 38 and 46 iterations, now 47 and 50
    passes for 35 and 41, with the same PSNR. A denoising solve that settles at the noise's
    energy is ended by the loss's test: on glow-mnist's architecture (random parameters,
    σ = 0.1, batch 8) its last iteration took 12 loop passes, 30 in all for 18 iterations; now 20.

    With ``first_step=None`` the iterates are those of jaxopt's ``LBFGS`` with
    ``BacktrackingLineSearch(condition="armijo", decrease_factor=0.5)`` and the same pair
    skipping (:func:`jaxopt_lbfgs`; a test checks they agree), up to a forced step (jaxopt
    goes on after it). The difference is the program: one ``lax.while_loop`` whose body makes
    exactly ONE value-and-gradient evaluation, either the initial point, a rejected trial or an
    accepted one. So the loss appears once in the compiled program (jaxopt's has it five
    times: its initial state, its unrolled first line-search step and its loop, each with a
    value and, under ``vmap``, a gradient), which compiles about three times faster; and under
    ``vmap`` an image that accepts a step goes on to its next iteration while another is still
    backtracking, instead of waiting for the slowest image's line search to end.

    Box constraints (``lower`` and/or ``upper``: numbers or arrays broadcastable to ``z0``;
    concrete bounds with ``lower > upper`` anywhere are a ValueError):
    the projected L-BFGS of the two-metric family (Bertsekas 1982; Kim, Sra & Dhillon 2010),
    with ``P`` the projection onto the box. ``z0`` is projected first. At an iterate, the
    *bound* coordinates are those at a bound whose gradient pushes outward (``zᵢ = lᵢ``,
    ``gᵢ > 0``, or ``zᵢ = uᵢ``, ``gᵢ < 0``); the direction is the two-loop one of the
    gradient restricted to the free coordinates, restricted again to them, with any component
    that would leave a bound the iterate sits on set to 0; where that is not a descent
    direction (``gᵀd ≥ 0``), it is the free coordinates' steepest descent ``−g_free``. Trial
    points are ``P(z + t·d)``, accepted by the Armijo rule along that projection arc,
    ``f(P(z + t·d)) ≤ f(z) + c1·gᵀ(P(z + t·d) − z)``; a curvature pair is
    ``s = P(z + t·d) − z`` and the change of the gradient, both restricted to the coordinates
    free at the new point (a pixel that lands on a bound takes its steep edge out of the
    inverse-Hessian estimate; measured on 5 random box-constrained quadratics, this halved the
    iterations and took the error from ~10⁻⁶ to ~10⁻⁹); the first step is capped by the free
    gradient's norm; and the gradient-norm stop reads the projected gradient
    ``‖P(z − g) − z‖``, zero exactly at a point satisfying the KKT conditions. Without bounds
    (the default) nothing of this is traced: the iterates are those above.

    ``progress=True`` hands the iteration count to the host after every loop pass, for a bar
    (:mod:`flowinv._progress`; ``recover(..., progress=True)`` sets it); the iterates are the
    same.
    """
    if history_size < 1 or max_trials < 1:
        raise ValueError("history_size and max_trials must be >= 1")
    if first_step is not None and not first_step > 0:
        raise ValueError(f"first_step must be > 0 or None, got {first_step}")
    value_and_grad = jax.value_and_grad(loss)
    z0 = in_loss_precision(loss, z0, y)
    dtype = z0.dtype
    eps = jnp.finfo(dtype).eps
    boxed = lower is not None or upper is not None
    if boxed:
        # Checked on the values given (Python and NumPy numbers, NumPy and concrete JAX arrays),
        # before jnp.asarray: under jit, as in recover's solve, that makes a tracer even of a
        # Python float. clip(z, lo, hi) with lo > hi silently puts every such coordinate at
        # hi. Traced bounds go unchecked.
        if lower is not None and upper is not None and not isinstance(
                lower, jax.core.Tracer) and not isinstance(upper, jax.core.Tracer) and bool(
                np.any(np.asarray(lower) > np.asarray(upper))):
            raise ValueError(f"lower must be <= upper, got lower={lower!r}, upper={upper!r}")
        for name, bound in (("lower", lower), ("upper", upper)):
            if bound is not None and not isinstance(bound, jax.core.Tracer) and bool(
                    np.isnan(np.asarray(bound, np.float64)).any()):  # clip would make z NaN
                raise ValueError(f"{name} must not be NaN (use None for no bound), got "
                                 f"{bound!r}")
        lo = jnp.asarray(-jnp.inf if lower is None else lower, dtype)
        hi = jnp.asarray(jnp.inf if upper is None else upper, dtype)
        z0 = jnp.clip(z0, lo, hi)
    zeros = jnp.zeros_like(z0)
    memory = jnp.zeros((history_size, *z0.shape), dtype)
    nan_hist = jnp.full((maxiter,), jnp.nan, dtype)
    init = dict(
        started=jnp.zeros((), bool), k=jnp.zeros((), jnp.int32),
        trial=jnp.zeros((), jnp.int32), t=jnp.zeros((), dtype),
        z=z0, f=jnp.full((), jnp.nan, dtype), g=zeros, d=zeros, slope=jnp.zeros((), dtype),
        s_hist=memory, y_hist=memory, rho=jnp.zeros((history_size,), dtype),
        gamma=jnp.ones((), dtype),
        best_z=z0, best_loss=jnp.full((), jnp.inf, dtype),
        converged=jnp.zeros((), bool), diverged=jnp.zeros((), bool), stalled=jnp.zeros((), bool),
        loss_history=nan_hist, znorm_history=nan_hist)

    def cond(c):
        return ~c["started"] | ((c["k"] < maxiter) & ~c["converged"] & ~c["diverged"]
                                & ~c["stalled"])

    def body(c):
        first = ~c["started"]
        # The first pass evaluates z0 itself (t = 0, d = 0).
        point = c["z"] + c["t"] * c["d"]
        if boxed:
            point = jnp.clip(point, lo, hi)
            decrease = jnp.vdot(c["g"], point - c["z"])  # along the projection arc
        else:
            decrease = c["t"] * c["slope"]
        f, g = value_and_grad(point, y)
        excess = f - (c["f"] + c1 * decrease)
        armijo = excess <= 0.0  # False for a NaN or +inf trial value
        step = ~first & (armijo | (c["trial"] + 1 >= max_trials))
        moved = first | step

        if boxed:
            # P(z − g) − z: zero exactly at a KKT point of the box-constrained problem
            grad_norm = jnp.linalg.norm(jnp.clip(point - g, lo, hi) - point)
            at_lo, at_hi = point <= lo, point >= hi
            free = ~((at_lo & (g > 0)) | (at_hi & (g < 0)))
            g_free = jnp.where(free, g, 0.0)
        else:
            g_free, grad_norm = g, jnp.linalg.norm(g)

        s, yv = point - c["z"], g - c["g"]
        if boxed:  # the curvature of the free coordinates, the only ones the direction uses
            s, yv = jnp.where(free, s, 0.0), jnp.where(free, yv, 0.0)
        sy = jnp.vdot(s, yv)
        store = step & (sy > 1e-8 * jnp.linalg.norm(s) * jnp.linalg.norm(yv))
        slot = c["k"] % history_size
        write = lambda buf, new: buf.at[slot].set(jnp.where(store, new, buf[slot]))
        s_hist, y_hist = write(c["s_hist"], s), write(c["y_hist"], yv)
        rho = write(c["rho"], 1.0 / sy)
        yy = jnp.vdot(yv, yv)
        gamma = jnp.where(store, jnp.where(yy > 0, sy / yy, 1.0), c["gamma"])
        if first_step is not None:
            # 1/‖g‖ reads 0 where Σ gᵢ² overflows; then the norm is taken scaled
            scale = jnp.minimum(1.0, first_step / jnp.linalg.norm(g_free))
            scale = jnp.where(scale > 0, scale,
                              jnp.minimum(1.0, first_step / _scaled_norm(g_free)))
            gamma = jnp.where(first, scale, gamma)
        k = c["k"] + step.astype(jnp.int32)
        d = _two_loop(g_free, s_hist, y_hist, rho, gamma, k)
        if boxed:
            d = jnp.where(free & ~((at_lo & (d < 0)) | (at_hi & (d > 0))), d, 0.0)
            d = jnp.where(jnp.vdot(g_free, d) < 0, d, -g_free)

        finite = jnp.isfinite(f) & jnp.all(jnp.isfinite(point))
        better = moved & finite & (f < c["best_loss"])
        rel_change = jnp.abs(c["f"] - f) / jnp.maximum(jnp.abs(f), 1e-12)
        # The rounding floor: a rejected trial below the float resolution of z, or with a
        # predicted decrease below that of the loss; halving further cannot resolve a
        # decrease, only compare rounding noise.
        floor = ~first & ~armijo & finite & (
            (jnp.linalg.norm(point - c["z"]) <= eps * jnp.linalg.norm(c["z"]))
            | (jnp.abs(decrease) <= eps * jnp.abs(c["f"])))
        # A forced step proves nothing about optimality, even where the gradient vanishes;
        # nor does an unchanged loss along a direction that was not downhill (d = 0).
        converged = (step & armijo & finite & ((grad_norm <= tol)
                                               | ((rel_change <= tol * 1e-3)
                                                  & (c["slope"] < 0)))) | floor
        stalled = step & ~armijo & finite & ~(f < c["f"]) & ~floor  # non-finite: diverged
        at = jnp.where(step, c["k"], maxiter)  # out of bounds: the update is dropped
        keep = lambda new, old: jnp.where(moved, new, old)
        if progress:
            running = cond(c)
            k = _progress.passing(jnp.where(running, k, c["k"]), running)
        return dict(
            started=jnp.ones((), bool), k=k,
            trial=jnp.where(moved, 0, c["trial"] + 1),
            t=jnp.where(moved, jnp.ones((), dtype), 0.5 * c["t"]),
            z=keep(point, c["z"]), f=keep(f, c["f"]), g=keep(g, c["g"]),
            d=keep(d, c["d"]), slope=keep(jnp.vdot(g, d), c["slope"]),
            s_hist=s_hist, y_hist=y_hist, rho=rho, gamma=gamma,
            best_z=jnp.where(better, point, c["best_z"]),
            best_loss=jnp.where(better, f, c["best_loss"]),
            converged=converged, diverged=moved & ~finite, stalled=stalled,
            loss_history=c["loss_history"].at[at].set(f, mode="drop"),
            znorm_history=c["znorm_history"].at[at].set(jnp.linalg.norm(point), mode="drop"))

    c = jax.lax.while_loop(cond, body, init)
    return SolveResult(c["best_z"], c["best_loss"], c["k"], c["converged"], c["diverged"],
                       c["loss_history"], c["znorm_history"], c["stalled"])


def jaxopt_lbfgs(loss: Callable[[Array, Array], Array], z0: Array, y: Array, *, maxiter: int = 300,
          tol: float = 1e-5, history_size: int = 10, progress: bool = False) -> SolveResult:
    """jaxopt's L-BFGS with Armijo backtracking from step 1 on ``loss(z, y)``, for one problem:
    the same method as :func:`lbfgs`, kept as a reference implementation.

    Curvature pairs ``(s, y)`` with ``sᵀy ≤ 10⁻⁸‖s‖‖y‖`` are skipped: Armijo steps do not
    guarantee ``sᵀy > 0``, and one such pair turns the two-loop recursion's direction uphill.
    """
    import jaxopt

    z0 = in_loss_precision(loss, z0, y)

    # Halving from step 1 (jaxopt's default factor is 0.8): a first step along a huge gradient
    # (MAP losses reach ‖∇‖ ~ 1e4 at z0 = 0) must shrink by 1e4 or more before G(z) is finite,
    # which 30 halvings reach and jaxopt's default 30 steps of 0.8 (1e-3) do not. A non-finite
    # trial value fails the Armijo test, so the search backtracks past it.
    fun = _masked(loss)
    linesearch = jaxopt.BacktrackingLineSearch(fun=fun, maxiter=30, decrease_factor=0.5,
                                               max_stepsize=1.0, condition="armijo")
    solver = jaxopt.LBFGS(fun=fun, maxiter=maxiter, tol=tol, linesearch=linesearch,
                          linesearch_init="max", max_stepsize=1.0,
                          history_size=history_size, implicit_diff=False)
    state0 = solver.init_state(z0, (y, True))

    def step(z, old, active):
        z_new, state = solver.update(z, old, (y, active))
        s, yv = z_new - z, state.grad - old.grad
        bad = jnp.vdot(s, yv) <= 1e-8 * jnp.linalg.norm(s) * jnp.linalg.norm(yv)
        keep_old = lambda a, b: jnp.where(bad, a, b)
        state = state._replace(s_history=keep_old(old.s_history, state.s_history),
                               y_history=keep_old(old.y_history, state.y_history),
                               rho_history=keep_old(old.rho_history, state.rho_history),
                               gamma=keep_old(old.gamma, state.gamma))
        return z_new, state, state.value

    return _run(step, state0, z0, state0.value, maxiter, tol, lambda s: s.error,
                progress=progress)


def optax_lbfgs(loss: Callable[[Array, Array], Array], z0: Array, y: Array, *,
                maxiter: int = 300, tol: float = 1e-5, history_size: int = 10,
                progress: bool = False) -> SolveResult:
    """optax L-BFGS (zoom line search) on ``loss(z, y)``, for one problem."""
    import optax

    z0 = in_loss_precision(loss, z0, y)

    masked = _masked(loss)
    opt = optax.lbfgs(memory_size=history_size)
    state0 = (opt.init(z0), jnp.full_like(z0, jnp.inf))

    def step(z, state, active):
        fun = lambda v: masked(v, (y, active))
        value_and_grad = optax.value_and_grad_from_state(fun)
        opt_state, _ = state
        value, grad = value_and_grad(z, state=opt_state)
        updates, opt_state = opt.update(grad, opt_state, z, value=value, grad=grad,
                                        value_fn=fun)
        # The zoom line search already evaluated the new point: reuse its value, and test
        # convergence on its gradient (``grad`` above is the previous iterate's).
        get = optax.tree_utils.tree_get
        return z + updates, (opt_state, get(opt_state, "grad")), get(opt_state, "value")

    return _run(step, state0, z0, loss(z0, y), maxiter, tol,
                lambda s: jnp.linalg.norm(s[1]), progress=progress)


def adam(loss: Callable[[Array, Array], Array], z0: Array, y: Array, *, maxiter: int = 300,
         tol: float = 1e-5, learning_rate: float = 0.05, progress: bool = False) -> SolveResult:
    """optax Adam on ``loss(z, y)``, for one problem. ``learning_rate``: a positive number, or
    an optax schedule (a function of the step)."""
    import optax

    if isinstance(learning_rate, numbers.Real) and not learning_rate > 0:  # NaN too
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r} (0 never "
                         "moves, a negative one climbs the loss)")

    z0 = in_loss_precision(loss, z0, y)

    opt = optax.adam(learning_rate)
    value_and_grad = jax.value_and_grad(loss)

    def step(z, state, active):
        # One evaluation per iteration: the loop's iterate is the point just evaluated, and the
        # Adam update from it waits in the state as the next point to evaluate.
        opt_state, _, pending = state
        value, grad = value_and_grad(pending, y)
        updates, opt_state = opt.update(grad, opt_state, pending)
        return pending, (opt_state, grad, pending + updates), value

    # z0 is evaluated once, here, and its update is the first point the loop evaluates: so
    # iteration k returns the point after k updates, as every solver's iteration k does.
    value0, grad0 = value_and_grad(z0, y)
    updates0, opt_state0 = opt.update(grad0, opt.init(z0), z0)
    state0 = (opt_state0, grad0, z0 + updates0)
    return _run(step, state0, z0, value0, maxiter, tol, lambda s: jnp.linalg.norm(s[1]),
                rel_change_stop=False, progress=progress)


def get_solver(name: str) -> Callable[..., SolveResult]:
    """The solver function called ``name`` (one of :data:`SOLVERS`)."""
    table = {"lbfgs": lbfgs, "jaxopt-lbfgs": jaxopt_lbfgs, "optax-lbfgs": optax_lbfgs,
             "adam": adam}
    if name not in table:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return table[name]
