"""Random restarts: one batched ``recover(..., restarts=R)`` against a loop of R solves.

``flowinv.recover(..., init="normal", restarts=R)`` solves each of B images from R random starts
as one batch of ``R·B`` solves and keeps, per image, the start with the lowest final loss. The
loop it replaces calls ``recover`` R times on the B images (keys ``fold_in(key, r)``) and keeps
the same minimum. ``python -m benchmarks.restarts`` times both on compressed sensing
(``m = n/4``, a shared Gaussian operator) with a Glow of random parameters, in one process,
each mode twice: the first call includes compiling, the second does not. The ratio is loop
seconds over batched seconds (2nd calls), measured in this run; ``loss_gap`` is the largest
relative difference between the batched loss and the loop's minimum (float32 rounding of a
different batch shape; 0 when the two agree bit for bit).

On a GPU the batched solve fills the device with ``R·B`` images where the loop runs B at a
time; on a CPU, where the experiments solve in chunks of 8, both do the same work and the
ratio should be near 1. ``--chunk-size`` sets ``recover``'s ``chunk_size`` for both modes.

Writes ``benchmarks/results/restarts[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from benchmarks import _common as C

MODES = ("loop", "batched")
QUICK = dict(model="tiny8", batch=2, restarts=2, maxiter=5, chunk_size=None)
FULL = dict(model="glow64", batch=16, restarts=4, maxiter=300, chunk_size=None)


def measure(config: dict) -> list[dict]:
    """Seconds of the loop and the batched restarts (1st and 2nd call) on one problem."""
    import flowinv

    flow, params, op, y = C.quarter_cs_problem(config["model"], config["batch"])
    key, restarts = jax.random.PRNGKey(3), config["restarts"]
    kw = dict(operator=op, init="normal", init_scale=0.1, maxiter=config["maxiter"],
              chunk_size=config["chunk_size"])

    def loop():
        losses = [flowinv.recover((flow, params), y, key=jax.random.fold_in(key, r), **kw).loss
                  for r in range(restarts)]
        return jnp.min(jnp.stack(losses), axis=0)

    def batched():
        return flowinv.recover((flow, params), y, key=key, restarts=restarts, **kw).loss

    rows, losses = [], {}
    for mode, fn in (("loop", loop), ("batched", batched)):
        _, first = C.timed(fn)
        losses[mode], second = C.timed(fn)
        rows.append(dict(mode=mode, first_s=first, second_s=second,
                         images_per_s=config["batch"] / second))
    gap = float(jnp.max(jnp.abs(losses["batched"] - losses["loop"])
                        / jnp.maximum(jnp.abs(losses["loop"]), 1e-12)))
    loop_s, batched_s = (r["second_s"] for r in rows)
    for r in rows:
        r.update(model=C.model_label(config["model"]), batch=config["batch"],
                 restarts=restarts, maxiter=config["maxiter"],
                 chunk_size=config["chunk_size"] or "whole batch",
                 ratio_loop_over_batched=loop_s / batched_s, loss_gap=gap)
    return rows


COLUMNS = [("model", "model"), ("batch", "images"), ("restarts", "restarts"),
           ("maxiter", "iterations"), ("chunk_size", "chunk"), ("mode", "mode"),
           ("first_s", "1st call s"), ("second_s", "2nd call s"),
           ("images_per_s", "images/s"), ("ratio_loop_over_batched", "loop / batched"),
           ("loss_gap", "loss gap")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.restarts --help``."""
    p = C.base_parser("python -m benchmarks.restarts", __doc__)
    p.add_argument("--model", default=None, choices=tuple(C.MODELS),
                   help="benchmark Glow (default glow64; --quick tiny8)")
    p.add_argument("--batch", type=int, default=None, help="images B (default 16; quick 2)")
    p.add_argument("--restarts", type=int, default=None, help="starts R (default 4; quick 2)")
    p.add_argument("--maxiter", type=int, default=None,
                   help="L-BFGS iterations (default 300; quick 5)")
    p.add_argument("--chunk-size", type=C.positive_int, default=None,
                   help="recover's chunk_size for both modes (default: the whole batch)")
    args = p.parse_args(argv)
    config = C.config_from_args(p, args, QUICK, FULL,
                                ("model", "batch", "restarts", "maxiter", "chunk_size"),
                                at_least_one=("batch", "restarts", "maxiter"))
    if config["restarts"] < 2:
        p.error("--restarts must be >= 2 (one start has nothing to compare)")
    if config["chunk_size"] is not None and config["chunk_size"] < 1:
        p.error(f"--chunk-size must be >= 1, got {config['chunk_size']}")
    with C.precision_context(args.precision):
        rows = measure(config)
    notes = ["one process: each mode called twice on the same problem, the 1st call "
             "includes compiling; ratio = loop 2nd-call s / batched 2nd-call s",
             "compressed sensing m = n/4, z0 ~ N(0, 0.1² I) per start, Glow with random "
             "parameters (benchmark_params); loss gap: max relative |batched − loop minimum|",
             C.iterations_note(config["maxiter"])]
    return C.write_outputs(args.out, "restarts", quick=args.quick,
                           environment=C.environment(args.precision), config=config,
                           rows=rows, table=C.markdown_table(rows, COLUMNS), notes=notes)


if __name__ == "__main__":
    main()
