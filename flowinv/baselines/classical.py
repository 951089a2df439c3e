r"""Classical baselines: BM3D denoising and Lasso compressed sensing in a DCT or wavelet basis.

* :func:`bm3d_denoise` wraps the maintained ``bm3d`` package (Mäkinen, Azzari & Foi), as used
  for the denoising baseline of Asim et al. (2020).
* :func:`lasso_cs` solves

  .. math:: \hat w = \arg\min_w \tfrac12 \|A \Psi w - y\|_2^2 + \lambda \|w\|_1,
            \qquad \hat x = \Psi \hat w,

  with :math:`\Psi` an orthonormal synthesis operator (2-D DCT or 2-D wavelet, per channel),
  by FISTA (Beck & Teboulle 2009) using only ``op.A`` and ``op.A_adjoint``. These are the
  Lasso-DCT / Lasso-WVT baselines of Bora et al. (2017) and Asim et al. (2020); the
  Lasso-wavelet recovery is also one of Asim et al.'s initialisations of the Glow latent.
  Asim et al. (§3.2, footnote 1) write :math:`\|A\Phi z - y\|_2^2 + 0.01\|z\|_1` without
  the ½, so this λ is their λ/2: their 0.01 is ``lam=0.005`` here, and ``lam=0.01`` is their
  0.02 (the minimisers agree when the weights match).

The wavelet transform is written here in JAX (:func:`wavelet_analysis`,
:func:`wavelet_synthesis`) rather than called from PyWavelets, because PyWavelets is NumPy-only
and the whole FISTA solve should be one ``jit``-compiled, ``vmap``-able function (images and
per-image operators in parallel, no host round trip per iteration). Only the filter
coefficients come from PyWavelets, and the transform reproduces ``pywt.wavedec2(...,
mode="periodization")`` laid out by ``pywt.coeffs_to_array`` (checked in the tests).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any

import bm3d as _bm3d
import jax
import jax.numpy as jnp
import numpy as np
import pywt
from jax import lax
from jax.scipy.fft import dctn, idctn

from flowinv._checks import float_array, positive_int

Array = jax.Array

__all__ = [
    "bm3d_denoise",
    "lasso_cs",
    "operator_norm_sq",
    "wavelet_analysis",
    "wavelet_max_level",
    "wavelet_synthesis",
]

BASES = ("dct", "wavelet")

# The bm3d package crashes (segmentation fault) on some tiny images, e.g. 8x8; images with a
# side below this are padded symmetrically before denoising and cropped back afterwards.
_BM3D_MIN_SIDE = 16


# --------------------------------------------------------------------------------------------
# BM3D


def bm3d_denoise(y: Any, sigma: float, *, profile: str = "np") -> np.ndarray:
    r"""BM3D denoising of one image ``y = x + N(0, sigma^2)``.

    Grayscale BM3D for ``C = 1``, colour BM3D (``bm3d_rgb``, opponent colour space) for
    ``C = 3``, and grayscale BM3D channel by channel otherwise. Images with a side shorter than
    16 pixels are padded symmetrically first (the ``bm3d`` package crashes on e.g. 8x8
    inputs). ``sigma = 0`` returns the clipped input unchanged. Runs on the host (NumPy).

    Args:
      y: noisy image ``(H, W, C)`` (NumPy or JAX), values around ``[0, 1]``.
      sigma: noise standard deviation, in the same units as ``y`` (``>= 0``).
      profile: BM3D profile name of the ``bm3d`` package (``"np"`` normal, ``"refilter"``...).

    Returns:
      float32 ``(H, W, C)`` clipped to ``[0, 1]``.
    """
    ya = np.asarray(y, dtype=np.float64)
    if ya.ndim != 3:
        raise ValueError(f"y must be one image of shape (H, W, C), got shape {ya.shape}")
    if not np.all(np.isfinite(ya)):
        raise ValueError(f"y holds {np.size(ya) - np.isfinite(ya).sum()} NaN or inf pixels "
                         "(BM3D would make the whole image NaN)")
    sigma = _check_nonneg(sigma, "sigma")
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a bm3d profile name (str), got {profile!r}")
    if sigma == 0.0:
        return np.clip(ya, 0.0, 1.0).astype(np.float32)
    h, w, c = ya.shape
    ph, pw = max(0, _BM3D_MIN_SIDE - h), max(0, _BM3D_MIN_SIDE - w)
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
    yp = np.pad(ya, pad, mode="symmetric")
    if c == 3:
        out = np.asarray(_bm3d.bm3d_rgb(yp, sigma, profile=profile))
    else:
        out = np.stack([np.asarray(_bm3d.bm3d(yp[..., i], sigma, profile=profile))
                        for i in range(c)], axis=-1)
    out = out[pad[0][0]: pad[0][0] + h, pad[1][0]: pad[1][0] + w]
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# orthonormal 2-D wavelet transform (periodised), in JAX


def _filters(wavelet: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        wv = pywt.Wavelet(wavelet)
    except (ValueError, TypeError):
        raise ValueError(f"wavelet must be a PyWavelets wavelet name such as 'db1' or 'db4', "
                         f"got {wavelet!r}") from None
    if not wv.orthogonal:
        raise ValueError(f"wavelet must be orthogonal (e.g. 'haar', 'dbN', 'symN', 'coifN'), "
                         f"got {wavelet!r}")
    return np.asarray(wv.rec_lo), np.asarray(wv.rec_hi)


def wavelet_max_level(shape: tuple[int, ...], wavelet: str = "db1") -> int:
    """Default number of levels for images of ``shape = (H, W, C)``.

    PyWavelets' ``dwt_max_level(min(H, W), filter_length)`` (at least 1: the periodised
    transform stays orthonormal for filters longer than the image), further limited so that
    every level halves an even height and width; 0 when ``H`` or ``W`` is odd.
    """
    lo, _ = _filters(wavelet)
    h, w = int(shape[0]), int(shape[1])
    cap = max(1, pywt.dwt_max_level(min(h, w), len(lo)))
    level = 0
    while level < cap and h % 2 == 0 and w % 2 == 0:
        h, w, level = h // 2, w // 2, level + 1
    return level


def _check_level(shape: tuple[int, ...], wavelet: str, level: Any) -> int:
    if level is None:
        level = wavelet_max_level(shape, wavelet)
        if level == 0:
            raise ValueError(f"the wavelet basis needs an even image height and width, "
                             f"got image shape {tuple(shape)}")
        return level
    if isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 1:
        raise ValueError(f"level must be a positive int or None, got {level!r}")
    h, w = int(shape[0]), int(shape[1])
    for _ in range(int(level)):
        if h % 2 or w % 2:
            raise ValueError(f"level={level} needs H and W divisible by 2**{level}, got image "
                             f"shape {tuple(shape)}")
        h, w = h // 2, w // 2
    return int(level)


def _dwt_axis(x: Array, axis: int, lo: np.ndarray, hi: np.ndarray) -> Array:
    """One periodised analysis step along ``axis``: ``[approx, detail]`` concatenated.

    ``a[k] = sum_i lo[i] x[(2k + i + 1 - L/2) mod N]`` (and ``hi`` for the detail), the
    convention of ``pywt.dwt(..., mode="periodization")``.
    """
    n = x.shape[axis]
    off = 1 - len(lo) // 2
    taps = [lax.slice_in_dim(jnp.roll(x, -(i + off), axis=axis), 0, n, 2, axis=axis)
            for i in range(len(lo))]
    a = sum(float(c) * t for c, t in zip(lo, taps, strict=True))
    d = sum(float(c) * t for c, t in zip(hi, taps, strict=True))
    return jnp.concatenate([a, d], axis=axis)


def _analysis(x: Array, wavelet: str, level: int) -> Array:
    lo, hi = _filters(wavelet)
    h, w = x.shape[0], x.shape[1]
    out = x
    for _ in range(level):
        block = _dwt_axis(_dwt_axis(out[:h, :w], 0, lo, hi), 1, lo, hi)
        out = out.at[:h, :w].set(block)
        h, w = h // 2, w // 2
    return out


def wavelet_analysis(x: Array, wavelet: str = "db1", level: int | None = None) -> Array:
    r"""Orthonormal 2-D discrete wavelet transform :math:`\Psi^T x`, per channel.

    Periodised boundary handling makes the transform orthonormal for any even size. The
    coefficients are laid out in place like ``pywt.coeffs_to_array(pywt.wavedec2(x[..., c],
    wavelet, mode="periodization", level=level))``: approximation top-left, then for each
    level (coarse to fine) the detail bands; axis 0 first.

    Args:
      x: image ``(H, W, C)``; ``H`` and ``W`` divisible by ``2**level``.
      wavelet: an orthogonal PyWavelets wavelet name (``"db1"`` = Haar, ``"db4"``...).
      level: number of levels; ``None`` for :func:`wavelet_max_level`.

    Returns:
      coefficients, same shape and dtype as ``x``.
    """
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (H, W, C), got {x.shape}")
    level = _check_level(x.shape, wavelet, level)
    return _analysis(x, wavelet, level)


def wavelet_synthesis(w: Array, wavelet: str = "db1", level: int | None = None) -> Array:
    r"""Inverse of :func:`wavelet_analysis`: :math:`x = \Psi w`.

    As the analysis is orthonormal its inverse is its transpose, obtained exactly with
    :func:`jax.linear_transpose` (so the pair is adjoint to rounding by construction).

    Args:
      w: coefficients ``(H, W, C)`` as laid out by :func:`wavelet_analysis`.
      wavelet, level: as in :func:`wavelet_analysis`.

    Returns:
      image, same shape and dtype as ``w``.
    """
    w = jnp.asarray(w)
    if w.ndim != 3:
        raise ValueError(f"w must have shape (H, W, C), got {w.shape}")
    level = _check_level(w.shape, wavelet, level)
    return _synthesis(w, wavelet, level)


def _synthesis(w: Array, wavelet: str, level: int) -> Array:
    transpose = jax.linear_transpose(functools.partial(_analysis, wavelet=wavelet, level=level),
                                     jax.ShapeDtypeStruct(w.shape, w.dtype))
    return transpose(w)[0]


# --------------------------------------------------------------------------------------------
# Lasso by FISTA


def _check_nonneg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    return value


def _check_operator(op: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    for attr in ("A", "A_adjoint", "in_shape", "out_shape"):
        if not hasattr(op, attr):
            raise TypeError(f"op must be a linear operator with A, A_adjoint, in_shape and "
                            f"out_shape; {type(op).__name__} has no {attr!r}")
    if not getattr(op, "is_linear", True):
        raise TypeError(f"op must be a linear operator, got the nonlinear "
                        f"{type(op).__name__}")
    in_shape = tuple(op.in_shape)
    if len(in_shape) != 3:
        raise ValueError(f"op.in_shape must be an image shape (H, W, C), got {in_shape}")
    return in_shape, tuple(op.out_shape)


def operator_norm_sq(op: Any, *, iters: int = 50, key: Array | None = None) -> Array:
    r"""Power-iteration estimate of :math:`\|A\|_2^2 = \lambda_{\max}(A^T A)`.

    Runs ``iters`` steps of :math:`v \leftarrow A^T A v / \|A^T A v\|` from a random start and
    returns the Rayleigh quotient :math:`\|A v\|^2` (a lower bound that converges to
    :math:`\|A\|^2`). Uses only ``op.A`` and ``op.A_adjoint``.

    Args:
      op: linear operator with ``in_shape``.
      iters: number of power iterations.
      key: PRNG key of the start vector (default ``PRNGKey(0)``, deterministic).

    Returns:
      scalar estimate.
    """
    in_shape, _ = _check_operator(op)
    iters = positive_int(iters, "iters")
    key = jax.random.PRNGKey(0) if key is None else key
    return _power(op, key, in_shape, iters, jnp.float32)


def _power(op: Any, key: Array, in_shape: tuple[int, ...], iters: int, dtype: Any) -> Array:
    v = jax.random.normal(key, in_shape, dtype)
    v = v / jnp.linalg.norm(v)

    def body(_, v):
        u = op.A_adjoint(op.A(v))
        return u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(dtype).tiny)

    v = lax.fori_loop(0, iters, body, v)
    return jnp.sum(op.A(v) ** 2)


def _soft(w: Array, t: Array) -> Array:
    return jnp.sign(w) * jnp.maximum(jnp.abs(w) - t, 0.0)


@functools.partial(jax.jit, static_argnames=("basis", "iters", "wavelet", "level",
                                             "power_iters"))
def _lasso_fista(y, op, lam, *, basis, iters, wavelet, level, power_iters):
    in_shape = tuple(op.in_shape)
    dtype = y.dtype
    if basis == "dct":
        synth = lambda w: idctn(w, axes=(0, 1), norm="ortho")
        analy = lambda x: dctn(x, axes=(0, 1), norm="ortho")
    else:
        synth = lambda w: _synthesis(w, wavelet, level)
        analy = lambda x: _analysis(x, wavelet, level)
    # Power iteration approaches ||A||^2 from below; the 5% margin keeps the step 1/L under
    # 1/||A||^2 (FISTA's convergence condition) when it has not fully converged.
    lip = 1.05 * _power(op, jax.random.PRNGKey(0), in_shape, power_iters, dtype)
    lip = jnp.maximum(lip, jnp.finfo(dtype).tiny)
    thresh = lam / lip

    def step(carry, _):
        w, v, t = carry
        grad = analy(op.A_adjoint(op.A(synth(v)) - y))
        w_new = _soft(v - grad / lip, thresh)
        t_new = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * t * t))
        v_new = w_new + ((t - 1.0) / t_new) * (w_new - w)
        return (w_new, v_new, t_new), None

    w0 = jnp.zeros(in_shape, dtype)
    (w, _, _), _ = lax.scan(step, (w0, w0, jnp.ones((), dtype)), None, length=iters)
    return synth(w)


def lasso_cs(
    y: Array,
    op: Any,
    *,
    basis: str = "dct",
    lam: float | Array = 0.01,
    iters: int = 500,
    wavelet: str = "db1",
    level: int | None = None,
    power_iters: int = 50,
) -> Array:
    r"""Lasso compressed sensing in an orthonormal basis, solved by FISTA.

    .. math:: \hat w = \arg\min_w \tfrac12 \|A \Psi w - y\|_2^2 + \lambda \|w\|_1,
              \qquad \hat x = \Psi \hat w

    :math:`\Psi` is the inverse orthonormal 2-D DCT-II per channel (``basis="dct"``) or the
    orthonormal periodised 2-D wavelet synthesis per channel (``basis="wavelet"``, see
    :func:`wavelet_synthesis`). FISTA runs ``iters`` iterations from ``w = 0`` with step
    :math:`1/L`, :math:`L = 1.05 \times` a ``power_iters``-step power-iteration estimate of
    :math:`\|A\|^2` (:math:`\|A\Psi\| = \|A\|` since :math:`\Psi` is orthonormal).

    The solve is ``jit``-compiled; it can be ``vmap``-ed over ``y``, ``lam`` and a per-image
    operator. With the papers' Gaussian CS noise (:math:`\sqrt{E\|\eta\|^2} = 0.1`) a
    reasonable :math:`\lambda` is :math:`10^{-3}`–:math:`10^{-2}`; pick it on validation images.
    Because of the ½, :math:`\lambda` here is half the weight in Asim et al.'s
    :math:`\|A\Phi z - y\|^2 + \lambda\|z\|_1` (their 0.01 is ``lam=0.005``).

    Args:
      y: measurements of one image, shape ``op.out_shape``.
      op: linear operator (a pytree) with ``A``, ``A_adjoint``, ``in_shape = (H, W, C)``,
        ``out_shape``.
      basis: ``"dct"`` or ``"wavelet"``.
      lam: :math:`\lambda \ge 0` (a number, or a traced scalar under ``vmap``).
      iters: FISTA iterations.
      wavelet: orthogonal PyWavelets wavelet name for ``basis="wavelet"`` (``"db1"`` = Haar).
      level: wavelet levels (``None``: :func:`wavelet_max_level`).
      power_iters: power iterations for the step size.

    Returns:
      the recovered image :math:`\Psi\hat w`, ``(H, W, C)``, not clipped to ``[0, 1]``.
    """
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    in_shape, out_shape = _check_operator(op)
    if isinstance(lam, numbers.Real):
        lam = _check_nonneg(lam, "lam")
    elif not isinstance(lam, jax.core.Tracer):  # a concrete array: every entry
        lams = np.asarray(lam)
        if not (np.all(np.isfinite(lams)) and np.all(lams >= 0)):
            raise ValueError(f"lam must be finite and >= 0, got {lam!r}")
    iters = positive_int(iters, "iters")
    power_iters = positive_int(power_iters, "power_iters")
    y = float_array(y)
    if tuple(y.shape) != out_shape:
        raise ValueError(f"y must have shape op.out_shape = {out_shape}, got {tuple(y.shape)}")
    if not isinstance(y, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(y))):
        raise ValueError("y holds NaN or inf (the recovery would be NaN everywhere)")
    # FISTA runs in the dtype A^T y comes out in (float64 for a float64 operator and float32 y)
    y = y.astype(jnp.result_type(y, jax.eval_shape(op.A_adjoint, y).dtype))
    if basis == "wavelet":
        _filters(wavelet)
        level = _check_level(in_shape, wavelet, level)
    else:
        if wavelet != "db1" or level is not None:
            raise ValueError(f"wavelet={wavelet!r} and level={level!r} are the wavelet basis's; "
                             "basis='dct' takes neither")
        wavelet, level = "db1", 0  # unused by the DCT path; fixed to share one compilation
    lam = jnp.asarray(lam, y.dtype)
    return _lasso_fista(y, op, lam, basis=basis, iters=iters, wavelet=wavelet, level=level,
                        power_iters=power_iters)
