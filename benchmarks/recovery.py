"""Batched recovery throughput vs a per-image loop and vs the value-and-gradient floor.

``python -m benchmarks.recovery`` measures, in one run on whatever device is present:

* **batched**: ``flowinv.recover`` on a batch of B compressed-sensing problems (vmapped
  per-image L-BFGS, every image with its own state);
* **loop**: the same solver on the same B problems one image at a time (compiled once);
* **floor**: the same number of batched value-and-gradient evaluations of the loss alone, in
  one compiled ``fori_loop`` — what an ideal solver costs.

It prints images/s, the speed-up over the loop and the cost per iteration relative to one
batched value-and-gradient, and writes JSON + a Markdown table under
``benchmarks/results/``. ``--quick`` shrinks sizes for CI (the numbers then say little).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import time

import jax
import jax.numpy as jnp

import flowinv
from flowinv import losses, operators


def _perturbed_params(flow, key, batch):
    x = jax.random.uniform(key, (batch, *flow.image_shape))
    params = flow.init(jax.random.fold_in(key, 1), x)
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 2), len(leaves))
    # Move zero-initialised layers off the identity so the benchmark flow is not trivial.
    leaves = [leaf + 0.02 * jax.random.normal(k, leaf.shape, leaf.dtype)
              for leaf, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(tree, leaves), x


def _block(tree):
    return jax.block_until_ready(tree)


def run(config: dict) -> dict:
    """Runs one measurement; ``config`` keys: shape, levels, steps, width, batch, ratio,
    maxiter, solver, operator. Returns the result dict (also what the JSON holds)."""
    shape = tuple(config["shape"])
    flow = flowinv.glow(shape, levels=config["levels"], steps=config["steps"],
                        width=config["width"])
    key = jax.random.PRNGKey(0)
    params, x = _perturbed_params(flow, key, config["batch"])
    n = flow.dim
    m = max(1, int(config["ratio"] * n))
    make_op = operators.fast_cs if config["operator"] == "fast" else operators.gaussian_cs
    op = make_op(jax.random.fold_in(key, 3), shape, m)
    y = jax.vmap(op)(x)
    kw = dict(operator=op, method="asim", gamma=0.0, solver=config["solver"],
              maxiter=config["maxiter"], tol=0.0)

    t = time.perf_counter()
    r = _block(flowinv.recover((flow, params), y, **kw))
    compile_batched = time.perf_counter() - t
    t = time.perf_counter()
    r = _block(flowinv.recover((flow, params), y, **kw))
    batched = time.perf_counter() - t
    trips = int(jnp.max(r.iterations))

    _block(flowinv.recover((flow, params), y[:1], **kw))  # compile the batch-1 shape
    t = time.perf_counter()
    for i in range(config["batch"]):
        _block(flowinv.recover((flow, params), y[i: i + 1], **kw))
    loop = time.perf_counter() - t

    def floor_fn(params, y, z):
        def one(z, y):
            loss = losses.asim_loss(losses.flow_generator(flow, params), op, gamma=0.0)
            return jax.value_and_grad(loss)(z, y)

        def body(_, carry):
            z, acc = carry
            v, g = jax.vmap(one)(z, y)
            return z - 1e-6 * g, acc + jnp.sum(v)

        return jax.lax.fori_loop(0, trips, body, (z, 0.0))

    floor_jit = jax.jit(floor_fn)
    z0 = jnp.zeros((config["batch"], n))
    _block(floor_jit(params, y, z0))
    t = time.perf_counter()
    _block(floor_jit(params, y, z0))
    floor = time.perf_counter() - t

    dev = jax.devices()[0]
    result = {
        **config,
        "n": n, "m": m, "num_params": flowinv.num_params(params),
        "device": f"{dev.platform}:{dev.device_kind}", "device_count": jax.device_count(),
        "host": platform.node(), "machine": platform.machine(), "jax": jax.__version__,
        "dtype": "float32", "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "iterations_run": trips, "mean_iterations": float(jnp.mean(r.iterations)),
        "compile_plus_run_s": round(compile_batched, 3),
        "batched_s": round(batched, 4), "loop_s": round(loop, 4), "floor_s": round(floor, 4),
        "images_per_s_batched": round(config["batch"] / batched, 3),
        "images_per_s_loop": round(config["batch"] / loop, 3),
        "speedup_vs_loop": round(loop / batched, 3),
        "cost_per_iter_vs_value_and_grad": round(batched / floor, 3),
    }
    return result


QUICK = dict(shape=(16, 16, 3), levels=2, steps=4, width=32, batch=8, ratio=0.2, maxiter=30,
             solver="lbfgs", operator="gaussian")
DEFAULT = dict(shape=(32, 32, 3), levels=3, steps=8, width=128, batch=16, ratio=0.2,
               maxiter=100, solver="lbfgs", operator="gaussian")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.recovery", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI smoke run)")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--maxiter", type=int, default=None)
    p.add_argument("--solver", default=None, choices=("lbfgs", "optax-lbfgs", "adam"))
    p.add_argument("--operator", default=None, choices=("gaussian", "fast"))
    p.add_argument("--out", default="benchmarks/results", help="folder for JSON and table")
    args = p.parse_args(argv)
    config = dict(QUICK if args.quick else DEFAULT)
    for k in ("batch", "maxiter", "solver", "operator"):
        if getattr(args, k) is not None:
            config[k] = getattr(args, k)
    result = run(config)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"recovery_{'quick_' if args.quick else ''}{result['device'].split(':')[0]}"
    (out / f"{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    cols = ["device", "shape", "batch", "iterations_run", "images_per_s_batched",
            "images_per_s_loop", "speedup_vs_loop", "cost_per_iter_vs_value_and_grad"]
    table = "| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n| " + " | ".join(
        str(result[c]) for c in cols) + " |\n"
    (out / f"{tag}.md").write_text(table)
    print(table)
    print(f"speed-up of batched over per-image loop: {result['speedup_vs_loop']:.2f}x")
    print(f"batched cost per iteration / one batched value-and-grad: "
          f"{result['cost_per_iter_vs_value_and_grad']:.2f}x")
    return result


if __name__ == "__main__":
    main()
