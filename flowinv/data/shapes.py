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
    shape = check_shape(image_shape)
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
        images = np.clip(images @ LUMA, 0.0, 1.0)[..., None]
    return np.ascontiguousarray(images, np.float32)


def finish(images: np.ndarray, image_shape, limit: int | None) -> np.ndarray:
    if limit is not None:
        images = images[:limit]
    return fit_shape(images, image_shape)
