"""Training throughput: one Adam step of the bits/dim loss, against the value-and-gradient floor.

``python -m benchmarks.training`` measures, for the paper-size Glow priors (64×64×3: K=18, L=4,
width 512; 128×128×3: K=32, L=6, width 512) at a few batch sizes, the step that
:func:`flowinv.train.train` runs: uniform dequantisation of 5-bit images, the bits/dim loss
(:func:`flowinv.train.bits_per_dim`), its value and gradient, and the update of
:func:`flowinv.train.make_optimizer` (global-norm clipping + Adam with warm-up, skipped on
non-finite steps), with params and optimiser state donated.

For each (model, batch) it records the compile seconds (trace + lower + XLA compile of the step,
ahead of time), the run seconds of ``--steps`` steps, images/s, the floor (the value-and-gradient
alone, same batch, same process) and ``ratio_vs_floor`` = step seconds / value-and-gradient
seconds, and peak memory. Batches that do not fit are recorded as "does not fit". Each
measurement runs in its own subprocess unless ``--quick`` or ``--in-process``.

Writes ``benchmarks/results/training[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C

MEASURE_DEFAULTS = dict(model="tiny16", batch=2, steps=20, bits=5, precision="default", seed=0)
QUICK = dict(models=("tiny16",), batches={"tiny16": (2, 4)}, steps=10)
FULL = dict(models=("glow64", "glow128"), batches={"glow64": (16, 32, 64, 128),
                                                   "glow128": (4, 8, 16, 32)}, steps=20)


def _measure(cfg: dict) -> dict:
    import optax

    import flowinv
    from flowinv import checkpoints, data, train

    setup_start = time.perf_counter()
    flow = C.make_flow(cfg["model"])
    key = jax.random.PRNGKey(cfg["seed"])
    batch, bits, steps = int(cfg["batch"]), int(cfg["bits"]), int(cfg["steps"])
    with jax.default_matmul_precision("highest"):
        params = jax.block_until_ready(C.benchmark_params(flow, key))
    setup_s = time.perf_counter() - setup_start
    levels = 2**bits
    x = C.synthetic_images(np.random.default_rng(cfg["seed"] + 1), batch, flow.image_shape)
    xq = jnp.asarray(np.floor(x * levels) / levels)
    optimizer = train.make_optimizer(train.TrainConfig(
        architecture=checkpoints.flow_config(flow), batch_size=batch, bits=bits))
    opt_state = optimizer.init(params)

    def loss_fn(p, xq, key):
        keys = jax.random.split(key, xq.shape[0])
        xd = jax.vmap(lambda a, k: data.dequantize(k, a, bits))(xq, keys)
        return train.bits_per_dim(flow, p, xd, bits)

    def step(p, s, xq, key):
        loss, grads = jax.value_and_grad(loss_fn)(p, xq, key)
        updates, s = optimizer.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    def value_and_grad(p, xq, key):
        return jax.value_and_grad(loss_fn)(p, xq, key)

    xq, = C.shard_batch((xq,), batch)
    with C.precision_context(cfg["precision"]), warnings.catch_warnings():
        # CPU cannot always reuse donated buffers; that warning is not a result.
        warnings.filterwarnings("ignore", message=".*donated buffers.*")
        t = time.perf_counter()
        lowered = jax.jit(step, donate_argnums=(0, 1)).lower(params, opt_state, xq, key)
        lower_s = time.perf_counter() - t
        t = time.perf_counter()
        compiled = lowered.compile()
        compile_s = time.perf_counter() - t
        vg = jax.jit(value_and_grad).lower(params, xq, key).compile()

        keys = [jax.random.fold_in(key, i) for i in range(steps + 1)]
        p, s = jax.tree.map(jnp.copy, params), jax.tree.map(jnp.copy, opt_state)
        p, s, loss = jax.block_until_ready(compiled(p, s, xq, keys[0]))  # warm-up
        t = time.perf_counter()
        for i in range(steps):
            p, s, loss = compiled(p, s, xq, keys[i + 1])
        jax.block_until_ready((p, s, loss))
        run_s = time.perf_counter() - t

        jax.block_until_ready(vg(params, xq, keys[0]))
        t = time.perf_counter()
        out = None
        for i in range(steps):
            out = vg(params, xq, keys[i + 1])
        jax.block_until_ready(out)
        floor_s = time.perf_counter() - t
    return dict(
        num_params=flowinv.num_params(params), iterations=steps, bits=bits, setup_s=setup_s,
        compile_s=lower_s + compile_s, lower_s=lower_s, xla_compile_s=compile_s,
        run_s=run_s, s_per_step=run_s / steps, images_per_s=batch * steps / run_s,
        floor_s_per_step=floor_s / steps, floor_images_per_s=batch * steps / floor_s,
        ratio_vs_floor=run_s / floor_s, final_loss_bpd=float(loss),
        loss_finite=bool(np.isfinite(float(loss))))


def measure(config: dict, *, with_environment: bool = True) -> dict:
    """One training-throughput measurement.

    Args:
      config: keys of :data:`MEASURE_DEFAULTS`: ``model`` (a
        :data:`benchmarks._common.MODELS` name), ``batch``, ``steps`` (timed steps after one
        warm-up step), ``bits`` (data quantisation), ``precision``, ``seed``.
      with_environment: attach :func:`benchmarks._common.environment` (workers do).

    Returns:
      The result row (``status`` ``"ok"``, ``"diverged"`` (the loss was not finite),
      ``"does not fit"`` or ``"failed"``).
    """
    cfg = {**MEASURE_DEFAULTS, **config}
    row = dict(model=cfg["model"], image_shape=list(C.MODELS[cfg["model"]]["image_shape"]),
               batch=int(cfg["batch"]), precision=cfg["precision"])
    try:
        row.update(_measure(cfg), status="ok")
        if not row["loss_finite"]:
            # The step's time does not depend on the values, but a non-finite loss means the
            # benchmark flow itself is broken: say so instead of reporting a plain "ok".
            row.update(status="diverged",
                       error=f"the training loss was {row['final_loss_bpd']} bits/dim")
    except Exception as e:
        row.update(status="does not fit" if C.is_oom(e) else "failed", error=C.first_line(e))
    row["device"] = C.device_string()
    row.update(C.peak_memory())
    if with_environment:
        row["environment"] = C.environment(cfg["precision"])
    return row


COLUMNS = [("model", "model"), ("batch", "batch"), ("iterations", "steps"),
           ("compile_s", "compile s"), ("run_s", "run s"), ("s_per_step", "s/step"),
           ("images_per_s", "images/s"), ("floor_images_per_s", "v&g images/s"),
           ("ratio_vs_floor", "step / v&g"), ("peak_gib", "peak GiB"), ("status", "status")]


def table(rows: list[dict]) -> str:
    """The Markdown table (peak memory in GiB)."""
    return C.markdown_table([{**r, "peak_gib": C.gib(r.get("peak_memory_bytes"))} for r in rows],
                            COLUMNS)


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.training --help``."""
    p = C.base_parser("python -m benchmarks.training", __doc__)
    p.add_argument("--models", type=C.str_list, default=None,
                   help="comma-separated models (default glow64,glow128; quick tiny16)")
    p.add_argument("--batches", type=C.int_list, default=None,
                   help="batch sizes for every model (default 16..128 for glow64, 4..32 for "
                        "glow128)")
    p.add_argument("--steps", type=C.positive_int, default=None,
                   help="timed steps (default 20; quick 10)")
    p.add_argument("--in-process", action="store_true",
                   help="no subprocess per measurement (default with --quick)")
    p.add_argument("--worker-timeout", type=float, default=3600.0)
    args = p.parse_args(argv)
    if args.worker:
        return C.worker_main(args, measure)
    config = dict(C.deepcopy_config(QUICK if args.quick else FULL), precision=args.precision)
    if args.models:
        if set(args.models) - set(C.MODELS):
            p.error(f"unknown models; choose from {sorted(C.MODELS)}")
        config["models"] = args.models
    for model in config["models"]:
        config["batches"][model] = tuple(args.batches or config["batches"].get(model, (2, 4)))
    if args.steps is not None:
        config["steps"] = args.steps
    isolate = not (args.quick or args.in_process)

    def save(rows: list[dict], partial: bool) -> dict:
        env = C.worker_environment(rows, args.precision) if isolate else C.environment(
            args.precision)
        notes = ["step / v&g: seconds per training step (value-and-gradient + clipped Adam "
                 "update) over seconds per value-and-gradient of the same loss, same process",
                 "peak memory: " + ("one fresh process per measurement" if isolate else
                                    "process high-water mark so far (in-process run)")]
        if partial:
            notes.append(f"partial: the {len(rows)} measurements finished when the run was "
                         "last saved; it was still running (or was stopped)")
        return C.write_outputs(args.out, "training", quick=args.quick, environment=env,
                               config=config, rows=C.strip_environment(rows),
                               table=table(rows), notes=notes, echo=not partial)

    rows = []
    for model in config["models"]:
        for batch in config["batches"][model]:
            cfg = dict(model=model, batch=batch, steps=config["steps"],
                       precision=args.precision)
            row = (C.run_worker("training", cfg, timeout=args.worker_timeout) if isolate
                   else measure(cfg, with_environment=False))
            print(f"{model} batch {batch}: " + (
                f"{row['images_per_s']:.3g} images/s, step/v&g {row['ratio_vs_floor']:.2f}"
                if row.get("status") == "ok" else f"{row.get('status')} {row.get('error', '')}"),
                flush=True)
            rows.append(row)
            # saved after every measurement: a run stopped at a deadline keeps them
            save(rows, partial=True)
            if row.get("status") != "ok":
                break
    return save(rows, partial=False)


if __name__ == "__main__":
    main()
