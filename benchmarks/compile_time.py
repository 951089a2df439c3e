"""Compile time of the paper-size Glow with the ``lax.scan`` stacking of its K steps.

``python -m benchmarks.compile_time`` measures, ahead of time on abstract shapes (nothing is
run, no parameters are materialised), the seconds to trace + lower (``jit(f).lower``) and to
XLA-compile (``.compile()``) four programs:

* ``init``: ``flow.init`` on a batch of 16 images (the data-dependent initialisation that
  training and the benchmarks' random parameters start from; each level's steps in one rolled
  ``lax.scan`` whatever the stack's ``unroll``, so its two rows of a model agree);
* ``inverse``: ``G⁻¹`` of one image (what density evaluation and training run);
* ``forward_value_and_grad``: the value and gradient of ``‖G(z)‖²`` for one latent (what every
  recovery iteration runs);
* ``lbfgs_solve``: the whole batched solve as :func:`flowinv.recover` builds it — per-image
  L-BFGS (300 iterations, ``tol=0``) on the Asim et al. loss ``‖A·G(z) − y‖²`` with the dense
  Gaussian operator at m/n = 0.2, vmapped over a batch, followed by ``G`` of the result,

for the 64×64×3 (K=18, L=4) and 128×128×3 (K=32, L=6) Glow of width 512, with the steps
scanned (``unroll=1``, the accelerator default) and, for 64×64, fully unrolled
(``unroll=True``, the CPU default) for comparison. The goal is a solve compiling in < 60 s.

Writes ``benchmarks/results/compile_time[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp

from benchmarks import _common as C

FUNCTIONS = ("init", "inverse", "forward_value_and_grad", "lbfgs_solve")
INIT_BATCH = 16
QUICK = dict(cases=(("tiny16", "scan"), ("tiny16", "unrolled")), batch=4,
             maxiter=C.PAPER_ITERATIONS)
FULL = dict(cases=(("glow64", "scan"), ("glow64", "unrolled"), ("glow128", "scan")),
            batch=8, maxiter=C.PAPER_ITERATIONS)
UNROLL = {"scan": 1, "unrolled": True}


def _programs(flow, params, batch: int, maxiter: int):
    """``{name: (function, abstract args)}`` for the four programs."""
    from flowinv import losses, operators, solvers

    shape = flow.image_shape
    img = jax.ShapeDtypeStruct(shape, jnp.float32)
    z = jax.ShapeDtypeStruct((flow.dim,), jnp.float32)
    m = max(1, round(0.2 * flow.dim))
    op = jax.eval_shape(lambda k: operators.gaussian_cs(k, shape, m), jax.random.PRNGKey(0))
    ys = jax.ShapeDtypeStruct((batch, m), jnp.float32)
    zs = jax.ShapeDtypeStruct((batch, flow.dim), jnp.float32)

    def forward_vg(p, zz):
        return jax.value_and_grad(lambda v: jnp.sum(flow.forward(p, v)[0] ** 2))(zz)

    def solve(p, op, y, z0):
        def one(y, z0):
            loss = losses.asim_loss(losses.flow_generator(flow, p), op, gamma=0.0)
            r = solvers.lbfgs(loss, z0, y, maxiter=maxiter, tol=0.0)
            return flow.forward(p, r.z)[0], r

        return jax.vmap(one)(y, z0)

    key = jax.ShapeDtypeStruct((2,), jnp.uint32)
    init_batch = jax.ShapeDtypeStruct((INIT_BATCH, *shape), jnp.float32)
    return {"init": (flow.init, (key, init_batch)),
            "inverse": (flow.inverse, (params, img)),
            "forward_value_and_grad": (forward_vg, (params, z)),
            "lbfgs_solve": (solve, (params, op, ys, zs))}


def measure(model: str, unroll: str, function: str, *, batch: int, maxiter: int) -> dict:
    """Trace + lower and compile seconds of one program (see the module docstring)."""
    flow = C.make_flow(model, unroll=UNROLL[unroll])
    shape = flow.image_shape
    params = jax.eval_shape(lambda xb: flow.init(jax.random.PRNGKey(0), xb),
                            jax.ShapeDtypeStruct((2, *shape), jnp.float32))
    fn, args = _programs(flow, params, batch, maxiter)[function]
    row = dict(model=model, image_shape=list(shape), unroll=unroll, function=function,
               batch={"lbfgs_solve": batch, "init": INIT_BATCH}.get(function, 1),
               iterations=maxiter if function == "lbfgs_solve" else None,
               num_params=sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params)))
    try:
        t = time.perf_counter()
        lowered = jax.jit(fn).lower(*args)
        lower_s = time.perf_counter() - t
        t = time.perf_counter()
        lowered.compile()
        compile_s = time.perf_counter() - t
        row.update(lower_s=lower_s, compile_s=compile_s, total_s=lower_s + compile_s,
                   status="ok")
    except Exception as e:
        row.update(status="does not fit" if C.is_oom(e) else "failed", error=C.first_line(e))
    row["device"] = C.device_string()
    return row


COLUMNS = [("model", "model"), ("num_params", "params"), ("unroll", "steps"),
           ("function", "program"), ("batch", "batch"), ("lower_s", "trace+lower s"),
           ("compile_s", "XLA compile s"), ("total_s", "total s"), ("status", "status")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.compile_time --help``."""
    p = C.base_parser("python -m benchmarks.compile_time", __doc__)
    p.add_argument("--cases", type=C.str_list, default=None,
                   help="comma-separated MODEL:scan|unrolled (default glow64:scan,"
                        "glow64:unrolled,glow128:scan)")
    p.add_argument("--functions", type=C.str_list, default=None,
                   help=f"subset of {','.join(FUNCTIONS)} (default all)")
    p.add_argument("--batch", type=C.positive_int, default=None,
                   help="batch of the solve (default 8)")
    args = p.parse_args(argv)
    config = C.deepcopy_config(QUICK if args.quick else FULL)
    if args.cases:
        try:
            cases = tuple(tuple(c.split(":")) for c in args.cases)
            assert all(m in C.MODELS and u in UNROLL for m, u in cases)
        except (ValueError, AssertionError):
            p.error(f"--cases must be MODEL:scan|unrolled with MODEL in {sorted(C.MODELS)}")
        config["cases"] = cases
    functions = args.functions or FUNCTIONS
    if set(functions) - set(FUNCTIONS):
        p.error(f"--functions must be a subset of {FUNCTIONS}")
    if args.batch is not None:
        config["batch"] = args.batch
    config.update(functions=functions, precision=args.precision)
    rows = []
    with C.precision_context(args.precision):
        for model, unroll in config["cases"]:
            for function in functions:
                row = measure(model, unroll, function, batch=config["batch"],
                              maxiter=config["maxiter"])
                print(f"{model} {unroll} {function}: "
                      + (f"{row['total_s']:.2f} s" if row["status"] == "ok"
                         else row.get("error", "")), flush=True)
                rows.append(row)
    notes = ["compiled ahead of time on abstract shapes (jit(f).lower(...).compile()); "
             "nothing is executed",
             "scan: the K steps of each level run as one lax.scan body (unroll=1); unrolled: "
             "unroll=True (XLA sees K copies)"]
    from benchmarks import goals

    payload = C.write_outputs(args.out, "compile_time", quick=args.quick,
                              environment=C.environment(args.precision), config=config,
                              rows=rows, table=C.markdown_table(rows, COLUMNS), notes=notes)
    goals.print_goals(goals.evaluate({"compile_time": payload}), only=("compile",))
    return payload


if __name__ == "__main__":
    main()
