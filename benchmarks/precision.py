"""Matmul precision: speed and recovered PSNR, so the default can be chosen by measurement.

``python -m benchmarks.precision`` recovers the same batch of images with the same solver under
each precision setting and records images/s, the ratio to the value-and-gradient floor (under
the same setting), the PSNR of the recovered images against the truth, and their PSNR against
the ``highest`` recovery (how far the reduced precision moved the result):

* ``highest``: ``jax.default_matmul_precision("highest")``, true float32 (the reference);
* ``tensorfloat32``: ``"tensorfloat32"`` (TF32 on Ampere/Hopper GPUs);
* ``default``: JAX's default, no override (also TF32 for float32 convs on Ampere/Hopper GPUs);
* ``bfloat16``: ``jax.default_matmul_precision("bfloat16")``; JAX maps it to
  ``Precision.DEFAULT``, which is bfloat16 only on TPU — on a GPU it is the same TF32 as
  ``default``, so this row alone cannot show what bfloat16 costs in accuracy;
* ``bfloat16-dtype``: the flow itself evaluated in bfloat16 (params and activations cast, so
  the convolutions run on bf16 tensor cores), with the latent, loss and L-BFGS in float32.

Truth images are samples of the benchmark flow at temperature 0.7 (clipped to [0, 1]; near the
range of G, so PSNR measures how well each solve converges), or ``--truth patches64`` for the
bundled test photographs; ``--prior``-free, the flow is the paper-size Glow with perturbed
random weights. Tasks: CS at m/n = 0.2 (dense Gaussian operator; its own matmul always runs at
``HIGHEST``) and denoising (σ = 0.1). The chosen setting applies to the whole run of the other
benchmarks through their ``--precision`` flag.

Writes ``benchmarks/results/precision[_quick]_<platform>.json`` and ``.md`` and prints the
fastest setting whose mean PSNR is within ``--tolerance-db`` of ``highest``.
"""

from __future__ import annotations

import numpy as np

from benchmarks import _common as C
from benchmarks import recovery

MODES = ("highest", "tensorfloat32", "default", "bfloat16", "bfloat16-dtype")
QUICK = dict(model="tiny16", batch=2, maxiter=5, floor_iters=5, repeats=3,
             groups=(("cs", "dense"),))
FULL = dict(model="glow64", batch=16, maxiter=C.PAPER_ITERATIONS, floor_iters=30, repeats=1,
            groups=(("cs", "dense"), ("denoise", "identity")))


def _mode_config(mode: str) -> dict:
    if mode == "bfloat16-dtype":
        return dict(precision="default", compute_dtype="bfloat16")
    return dict(precision=mode, compute_dtype="float32")


def run(config: dict, on_row=None) -> list[dict]:
    """Every (task, mode) of ``config`` in this process; adds ``psnr_vs_highest_db``.
    ``on_row(rows)`` is called after each measurement (to save what has finished)."""
    rows = []
    for task, operator in config["groups"]:
        reference = None
        for mode in config["modes"]:
            cfg = dict(model=config["model"], task=task, operator=operator,
                       batch=config["batch"], maxiter=config["maxiter"],
                       floor_iters=config["floor_iters"], repeats=config["repeats"],
                       truth=config["truth"],
                       **_mode_config(mode))
            row, images = recovery.measure(cfg, return_images=True, with_environment=False)
            if mode == "highest" and images is not None:
                reference = np.asarray(images)
            if reference is not None and images is not None:
                row["psnr_vs_highest_db"] = float(np.mean(recovery._psnr(images, reference)))
            print(f"{task}/{operator} {mode}: " + (
                f"{row['images_per_s']:.3g} images/s, PSNR {row['psnr_mean']:.2f} dB"
                if row["status"] == "ok" else f"{row['status']} {row.get('error', '')}"),
                flush=True)
            rows.append(row)
            if on_row is not None:
                on_row(rows)
    return rows


def recommend(rows: list[dict], tolerance_db: float) -> list[dict]:
    """Per task: the fastest mode whose mean PSNR is within ``tolerance_db`` of ``highest``."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        ok = [r for r in rows if r["task"] == task and r["status"] == "ok"
              and r.get("psnr_mean") is not None]
        ref = next((r for r in ok if r["precision"] == "highest"), None)
        if ref is None:
            continue
        good = [r for r in ok if r["psnr_mean"] >= ref["psnr_mean"] - tolerance_db]
        if not good:
            continue
        best = max(good, key=lambda r: r["images_per_s"])
        out.append(dict(task=task, precision=best["precision"],
                        speedup_vs_highest=best["images_per_s"] / ref["images_per_s"],
                        psnr_change_db=best["psnr_mean"] - ref["psnr_mean"]))
    return out


COLUMNS = [("task", "task"), ("precision", "precision"), ("batch", "batch"),
           ("iterations_max", "iters"), ("compile_s", "compile s"), ("run_s", "run s"),
           ("images_per_s", "images/s"), ("speedup", "vs highest"),
           ("ratio_vs_floor", "iter / v&g"), ("psnr_mean", "PSNR vs truth dB"),
           ("psnr_vs_highest_db", "PSNR vs highest dB"), ("status", "status")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.precision --help``."""
    p = C.base_parser("python -m benchmarks.precision", __doc__, precision_flag=False)
    p.add_argument("--model", default=None, choices=tuple(C.MODELS),
                   help="benchmark flow (default glow64; quick tiny16)")
    p.add_argument("--batch", type=C.positive_int, default=None,
                   help="images per solve (default 16)")
    p.add_argument("--maxiter", type=C.positive_int, default=None,
                   help=f"L-BFGS iterations (default {C.PAPER_ITERATIONS}; quick 5)")
    p.add_argument("--modes", type=C.str_list, default=None,
                   help=f"subset of {','.join(MODES)} (default all; 'highest' is the reference)")
    p.add_argument("--tasks", type=C.str_list, default=None,
                   help="subset of cs-dense,cs-fast,denoise (default cs-dense,denoise; quick "
                        "cs-dense)")
    p.add_argument("--truth", default="flow",
                   help="'flow' (samples at T=0.7), 'synthetic', or a dataset spec such as "
                        "patches64")
    p.add_argument("--tolerance-db", type=C.nonnegative_float, default=0.1,
                   help="PSNR loss accepted when recommending a faster setting")
    args = p.parse_args(argv)
    config = C.deepcopy_config(QUICK if args.quick else FULL)
    modes = args.modes or MODES
    if set(modes) - set(MODES):
        p.error(f"--modes must be a subset of {MODES}")
    # the reference first, so every other row can be compared with it
    modes = ("highest", *(m for m in modes if m != "highest"))
    for k in ("model", "batch", "maxiter"):
        if getattr(args, k) is not None:
            config[k] = getattr(args, k)
    if args.tasks:
        names = {"cs-dense": ("cs", "dense"), "cs-fast": ("cs", "fast"),
                 "denoise": ("denoise", "identity")}
        if set(args.tasks) - set(names):
            p.error(f"--tasks must be a subset of {sorted(names)}")
        config["groups"] = tuple(names[t] for t in args.tasks)
    config.update(modes=modes, truth=args.truth, tolerance_db=args.tolerance_db)
    # saved after every row: a run stopped at a deadline (benchmarks.all --budget) keeps them
    rows = run(config, on_row=lambda rows: _save(args, config, modes, rows, partial=True))
    return _save(args, config, modes, rows, partial=False)


def _save(args, config: dict, modes, rows: list[dict], partial: bool) -> dict:
    """Writes the JSON and table of ``rows`` (``partial``: quietly, with a note)."""
    for task in dict.fromkeys(r["task"] for r in rows):
        ref = next((r for r in rows if r["task"] == task and r["precision"] == "highest"
                    and r["status"] == "ok"), None)
        for r in rows:
            if ref and r["task"] == task and r["status"] == "ok":
                r["speedup"] = r["images_per_s"] / ref["images_per_s"]
    rec = recommend(rows, args.tolerance_db)
    env = C.environment("highest")
    env["matmul_precision"] = "varies per row (see 'precision')"
    env["matmul_precision_meaning"] = {m: C.PRECISION_MEANING[m] for m in modes}
    notes = [C.iterations_note(config["maxiter"]),
             "bfloat16 = Precision.DEFAULT: identical to 'default' on GPU (TF32) and CPU; "
             "bfloat16-dtype is the row that shows real bf16 compute",
             "on CPU every precision setting computes in float32, so rows differ only by timing "
             "noise",
             "PSNR vs highest of 200 dB is the formula's cap: bit-identical to highest",
             "one process for every mode: each row's peak memory is the process's high-water "
             "mark so far, not that mode's own"]
    notes += [f"recommended for {r['task']}: {r['precision']} ({r['speedup_vs_highest']:.2f}x "
              f"the speed of highest, PSNR change {r['psnr_change_db']:+.2f} dB, tolerance "
              f"{args.tolerance_db} dB)" for r in rec]
    if partial:
        notes.append(f"partial: the {len(rows)} measurements finished when the run was last "
                     "saved; it was still running (or was stopped)")
    return C.write_outputs(args.out, "precision", quick=args.quick, environment=env,
                           config=config, rows=rows, table=C.markdown_table(rows, COLUMNS),
                           notes=notes, extra={"recommendation": rec}, echo=not partial)


if __name__ == "__main__":
    main()
