r"""Image-quality metrics: PSNR and SSIM on one ``(H, W, C)`` image, and batched versions.

Both metrics take the estimate ``x`` and the reference ``ref`` (NumPy or JAX arrays) and return
Python floats. The estimate is **clipped to** ``[0, data_range]`` first, because every image in
flowinv lives in ``[0, 1]`` and the recoveries of some methods (Lasso, an unclipped generator)
overshoot that range; the reference is used as given, and must lie in ``[0, data_range]``
(within 1% of ``data_range``): one outside, such as an image in ``[0, 255]`` with the
default ``data_range=1``, is a ValueError, since every score against it would be meaningless
(identical images in ``[0, 255]`` scored −41 dB). Computation is in float64 NumPy, as
these are evaluation-time numbers, not part of any compiled solve.

SSIM comes from :func:`skimage.metrics.structural_similarity` (a maintained implementation);
PSNR is the one-line definition

.. math:: \mathrm{PSNR}(x, x_0) = 10 \log_{10} \frac{R^2}{\tfrac1n \|\mathrm{clip}(x) - x_0\|^2}

with ``R = data_range``; identical images give ``inf``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

__all__ = ["batch_psnr", "batch_ssim", "psnr", "ssim"]


def _as_pair(x: Any, ref: Any, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    try:
        xa = np.asarray(x, dtype=np.float64)
        ra = np.asarray(ref, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"x and ref must be numeric arrays, got {type(x).__name__} and "
                        f"{type(ref).__name__}") from e
    what = "(H, W, C)" if ndim == 3 else "(B, H, W, C)"
    if xa.ndim != ndim:
        raise ValueError(f"x must have shape {what}, got {xa.shape}")
    if ra.ndim != ndim:
        raise ValueError(f"ref must have shape {what}, got {ra.shape}")
    if xa.shape != ra.shape:
        raise ValueError(f"x and ref must have the same shape, got {xa.shape} and {ra.shape}")
    return xa, ra


def _range_if_outside(ref: Any, data_range: float) -> tuple[float, float] | None:
    """``(min, max)`` of a reference that leaves ``[0, data_range]`` by more than 1% (enough
    slack for rounding or a resampled reference's overshoot; a wrong ``data_range`` is off by a
    factor of 255 or more), or that holds a NaN (then ``(nan, nan)``: a NaN lies in no range,
    and every score against it would be NaN), else None. :func:`flowinv.plotting.image_grid`
    shares the rule."""
    ref = np.asarray(ref)
    if np.isnan(ref).any():
        return math.nan, math.nan
    low, high = float(np.min(ref, initial=0.0)), float(np.max(ref, initial=0.0))
    return (low, high) if low < -0.01 * data_range or high > 1.01 * data_range else None


def _check_reference(ref: np.ndarray, data_range: float) -> None:
    outside = _range_if_outside(ref, data_range)
    if outside is not None:
        low, high = outside
        raise ValueError(
            f"ref must lie in [0, data_range] = [0, {data_range:g}], got values in "
            f"[{low:g}, {high:g}]; pass data_range for images on another scale (e.g. "
            f"data_range=255 for [0, 255]), or rescale them")


def _check_range(data_range: Any) -> float:
    if isinstance(data_range, bool | np.bool_) or not isinstance(data_range, numbers.Real):
        raise TypeError(f"data_range must be a positive number, got {data_range!r}")
    data_range = float(data_range)
    if not (math.isfinite(data_range) and data_range > 0):
        raise ValueError(f"data_range must be a finite number > 0, got {data_range}")
    return data_range


def _psnr(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    mse = float(np.mean((np.clip(x, 0.0, data_range) - ref) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(data_range**2 / mse)


def _win_size(shape: tuple[int, ...]) -> int:
    # skimage's default 7x7 window, shrunk to the largest odd size that fits tiny images
    # (e.g. 5x5 for a 5x5 image) so SSIM stays defined; it needs at least a 3x3 window.
    side = min(shape[0], shape[1])
    if side < 3:
        raise ValueError(f"ssim needs images of at least 3x3 pixels, got shape {shape}")
    return min(7, side if side % 2 else side - 1)


def _ssim(x: np.ndarray, ref: np.ndarray, data_range: float) -> float:
    return float(structural_similarity(np.clip(x, 0.0, data_range), ref,
                                       data_range=data_range, channel_axis=-1,
                                       win_size=_win_size(x.shape)))


def psnr(x: Any, ref: Any, data_range: float = 1.0) -> float:
    r"""Peak signal-to-noise ratio of one image, in dB.

    :math:`10\log_{10}(R^2/\mathrm{MSE})` with :math:`\mathrm{MSE} = \tfrac1n\|\mathrm{clip}
    (x, 0, R) - x_0\|^2`; ``inf`` when the clipped estimate equals the reference.

    Args:
      x: estimate, ``(H, W, C)``; clipped to ``[0, data_range]`` before comparison.
      ref: reference image, ``(H, W, C)``, in ``[0, data_range]``.
      data_range: the peak value ``R`` (1.0 for flowinv images).

    Returns:
      PSNR as a Python float.
    """
    data_range = _check_range(data_range)
    xa, ra = _as_pair(x, ref, 3)
    _check_reference(ra, data_range)
    return _psnr(xa, ra, data_range)


def ssim(x: Any, ref: Any, data_range: float = 1.0) -> float:
    """Structural similarity of one image (Wang et al. 2004), averaged over channels.

    Uses :func:`skimage.metrics.structural_similarity` with ``channel_axis=-1`` and a uniform
    7x7 window (the largest odd window that fits for images smaller than 7 pixels).

    Args:
      x: estimate, ``(H, W, C)``; clipped to ``[0, data_range]`` before comparison.
      ref: reference image, ``(H, W, C)``, in ``[0, data_range]``; ``H, W >= 3``.
      data_range: the dynamic range of the images (1.0 for flowinv images).

    Returns:
      SSIM in ``[-1, 1]`` as a Python float (1 for identical images).
    """
    data_range = _check_range(data_range)
    xa, ra = _as_pair(x, ref, 3)
    _check_reference(ra, data_range)
    return _ssim(xa, ra, data_range)


def batch_psnr(xs: Any, refs: Any, data_range: float = 1.0) -> np.ndarray:
    """:func:`psnr` of each image pair in a batch.

    Args:
      xs, refs: ``(B, H, W, C)``.
      data_range: as in :func:`psnr`.

    Returns:
      float64 array ``(B,)``.
    """
    data_range = _check_range(data_range)
    xa, ra = _as_pair(xs, refs, 4)
    _check_reference(ra, data_range)
    return np.array([_psnr(a, b, data_range) for a, b in zip(xa, ra, strict=True)])


def batch_ssim(xs: Any, refs: Any, data_range: float = 1.0) -> np.ndarray:
    """:func:`ssim` of each image pair in a batch.

    Args:
      xs, refs: ``(B, H, W, C)``.
      data_range: as in :func:`ssim`.

    Returns:
      float64 array ``(B,)``.
    """
    data_range = _check_range(data_range)
    xa, ra = _as_pair(xs, refs, 4)
    _check_reference(ra, data_range)
    return np.array([_ssim(a, b, data_range) for a, b in zip(xa, ra, strict=True)])
