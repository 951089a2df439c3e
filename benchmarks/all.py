"""Every benchmark in one call, then the goals and a summary.

``python -m benchmarks.all [--quick]`` runs, each in its own process (so one benchmark's device
memory or crash cannot affect the next), ``compile_time``, ``recovery``, ``training``,
``precision``, ``scaling``, ``iterations`` and ``eager_calls`` with the same ``--out`` and
``--precision``, judges the goals (:mod:`benchmarks.goals`) and writes
``<out>/summary[_quick]_<platform>.md``: the environment, the goals table (PASS / MISS and by
how much) and every benchmark's table.

On one H100 the full run takes a few hours, most of it in the recovery sweep (two paper-size
models × three tasks × batch sizes up to what fits, 300 L-BFGS iterations each);
``--only``/``--skip`` and each benchmark's own flags (run it directly) narrow it down.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import subprocess
import sys
import time

from benchmarks import _common as C
from benchmarks import goals

BENCHMARKS = ("compile_time", "recovery", "training", "precision", "scaling", "iterations",
              "eager_calls")


def _latest_json(out: pathlib.Path, name: str, quick: bool) -> dict | None:
    pattern = f"{name}_quick_*.json" if quick else f"{name}_*.json"
    files = [f for f in out.glob(pattern) if quick or not f.name.startswith(f"{name}_quick_")]
    if not files:
        return None
    return json.loads(max(files, key=lambda f: f.stat().st_mtime).read_text())


def summarize(out: str | pathlib.Path, payloads: dict[str, dict], *, quick: bool,
              failures: dict[str, str] | None = None, seconds: dict | None = None) -> dict:
    """Judges the goals and writes ``summary[_quick]_<platform>.md``; returns its parts."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = next((p["environment"] for p in payloads.values()
                if p.get("environment", {}).get("platform")), {})
    platform = env.get("platform", "unknown")
    goal_rows = goals.evaluate(payloads)
    lines = [f"# flowinv benchmarks{' (quick mode)' if quick else ''} on {env.get('device')}",
             ""]
    if quick:
        lines += ["Quick mode: tiny models and few iterations, a smoke run. These numbers say "
                  "little about speed at paper size or on a GPU.", ""]
    lines += [f"- device: {env.get('device')} × {env.get('device_count')}",
              f"- JAX {env.get('jax')} (jaxlib {env.get('jaxlib')}), Python {env.get('python')}",
              f"- dtype {env.get('dtype')}, matmul precision `{env.get('matmul_precision')}`",
              "- device memory limit: " + (
                  f"{C.fmt(C.gib(env['device_memory_limit_bytes']))} GiB"
                  if env.get("device_memory_limit_bytes") else "not reported (CPU: host memory)"),
              "", "## Goals (one H100)", "", goals.goals_table(goal_rows).rstrip(), ""]
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
                   help="call each benchmark in this process instead of a subprocess")
    args = p.parse_args(argv)
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    if set(names) - set(BENCHMARKS):
        p.error(f"benchmarks must be among {BENCHMARKS}")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payloads, failures, seconds = {}, {}, {}
    for name in names:
        argv_n = ["--out", str(out)] + (["--quick"] if args.quick else [])
        if name != "precision":
            argv_n += ["--precision", args.precision]
        print(f"=== benchmarks.{name} {' '.join(argv_n)}", flush=True)
        t = time.perf_counter()
        if args.in_process:
            try:
                payloads[name] = importlib.import_module(f"benchmarks.{name}").main(argv_n)
            except Exception as e:  # one broken benchmark must not lose the others
                failures[name] = C.first_line(e)
        else:
            started = time.time()
            proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *argv_n],
                                  cwd=pathlib.Path(__file__).resolve().parent.parent)
            payload = _latest_json(out, name, args.quick)
            if payload is not None and pathlib.Path(payload.get("paths", {}).get(
                    "json", "")).stat().st_mtime >= started - 1:
                payloads[name] = payload
            if proc.returncode != 0 or name not in payloads:
                failures[name] = f"exited with {proc.returncode}"
        seconds[name] = time.perf_counter() - t
    result = summarize(out, payloads, quick=args.quick, failures=failures, seconds=seconds)
    result["failures"] = failures
    return result


if __name__ == "__main__":
    main()
