"""The natural colour photographs that ship inside scikit-image, scikit-learn and matplotlib,
and the ``patches64``/``patches32`` sets cropped from them, split by source photo."""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np

from flowinv.data._base import SPLIT_SEED, check_limit, check_shape, check_split
from flowinv.data.shapes import fit_shape

#: The natural colour photographs that ship inside the installed libraries (no download), in
#: the fixed order that seeds the crops: name -> where it comes from.
PHOTOS: dict[str, str] = {
    "astronaut": "skimage.data.astronaut()",
    "chelsea": "skimage.data.chelsea()",
    "coffee": "skimage.data.coffee()",
    "rocket": "skimage.data.rocket()",
    "motorcycle": "skimage.data.stereo_motorcycle()[0]",
    "china": "sklearn.datasets.load_sample_images(): china.jpg",
    "flower": "sklearn.datasets.load_sample_images(): flower.jpg",
    "grace_hopper": "matplotlib.cbook.get_sample_data('grace_hopper.jpg')",
}
#: Photographs reserved for testing: never cropped for a training patch.
TEST_PHOTOS: tuple[str, ...] = ("astronaut", "flower")
TRAIN_PHOTOS: tuple[str, ...] = tuple(p for p in PHOTOS if p not in TEST_PHOTOS)
#: Downscaling factors applied to each photo before cropping, per patch size. patches32 uses half
#: the factors of patches64, so both see the same fields of view (64 to 256 original pixels).
PATCH_SCALES: dict[int, tuple[float, ...]] = {64: (1.0, 0.5, 0.25), 32: (0.5, 0.25, 0.125)}
#: Training crops per (photo, scale): ceil(TRAIN_DENSITY * h * w / p²) for the rescaled h×w.
TRAIN_DENSITY = 6.0


def _read_photo(name: str) -> np.ndarray:
    if name == "astronaut":
        from skimage.data import astronaut
        return astronaut()
    if name == "chelsea":
        from skimage.data import chelsea
        return chelsea()
    if name == "coffee":
        from skimage.data import coffee
        return coffee()
    if name == "rocket":
        from skimage.data import rocket
        return rocket()
    if name == "motorcycle":
        from skimage.data import stereo_motorcycle
        return stereo_motorcycle()[0]  # the right view is a near duplicate: not used
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image
        return load_sample_image(f"{name}.jpg")
    if name == "grace_hopper":
        import matplotlib.cbook
        from skimage.io import imread
        return imread(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    raise ValueError(f"photo name must be one of {tuple(PHOTOS)}, got {name!r}")


@functools.cache
def _photo(name: str, scale: float) -> np.ndarray:
    from skimage.transform import rescale
    from skimage.util import img_as_float32

    img = img_as_float32(_read_photo(name))[..., :3]
    if scale != 1.0:
        img = rescale(img, scale, order=1, anti_aliasing=True, channel_axis=-1)
        img = np.clip(img, 0.0, 1.0).astype(np.float32)
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def load_photo(name: str, scale: float = 1.0) -> np.ndarray:
    """One bundled photograph (see :data:`PHOTOS`) as float32 ``(h, w, 3)`` in ``[0, 1]``.

    ``scale != 1`` downscales with ``skimage.transform.rescale(..., order=1,
    anti_aliasing=True)``. The result is cached in memory and read-only.
    """
    if name not in PHOTOS:
        raise ValueError(f"photo name must be one of {tuple(PHOTOS)}, got {name!r}")
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not 0 < scale <= 1:
        raise ValueError(f"scale must be a float in (0, 1], got {scale!r}")
    return _photo(name, float(scale))


def _patch_boxes(size: int, split: str) -> list[tuple[str, float, np.ndarray, np.ndarray]]:
    """(photo, scale, tops, lefts) of every patch of a split, before the final shuffle."""
    boxes = []
    photos = TEST_PHOTOS if split == "test" else TRAIN_PHOTOS
    names = list(PHOTOS)
    for name in photos:
        for j, scale in enumerate(PATCH_SCALES[size]):
            h, w = load_photo(name, scale).shape[:2]
            if h < size or w < size:
                continue
            if split == "test":  # the centred grid of non-overlapping patches
                nh, nw = h // size, w // size
                top0, left0 = (h - nh * size) // 2, (w - nw * size) // 2
                rows, cols = np.meshgrid(np.arange(nh), np.arange(nw), indexing="ij")
                tops, lefts = top0 + size * rows.ravel(), left0 + size * cols.ravel()
            else:  # uniformly random crops, seeded per (size, photo, scale)
                rng = np.random.default_rng((size, names.index(name), j))
                n = math.ceil(TRAIN_DENSITY * h * w / size**2)
                tops = rng.integers(0, h - size + 1, n)
                lefts = rng.integers(0, w - size + 1, n)
            boxes.append((name, scale, tops, lefts))
    return boxes


def load_patches(size: int = 64, split: str = "test", *,
                 image_shape: Sequence[int] | None = None, limit: int | None = None,
                 return_sources: bool = False):
    """Colour patches of the bundled photographs, split by source photo.

    For every photo of the split (train: :data:`TRAIN_PHOTOS`, test: :data:`TEST_PHOTOS`) and
    every factor ``s`` in ``PATCH_SCALES[size]`` the photo is downscaled by ``s``
    (:func:`load_photo`) and ``size × size`` patches are cropped from the ``h × w`` result:

    * train: ``ceil(6 · h · w / size²)`` crops with top-left corners drawn uniformly by
      ``default_rng((size, photo_index, scale_index))`` (``photo_index`` in :data:`PHOTOS`);
    * test: the centred grid of ``(h // size) · (w // size)`` non-overlapping patches.

    All patches of a split are then put in the order ``default_rng(0).permutation(N)`` so that
    a ``limit`` takes a mix of photos and scales.

    Args:
      size: 64 or 32.
      split: ``"train"`` or ``"test"``.
      image_shape: optional target shape (:func:`fit_shape`); default ``(size, size, 3)``.
      limit: keep only the first ``limit`` patches.
      return_sources: also return a dict of per-patch provenance arrays: ``photo`` (name),
        ``scale``, ``top`` and ``left`` (pixel corner in the rescaled photo).

    Returns:
      float32 ``(N, size, size, 3)`` in ``[0, 1]``, or ``(patches, sources)``.
    """
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) \
            or size not in PATCH_SCALES:
        raise ValueError(f"size must be one of {tuple(PATCH_SCALES)}, got {size!r}")
    size = int(size)
    check_split(split)
    shape, limit = check_shape(image_shape), check_limit(limit)
    from numpy.lib.stride_tricks import sliding_window_view

    parts, photo, scales, tops_all, lefts_all = [], [], [], [], []
    for name, scale, tops, lefts in _patch_boxes(size, split):
        windows = sliding_window_view(load_photo(name, scale), (size, size), axis=(0, 1))
        parts.append(np.moveaxis(windows[tops, lefts], 1, -1))  # (n, 3, p, p) -> (n, p, p, 3)
        photo += [name] * len(tops)
        scales.append(np.full(len(tops), scale))
        tops_all.append(tops)
        lefts_all.append(lefts)
    order = np.random.default_rng(SPLIT_SEED).permutation(sum(len(t) for t in tops_all))
    order = order[:limit]
    patches = fit_shape(np.concatenate(parts)[order], shape)
    if not return_sources:
        return patches
    sources = {"photo": np.asarray(photo)[order], "scale": np.concatenate(scales)[order],
               "top": np.concatenate(tops_all)[order], "left": np.concatenate(lefts_all)[order]}
    return patches, sources
