"""Multi-device scaling of the sharded recovery batch.

``flowinv.recover`` places the batch axis of the measurements and latents across all local
devices (``jax.sharding.NamedSharding`` over a 1-D mesh) whenever the batch divides evenly, and
every image's solve is independent, so the devices never need to talk to each other during a
solve. ``python -m benchmarks.scaling`` measures how close that comes to linear: *weak scaling*,
a fixed ``--per-device-batch`` on N = 1, 2, 4, … devices (total batch N × per-device batch),
reporting images/s, ``efficiency`` = images/s(N) / (N · images/s(1)), the ratio to the
value-and-gradient floor, and how many devices the result actually lives on.

Every N runs in a fresh subprocess, because the device set is fixed when JAX starts:

* GPU: ``CUDA_VISIBLE_DEVICES`` = the first N of the visible GPUs (N up to the local count);
* CPU: ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` (N = 1, 2, 4), i.e. N virtual
  devices sharing the same cores — this checks the sharded code path, not speed.

Writes ``benchmarks/results/scaling[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks import _common as C
from benchmarks import recovery

QUICK = dict(model="tiny16", per_device_batch=2, devices=(1, 2, 4), maxiter=5, floor_iters=5,
             repeats=3, task="cs", operator="fast")
FULL = dict(model="glow64", per_device_batch=32, devices=(1, 2, 4, 8, 16),
            maxiter=C.PAPER_ITERATIONS, floor_iters=30, repeats=1, task="cs", operator="dense")

_PROBE = ("import json, jax; d = jax.devices()[0]; print(json.dumps({'platform': d.platform, "
          "'local_device_count': jax.local_device_count()}))")


def probe() -> dict:
    """Platform and local device count, asked of a fresh process (this one never starts a
    backend, so that it holds no accelerator memory while the workers run)."""
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def device_env(platform: str, n: int) -> dict:
    """Environment variables that give a fresh JAX process exactly ``n`` devices."""
    if platform == "cpu":
        flags = os.environ.get("XLA_FLAGS", "").split()
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        return {"XLA_FLAGS": " ".join([*flags, f"--xla_force_host_platform_device_count={n}"])}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(i) for i in range(n)]
    return {"CUDA_VISIBLE_DEVICES": ",".join(ids[:n])}


def measure(config: dict) -> dict:
    """A worker: one recovery measurement on the devices this process was started with."""
    import jax

    row = recovery.measure(config)
    row["devices_requested"] = config["devices"]
    row["local_device_count"] = jax.local_device_count()
    return row


COLUMNS = [("devices_requested", "devices"), ("devices_used", "result on"),
           ("batch", "total batch"), ("iterations_max", "iters"), ("compile_s", "compile s"),
           ("run_s", "run s"), ("images_per_s", "images/s"), ("efficiency", "efficiency"),
           ("ratio_vs_floor", "iter / v&g"), ("peak_gib", "peak GiB / device"),
           ("status", "status")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.scaling --help``."""
    p = C.base_parser("python -m benchmarks.scaling", __doc__)
    p.add_argument("--model", default=None, choices=tuple(C.MODELS),
                   help="benchmark flow (default glow64; quick tiny16)")
    p.add_argument("--per-device-batch", type=C.positive_int, default=None,
                   help="images per device (default 32; quick 2)")
    p.add_argument("--devices", type=C.int_list, default=None,
                   help="device counts to try (default 1,2,4 on CPU; powers of two up to the "
                        "local GPU count)")
    p.add_argument("--maxiter", type=C.positive_int, default=None,
                   help=f"L-BFGS iterations (default {C.PAPER_ITERATIONS}; quick 5)")
    p.add_argument("--worker-timeout", type=float, default=3600.0)
    args = p.parse_args(argv)
    if args.worker:
        return C.worker_main(args, measure)
    config = C.deepcopy_config(QUICK if args.quick else FULL)
    for k in ("model", "per_device_batch", "maxiter"):
        if getattr(args, k) is not None:
            config[k] = getattr(args, k)
    info = probe()
    platform = info["platform"]
    if args.devices:
        counts = args.devices
    elif platform == "cpu":
        counts = (1, 2, 4)
    else:
        counts = tuple(n for n in config["devices"] if n <= info["local_device_count"])
    if platform != "cpu":
        counts = tuple(n for n in counts if n <= info["local_device_count"])
    config.update(devices=counts, precision=args.precision, platform=platform)
    rows = []
    for n in counts:
        cfg = dict(model=config["model"], task=config["task"], operator=config["operator"],
                   batch=n * config["per_device_batch"], maxiter=config["maxiter"],
                   floor_iters=config["floor_iters"], repeats=config["repeats"],
                   precision=args.precision, devices=n)
        row = C.run_worker("scaling", cfg, env=device_env(platform, n),
                           timeout=args.worker_timeout)
        row.setdefault("devices_requested", n)
        print(f"{n} device(s): " + (f"{row['images_per_s']:.3g} images/s on "
                                    f"{row['devices_used']} device(s)"
                                    if row.get("status") == "ok" else
                                    f"{row.get('status')} {row.get('error', '')}"), flush=True)
        rows.append(row)
    base = next((r for r in rows if r.get("status") == "ok" and r["devices_requested"] == 1),
                None)
    for r in rows:
        if base and r.get("status") == "ok":
            r["efficiency"] = r["images_per_s"] / (r["devices_requested"]
                                                   * base["images_per_s"])
        r["peak_gib"] = C.gib(r.get("peak_memory_bytes"))
    env = C.worker_environment(rows, args.precision)
    notes = [C.iterations_note(config["maxiter"]),
             "weak scaling: the per-device batch is fixed; efficiency 1.0 is linear",
             "each device count ran in a fresh process; 'result on' counts the devices the "
             "recovered images are sharded over"]
    if platform == "cpu":
        notes.append("CPU: N virtual devices (--xla_force_host_platform_device_count) share "
                     "the same cores, so this checks the sharded path, not speed-up")
    elif len(counts) < 2:
        notes.append(f"only {info['local_device_count']} local device(s): no scaling measured")
    return C.write_outputs(args.out, "scaling", quick=args.quick, environment=env,
                           config=config, rows=C.strip_environment(rows),
                           table=C.markdown_table(rows, COLUMNS), notes=notes)


if __name__ == "__main__":
    main()
