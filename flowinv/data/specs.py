"""Datasets named by a spec string (``"mnist"``, ``"tfds:NAME[:SPLIT]"``,
``"folder:PATH[/**]"``...): loading, checking without loading, and comparing two splits."""

from __future__ import annotations

import importlib.util
import pathlib
from collections.abc import Sequence

import numpy as np

from flowinv.data._base import DATASETS, check_limit, check_shape, check_split
from flowinv.data.digits import load_digits, load_mnist
from flowinv.data.external import (
    _read_image_file,
    list_folder,
    load_folder,
    load_tfds,
    tfds_missing,
)
from flowinv.data.ood import load_cartoon, load_lfw
from flowinv.data.photos import load_patches


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
    check_split(split)
    check_shape(image_shape)
    check_limit(limit)
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
        path = path.rstrip("/") or path  # "PATH/**/" as "PATH/**", "PATH/" as "PATH"
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
    check_split(split)
    kind, name, option = _parse_spec(spec)
    if kind == "tfds" and importlib.util.find_spec("tensorflow_datasets") is None:
        raise tfds_missing(name, "No module named 'tensorflow_datasets'")
    if kind == "folder":
        list_folder(name, split, option)


def folder_files(spec: str, split: str = "test") -> list[pathlib.Path]:
    """The image files ``load_dataset(spec, split)`` reads for a ``folder:`` spec, in its order
    (``PATH/split`` when that subfolder exists, else ``PATH``; see :func:`load_folder`); raises
    as :func:`load_dataset` would. Nothing is decoded."""
    check_split(split)
    kind, path, recursive = _parse_spec(spec)
    if kind != "folder":
        raise ValueError(f"spec {spec!r} is not a 'folder:PATH[/**]' spec")
    return list_folder(path, split, recursive)


def dataset_channels(spec: str, split: str = "test", limit: int = 8) -> int:
    """1 if the first ``limit`` images of the split are all grey, 3 if any is colour (an
    alpha channel does not count). A folder's images are read one at a time, so they may
    differ in size; other datasets have one channel count, read off their first image."""
    check_split(split)
    check_limit(limit)
    kind, name, option = _parse_spec(spec)
    if kind != "folder":
        return int(load_dataset(spec, split, limit=1).shape[-1])
    files = list_folder(name, split, option)[:limit]
    return max(int(_read_image_file(f).shape[-1]) for f in files)


def shared_image_mask(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(b),)`` bool: which images of batch ``b`` equal an image of batch ``a`` exactly
    (same shape, dtype and bytes)."""
    seen = {(img.shape, img.dtype.str, img.tobytes()) for img in a}
    return np.array([(img.shape, img.dtype.str, img.tobytes()) in seen for img in b], bool)


def num_shared_images(a: np.ndarray, b: np.ndarray) -> int:
    """How many images of batch ``b`` equal an image of batch ``a`` exactly (same shape, dtype
    and bytes): how a spec whose two splits are the same images is recognised."""
    return int(shared_image_mask(a, b).sum())
