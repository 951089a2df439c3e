"""Shared pytest fixtures."""

from __future__ import annotations

import os

# The suite's programs are small and run for milliseconds, so XLA's LLVM optimisation passes cost
# far more than they save: with them off (the switch JAX's own test suite uses), the float64
# round-trip tests of RealNVP ran in 31 s instead of 71 s. It changes how XLA generates machine
# code, not what a program computes. Set before JAX is imported so the experiments and
# benchmarks that tests start in subprocesses inherit it; tests marked ``optimised`` (long runs
# of a shipped model, where slow machine code costs more than compiling it well) and
# ``JAX_DISABLE_MOST_OPTIMIZATIONS=0`` in the environment switch it back on.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import flowinv  # noqa: E402

# In case a plugin imported JAX before this file: the environment decides either way.
_TRUE = ("1", "true", "yes", "on")
jax.config.update("jax_disable_most_optimizations",
                  os.environ["JAX_DISABLE_MOST_OPTIMIZATIONS"].lower() in _TRUE)

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


@pytest.fixture(autouse=True)
def _optimised_compilation(request):
    """Compiles a test marked ``optimised`` with XLA's full optimisation, as users run.

    ``jax_disable_most_optimizations`` is not part of JAX's cache keys, so the caches are cleared
    on both sides of the test: no program compiled one way is reused the other way.
    """
    if request.node.get_closest_marker("optimised") is None:
        yield
        return
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", False)
    jax.clear_caches()
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", before)
        jax.clear_caches()


@pytest.fixture
def x64():
    """Runs one test with float64 enabled in JAX, restoring the previous setting afterwards.

    ``jax.enable_x64`` is a context manager over the ``jax_enable_x64`` option (jax >= 0.8); the
    setting is part of the jit cache key, so functions traced under it are retraced outside it.
    Test modules that define their own ``x64`` fixture override this one.
    """
    with jax.enable_x64(True):
        yield


@jax.jit
def _perturbed(params, key, scale):
    flat, unravel = ravel_pytree(params)
    return unravel(flat + scale * jax.random.normal(key, flat.shape, flat.dtype))


@pytest.fixture(scope="session")
def perturb_params():
    """``perturb_params(params, key, scale=0.05)``: every (float) entry of ``params`` plus
    ``N(0, scale²)``, which moves a flow off its identity initialisation. One draw for the
    flattened tree in one compiled program: 1.0 s for a tiny Glow's 29 leaves on 2 cores, where
    a draw per leaf took 19 s op by op (each new shape compiles its own ``jax.random.normal``)
    and 12 s jitted."""
    return lambda params, key, scale=0.05: _perturbed(params, key, scale)


@pytest.fixture(scope="session")
def perturbed_tiny_glow(perturb_params):
    """``(flow, params, x)``: ``glow((8, 8, 1), levels=2, steps=2, width=8)`` initialised on six
    uniform images ``x`` and perturbed (:func:`perturb_params`), a small random prior shared by
    the engine and stress tests."""
    flow = flowinv.glow((8, 8, 1), levels=2, steps=2, width=8)
    x = jax.random.uniform(jax.random.PRNGKey(0), (6, 8, 8, 1))
    params = perturb_params(flow.init(jax.random.PRNGKey(1), x), jax.random.PRNGKey(2))
    return flow, params, x
