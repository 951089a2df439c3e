"""Every benchmark in one call, then the goals and a summary.

``python -m benchmarks.all [--quick]`` runs, each in its own process (so one benchmark's device
memory or crash cannot affect the next), ``compile_time``, ``recovery``, ``training``,
``precision``, ``scaling``, ``iterations``, ``eager_calls``, ``restarts`` and
``progress_bar`` with the same
``--out`` and ``--precision``, judges the goals (:mod:`benchmarks.goals`) and writes
``<out>/summary[_quick]_<platform>.md``: the environment, the goals table (PASS / MISS and by
how much) and every benchmark's table.

On one H100 the full run takes a few hours, most of it in the recovery sweep (two paper-size
models × three tasks × batch sizes up to what fits, 300 L-BFGS iterations each);
``--only``/``--skip`` and each benchmark's own flags (run it directly) narrow it down.

``--session`` runs instead the measurements that judge the goals, sized for one GPU call of
about ten minutes (:data:`SESSION`), and ``--budget SECONDS`` stops the whole run at that wall
time: a benchmark that would start with less than :data:`MIN_START_S` left is not started, and
one still running at the deadline is killed with its worker processes. Either way the goals and
the summary are written from what finished.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time

from benchmarks import _common as C
from benchmarks import goals

BENCHMARKS = ("compile_time", "recovery", "training", "precision", "scaling", "iterations",
              "eager_calls", "restarts", "progress_bar")

SESSION: dict[str, tuple[str, ...]] = {
    "recovery": ("--models", "glow64,glow128", "--tasks", "cs-dense", "--batches", "64",
                 "--model-batches", "glow128=16", "--worker-timeout", "300"),
    "precision": ("--batch", "16", "--tasks", "cs-dense", "--modes", "default,bfloat16-dtype"),
    "training": ("--models", "glow64", "--batches", "64,256"),
    "progress_bar": ("--batch", "16", "--maxiter", "100", "--repeats", "1"),
}
"""``--session``: each benchmark's flags, in the order they are worth device time. Recovery
judges three of the four goals (64×64 CS s/image and solver overhead at batch 64, the best of
the first GPU run, a 128×128 batch of 16, and the compile time of their first calls); then
TF32 and the flow in bfloat16 (``bfloat16-dtype``; the ``bfloat16`` matmul setting is TF32
on a GPU) against float32; then training throughput; last, what
``recover(progress=True)`` costs on the device (64×64, batch 16, 100 iterations). On one H200
(2026-12-04) a recovery row took 80-115 s of wall time (process start, parameter
initialisation op by op, two compilations, two solves) and each training row about 90 s, so
``--budget 525`` covers recovery and about one more benchmark: run it with ``--budget``."""

MIN_START_S = 60.0
"""``--budget``: a benchmark is not started with fewer seconds than this left."""

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _latest_json(out: pathlib.Path, name: str, quick: bool,
                 since: float = -math.inf) -> dict | None:
    """The newest ``NAME_*.json`` in ``out`` (``NAME_quick_*`` with ``quick``) written at or
    after ``since`` (a :func:`time.time`), or ``None``: a file written before the run (one
    committed with the results) is not this run's, whatever machine's path it records."""
    pattern = f"{name}_quick_*.json" if quick else f"{name}_*.json"
    files = [(f.stat().st_mtime, f) for f in out.glob(pattern)
             if quick or not f.name.startswith(f"{name}_quick_")]
    files = [(mtime, f) for mtime, f in files if mtime >= since]
    if not files:
        return None
    return json.loads(max(files)[1].read_text())


def run_until(cmd: list[str], deadline: float | None) -> int | None:
    """Runs ``cmd`` from the repository root in a process group of its own and returns its exit
    status; ``None`` if it was still running at ``deadline`` (a :func:`time.monotonic` time),
    when the whole group is killed: the benchmark and any worker processes it started."""
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True)
    try:
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return proc.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if isinstance(e, KeyboardInterrupt):
            raise
        return None


def summarize(out: str | pathlib.Path, payloads: dict[str, dict], *, quick: bool,
              failures: dict[str, str] | None = None, seconds: dict | None = None,
              note: str | None = None) -> dict:
    """Judges the goals and writes ``summary[_quick]_<platform>.md``; returns its parts.
    ``note``, if given, is printed under the title."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = next((p["environment"] for p in payloads.values()
                if p.get("environment", {}).get("platform")), {})
    platform = env.get("platform", "unknown")
    goal_rows = goals.evaluate(payloads)
    device = env.get("device", "an unknown device (no benchmark finished)")
    lines = [f"# flowinv benchmarks{' (quick mode)' if quick else ''} on {device}", ""]
    if quick:
        lines += ["Quick mode: tiny models and few iterations, a smoke run. These numbers say "
                  "little about speed at paper size or on a GPU.", ""]
    if note:
        lines += [note, ""]
    if env:
        lines += [
            f"- device: {env.get('device')} × {env.get('device_count')}",
            f"- JAX {env.get('jax')} (jaxlib {env.get('jaxlib')}), Python {env.get('python')}",
            f"- dtype {env.get('dtype')}, matmul precision `{env.get('matmul_precision')}`",
            "- device memory limit: " + (
                f"{C.fmt(C.gib(env['device_memory_limit_bytes']))} GiB"
                if env.get("device_memory_limit_bytes") else "not reported (CPU: host memory)"),
            ""]
    lines += ["## Goals (one H100)", "", goals.goals_table(goal_rows).rstrip(), ""]
    for g in goal_rows:
        lines.append(f"- {goals.format_goal(g)}")
    lines.append("")
    for name in BENCHMARKS:
        if name not in payloads:
            why = (failures or {}).get(name, "not run")
            lines += [f"## {name}", "", f"Not available: {why}", ""]
            continue
        md = pathlib.Path(payloads[name].get("paths", {}).get("md", ""))
        stem = C.output_stem(name, quick, payloads[name]["environment"].get("platform"))
        md = md if md.is_file() else out / f"{stem}.md"
        body = md.read_text() if md.is_file() else "(table missing)\n"
        lines += [body.rstrip(), ""]
        if name in (failures or {}):
            lines += [f"({name}: {failures[name]}; the rows above are those it had saved.)", ""]
        if seconds and name in seconds:
            lines += [f"({name} took {seconds[name]:.0f} s of wall time, compilation included.)",
                      ""]
    path = out / f"summary_{'quick_' if quick else ''}{platform}.md"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return {"path": str(path), "goals": goal_rows, "platform": platform}


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.all --help``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.all", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="every benchmark's quick mode")
    p.add_argument("--out", default=str(C.RESULTS), help="results folder")
    p.add_argument("--precision", default="default", choices=tuple(C.PRECISIONS),
                   help="matmul precision of every benchmark but 'precision' (which sweeps it)")
    p.add_argument("--only", type=C.str_list, default=None,
                   help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--skip", type=C.str_list, default=(), help="benchmarks to leave out")
    p.add_argument("--in-process", action="store_true",
                   help="call each benchmark in this process instead of a subprocess (for the "
                        "CPU: on a GPU this process would hold device memory while the "
                        "benchmarks' workers measure what fits)")
    p.add_argument("--session", action="store_true",
                   help="only the goals' measurements, sized for one GPU call of about ten "
                        "minutes (see SESSION in benchmarks/all.py); use with --budget")
    p.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                   help="stop the run at this wall time: a benchmark is not started with less "
                        f"than {MIN_START_S:g} s left, and one running at the deadline is killed")
    args = p.parse_args(argv)
    start = time.monotonic()
    deadline = None if args.budget is None else start + args.budget
    plan = SESSION if args.session else dict.fromkeys(BENCHMARKS, ())
    names = [n for n in (args.only or plan) if n not in args.skip]
    if set(names) - set(plan):
        p.error(f"benchmarks must be among {tuple(plan)}")
    if set(args.skip) - set(BENCHMARKS):  # an unknown name was a silent no-op
        p.error(f"--skip: unknown {sorted(set(args.skip) - set(BENCHMARKS))}; choose from "
                f"{', '.join(BENCHMARKS)}")
    if args.session and args.quick:
        p.error("--session sizes paper-size runs for a GPU; --quick is the CPU smoke run")
    if args.budget is not None and (args.in_process or args.budget <= 0):
        p.error("--budget needs a positive number of seconds, and subprocesses (it kills a "
                "benchmark at the deadline): leave out --in-process")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payloads, failures, seconds = {}, {}, {}
    for name in names:
        argv_n = [*plan[name], "--out", str(out)] + (["--quick"] if args.quick else [])
        if name != "precision":
            argv_n += ["--precision", args.precision]
        if deadline is not None and deadline - time.monotonic() < MIN_START_S:
            failures[name] = (f"not started: {max(deadline - time.monotonic(), 0):.0f} s of "
                              f"the {args.budget:g} s budget left")
            print(f"=== benchmarks.{name}: {failures[name]}", flush=True)
            continue
        print(f"=== benchmarks.{name} {' '.join(argv_n)}", flush=True)
        t = time.perf_counter()
        if args.in_process:
            try:
                payloads[name] = importlib.import_module(f"benchmarks.{name}").main(argv_n)
            except Exception as e:  # one broken benchmark must not lose the others
                failures[name] = C.first_line(e)
        else:
            started = time.time()
            rc = run_until([sys.executable, "-m", f"benchmarks.{name}", *argv_n], deadline)
            payload = _latest_json(out, name, args.quick, since=started - 1)
            if payload is not None:
                payloads[name] = payload
            if rc is None:
                failures[name] = (f"stopped at the {args.budget:g} s budget after "
                                  f"{time.perf_counter() - t:.0f} s")
            elif rc != 0 or name not in payloads:
                failures[name] = f"exited with {rc}"
        seconds[name] = time.perf_counter() - t
    note = None
    if args.session:
        note = ("Session run (`--session`): a sized subset of each benchmark, not the whole "
                "sweep; " + "; ".join(f"{n}: `{' '.join(a)}`" for n, a in SESSION.items()
                                     if n in names) + ".")
    result = summarize(out, payloads, quick=args.quick, failures=failures, seconds=seconds,
                       note=note)
    result["failures"] = failures
    return result


if __name__ == "__main__":
    main()
