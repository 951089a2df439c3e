"""Out-of-distribution evaluation sets: LFW faces and flat synthetic cartoons."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowinv.data._base import LUMA, check_limit, check_shape, check_split
from flowinv.data.shapes import finish

LFW_FACES = 100
CARTOON_SIZES: dict[str, int] = {"test": 200, "train": 2000}
CARTOON_SEEDS: dict[str, int] = {"test": 0, "train": 1}
CARTOON_SHAPE = (64, 64, 3)


def load_lfw(split: str = "test", *, image_shape: Sequence[int] | None = None,
             limit: int | None = None) -> np.ndarray:
    """The 100 faces of ``skimage.data.lfw_subset()`` (grey 25×25), an evaluation-only set.

    ``lfw_subset()`` holds 100 faces followed by 100 non-faces; only the faces are used.

    Args:
      split: must be ``"test"`` (nothing here is for training).
      image_shape: target shape (:func:`fit_shape`; ``C = 3`` replicates the grey value);
        default ``(25, 25, 1)``.
      limit: keep only the first ``limit`` faces.

    Returns:
      float32 ``(N, H, W, C)`` in ``[0, 1]``.
    """
    check_split(split, ("test",), "split of 'lfw' (an evaluation-only set)")
    shape, limit = check_shape(image_shape), check_limit(limit)
    from skimage.data import lfw_subset

    faces = np.asarray(lfw_subset()[:LFW_FACES], np.float32)[..., None]
    return finish(np.clip(faces, 0.0, 1.0), shape, limit)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0) / 255.0


def _cartoon(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """One flat cartoon ``(height, width, 3)``: 3–8 flat shapes on a flat pastel background."""
    v, u = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width,
                       indexing="ij")
    img = np.empty((height, width, 3), np.float32)
    img[:] = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.4), rng.uniform(0.75, 1.0))
    for _ in range(rng.integers(3, 9)):
        kind = rng.integers(3)
        colour = _hsv_to_rgb(rng.uniform(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0))
        cu, cv = rng.uniform(0.1, 0.9, 2)
        a, b = rng.uniform(0.06, 0.3, 2)
        theta = rng.uniform(0.0, np.pi)
        du, dv = u - cu, v - cv
        pu = np.cos(theta) * du + np.sin(theta) * dv  # coordinates in the shape's frame
        pv = -np.sin(theta) * du + np.cos(theta) * dv
        if kind == 0:  # rotated rectangle
            mask = (np.abs(pu) <= a) & (np.abs(pv) <= b)
        elif kind == 1:  # rotated ellipse
            mask = (pu / a) ** 2 + (pv / b) ** 2 <= 1.0
        else:  # triangle: three vertices around the centre; inside = same side of all edges
            angles = theta + np.sort(rng.uniform(0.0, 2 * np.pi, 3))
            radii = rng.uniform(0.1, 0.35, 3)
            xs, ys = cu + radii * np.cos(angles), cv + radii * np.sin(angles)
            sides = [(xs[(k + 1) % 3] - xs[k]) * (v - ys[k]) - (ys[(k + 1) % 3] - ys[k])
                     * (u - xs[k]) for k in range(3)]
            mask = ((sides[0] >= 0) & (sides[1] >= 0) & (sides[2] >= 0)) | (
                (sides[0] <= 0) & (sides[1] <= 0) & (sides[2] <= 0))
        img[mask] = colour
    return img


def load_cartoon(split: str = "test", *, image_shape: Sequence[int] | None = None,
                 limit: int | None = None, seed: int | None = None) -> np.ndarray:
    """Flat synthetic cartoons: piecewise-constant shapes of flat colours, at any shape.

    Image ``i`` is drawn from ``default_rng((seed, i))`` alone (so a ``limit`` is a prefix and
    the same cartoon is rendered at every resolution): a pastel background, then 3–8 shapes
    (rotated rectangles, rotated ellipses, triangles) of saturated colours painted in order.
    Shapes live in the unit square, sampled at pixel centres without anti-aliasing; colours
    are on the 8-bit grid ``k/255``. The default seeds are 0 (test, 200 images) and 1 (train,
    2,000 images), so the splits never share an image.

    Args:
      split: ``"train"`` or ``"test"``.
      image_shape: output ``(H, W, C)``; default ``(64, 64, 3)``. ``C = 1`` is the BT.709 luma.
      limit: keep only the first ``limit`` images of the split (200 test / 2,000 train; a
        larger ``limit`` gives the whole split, as for every other dataset).
      seed: override the split's seed.

    Returns:
      float32 ``(N, H, W, C)`` in ``[0, 1]``.
    """
    check_split(split)
    shape, limit = check_shape(image_shape) or CARTOON_SHAPE, check_limit(limit)
    if seed is None:
        seed = CARTOON_SEEDS[split]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = CARTOON_SIZES[split] if limit is None else min(limit, CARTOON_SIZES[split])
    height, width, channels = shape
    images = np.stack([_cartoon(np.random.default_rng((int(seed), i)), height, width)
                       for i in range(n)])
    if channels == 1:
        images = (np.round(images @ LUMA * 255.0) / 255.0)[..., None]
    return images.astype(np.float32)
