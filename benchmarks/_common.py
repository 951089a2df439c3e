"""Shared pieces of the benchmarks: models, environment record, timing, memory, output files.

Every benchmark module writes ``<out>/<name>[_quick]_<platform>.json`` and a Markdown table
``….md`` beside it. The JSON is ``{"benchmark", "quick", "environment", "config", "rows",
"notes"}``; ``environment`` says where and how it ran (device, JAX version, dtype, matmul
precision, memory limit, XLA flags) and every row carries its own batch size, image shape,
parameter count, iterations, compile and run seconds, images/s, ratio to the
value-and-gradient floor measured in the same run, and peak memory with its source.

Measurements that may run out of device memory run in a fresh subprocess each (``--worker``),
so that one out-of-memory failure (even a hard crash) costs only that row, and so that the
device's ``peak_bytes_in_use`` (a process-lifetime high-water mark) belongs to that
measurement alone.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import jax
import numpy as np

# the experiments' argparse types: a count of 0 divided by zero after a whole solve, or was
# silently ignored
from experiments.common import nonnegative_float, positive_int  # noqa: F401

PAPER_ITERATIONS = 300
"""L-BFGS iterations of the goals' setting and the experiments' ``--full`` presets; the GPU
default. The papers' texts give no count (Asim et al.'s preprint, App. 6.1, lost its numbers in
our copy), so "paper setting" in the notes means this budget."""

RESULTS = pathlib.Path(__file__).resolve().parent / "results"

MODELS: dict[str, dict] = {
    # The reference Glows of issue 6 ("paper-size"): Asim et al.'s K and L for compressed
    # sensing at 64×64×3 (K=18, L=4) and 128×128×3 (K=32, L=6), at width 512, which the paper
    # does not state. Here 41.8 M and 230.7 M parameters; Asim supp. §1.2.1 gives 25.8 M and
    # 129.5 M (and 67.2 M for its K=48, L=4 denoising Glow).
    "glow64": dict(image_shape=(64, 64, 3), levels=4, steps=18, width=512),
    "glow128": dict(image_shape=(128, 128, 3), levels=6, steps=32, width=512),
    # glow-mnist's architecture (random parameters): a CPU-sized model the experiments use.
    "mnist28": dict(image_shape=(28, 28, 1), levels=2, steps=12, width=96),
    # Quick-mode stand-ins (CI smoke runs): tiny, so that each benchmark takes seconds on a CPU.
    "tiny16": dict(image_shape=(16, 16, 3), levels=2, steps=2, width=16),
    "tiny32": dict(image_shape=(32, 32, 3), levels=2, steps=2, width=16),
    # The smallest Glow that exercises every code path: the CI tests use it.
    "tiny8": dict(image_shape=(8, 8, 3), levels=1, steps=1, width=8),
}
"""Benchmark flows by name: keyword arguments of :func:`flowinv.glow`."""

QUICK_STANDS_FOR = {"tiny16": "glow64", "tiny8": "glow64", "tiny32": "glow128"}
"""Which reference ("paper-size", see MODELS) model each quick-mode model stands in for (goals,
summary tables)."""

PRECISIONS: dict[str, str | None] = {
    "default": None,
    "highest": "highest",
    "tensorfloat32": "tensorfloat32",
    "bfloat16": "bfloat16",
}
"""``--precision`` choices -> value for ``jax.default_matmul_precision`` (None: JAX's default)."""

PRECISION_MEANING = {
    "default": "JAX default (lax.Precision.DEFAULT): TF32 tensor cores for float32 convs and "
               "matmuls on Ampere/Hopper GPUs, bfloat16 passes on TPU, float32 on CPU",
    "highest": "lax.Precision.HIGHEST: full float32 on GPU and CPU (6 bf16 passes on TPU)",
    "tensorfloat32": "lax.Precision.HIGH: TF32 on Ampere/Hopper GPUs (3 bf16 passes on TPU), "
                     "float32 on CPU",
    "bfloat16": "jax.default_matmul_precision('bfloat16') = lax.Precision.DEFAULT: bfloat16 "
                "only on TPU; on GPU the same TF32 as 'default'; float32 on CPU",
    "bfloat16-dtype": "the flow evaluated in bfloat16 dtype (params and activations cast; true "
                      "bf16 tensor-core convs on GPU), the solver and loss in float32",
}
"""What each precision setting does on each platform (recorded next to the numbers)."""

OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM when allocating",
               "Failed to allocate")


# --------------------------------------------------------------------------------------------
# command line


def base_parser(prog: str, doc: str | None, *,
                precision_flag: bool = True) -> argparse.ArgumentParser:
    """An argument parser with the flags every benchmark shares.

    ``--quick`` (tiny models, CI smoke run), ``--out`` (results folder), ``--precision``
    (default matmul precision of the whole run), and the hidden ``--worker``/``--worker-out``
    pair used to run one measurement in a subprocess.

    Also switches JAX's persistent compilation cache off for the process, even where
    ``JAX_COMPILATION_CACHE_DIR`` is set: every benchmark reports compile seconds, and a cached
    program is read from disk instead of compiled.
    """
    jax.config.update("jax_enable_compilation_cache", False)
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="tiny models and few iterations: a smoke run of seconds on a CPU (its "
                        "numbers say little about speed)")
    p.add_argument("--out", default=str(RESULTS), help="folder for the JSON and Markdown table")
    if precision_flag:
        p.add_argument("--precision", default="default", choices=tuple(PRECISIONS),
                       help="default float32 matmul/conv precision of the run (see README)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return p


def int_list(text: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)`` (argparse type)."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ints, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive ints, got {text!r}")
    return values


def str_list(text: str) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")`` (argparse type); at least one name (``,`` alone was read as
    no list, and the defaults ran)."""
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {text!r}")
    return values


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (argparse type; :func:`positive_int` for >= 1)."""
    try:
        return 0 if int(text) == 0 else positive_int(text)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None


def powers_of_two(limit: int) -> tuple[int, ...]:
    """``1, 2, 4, …`` up to and including ``limit`` (if a power of two)."""
    out, b = [], 1
    while b <= limit:
        out.append(b)
        b *= 2
    return tuple(out)


def deepcopy_config(config: dict) -> dict:
    """A copy of a module-level config dict that a run may modify (nested dicts copied)."""
    return copy.deepcopy(config)


def config_from_args(parser: argparse.ArgumentParser, args, quick: dict, full: dict,
                     flags: Iterable[str], *, at_least_one: Iterable[str] = ()) -> dict:
    """The quick (``--quick``) or full config with each of ``flags`` given on the command line
    in its place and ``precision`` set; a value of ``at_least_one`` below 1 is a usage error
    (``parser.error``)."""
    config = deepcopy_config(quick if args.quick else full)
    for name in flags:
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    for name in at_least_one:
        if config[name] < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {config[name]}")
    config["precision"] = args.precision
    return config


def iterations_note(maxiter: int, ran: int | None = None) -> str | None:
    """A note when a run allowed fewer L-BFGS iterations than :data:`PAPER_ITERATIONS`, or
    (``ran``, the most any image ran) its solves stopped before ``maxiter``; else None. With
    ``tol=0`` an image still stops where its line search can no longer lower the loss in
    float32."""
    notes = []
    if maxiter < PAPER_ITERATIONS:
        notes.append(f"used {maxiter} L-BFGS iterations per image, fewer than the paper "
                     f"setting of {PAPER_ITERATIONS}")
    if ran is not None and ran < maxiter:
        notes.append(f"every image had stopped by iteration {ran} of {maxiter} (converged, or "
                     "at the float32 rounding floor); per-iteration figures divide by the "
                     "iterations run")
    return "; ".join(notes) or None


# --------------------------------------------------------------------------------------------
# environment, precision, memory


def precision_context(precision: str):
    """Context manager setting ``jax.default_matmul_precision`` for ``precision`` (a key of
    :data:`PRECISIONS`; ``"default"`` leaves JAX's default in place)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    value = PRECISIONS[precision]
    return contextlib.nullcontext() if value is None else jax.default_matmul_precision(value)


def device_string() -> str:
    """``platform:device_kind`` of the first device, e.g. ``gpu:NVIDIA H100 80GB HBM3``."""
    dev = jax.devices()[0]
    return f"{dev.platform}:{dev.device_kind}"


def environment(precision: str = "default") -> dict:
    """Where and how this process runs: device, JAX version, dtype, precision, limits, flags."""
    import jaxlib

    dev = jax.devices()[0]
    stats = _memory_stats(dev)
    env_vars = ("XLA_FLAGS", "JAX_DISABLE_MOST_OPTIMIZATIONS", "XLA_PYTHON_CLIENT_PREALLOCATE",
                "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR",
                "NVIDIA_TF32_OVERRIDE", "CUDA_VISIBLE_DEVICES", "JAX_DEFAULT_MATMUL_PRECISION")
    return {
        "device": f"{dev.platform}:{dev.device_kind}",
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "local_device_count": jax.local_device_count(),
        "process_count": jax.process_count(),
        "device_memory_limit_bytes": (stats or {}).get("bytes_limit"),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "dtype": "float32",
        "matmul_precision": precision,
        "matmul_precision_meaning": PRECISION_MEANING[precision],
        # JAX's default matmul precision where this is recorded (JAX_DEFAULT_MATMUL_PRECISION
        # or the benchmark's precision context)
        "jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
        "compilation_cache_dir": jax.config.jax_compilation_cache_dir,
        "compilation_cache_enabled": bool(jax.config.jax_enable_compilation_cache),
        "xla_most_optimizations_disabled": bool(jax.config.read("jax_disable_most_optimizations")),
        "env": {k: os.environ[k] for k in env_vars if k in os.environ},
        "timestamp_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "git_commit": _git_commit(),
        "backend_version": _backend_version(dev),
    }


def _git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` for uncommitted changes), or None outside git."""
    root = pathlib.Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _backend_version(dev) -> str | None:
    """The runtime's own version string (CUDA and driver on a GPU), where JAX exposes one."""
    try:
        return str(dev.client.platform_version)
    except Exception:  # not every backend has one
        return None


def _memory_stats(dev) -> dict | None:
    try:
        return dev.memory_stats()
    except Exception:  # some backends raise instead of returning None
        return None


def peak_memory() -> dict:
    """Peak memory of this process so far, and which measure it is.

    On GPU/TPU: the largest ``memory_stats()["peak_bytes_in_use"]`` over local devices (a
    process-lifetime high-water mark). Elsewhere (CPU): the process's maximum resident set size
    from ``resource.getrusage`` (host memory, includes Python and XLA itself).
    """
    peaks = [(_memory_stats(d) or {}).get("peak_bytes_in_use") for d in jax.local_devices()]
    peaks = [p for p in peaks if p is not None]
    if peaks:
        return {"peak_memory_bytes": int(max(peaks)),
                "peak_memory_source": "device memory_stats()['peak_bytes_in_use'] (max over "
                                      "local devices)"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss *= 1 if sys.platform == "darwin" else 1024  # Linux reports KiB, macOS bytes
    return {"peak_memory_bytes": int(rss),
            "peak_memory_source": "process max RSS (resource.getrusage ru_maxrss; host memory)"}


def is_oom(exc: BaseException) -> bool:
    """True for an out-of-memory failure (XLA's RESOURCE_EXHAUSTED and friends)."""
    text = f"{type(exc).__name__}: {exc}"
    return any(m in text for m in OOM_MARKERS)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message`` of an exception, shortened."""
    msg = str(exc).strip().splitlines()
    return (f"{type(exc).__name__}: {msg[0] if msg else ''}")[:limit]


# --------------------------------------------------------------------------------------------
# timing


_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")


class CompileTimer:
    """Sums the seconds JAX spends tracing, lowering and compiling inside a ``with`` block.

    Uses the public ``jax.monitoring`` duration events that JAX records for every compilation
    (``/jax/core/compile/*``), so the compile time of a first call is measured directly rather
    than guessed as "first call minus second call". ``count`` is the number of backend
    compilations seen.
    """

    def __init__(self):
        self.seconds = 0.0
        self.backend_seconds = 0.0
        self.count = 0

    def _listener(self, event: str, duration: float, **kwargs) -> None:
        if event in _COMPILE_EVENTS:
            self.seconds += duration
            if event == _COMPILE_EVENTS[-1]:
                self.backend_seconds += duration
                self.count += 1

    def __enter__(self) -> CompileTimer:
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Runs ``fn()``, blocks on its result, and returns ``(result, wall seconds)``."""
    t = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - t


# --------------------------------------------------------------------------------------------
# models and data


def make_flow(model: str | dict, **overrides):
    """A :func:`flowinv.glow` from a :data:`MODELS` name or a dict of its keyword arguments."""
    import flowinv

    kw = dict(MODELS[model] if isinstance(model, str) else model)
    kw.update(overrides)
    return flowinv.glow(tuple(kw.pop("image_shape")), **kw)


def model_label(model: str | dict) -> str:
    """``glow64 (64×64×3, L=4, K=18, width 512)`` for tables."""
    kw = MODELS[model] if isinstance(model, str) else model
    h, w, c = kw["image_shape"]
    name = model if isinstance(model, str) else "glow"
    return f"{name} ({h}x{w}x{c}, L={kw['levels']}, K={kw['steps']}, width {kw['width']})"


def benchmark_params(flow, key, batch: int = 2, scale: float = 0.1):
    """Glow params initialised on a batch of synthetic images, then moved off the identity.

    Glow zero-initialises the last convolution of every coupling network, so a freshly
    initialised flow is close to a fixed linear map; each leaf gets a random perturbation so
    that timing and recovery run through a non-trivial nonlinear flow:
    ``scale / sqrt(fan_in) · N(0, 1)`` for a kernel (``fan_in`` = the product of all but its
    last axis) and ``scale · N(0, 1)`` for a vector. Scaling by the fan-in makes each
    coupling's output move by about ``scale`` times its input whatever the network's width.
    An unscaled ``0.02 · N(0, 1)`` (used before) is harmless at the quick sizes, but at width
    512 it moves each coupling's ``log s`` by about 1, and through the paper-size glow64's
    72 couplings ``G(z)`` overflowed to NaN (every solve stopped at iteration 0 on the GPU).
    ``flow.init`` is one compiled program (see :meth:`flowinv.flows.Flow.init`). The
    perturbation is drawn with numpy (XLA:CPU compiles a threefry sampler per leaf shape
    slowly), seeded from ``key``.
    """
    x = jax.numpy.asarray(synthetic_images(np.random.default_rng(0), batch, flow.image_shape))
    params = flow.init(key, x)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def perturb(leaf):
        std = scale / math.sqrt(math.prod(leaf.shape[:-1])) if leaf.ndim >= 2 else scale
        return leaf + jax.numpy.asarray(std * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree.map(perturb, params)


def quarter_cs_problem(model: str | dict, batch: int):
    """``(flow, params, operator, y)``: a benchmark Glow with random parameters
    (:func:`benchmark_params`) and Gaussian CS measurements (``m = n/4``, one shared operator)
    of ``batch`` synthetic images."""
    from flowinv import operators

    flow = make_flow(model)
    params = benchmark_params(flow, jax.random.PRNGKey(0))
    x = jax.numpy.asarray(synthetic_images(np.random.default_rng(1), batch, flow.image_shape))
    op = operators.gaussian_cs(jax.random.PRNGKey(2), flow.image_shape, max(1, flow.dim // 4))
    return flow, params, op, jax.vmap(op)(x)


def synthetic_images(rng: np.random.Generator, batch: int, shape: Sequence[int]) -> np.ndarray:
    """Smooth random colour images ``(batch, H, W, C)`` in ``[0.05, 0.95]``, from numpy alone.

    Each channel is a sum of 6 random low-frequency 2-D sinusoids; no data set is read, so the
    benchmarks start in milliseconds at any image size.
    """
    h, w, c = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.zeros((batch, h, w, c), np.float32)
    for b in range(batch):
        for ch in range(c):
            fx, fy = rng.uniform(0.5, 4.0, (2, 6))
            phase = rng.uniform(0, 2 * np.pi, 6)
            amp = rng.uniform(0.2, 1.0, 6)
            img = sum(a * np.sin(2 * np.pi * (u * xx + v * yy) + p)
                      for a, u, v, p in zip(amp, fx, fy, phase, strict=True))
            img = (img - img.min()) / max(np.ptp(img), 1e-6)
            out[b, :, :, ch] = 0.05 + 0.9 * img
    return out


def padded_batch(batch: int) -> int:
    """``batch`` rounded up to a multiple of the local device count: what
    :func:`flowinv.recover` pads a chunk to before sharding it over the devices."""
    n = jax.local_device_count()
    return batch + (-batch) % n if n > 1 else batch


def shard_batch(tree, batch: int):
    """Places the leading (batch) axis of every leaf across all local devices, as
    :func:`flowinv.recover` does with a chunk it has padded to :func:`padded_batch` (a no-op
    on one device or when ``batch`` does not divide: pad first)."""
    devices = jax.local_devices()
    if len(devices) == 1 or batch % len(devices):
        return tree
    mesh = jax.sharding.Mesh(np.array(devices), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    return jax.device_put(tree, sharding)


# --------------------------------------------------------------------------------------------
# subprocess workers


def run_worker(module: str, config: dict, *, env: dict | None = None,
               timeout: float | None = None) -> dict:
    """Runs ``python -m benchmarks.<module> --worker CONFIG --worker-out OUT`` and returns OUT.

    The worker writes one result dict, to which ``worker_s`` (the process's wall time, its
    start, imports and set-up included) is added. If the process dies without one (a hard
    crash, a timeout), the result is ``{"status": "does not fit" | "failed", "error": …}``,
    judged from its stderr.
    """
    root = pathlib.Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path = pathlib.Path(tmp) / "config.json"
        out_path = pathlib.Path(tmp) / "result.json"
        cfg_path.write_text(json.dumps(config))
        cmd = [sys.executable, "-m", f"benchmarks.{module}", "--worker", str(cfg_path),
               "--worker-out", str(out_path)]
        full_env = {**os.environ, **(env or {})}
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=root, env=full_env, capture_output=True, text=True,
                                  timeout=timeout)
            stderr, rc = proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as e:
            stderr = (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr
                                                                                     or "")
            rc = "timeout"
        if out_path.exists():
            return {**json.loads(out_path.read_text()),
                    "worker_s": time.perf_counter() - start}
    tail = "\n".join(stderr.strip().splitlines()[-5:])
    # XLA's allocator also logs "ran out of memory ... this is not a failure" on runs that
    # fit; a worker stopped at its timeout did not run out of memory either
    oom = rc != "timeout" and any(
        m in line for line in stderr.splitlines() if "not a failure" not in line
        for m in OOM_MARKERS)
    return {**config, "status": "does not fit" if oom else "failed",
            "error": f"worker exited with {rc}: {tail}"[-600:]}


def worker_main(args, measure: Callable[[dict], dict]) -> None:
    """The ``--worker`` entry point: reads the config, measures, writes the result dict."""
    config = json.loads(pathlib.Path(args.worker).read_text())
    result = measure(config)
    pathlib.Path(args.worker_out).write_text(json.dumps(result, default=_json_default))


# --------------------------------------------------------------------------------------------
# output


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple):
        return list(obj)
    return str(obj)


def fmt(value: Any) -> str:
    """A table cell: floats to 3–4 significant digits, bytes-like ints left alone."""
    if value is None:
        return "—"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        digits = max(0, 3 - int(math.floor(math.log10(abs(value)))))
        return f"{value:.{min(digits, 4)}f}"
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def gib(nbytes: int | None) -> float | None:
    """Bytes -> GiB (None stays None)."""
    return None if nbytes is None else nbytes / 2**30


def markdown_table(rows: Iterable[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns = [(key, header), …]``. A ``peak_gib``
    column measured as host RSS (the CPU's fallback, :func:`peak_memory`) says so in its
    header: it is the whole process's memory, not a device's."""
    rows = list(rows)
    if any("RSS" in str(r.get("peak_memory_source", "")) for r in rows):
        columns = [(k, "peak host RSS GiB (whole process)" if k == "peak_gib" else h)
                   for k, h in columns]
    head = "| " + " | ".join(h for _, h in columns) + " |\n"
    sep = "|" + "|".join("---" for _ in columns) + "|\n"
    body = "".join("| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |\n" for r in rows)
    return head + sep + body


def output_stem(name: str, quick: bool, platform_name: str) -> str:
    """``recovery_quick_cpu`` / ``recovery_gpu``: the file stem of a benchmark's outputs."""
    return f"{name}_{'quick_' if quick else ''}{platform_name}"


def write_outputs(out: str | os.PathLike, name: str, *, quick: bool, environment: dict,
                  config: dict, rows: list[dict], table: str, notes: Sequence[str] = (),
                  extra: dict | None = None, echo: bool = True) -> dict:
    """Writes ``<out>/<stem>.json`` and ``<out>/<stem>.md``; prints them (unless ``echo`` is
    false) and returns the payload."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    notes = [n for n in notes if n]
    if quick:
        notes.insert(0, "quick mode: tiny models and few iterations, a smoke run; the numbers "
                        "say little about speed at paper size or on a GPU")
    if environment.get("xla_most_optimizations_disabled"):
        notes.insert(0, "JAX_DISABLE_MOST_OPTIMIZATIONS was set: XLA compiled with most of its "
                        "optimisation off, so run times are not representative")
    stem = output_stem(name, quick, environment.get("platform", "unknown"))
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    payload = {"benchmark": name, "quick": quick, "environment": environment,
               "config": config, "rows": rows, "notes": notes, **(extra or {}),
               "paths": {"json": str(json_path), "md": str(md_path)}}
    json_path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    md = [f"## {name}{' (quick)' if quick else ''} on {environment.get('device')}", "",
          f"JAX {environment.get('jax')}, dtype {environment.get('dtype')}, matmul precision "
          f"`{environment.get('matmul_precision')}`, {environment.get('device_count')} "
          "device(s).", "", table.rstrip(), ""]
    md += [f"- {n}" for n in notes]
    md_path.write_text("\n".join(md) + "\n")
    if echo:
        print("\n".join(md))
        print(f"wrote {json_path} and {md_path.name}")
    return payload


def worker_environment(rows: list[dict], precision: str) -> dict:
    """The environment recorded by the first worker that got as far as recording one (the
    orchestrating process never touches the accelerator, so it cannot record its own)."""
    for r in rows:
        if isinstance(r.get("environment"), dict):
            return r["environment"]
    return {"device": "unknown (no worker finished)", "platform": "unknown",
            "jax": None, "dtype": "float32", "matmul_precision": precision}


def strip_environment(rows: list[dict]) -> list[dict]:
    """Rows without their per-worker ``environment`` copies (kept once at the top level)."""
    return [{k: v for k, v in r.items() if k != "environment"} for r in rows]
