"""Shared pytest fixtures."""

from __future__ import annotations

import jax
import pytest


@pytest.fixture
def x64():
    """Runs one test with float64 enabled in JAX, restoring the previous setting afterwards.

    ``jax.enable_x64`` is a context manager over the ``jax_enable_x64`` option (jax >= 0.6); the
    setting is part of the jit cache key, so functions traced under it are retraced outside it.
    Test modules that define their own ``x64`` fixture override this one.
    """
    with jax.enable_x64(True):
        yield
