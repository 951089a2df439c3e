"""What every loader of :mod:`flowinv.data` shares: the dataset names, the split seed, and the
checks of the ``split``, ``image_shape`` and ``limit`` arguments."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from flowinv._checks import positive_int

#: Names of the bundled (offline) datasets; ``tfds:...`` and ``folder:...`` specs come on top.
DATASETS: tuple[str, ...] = ("mnist", "digits", "patches64", "patches32", "lfw", "cartoon")
#: The bundled datasets with a test split only (their validation images are test images
#: after those reported on).
EVALUATION_ONLY: tuple[str, ...] = ("lfw",)
#: Spec prefixes of the online/local sources.
SPEC_PREFIXES: tuple[str, ...] = ("tfds:", "folder:")
SPLITS: tuple[str, ...] = ("train", "test")
SPLIT_SEED = 0
# ITU-R BT.709 luma, the weights of skimage.color.rgb2gray.
LUMA = np.array([0.2125, 0.7154, 0.0721], np.float32)

OFFLINE_HINT = ("flowinv is offline first: the bundled datasets "
                f"{', '.join(repr(d) for d in DATASETS)} and 'folder:/path/to/images' need no "
                "network")


def check_split(split: str, allowed: Sequence[str] = SPLITS, what: str = "split") -> str:
    if not isinstance(split, str) or split not in allowed:
        raise ValueError(f"{what} must be one of {tuple(allowed)}, got {split!r}")
    return split


def check_shape(image_shape) -> tuple[int, int, int] | None:
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


def check_limit(limit) -> int | None:
    if limit is None:
        return None
    return positive_int(limit, "limit")


def split_permutation(n: int, n_test: int, split: str) -> np.ndarray:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return perm[:n_test] if split == "test" else perm[n_test:]
