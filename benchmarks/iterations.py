"""Recovered PSNR and wall time vs the L-BFGS iteration budget, on a shipped prior.

``python -m benchmarks.iterations`` asks what an iteration budget costs and buys: the
experiments' quick defaults run 100 L-BFGS iterations, the papers 300. For each task it recovers
the same images from the same measurements with each ``maxiter`` of ``--iterations`` (default
100, 200, 300), from ``z0 = 0`` with Asim et al.'s ``‖f(G(z)) − y‖² + γ‖z‖²``, and records the
mean PSNR against the truth, the iterations each image used (L-BFGS may stop before
``maxiter``), and the seconds of the first call (compile + run) and, with ``--repeats 2``, of a
second (run only).

Tasks are ``denoise:σ:γ`` (``y = x + σε``) and ``cs:m/n:γ`` (dense Gaussian ``A``, noise with
``sqrt(E‖η‖²) = 0.1`` as in ``experiments.compressed_sensing``); one noise draw per task. The
images are the first ``--images`` of the dataset's *training* split, the validation images the
experiments pick γ on, so nothing here looks at a test image. ``--quick`` swaps the shipped prior
for the tiny random Glow ``tiny8`` on synthetic images, for CI.

Writes ``benchmarks/results/iterations[_quick]_<platform>.json`` and ``.md``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import _common as C
from benchmarks.recovery import _psnr

TASKS = ("denoise:0:0", "denoise:0.05:0", "denoise:0.05:0.01", "denoise:0.1:0.01",
         "denoise:0.1:0.03", "cs:0.1:0", "cs:0.5:0")
QUICK = dict(prior="tiny8", dataset="synthetic", images=2, iterations=(2, 4),
             tasks=("denoise:0.1:0.01", "cs:0.5:0"), repeats=2)
FULL = dict(prior="glow-patches64", dataset="patches64", images=3,
            iterations=(100, 200, C.PAPER_ITERATIONS), tasks=TASKS, repeats=1)


def parse_task(text: str) -> tuple[str, float, float]:
    """``"denoise:0.1:0.01"`` -> ``("denoise", 0.1, 0.01)``; ``"cs:0.2:0"`` -> CS at m/n = 0.2."""
    parts = text.split(":")
    try:
        kind, level, gamma = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise ValueError(f"a task is 'denoise:SIGMA:GAMMA' or 'cs:RATIO:GAMMA', got {text!r}"
                         ) from None
    if len(parts) != 3 or kind not in ("denoise", "cs"):
        raise ValueError(f"a task is 'denoise:SIGMA:GAMMA' or 'cs:RATIO:GAMMA', got {text!r}")
    if not (np.isfinite(level) and np.isfinite(gamma)) or level < 0 or gamma < 0:
        raise ValueError(f"task {text!r}: σ, m/n and γ must be finite and ≥ 0")
    if kind == "cs" and not 0 < level <= 1:
        raise ValueError(f"task {text!r}: m/n must be in (0, 1]")
    return kind, level, gamma


def _prior_and_images(config: dict):
    import flowinv
    from flowinv import data

    if config["prior"] in C.MODELS:
        flow = C.make_flow(config["prior"])
        params = C.benchmark_params(flow, jax.random.PRNGKey(0))
        x = C.synthetic_images(np.random.default_rng(1), config["images"], flow.image_shape)
    else:
        flow, params = flowinv.load_prior(config["prior"])
        x = data.load_dataset(config["dataset"], "train", image_shape=flow.image_shape,
                              limit=config["images"])[:config["images"]]
    return flow, params, jnp.asarray(x)


def _training_dataset(prior: str) -> str:
    """The dataset a shipped prior or checkpoint folder was trained on (its sidecar)."""
    from flowinv import checkpoints

    try:
        metadata = checkpoints.find_checkpoint(prior, "flow")[1]
    except ValueError as e:
        raise SystemExit(str(e)) from None
    try:
        return metadata["data"]["dataset"]
    except (KeyError, TypeError):
        raise SystemExit(f"prior {prior!r}: no training dataset in its sidecar; "
                         "pass --dataset") from None


def _problem(kind: str, level: float, x, key):
    from flowinv import noise, operators

    shape = x.shape[1:]
    k_op, k_noise = jax.random.split(key)
    if kind == "denoise":
        op = operators.identity(shape)
        return op, x + level * jax.random.normal(k_noise, x.shape, x.dtype)
    m = max(1, int(round(level * int(np.prod(shape)))))
    op = operators.gaussian_cs(k_op, shape, m)
    eta = noise.cs_gaussian(m)
    return op, jax.vmap(op)(x) + jax.vmap(eta.sample)(jax.random.split(k_noise, x.shape[0]))


def run(config: dict) -> list[dict]:
    """One row per (task, maxiter) of ``config``."""
    import flowinv

    flow, params, x = _prior_and_images(config)
    rows = []
    for t, task in enumerate(config["tasks"]):
        kind, level, gamma = parse_task(task)
        op, y = _problem(kind, level, x, jax.random.PRNGKey(100 + t))
        for maxiter in config["iterations"]:
            seconds = []
            for _ in range(config["repeats"]):
                start = time.perf_counter()
                r = flowinv.recover((flow, params), y, operator=op, gamma=gamma,
                                    maxiter=maxiter)
                jax.block_until_ready(r.x)
                seconds.append(time.perf_counter() - start)
            psnr = _psnr(r.x, x)
            timed_s = seconds[-1]
            rows.append(dict(
                task=task, kind=kind, level=level, gamma=gamma, maxiter=maxiter,
                device=C.device_string(), precision=config["precision"],
                batch=int(x.shape[0]), image_shape=list(x.shape[1:]),
                num_params=flowinv.num_params(params),
                psnr_mean=float(np.mean(psnr)), psnr=[float(v) for v in psnr],
                iterations_mean=float(np.mean(np.asarray(r.iterations))),
                diverged=int(np.sum(np.asarray(r.diverged))),
                first_call_s=seconds[0], run_s=seconds[1] if len(seconds) > 1 else None,
                compile_s=seconds[0] - seconds[1] if len(seconds) > 1 else None,
                images_per_s=x.shape[0] / timed_s, **C.peak_memory(),
                iterations_note=C.iterations_note(maxiter), status="ok"))
            print(f"{task} maxiter {maxiter}: PSNR {rows[-1]['psnr_mean']:.2f} dB, "
                  f"{rows[-1]['iterations_mean']:.0f} iterations, {seconds[0]:.1f} s",
                  flush=True)
    return rows


COLUMNS = [("task", "task"), ("batch", "images"), ("maxiter", "maxiter"),
           ("iterations_mean", "iterations used"),
           ("psnr_mean", "PSNR (dB)"), ("diverged", "diverged"),
           ("first_call_s", "first call s"), ("run_s", "run s"), ("compile_s", "compile s"),
           ("images_per_s", "images/s")]


def main(argv=None) -> dict:
    """Command line: see ``python -m benchmarks.iterations --help``."""
    p = C.base_parser("python -m benchmarks.iterations", __doc__)
    p.add_argument("--prior", default=None,
                   help="shipped prior or checkpoint folder (default glow-patches64; quick: "
                        "the random tiny8 Glow)")
    p.add_argument("--dataset", default=None,
                   help="dataset whose training split gives the images (default: the one the "
                        "prior was trained on, from its sidecar)")
    p.add_argument("--images", type=C.positive_int, default=None,
                   help="images (default 3; quick 2)")
    p.add_argument("--iterations", type=C.int_list, default=None,
                   help="comma-separated maxiter values (default 100,200,300; quick 2,4)")
    p.add_argument("--tasks", type=C.str_list, default=None,
                   help=f"comma-separated tasks (default {','.join(TASKS)})")
    p.add_argument("--repeats", type=int, choices=(1, 2), default=None,
                   help="calls per setting: 2 splits compile from run time (default 1; quick 2)")
    args = p.parse_args(argv)
    config = dict(C.deepcopy_config(QUICK if args.quick else FULL), precision=args.precision)
    for key in ("prior", "dataset", "images", "iterations", "tasks", "repeats"):
        if getattr(args, key) is not None:
            config[key] = getattr(args, key)
    if args.prior is not None and args.dataset is None and args.prior not in C.MODELS:
        config["dataset"] = _training_dataset(args.prior)
    if config["images"] < 1:
        p.error("--images must be at least 1")
    for task in config["tasks"]:
        try:
            parse_task(task)
        except ValueError as e:
            p.error(str(e))
    with C.precision_context(args.precision):
        rows = run(config)
    images = (f"{config['images']} synthetic images (numpy sinusoids)"
              if config["prior"] in C.MODELS else
              f"the first {config['images']} of {config['dataset']}'s training split "
              "(validation images, never a test image)")
    notes = [f"prior {config['prior']}; images: {images}",
             "first call s: compile + run of one recover call; run s: a second identical call "
             "(with --repeats 2); L-BFGS stops early when the loss stops changing, so "
             "'iterations used' can be below maxiter",
             "images/s: from run s, or from the first call (compilation included) with "
             "--repeats 1; no value-and-gradient floor here (benchmarks.recovery has it)",
             "PSNR that falls as maxiter grows means the solver is fitting the noise: early "
             "stopping was regularising, and γ must grow with the budget"]
    return C.write_outputs(args.out, "iterations", quick=args.quick,
                           environment=C.environment(args.precision), config=config, rows=rows,
                           table=C.markdown_table(rows, COLUMNS), notes=notes)


if __name__ == "__main__":
    main()
