"""Argument checks shared by the package's public functions (private: not part of the API)."""

from __future__ import annotations

import math
import numbers
from typing import Any


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
