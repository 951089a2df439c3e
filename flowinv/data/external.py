"""Online and local images: TensorFlow Datasets (``tfds.data_source``) and folders of
PNG/JPEG files."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Sequence

import numpy as np

from flowinv.data._base import OFFLINE_HINT, check_limit, check_shape
from flowinv.data.shapes import fit_shape

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def tfds_missing(name: str, reason: object) -> RuntimeError:
    """The error for a ``tfds:NAME`` spec when ``tensorflow_datasets`` cannot be imported."""
    return RuntimeError(
        f"cannot load 'tfds:{name}': tensorflow_datasets is not installed ({reason}). Install it "
        "with `pip install 'flowinv[tfds]'` (downloading needs network access), or use "
        f"an offline source instead. {OFFLINE_HINT}.")


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
    shape, limit = check_shape(image_shape), check_limit(limit)
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty TFDS dataset name, got {name!r}")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise tfds_missing(name, e) from e
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir)
        n = len(source) if limit is None else min(limit, len(source))
        first = source[0] if n else None
    except ImportError as e:  # a builder's own dependency, e.g. TensorFlow to prepare a download
        raise RuntimeError(
            f"cannot load 'tfds:{name}' split {split!r}: {type(e).__name__}: {e}. Preparing a "
            "TFDS dataset needs TensorFlow and the builder's own dependencies: install them with "
            f"`pip install 'flowinv[tfds]'`. {OFFLINE_HINT}.") from e
    except Exception as e:  # TFDS raises many types (network, DatasetNotFound, format, IO)
        if type(e).__name__ == "DatasetNotFoundError":  # its message lists every TFDS name
            raise ValueError(f"'tfds:{name}': TFDS has no dataset {name!r} "
                             f"({str(e).strip().splitlines()[0]})") from None
        raise RuntimeError(
            f"cannot load 'tfds:{name}' split {split!r}: {type(e).__name__}: {e}. TFDS needs "
            "network access to download and prepare a dataset the first time (are you "
            f"offline?), or a prepared copy in data_dir. {OFFLINE_HINT}.") from e
    if not n:
        raise ValueError(f"tfds:{name} split {split!r} holds no records")
    if image_key is None:
        image_key = "image" if "image" in first else next(
            (k for k, val in first.items() if np.ndim(val) in (2, 3) and np.size(val) > 1), None)
        if image_key is None:
            raise ValueError(f"tfds:{name} has no image feature among {sorted(first)}; "
                             "pass image_key")

    def images():  # one record at a time: a large split is never held in memory whole
        for i in range(n):
            try:
                record = first if i == 0 else source[i]
            except Exception as e:  # noqa: BLE001 - TFDS's read errors, wrapped as above
                raise RuntimeError(f"cannot read record {i} of 'tfds:{name}' split {split!r}: "
                                   f"{type(e).__name__}: {e}") from e
            yield np.asarray(record[image_key])

    return _stack_images(images(), shape, [f"tfds:{name}[{i}]" for i in range(n)])


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


def _stack_images(arrays: Iterable[np.ndarray], shape, labels: Iterable[str]) -> np.ndarray:
    """Stacks images as float32 ``(N, H, W, C)``; with ``shape`` each is fitted as it arrives,
    so a lazy ``arrays`` never holds more than one full-size image (a folder of camera photos
    brought to 64×64 needs memory for 64×64 images, not for the photos)."""
    images = (_as_float_image(a, lab) for a, lab in zip(arrays, labels, strict=True))
    if shape is not None:
        return np.stack([fit_shape(img[None], shape)[0] for img in images]).astype(np.float32)
    images = list(images)
    sizes = {img.shape[:2] for img in images}
    if len(sizes) > 1:
        raise ValueError(f"images differ in size ({sorted(sizes)[:3]}...); pass image_shape=(H, "
                         "W, C) to centre-crop and resize them")
    channels = 3 if any(img.shape[-1] == 3 for img in images) else 1
    return np.stack([np.repeat(img, 3, -1) if img.shape[-1] < channels else img
                     for img in images]).astype(np.float32)


def _read_image_file(path: pathlib.Path) -> np.ndarray:
    """One PNG/JPEG as float32 ``(h, w, c)`` in ``[0, 1]`` (Pillow; 16-bit grey kept exact),
    turned upright as its EXIF orientation tag says (a camera's portrait photo is stored
    sideways with that tag)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as opened:
            opened.load()
            im = ImageOps.exif_transpose(opened)
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


def _hidden(relative: pathlib.Path) -> bool:
    """A file that is not one of a folder's images though it may end in ``.png``: hidden
    (``.name``, including the ``._name.png`` AppleDouble files macOS leaves on copied drives),
    or inside a hidden folder or the ``__MACOSX/`` folder of an unzipped macOS archive."""
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _image_files(root: pathlib.Path, recursive: bool) -> list[pathlib.Path]:
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = [p for p in pattern if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
             and not _hidden(p.relative_to(root))]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


#: The subfolders of a ``train/`` + ``test/`` layout (:func:`load_folder`).
SPLIT_FOLDERS = ("train", "test")


def list_folder(path, split: str | None, recursive: bool) -> list[pathlib.Path]:
    """The image files :func:`load_folder` reads, sorted; raises as it documents."""
    root = pathlib.Path(os.path.expanduser(os.fspath(path)))
    if not root.exists():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {str(root)!r} is not a directory")
    others = []
    own = _split_folder(root, split) if split is not None else None
    if own is not None:
        root = own
    elif split is not None:  # the folder stands in for this split, never the other's subfolder
        others = [f for f in (_split_folder(root, s) for s in SPLIT_FOLDERS if s != split)
                  if f is not None]
    files = [f for f in _image_files(root, recursive) if not any(o in f.parents for o in others)]
    if not files:
        hint = (f"; its {others[0].name}/ subfolder is the {others[0].name.lower()} split only, "
                f"so put the {split} images in {split}/" if others else "")
        raise ValueError(f"image folder {str(root)!r} holds no PNG/JPEG image "
                         f"({'/'.join(IMAGE_SUFFIXES)}{', recursively' if recursive else ''})"
                         + hint)
    return files


def _split_folder(root: pathlib.Path, split: str) -> pathlib.Path | None:
    """``root``'s subfolder for ``split`` (``train`` or ``test``, in any case, ``Test/`` as
    well as ``test/``; the exact name first), or None."""
    if (root / split).is_dir():
        return root / split
    matches = sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() == split)
    return matches[0] if matches else None


def load_folder(path: str | os.PathLike, split: str | None = None, *,
                image_shape: Sequence[int] | None = None, limit: int | None = None,
                recursive: bool = False) -> np.ndarray:
    """Every PNG/JPEG image of a folder, in sorted file-name order.

    If ``split`` is given and ``path/split`` is a folder (a ``train/`` + ``test/`` layout, in
    any case: ``Train/`` + ``Test/`` too), that subfolder is read; otherwise the folder itself
    is read for any split, so keep training and test images in separate folders (where only the
    other split has its subfolder, the folder without that subfolder is read: with
    ``recursive`` a test split never reads ``train/``).
    Files ending in ``.png``, ``.jpg`` or ``.jpeg`` (any case) are read with Pillow, sorted by
    their path relative to the folder (as strings: ``10.png`` before ``2.png``), and turned
    upright by their EXIF orientation tag; an alpha channel is dropped. Hidden files and
    folders (``.name``, which includes macOS's ``._name.png``) and ``__MACOSX/`` are skipped.
    With ``image_shape`` each image is centre-cropped to the aspect ``H/W`` (a square crop for
    square shapes) and resized (:func:`fit_shape`); without it all images must have the same
    size.

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
    shape, limit = check_shape(image_shape), check_limit(limit)
    files = list_folder(path, split, recursive)[:limit]
    return _stack_images((_read_image_file(f) for f in files), shape, [str(f) for f in files])
