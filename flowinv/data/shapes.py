"""Bringing a stack of images to a requested ``(H, W, C)``: centre crop, resize, channels."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowinv.data._base import LUMA, check_shape


def _crop_to_aspect(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Centre crop of ``(N, h, w, c)`` to the aspect ratio ``height/width`` (largest such box)."""
    h, w = images.shape[1:3]
    if h * width > w * height:  # too tall
        ch, cw = max(1, round(w * height / width)), w
    else:
        ch, cw = h, max(1, round(h * width / height))
    top, left = (h - ch) // 2, (w - cw) // 2
    return images[:, top: top + ch, left: left + cw]


#: Shrinks by at least this factor (on both axes) begin with a block mean, see :func:`fit_shape`.
BLOCK_MEAN_FROM = 8


def _block_mean(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """Mean over ``k × k`` blocks, ``k = ⌊f/4⌋`` for the shrink factor ``f = min(h/H, w/W)``, when
    ``f >= BLOCK_MEAN_FROM``; the ``< k`` rows and columns that do not fill a block are trimmed
    evenly from both sides (less than a quarter of an output pixel). Otherwise unchanged."""
    n, h, w, c = images.shape
    k = int(min(h / height, w / width) // 4)
    if k < BLOCK_MEAN_FROM // 4:
        return images
    hk, wk = h // k, w // k
    top, left = (h - hk * k) // 2, (w - wk * k) // 2
    blocks = images[:, top: top + hk * k, left: left + wk * k].reshape(n, hk, k, wk, k, c)
    return blocks.mean(axis=(2, 4), dtype=np.float32)


def fit_shape(images: np.ndarray, image_shape: Sequence[int] | None) -> np.ndarray:
    """Brings a stack of equally sized images to ``image_shape``.

    The images are centre-cropped to the aspect ratio ``H/W`` (a square crop when ``H == W``),
    resized with bilinear interpolation (Gaussian anti-aliasing when shrinking,
    ``skimage.transform.resize``) and clipped to ``[0, 1]``. A shrink by ``f >= 8`` (a camera
    photo brought to 64×64) first averages ``k × k`` blocks, ``k = ⌊f/4⌋``, so the Gaussian
    filters a ``k²``-times smaller image for the remaining ``4 <= f/k < 8`` (a 12 MP photo to
    64×64: 0.2 s instead of 10 s on a 2-core CPU); shrinks by ``f < 8`` resize as before.
    Channels: 1 → 3 replicates the grey value, 3 → 1 takes the BT.709 luma
    ``0.2125 R + 0.7154 G + 0.0721 B``. Images already of the requested size are returned
    untouched (no resampling).

    Args:
      images: ``(N, h, w, c)`` float in ``[0, 1]``, ``c`` in ``(1, 3)``; integer images are a
        ``TypeError`` (uint8 pixels resized and clipped to ``[0, 1]`` would come out white).
      image_shape: target ``(H, W, C)``; ``None`` returns ``images`` as float32.

    Returns:
      float32 ``(N, H, W, C)``.
    """
    shape = check_shape(image_shape)
    images = np.asarray(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise TypeError(f"images must be floats in [0, 1], got dtype {images.dtype} (divide "
                        "8-bit images by 255)")
    images = images.astype(np.float32, copy=False)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"images must be (N, h, w, c) with c in (1, 3), got {images.shape}")
    if shape is None:
        return images
    height, width, channels = shape
    if images.shape[1:3] != (height, width):
        from skimage.transform import resize

        images = _block_mean(_crop_to_aspect(images, height, width), height, width)
        if len(images):
            images = resize(images, (len(images), height, width, images.shape[-1]), order=1,
                            anti_aliasing=None, preserve_range=True).astype(np.float32)
        else:
            images = np.zeros((0, height, width, images.shape[-1]), np.float32)
        images = np.clip(images, 0.0, 1.0)
    if images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] == 3 and channels == 1:
        images = np.clip(images @ LUMA, 0.0, 1.0)[..., None]
    return np.ascontiguousarray(images, np.float32)


def finish(images: np.ndarray, image_shape, limit: int | None) -> np.ndarray:
    if limit is not None:
        images = images[:limit]
    return fit_shape(images, image_shape)
