"""Argument checks shared by the package's public functions (private: not part of the API)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def positive_int(value: Any, name: str) -> int:
    """Returns ``value`` as a Python ``int`` if it is an integer ≥ 1, else raises ``ValueError``.

    Accepts Python and NumPy integers; rejects ``bool`` (an ``int`` subclass that is never meant
    as a count), floats (even integral ones) and anything else.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def finite_real(value: Any, name: str, *, positive: bool = False) -> float:
    """Returns ``value`` as a Python ``float`` if it is a finite real number (and, with
    ``positive``, > 0), else raises ``ValueError``. Rejects ``bool``, strings and arrays."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or (positive and not value > 0)):
        raise ValueError(f"{name} must be a finite number{' > 0' if positive else ''}, "
                         f"got {value!r}")
    return float(value)


def all_finite(tree: Any) -> bool:
    """Whether every leaf of a pytree of arrays is finite (no NaN or inf)."""
    return all(bool(np.all(np.isfinite(np.asarray(leaf)))) for leaf in jax.tree.leaves(tree))


def float_array(x: Any) -> Any:
    """``x`` as a JAX array, cast to float32 unless it is floating already: measurements of
    integers (counts, 8-bit pixels) would otherwise set the dtype of a solver's step sizes,
    and a learning rate cast to an integer is 0."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.float32)


def unit_interval_images(x: Any, name: str, *, why: str = "") -> None:
    """Raises ``TypeError`` unless ``x`` (a NumPy or JAX array) has a floating dtype, and
    ``ValueError`` unless every entry lies in ``[0, 1]`` (so no NaN or inf either); ``why``, if
    given, is added to the second message in parentheses."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = " (divide 8-bit images by 255)" if jnp.issubdtype(x.dtype, jnp.integer) else ""
        raise TypeError(f"{name} must be floating point images in [0, 1], got dtype "
                        f"{x.dtype}{hint}")
    lo, hi = float(x.min()), float(x.max())
    if not (0.0 <= lo and hi <= 1.0):
        raise ValueError(f"{name} must hold images with pixel values in [0, 1]"
                         f"{f' ({why})' if why else ''}, got values in [{lo:.4g}, {hi:.4g}]")
