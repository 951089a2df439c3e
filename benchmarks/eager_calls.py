"""A flow's methods called outside any transformation, as in a notebook: op by op vs compiled.

``flow.inverse``, ``flow.forward``, ``flow.log_prob`` and ``flow.sample`` run as one compiled
program each (``jax.jit`` with the flow static, cached per flow, parameter structure, shape and
dtype; see :class:`flowinv.flows.base.Flow`). Called eagerly, the same code would run op by op:
XLA compiles each of hundreds of small operations on its first use and dispatches them one at a
time afterwards. ``python -m benchmarks.eager_calls`` measures both, each in a fresh process
(``--worker``), for the calls of the README's quick start in its order:

* ``inverse``: ``G⁻¹`` of one image; ``forward``: ``G`` of one latent;
* ``log_prob``: ``jax.vmap(flow.log_prob)`` over a batch of 8 images;
* ``sample``: one sample at temperature 0.7 (after ``forward``, whose program it reuses),

each called twice with new inputs: the first call includes compiling, the second does not. The
op-by-op mode calls the subclass's ``_inverse``/``_forward`` directly, which is what the public
methods ran before they were compiled. The ratio column is op-by-op seconds over compiled
seconds, both measured in this run. Models: the README's quick-start Glow (28×28×1, L = 2,
K = 4, width 32) and the architecture of ``glow-patches64`` (64×64×3, L = 4, K = 8, width 64),
random parameters; ``--quick``: the tiny 8×8×3 Glow.

Writes ``benchmarks/results/eager_calls[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C

MODES = ("op-by-op", "compiled")
CALLS = ("inverse", "forward", "log_prob", "sample")
README_GLOW = dict(image_shape=(28, 28, 1), levels=2, steps=4, width=32)
PATCHES64_GLOW = dict(image_shape=(64, 64, 3), levels=4, steps=8, width=64)
QUICK = dict(models=("tiny8",), batch=8)
FULL = dict(models=(README_GLOW, PATCHES64_GLOW), batch=8)


def _calls(flow, mode: str) -> dict:
    """``{call: function(params, key)}``; each draws its own input from ``key``."""
    from flowinv.flows.base import standard_normal_log_prob

    if mode == "compiled":
        inverse, forward, log_prob = flow.inverse, flow.forward, flow.log_prob
    else:
        inverse, forward = flow._inverse, flow._forward

        def log_prob(params, x):
            z, logdet = flow._inverse(params, x)
            return standard_normal_log_prob(z) + logdet

    def sample(params, key):
        if mode == "compiled":
            return flow.sample(params, key, temperature=0.7)
        return forward(params, 0.7 * jax.random.normal(key, (flow.dim,)))[0]

    image = lambda key, *lead: jax.random.uniform(key, (*lead, *flow.image_shape))
    return {
        "inverse": lambda p, k: inverse(p, image(k)),
        "forward": lambda p, k: forward(p, jax.random.normal(k, (flow.dim,))),
        "log_prob": lambda p, k: jax.vmap(log_prob, (None, 0))(p, image(k, 8)),
        "sample": sample,
    }


def measure(config: dict) -> dict:
    """First- and second-call seconds of every call of one model in one mode (a worker)."""
    with C.precision_context(config["precision"]):
        return _measure(config)


def _measure(config: dict) -> dict:
    flow = C.make_flow(config["model"])
    images = C.synthetic_images(np.random.default_rng(0), config["batch"], flow.image_shape)
    params = jax.block_until_ready(flow.init(jax.random.PRNGKey(0), jnp.asarray(images)))
    calls = _calls(flow, config["mode"])
    rows = []
    for i, call in enumerate(CALLS):
        fn, (key1, key2) = calls[call], jax.random.split(jax.random.PRNGKey(i + 1))
        with C.CompileTimer() as timer:
            _, first = C.timed(functools.partial(fn, params, key1))
        _, second = C.timed(functools.partial(fn, params, key2))
        rows.append(dict(call=call, first_s=first, second_s=second,
                         compile_s=timer.seconds, programs_compiled=timer.count))
    return {**config, "status": "ok", "rows": rows, "model_label": C.model_label(config["model"]),
            "num_params": sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)),
            "environment": C.environment(config["precision"])}


COLUMNS = [("model", "model"), ("call", "call"),
           ("op-by-op_first_s", "op by op, 1st s"), ("compiled_first_s", "compiled, 1st s"),
           ("first_ratio", "ratio 1st"),
           ("op-by-op_second_s", "op by op, 2nd s"), ("compiled_second_s", "compiled, 2nd s"),
           ("second_ratio", "ratio 2nd"),
           ("op-by-op_programs", "programs op by op"), ("compiled_programs", "programs compiled")]


def combine(results: dict[str, dict]) -> list[dict]:
    """One row per call from the two modes' worker results of one model."""
    first = next(iter(results.values()))
    rows = []
    for call in CALLS:
        row = dict(model=first["model_label"], num_params=first.get("num_params"), call=call)
        for mode, res in results.items():
            if res.get("status") != "ok":
                row[f"{mode}_error"] = res.get("error")
                continue
            r = next(r for r in res["rows"] if r["call"] == call)
            row.update({f"{mode}_first_s": r["first_s"], f"{mode}_second_s": r["second_s"],
                        f"{mode}_compile_s": r["compile_s"],
                        f"{mode}_programs": r["programs_compiled"]})
        for when in ("first", "second"):
            slow, fast = row.get(f"op-by-op_{when}_s"), row.get(f"compiled_{when}_s")
            row[f"{when}_ratio"] = slow / fast if slow and fast else None
        rows.append(row)
    return rows


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.eager_calls --help``."""
    p = C.base_parser("python -m benchmarks.eager_calls", __doc__)
    args = p.parse_args(argv)
    if args.worker:
        return C.worker_main(args, measure)
    config = C.deepcopy_config(QUICK if args.quick else FULL)
    config["precision"] = args.precision
    rows, workers = [], []
    for model in config["models"]:
        results = {}
        for mode in MODES:
            res = C.run_worker("eager_calls", dict(model=model, mode=mode,
                                                   batch=config["batch"],
                                                   precision=args.precision))
            results[mode] = res
            workers.append(res)
            print(f"{res.get('model_label', model)} {mode}: {res.get('status')}", flush=True)
        rows += combine(results)
    notes = ["each mode of each model runs in a fresh process: the 1st call includes "
             "compiling, the 2nd (new inputs) does not; calls run in the order of the table, "
             "as in the README's quick start, so 'sample' reuses the program of 'forward'",
             "op by op: the subclass's _inverse/_forward called eagerly (what the public "
             "methods ran before they were compiled); ratio = op-by-op s / compiled s",
             "random parameters (data-dependent actnorm on synthetic images); log_prob is "
             f"vmapped over {config['batch']} images"]
    return C.write_outputs(args.out, "eager_calls", quick=args.quick,
                           environment=C.worker_environment(workers, args.precision),
                           config=config, rows=rows, table=C.markdown_table(rows, COLUMNS),
                           notes=notes)


if __name__ == "__main__":
    main()
