"""Compile time of the paper-size Glow: ``python -m benchmarks.compile_time``.

Measures, for ``glow((64, 64, 3), levels=4, steps=18, width=400)`` (Asim et al.'s CS model),
the wall time to compile ``inverse`` and a value-and-gradient of ``forward`` (what every
recovery iteration runs), with the steps scanned (``unroll=1``) and fully unrolled
(``unroll=True``, the CPU default), and the parameter count next to the supplement's
25,783,744. Writes ``benchmarks/results/compile_time_<platform>.json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp

import flowinv


def measure(unroll, shape=(64, 64, 3), levels=4, steps=18, width=400) -> dict:
    flow = flowinv.glow(shape, levels=levels, steps=steps, width=width, unroll=unroll)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    params = jax.eval_shape(lambda xb: flow.init(jax.random.PRNGKey(0), xb), x)
    img = jax.ShapeDtypeStruct(shape, jnp.float32)
    z = jax.ShapeDtypeStruct((flow.dim,), jnp.float32)
    t = time.perf_counter()
    jax.jit(flow.inverse).lower(params, img).compile()
    inverse_s = time.perf_counter() - t
    vg = jax.value_and_grad(lambda zz, p: jnp.sum(flow.forward(p, zz)[0] ** 2))
    t = time.perf_counter()
    jax.jit(vg).lower(z, params).compile()
    vg_s = time.perf_counter() - t
    return {"unroll": str(unroll), "inverse_compile_s": round(inverse_s, 2),
            "forward_value_and_grad_compile_s": round(vg_s, 2),
            "num_params": flowinv.num_params(params)}


def main(argv=None) -> list:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compile_time", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small Glow (CI smoke run)")
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args(argv)
    kw = dict(shape=(16, 16, 3), levels=2, steps=4, width=32) if args.quick else {}
    dev = jax.devices()[0]
    rows = [dict(measure(u, **kw), device=f"{dev.platform}:{dev.device_kind}",
                 jax=jax.__version__) for u in (1, True)]
    for r in rows:
        print(r)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"compile_time_{'quick_' if args.quick else ''}{dev.platform}"
    (out / f"{tag}.json").write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
