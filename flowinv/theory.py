"""Theorem 1 of Asim et al. (ICML 2020): compressed sensing under a linear invertible prior.

Setting (paper §4). ``G ∈ Rⁿˣⁿ`` is invertible with singular values ``σ₁ ≥ … ≥ σₙ > 0``;
signals are ``x₀ = G z₀`` with ``z₀ ~ N(0, Iₙ)``, i.e. ``x₀ ~ p_G = N(0, G Gᵀ)``; the
measurements are ``y = A x₀`` with ``A ∈ Rᵐˣⁿ`` of i.i.d. ``N(0, 1)`` entries. The maximum
likelihood estimate (paper eq. 3)::

    x̂ = argmaxₓ p_G(x)  s.t.  A x = y
      = G Gᵀ Aᵀ (A G Gᵀ Aᵀ)⁻¹ y
      = G ẑ,   ẑ = argmin ‖z‖  s.t.  A G z = y   (the minimum-norm latent)

obeys, for ``4 ≤ m < n`` (paper eq. 4)::

    Σ_{i>m} σᵢ²  ≤  E_A E_{x₀} ‖x̂ − x₀‖²  ≤  m Σ_{i>m−2} σᵢ².

Note on the constant: the supplement proves the upper bound from Halko et al. (2011, Thm 10.5)
with target rank ``k = m − 2`` and oversampling ``p = 2``, whose constant is
``1 + k/(p − 1) = m − 1``; the theorem states the (valid, slightly looser) constant ``m``.
:func:`theorem1_bounds` returns the paper's statement.

Everything here is a pure ``jax.numpy`` function; precision follows the dtype of the inputs
(enable float64 for ill-conditioned spectra, see :func:`mle_estimate`).
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["expected_error", "linear_model", "minimum_norm_latent", "mle_estimate",
           "theorem1_bounds"]


def _shape(name: str, value) -> tuple[int, ...]:
    try:
        return tuple(jnp.shape(value))
    except TypeError:
        raise TypeError(f"{name} must be an array, got {type(value).__name__}") from None


def _int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_system(G, A, y=None) -> tuple[int, int]:
    """Validates ``G (n, n)``, ``A (m, n)`` with ``1 ≤ m ≤ n`` and ``y (m,)``; returns (m, n)."""
    g_shape, a_shape = _shape("G", G), _shape("A", A)
    if len(g_shape) != 2 or g_shape[0] != g_shape[1] or g_shape[0] == 0:
        raise ValueError(f"G must be a square matrix (n, n) with n >= 1, got shape {g_shape}")
    n = g_shape[0]
    if len(a_shape) != 2 or a_shape[1] != n:
        raise ValueError(f"A must have shape (m, n) = (m, {n}) to match G, got shape {a_shape}")
    m = a_shape[0]
    if not 1 <= m <= n:
        raise ValueError(f"A must have 1 <= m <= n = {n} rows (A G Gᵀ Aᵀ is singular for "
                         f"m > n), got m = {m}")
    if y is not None and _shape("y", y) != (m,):
        raise ValueError(f"y must have shape (m,) = ({m},), got shape {_shape('y', y)}")
    return m, n


def _min_norm(B: Array, y: Array) -> Array:
    """``Bᵀ (B Bᵀ)⁻¹ y`` for a full-row-rank ``B (m, n)``, via the thin SVD ``B = U S Vᵀ``."""
    # Bᵀ (B Bᵀ)⁻¹ = V S Uᵀ (U S² Uᵀ)⁻¹ = V S⁻¹ Uᵀ: the only solve left is the diagonal one.
    # Not Cholesky of B Bᵀ (squares the condition number) and not thin QR + triangular solve:
    # vmapped over a batch on CPU, jaxlib 0.10's batched LAPACK orgqr and trsm kernels run
    # concurrently and deadlock the 2-thread intra-op pool (reproduced on this project's
    # 2-core machine); the SVD route is one LAPACK call and as accurate.
    u, s, vt = jnp.linalg.svd(B, full_matrices=False)
    return vt.T @ ((u.T @ y) / s)


def minimum_norm_latent(G: Array, A: Array, y: Array) -> Array:
    """The minimum-norm latent solving ``A G z = y``.

    ``ẑ = argmin ‖z‖ s.t. A G z = y = Gᵀ Aᵀ (A G Gᵀ Aᵀ)⁻¹ y = (A G)⁺ y``.

    Computed from the thin SVD ``A G = U S Vᵀ`` as ``ẑ = V S⁻¹ Uᵀ y`` (a diagonal solve),
    algebraically the formula above but without forming ``A G Gᵀ Aᵀ``, whose condition number
    is the square of that of ``A G``.

    Args:
      G: ``(n, n)`` invertible generator matrix.
      A: ``(m, n)`` measurement matrix, ``1 ≤ m ≤ n``, full row rank.
      y: ``(m,)`` measurements.

    Returns:
      ``(n,)`` latent ``ẑ``; it lies in the row space of ``A G``.

    Raises:
      ValueError: on mismatched shapes or ``m > n``.
    """
    _check_system(G, A, y)
    return _min_norm(A @ G, y)


def mle_estimate(G: Array, A: Array, y: Array) -> Array:
    """Maximum likelihood estimate of ``x₀ ~ N(0, G Gᵀ)`` from ``y = A x₀`` (paper eq. 3).

    ``x̂ = argmaxₓ p_G(x) s.t. A x = y = G Gᵀ Aᵀ (A G Gᵀ Aᵀ)⁻¹ y = G ẑ``, where ``ẑ`` is the
    minimum-norm solution of ``A G z = y`` (:func:`minimum_norm_latent`), i.e. the point that
    gradient descent on ``‖A G z − y‖²`` from ``z = 0`` converges to. No inverse is formed
    (thin SVD of ``A G`` and a diagonal solve, see :func:`minimum_norm_latent`).

    Args:
      G: ``(n, n)`` invertible generator matrix.
      A: ``(m, n)`` measurement matrix, ``1 ≤ m ≤ n``, full row rank.
      y: ``(m,)`` measurements.

    Returns:
      ``(n,)`` estimate ``x̂``; it satisfies ``A x̂ = y``.

    Raises:
      ValueError: on mismatched shapes or ``m > n``.
    """
    _check_system(G, A, y)
    return G @ _min_norm(A @ G, y)


def theorem1_bounds(singular_values: Array, m: int) -> tuple[Array, Array]:
    """Bounds of Theorem 1 on ``E_A E_{x₀} ‖x̂ − x₀‖²`` (paper eq. 4).

    With ``σ₁ ≥ … ≥ σₙ`` (the input is sorted descending here) and 1-based indices::

        lower = Σ_{i>m} σᵢ²,        upper = m · Σ_{i>m−2} σᵢ².

    The paper states the theorem for ``4 ≤ m < n``; the formulas are evaluated for every
    ``1 ≤ m ≤ n`` and remain true bounds there:

    * ``m ≤ 2``: ``m − 2 ≤ 0`` so the upper sum runs over all ``i`` and ``upper = m ‖G‖_F²``,
      which holds trivially (``x̂ − x₀ = G(P − I)z₀`` with ``P`` an orthogonal projection, so
      ``E‖x̂ − x₀‖² = E‖(I − P)Gᵀ‖_F² ≤ ‖G‖_F²``).
    * ``m = 3``: the proof's Halko et al. bound with ``k = 1``, ``p = 2`` gives constant 2 ≤ 3.
    * ``m = n``: ``A G`` is invertible, ``x̂ = x₀`` exactly; ``lower = 0``,
      ``upper = n (σ_{n−1}² + σₙ²)``.

    The proof's constant for ``m ≥ 4`` is in fact ``m − 1`` (see the module docstring).

    Args:
      singular_values: ``(n,)`` singular values of ``G`` (any order, all ``> 0``).
      m: number of measurements, ``1 ≤ m ≤ n``.

    Returns:
      ``(lower, upper)`` scalars in the dtype of ``singular_values``.

    Raises:
      TypeError: ``m`` is not an int.
      ValueError: ``singular_values`` is not 1-D and non-empty, has non-positive entries
        (checked when concrete), or ``m`` is outside ``[1, n]``.
    """
    shape = _shape("singular_values", singular_values)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D array (n,), got shape {shape}")
    n = shape[0]
    m = _int("m", m, 1)
    if m > n:
        raise ValueError(f"m must be <= n = {n} (len(singular_values)), got {m}")
    if not isinstance(singular_values, jax.core.Tracer):
        if not np.all(np.asarray(singular_values) > 0):
            raise ValueError("singular_values must all be > 0 (G is invertible), got "
                             f"min {np.min(np.asarray(singular_values))}")
    s2 = jnp.sort(jnp.asarray(singular_values))[::-1] ** 2
    i = jnp.arange(1, n + 1)  # 1-based index of σᵢ
    lower = jnp.sum(jnp.where(i > m, s2, 0))
    upper = m * jnp.sum(jnp.where(i > m - 2, s2, 0))
    return lower, upper


def linear_model(key: Array, singular_values: Array) -> Array:
    """A random ``G = U diag(σ) Vᵀ`` with the prescribed singular values.

    ``U`` and ``V`` are independent Haar-distributed orthogonal matrices
    (``jax.random.orthogonal``).

    Args:
      key: PRNG key.
      singular_values: ``(n,)`` positive singular values ``σ``.

    Returns:
      ``(n, n)`` matrix ``G`` in the dtype of ``singular_values`` (float).

    Raises:
      ValueError: ``singular_values`` is not a non-empty 1-D array of positive numbers.
    """
    shape = _shape("singular_values", singular_values)
    if len(shape) != 1 or shape[0] == 0:
        raise ValueError(f"singular_values must be a non-empty 1-D array (n,), got shape {shape}")
    if not isinstance(singular_values, jax.core.Tracer):
        if not np.all(np.asarray(singular_values) > 0):
            raise ValueError("singular_values must all be > 0 (G is invertible), got "
                             f"min {np.min(np.asarray(singular_values))}")
    s = jnp.asarray(singular_values)
    if not jnp.issubdtype(s.dtype, jnp.floating):
        s = s.astype(jnp.result_type(float))
    n = shape[0]
    ku, kv = jax.random.split(key)
    u = jax.random.orthogonal(ku, n, dtype=s.dtype)
    v = jax.random.orthogonal(kv, n, dtype=s.dtype)
    return (u * s) @ v.T


def _trial_error(G: Array, key: Array, m: int) -> Array:
    """``‖x̂ − x₀‖²`` for one draw of ``A`` (i.i.d. N(0, 1)) and ``z₀ ~ N(0, I)``."""
    n = G.shape[0]
    ka, kz = jax.random.split(key)
    a = jax.random.normal(ka, (m, n), G.dtype)
    z0 = jax.random.normal(kz, (n,), G.dtype)
    b = a @ G
    z_hat = _min_norm(b, b @ z0)  # y = A x₀ = A G z₀
    # x̂ − x₀ = G (ẑ − z₀); subtracting in latent space avoids cancelling two large x's.
    return jnp.sum((G @ (z_hat - z0)) ** 2)


def _expected_error(G, key, m, trials, batch_size):
    keys = jax.random.split(key, trials)
    errors = jax.lax.map(lambda k: _trial_error(G, k, m), keys, batch_size=batch_size)
    mean = jnp.mean(errors)
    stderr = jnp.std(errors, ddof=1) / math.sqrt(trials)
    return mean, stderr


_expected_error_jit = jax.jit(_expected_error, static_argnames=("m", "trials", "batch_size"))


def expected_error(G: Array, m: int, key: Array, trials: int = 1000, *,
                   batch_size: int | None = None) -> tuple[Array, Array]:
    """Monte Carlo estimate of ``E_A E_{x₀} ‖x̂ − x₀‖²`` (the middle term of Theorem 1).

    Each trial draws ``A ∈ Rᵐˣⁿ`` with i.i.d. ``N(0, 1)`` entries and ``z₀ ~ N(0, Iₙ)``, sets
    ``x₀ = G z₀``, ``y = A x₀``, ``x̂ = G Gᵀ Aᵀ (A G Gᵀ Aᵀ)⁻¹ y`` and records
    ``eₜ = ‖x̂ − x₀‖²``. The trials are i.i.d., so the mean is unbiased for the double
    expectation and its standard error is ``std(eₜ) / √trials`` (sample std, ddof = 1).
    Trials run through ``jax.lax.map``: vmapped in chunks of ``batch_size`` (``batch_size · m ·
    n`` numbers for ``A`` at once), or one at a time without it (``m · n``).

    Args:
      G: ``(n, n)`` invertible generator matrix; its dtype sets the precision.
      m: number of measurements, ``1 ≤ m ≤ n``.
      key: PRNG key.
      trials: number of Monte Carlo trials, ``≥ 2``.
      batch_size: trials vmapped at once (default ``None``: one trial at a time, a sequential
        ``lax.map``; ``trials`` vmaps them all).

    Returns:
      ``(mean, stderr)`` scalars.

    Raises:
      TypeError: ``m``, ``trials`` or ``batch_size`` is not an int.
      ValueError: bad ``G`` shape or out-of-range ``m``, ``trials``, ``batch_size``.
    """
    g_shape = _shape("G", G)
    if len(g_shape) != 2 or g_shape[0] != g_shape[1] or g_shape[0] == 0:
        raise ValueError(f"G must be a square matrix (n, n) with n >= 1, got shape {g_shape}")
    n = g_shape[0]
    m = _int("m", m, 1)
    if m > n:
        raise ValueError(f"m must be <= n = {n}, got {m}")
    trials = _int("trials", trials, 2)
    if batch_size is not None:
        batch_size = min(_int("batch_size", batch_size, 1), trials)
    G = jnp.asarray(G)
    if not jnp.issubdtype(G.dtype, jnp.floating):
        G = G.astype(jnp.result_type(float))
    return _expected_error_jit(G, key, m=m, trials=trials, batch_size=batch_size)
