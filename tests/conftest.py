"""Shared pytest fixtures."""

from __future__ import annotations

import os

import jax
import pytest

# The experiments' command lines keep compiled programs in ~/.cache/flowinv/xla
# (experiments.common.use_compilation_cache); tests must not write there, and tests that run an
# experiment in a subprocess inherit this. A cache would not speed the suite up: measured with
# one fresh cache shared by both workers, 1,191 s against 1,126 s without (few programs repeat).
os.environ["FLOWINV_COMPILATION_CACHE"] = "off"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drops JAX's compiled programs after each test module.

    A worker of ``pytest -n 2`` runs ~300 tests in one process, and JAX keeps every compiled
    executable alive in its caches; by the end of the suite a worker held several GB, and in
    two CI runs a worker died with a segfault inside XLA's compiler near the end (in
    ``tests/test_stress.py``, which passes in a process of its own). Modules share no compiled
    programs worth keeping, so clearing between modules bounds the worker's memory.
    """
    yield
    jax.clear_caches()


@pytest.fixture
def x64():
    """Runs one test with float64 enabled in JAX, restoring the previous setting afterwards.

    ``jax.enable_x64`` is a context manager over the ``jax_enable_x64`` option (jax >= 0.6); the
    setting is part of the jit cache key, so functions traced under it are retraced outside it.
    Test modules that define their own ``x64`` fixture override this one.
    """
    with jax.enable_x64(True):
        yield
