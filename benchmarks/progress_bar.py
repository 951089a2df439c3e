"""What ``recover(..., progress=True)`` costs: the same solve with and without the bar.

With ``progress=True`` the compiled solve hands its iteration counts to the host once per loop
pass (one callback for the whole batch, or one per device when the batch is sharded), where a
tqdm bar shows them. ``python -m benchmarks.progress_bar`` times one recovery both ways, in one
process, on compressed sensing (``m = n/4``, a shared Gaussian operator, ``tol = 0``, so an
image stops only at the float32 rounding floor; per-iteration figures divide by the iterations
run) with a Glow of random parameters: each mode once to compile, then the best of ``--repeats``
calls, alternating the modes. The ratio is the best ``progress=True`` seconds over the best
plain seconds, measured in this run; ``loss_gap`` is the largest relative difference of the two
modes' final losses (the same iterates: 0, or float32 rounding where XLA fuses the two programs
differently).

On a GPU each pass then waits for a device-to-host copy of a few bytes; on a CPU the callback
is a function call. Writes ``benchmarks/results/progress_bar[_quick]_<platform>.json`` and
``.md``.
"""

from __future__ import annotations

import jax.numpy as jnp

from benchmarks import _common as C

MODES = ("plain", "progress")
QUICK = dict(model="tiny8", batch=2, maxiter=5, repeats=2)
FULL = dict(model="glow64", batch=16, maxiter=300, repeats=3)


def measure(config: dict) -> list[dict]:
    """First-call and best-of-repeats seconds of the solve without and with the bar."""
    import flowinv

    flow, params, op, y = C.quarter_cs_problem(config["model"], config["batch"])
    kw = dict(operator=op, maxiter=config["maxiter"], tol=0.0)
    run = {mode: (lambda p=(mode == "progress"): flowinv.recover((flow, params), y,
                                                                 progress=p, **kw))
           for mode in MODES}
    first, best, losses, ran = {}, dict.fromkeys(MODES, float("inf")), {}, {}
    for mode in MODES:
        result, first[mode] = C.timed(lambda m=mode: run[m]())
        losses[mode], ran[mode] = result.loss, int(jnp.max(result.iterations))
    for _ in range(config["repeats"]):
        for mode in MODES:
            _, seconds = C.timed(lambda m=mode: run[m]().loss)
            best[mode] = min(best[mode], seconds)
    gap = float(jnp.max(jnp.abs(losses["progress"] - losses["plain"])
                        / jnp.maximum(jnp.abs(losses["plain"]), 1e-12)))
    return [dict(model=C.model_label(config["model"]), batch=config["batch"],
                 maxiter=config["maxiter"], iterations_max=ran[mode], mode=mode,
                 first_s=first[mode], best_s=best[mode],
                 s_per_iteration=best[mode] / max(ran[mode], 1),
                 images_per_s=config["batch"] / best[mode],
                 ratio_progress_over_plain=best["progress"] / best["plain"], loss_gap=gap)
            for mode in MODES]


COLUMNS = [("model", "model"), ("batch", "images"), ("maxiter", "iterations"),
           ("iterations_max", "iterations run"),
           ("mode", "mode"), ("first_s", "1st call s"), ("best_s", "best s"),
           ("s_per_iteration", "s / iteration"), ("images_per_s", "images/s"),
           ("ratio_progress_over_plain", "progress / plain"), ("loss_gap", "loss gap")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.progress_bar --help``."""
    p = C.base_parser("python -m benchmarks.progress_bar", __doc__)
    p.add_argument("--model", default=None, choices=tuple(C.MODELS),
                   help="benchmark Glow (default glow64; --quick tiny8)")
    p.add_argument("--batch", type=int, default=None, help="images (default 16; quick 2)")
    p.add_argument("--maxiter", type=int, default=None,
                   help="L-BFGS iterations, all run (default 300; quick 5)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed calls of each mode after the first (default 3; quick 2)")
    args = p.parse_args(argv)
    config = C.config_from_args(p, args, QUICK, FULL, ("model", "batch", "maxiter", "repeats"),
                                at_least_one=("batch", "maxiter", "repeats"))
    with C.precision_context(args.precision):
        rows = measure(config)
    notes = ["one process: each mode called once to compile (1st call s), then "
             f"{config['repeats']} more times, alternating; ratio = best progress s / best "
             "plain s",
             "compressed sensing m = n/4, z0 = 0, tol = 0 (an image stops only at the rounding "
             "floor; s / iteration divides by the iterations run), "
             "Glow with random parameters (benchmark_params); loss gap: max relative "
             "|progress − plain| of the final losses",
             C.iterations_note(config["maxiter"])]
    return C.write_outputs(args.out, "progress_bar", quick=args.quick,
                           environment=C.environment(args.precision), config=config,
                           rows=rows, table=C.markdown_table(rows, COLUMNS), notes=notes)


if __name__ == "__main__":
    main()
