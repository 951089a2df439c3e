"""Training-time transforms of ONE image, pure JAX functions batched with ``jax.vmap``:
``b``-bit quantisation, uniform dequantisation, and random symmetries that keep an image's shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")
    return int(bits)


def _bin_index(x: jax.Array, bits: int) -> jax.Array:
    levels = 2**bits
    return jnp.clip(jnp.floor(x * levels), 0, levels - 1)


def _as_unit_float(x) -> jax.Array:
    """``x`` as a float array; an integer image is refused (its levels, e.g. 0–255, are not
    the ``[0, 1]`` scale: every level above 0 would fall in the top bin)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        raise TypeError(f"x must be a float image in [0, 1], got dtype {x.dtype}; for 8-bit "
                        "data pass x / 255")
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def _dequantize_with(x: jax.Array, u: jax.Array, bits: int) -> jax.Array:
    """``(x_q + u) / 2^b`` with the sum kept strictly below ``x_q + 1`` in floating point."""
    xq = _bin_index(x, bits)
    # x_q + u can round up to x_q + 1 for u within an ulp of 1; clamp so the result stays in
    # bin x_q. Dividing by 2^b is exact, so floor(out · 2^b) == x_q holds bit for bit.
    s = jnp.minimum(xq + u, jnp.nextafter(xq + 1, jnp.zeros_like(xq)))
    return s / 2**bits


def quantize(x: jax.Array, bits: int = 8) -> jax.Array:
    r"""Snaps one image to the centre of its ``bits``-bit bin.

    .. math:: x_q = \min(\lfloor 2^b x \rfloor, 2^b - 1)\ (\text{clipped at } 0), \qquad
              Q(x) = (x_q + \tfrac12) / 2^b.

    Data on the ``k/(2^b - 1)`` grid (e.g. MNIST's ``k/255`` for ``b = 8``) maps one-to-one to
    the bins, ``⌊2^b k/(2^b-1)⌋ = k``, for ``b ≤ 12`` in float32. Beyond, the margin to the
    next bin (``≈ 2^-b``) falls below float32's rounding of ``k/(2^b - 1)``, and a few of the
    top levels land one bin up: 1 of 8,192 at ``b = 13``, 127 of 65,536 at ``b = 16`` (a
    numerics review); quantise such data in float64 where that matters.

    Args:
      x: ``(H, W, C)`` float in ``[0, 1]`` (values outside are clipped into the end bins);
        an integer array is a TypeError.
      bits: bit depth ``b`` in ``[1, 16]``.

    Returns:
      ``(H, W, C)`` float, the bin centres.
    """
    bits = _check_bits(bits)
    x = _as_unit_float(x)
    return (_bin_index(x, bits) + 0.5) / 2**bits


def dequantize(key: jax.Array, x: jax.Array, bits: int = 8) -> jax.Array:
    r"""Uniform dequantisation of one image to ``bits`` bits (training/evaluation of flows).

    .. math:: x_q = \min(\lfloor 2^b x \rfloor, 2^b - 1), \qquad
              \tilde x = (x_q + u) / 2^b, \quad u \sim U[0, 1)^{H \times W \times C},

    so ``x̃`` lies in bin ``[x_q/2^b, (x_q+1)/2^b)`` (exactly: ``quantize(x̃) == quantize(x)``).
    ``b = 8`` keeps the full depth of 8-bit data; ``b = 5`` is what the Glow/RealNVP papers
    train natural images with.

    Args:
      key: PRNG key.
      x: ``(H, W, C)`` float in ``[0, 1]``; an integer array is a TypeError.
      bits: bit depth ``b`` in ``[1, 16]``.

    Returns:
      ``(H, W, C)`` float in ``[0, 1)``.
    """
    bits = _check_bits(bits)
    x = _as_unit_float(x)
    u = jax.random.uniform(key, x.shape, x.dtype)
    return _dequantize_with(x, u, bits)


def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    """A uniformly random symmetry of one image that keeps its shape.

    Three fair coins ``b`` give ``T^{b_2} ∘ H^{b_1} ∘ V^{b_0}`` (V: flip rows, H: flip columns,
    T: transpose), which enumerates each of the 8 elements of the dihedral group D4 of a
    square image once. A non-square image has only the 4 symmetries of its rectangle (no
    transpose, which would change its shape): ``H^{b_1} ∘ V^{b_0}``.
    For training only; never applied to test data.

    Args:
      key: PRNG key.
      x: ``(H, W, C)``.

    Returns:
      ``(H, W, C)``.
    """
    x = jnp.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must be one image (H, W, C), got shape {x.shape}")
    b = jax.random.bernoulli(key, 0.5, (3,))
    x = jnp.where(b[0], x[::-1], x)
    x = jnp.where(b[1], x[:, ::-1], x)
    if x.shape[0] != x.shape[1]:
        return x
    return jnp.where(b[2], jnp.swapaxes(x, 0, 1), x)
