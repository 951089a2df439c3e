r"""What the Asim et al. stabilisers (supplement §1.2.1) cost and buy, in PSNR.

The supplement adds two things to Glow against "activations too large to compute during
inversion": a constant ``ε = 5e-4`` on every actnorm scale (``s = exp(ℓ) + ε``, trained in),
and clipping of the activations to ``[-40, 40]`` after every step of the generative pass.
flowinv ships both: ``actnorm_eps`` (default ``5e-4``, part of every shipped Glow) and ``clip``
(off in the shipped priors). This experiment measures each one on the two recoveries where the
supplement saw instability, on in-distribution and out-of-distribution test images:

* ``cs``: compressed sensing at ``m/n = 0.1`` (Asim §3.2: ``γ = 0``, ``z0 = 0``, noise with
  ``sqrt(E‖η‖²) = 0.1``);
* ``denoise``: ``σ = 0.1``, ``‖G(z) − y‖² + γ‖z‖²`` with ``γ = 0.01`` from ``z0 = 0``.

Part 1, the recovery-time switch, on the shipped prior (``--prior``): the prior as trained,
the same prior with ``clip = 40``, and with ``ε`` removed at inference (the same weights with
``s = exp(ℓ)``: how much the trained function leans on ``ε``).

Part 2, the training-time switch (``--train-prior``, default ``glow-digits``, whose recipe trains
in about 90 s on a 2-core CPU): the recipe trained twice from the same seed, with ``ε = 5e-4`` and
with ``ε = 0``, then the same recoveries and its test bits/dim. Retrained models go under
``--out`` and a rerun resumes them instead of training again; they never replace a shipped
checkpoint.

Writes ``results.csv``, ``summary.csv`` (mean PSNR and the number of images flagged
``diverged`` per model × task × test set), ``psnr.png`` and ``samples_ood_cs_part{1,2}.png`` under
``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import jax
import numpy as np

from experiments import common

QUICK = dict(num_images=4, maxiter=100, train_seeds=(0,))
FULL = dict(num_images=20, maxiter=300, train_seeds=(0, 1, 2))
OOD = {"mnist": "lfw", "digits": "lfw", "patches64": "cartoon"}
TASKS = ("cs", "denoise")
CS_RATIO, SIGMA, DENOISE_GAMMA = 0.1, 0.1, 0.01


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    ood_dataset: str | None = None
    prior: str | None = None
    clip: float = 40.0
    train_prior: str | None = "glow-digits"
    train_steps: int | None = None  # None: the recipe's
    num_images: int = QUICK["num_images"]
    maxiter: int = QUICK["maxiter"]
    train_seeds: tuple[int, ...] = QUICK["train_seeds"]
    seed: int = 0
    out: str = "results/stabilisers"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.stabilisers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=f"presets: quick {QUICK['num_images']} images per test "
                                       f"set, {QUICK['maxiter']} iterations, one training "
                                       f"seed; --full {FULL['num_images']} images, "
                                       f"{FULL['maxiter']} iterations, "
                                       f"{len(FULL['train_seeds'])} training seeds")
    p.add_argument("--dataset", default="mnist",
                   help="in-distribution test images for part 1 (default mnist)")
    p.add_argument("--ood-dataset", default=None,
                   help="out-of-distribution test images (default: "
                        + ", ".join(f"{v} for {k}" for k, v in OOD.items())
                        + "; 'none' skips them)")
    p.add_argument("--prior", default=None,
                   help="flow prior of part 1: a shipped Glow or a Glow checkpoint folder "
                        "(default: the shipped prior for the dataset)")
    p.add_argument("--clip", type=common.positive_float, default=40.0,
                   help="activation clip of part 1 (default 40, the supplement's)")
    p.add_argument("--train-prior", default="glow-digits",
                   help="shipped Glow recipe trained with and without ε in part 2 (default "
                        "glow-digits; 'none' skips part 2)")
    p.add_argument("--train-steps", type=common.positive_int, default=None,
                   help="training steps of part 2 (default: the recipe's)")
    p.add_argument("--num-images", type=common.positive_int, default=None,
                   help="test images per test set (default: quick 4, --full 20)")
    p.add_argument("--maxiter", type=common.positive_int, default=None,
                   help="L-BFGS iterations (default: quick 100, --full 300)")
    p.add_argument("--full", action="store_true",
                   help="more images and iterations, and three training seeds in part 2")
    p.add_argument("--gan", default=None, help="DCGAN checkpoint (not used by this experiment)")
    p.add_argument("--seed", type=common.seed, default=0,
                   help="seed of the noise and the CS matrix, in [0, 2**32) (default 0)")
    p.add_argument("--out", default="results/stabilisers",
                   help="output folder (default results/stabilisers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    from flowinv import checkpoints, priors

    preset = FULL if args.full else QUICK
    train_prior = None if args.train_prior == "none" else args.train_prior
    if train_prior is not None:
        if train_prior not in priors.PRIORS:
            raise ValueError(f"--train-prior must be 'none' or one of {sorted(priors.PRIORS)}, "
                             f"got {train_prior!r}")
        if priors.PRIORS[train_prior].architecture["type"] != "glow":
            raise ValueError(f"--train-prior must be a Glow recipe (ε is an actnorm constant "
                             f"of flowinv.glow), got {train_prior!r}")
    if args.prior is not None:  # the default prior of every dataset is a Glow
        flow = checkpoints.flow_from_config(
            checkpoints.find_checkpoint(args.prior, "flow")[1].get("architecture"))
        _check_glow(flow, args.prior)
    common.note_unused_gan(args, "stabilisers")
    return Config(dataset=args.dataset, ood_dataset=args.ood_dataset, prior=args.prior,
                  clip=args.clip, train_prior=train_prior, train_steps=args.train_steps,
                  num_images=args.num_images or preset["num_images"],
                  maxiter=args.maxiter or preset["maxiter"],
                  train_seeds=preset["train_seeds"], seed=args.seed, out=args.out,
                  progress=not args.no_progress)


def _check_glow(flow, name: str) -> None:
    """ValueError unless ``flow`` has Glow's stabilisers (a Glow, or a subclass of one)."""
    if not hasattr(flow, "actnorm_eps"):
        raise ValueError(f"--prior must be a Glow (the stabilisers are Glow's), got "
                         f"{type(flow).__name__} {name!r}")


def _test_sets(dataset: str, ood: str | None, shape, num_images: int) -> dict[str, np.ndarray]:
    from flowinv import data

    ood = ood or OOD.get(dataset)
    sets = {f"in-dist:{dataset}": data.load_dataset(dataset, "test", image_shape=shape,
                                                   limit=num_images)[:num_images]}
    if ood and ood != "none":
        sets[f"ood:{ood}"] = data.load_dataset(ood, "test", image_shape=shape,
                                               limit=num_images)[:num_images]
    return sets


def _recover_all(flow, params, sets: dict[str, np.ndarray], key, maxiter: int):
    """Both tasks on every test set (one batch per task): ``{task: (x_hat, diverged)}``."""
    import jax.numpy as jnp

    import flowinv
    from flowinv import noise, operators

    images = jnp.asarray(np.concatenate(list(sets.values())))
    shape, n = flow.image_shape, flow.dim
    k_op, k_cs, k_dn = jax.random.split(key, 3)
    m = max(1, int(round(CS_RATIO * n)))
    op = operators.gaussian_cs(k_op, shape, m)
    eta = noise.cs_gaussian(m)
    keys = jax.random.split(k_cs, images.shape[0])
    y_cs = jax.vmap(op)(images) + jax.vmap(eta.sample)(keys)
    y_dn = images + SIGMA * jax.random.normal(k_dn, images.shape)
    out = {}
    for task, y, operator, gamma in (("cs", y_cs, op, 0.0),
                                     ("denoise", y_dn, operators.identity(shape), DENOISE_GAMMA)):
        r = flowinv.recover((flow, params), y, operator=operator, gamma=gamma, init="zeros",
                            maxiter=maxiter, chunk_size=common.chunk_size())
        out[task] = (np.asarray(r.x), np.asarray(r.diverged), y)
    return out


def _evaluate(table, summary, model: str, part: str, flow, params, sets, key, config,
              extra: dict, sheets: dict):
    from flowinv import metrics

    with common.SolveClock() as t:
        solved = _recover_all(flow, params, sets, key, config.maxiter)
    start = 0
    for name, truth in sets.items():
        stop = start + len(truth)
        for task, (x_all, diverged_all, _) in solved.items():
            x = np.clip(x_all[start:stop], 0, 1)
            psnr = metrics.batch_psnr(x, truth)
            table.add(method=model, psnr=psnr, ssim=metrics.batch_ssim(x, truth),
                      seconds=t.seconds * len(truth) / len(x_all) / len(solved),
                      param_name="task", param_value=task, setting_name="test_set",
                      setting_value=name, image_ids=range(len(truth)))
            summary.append(dict(part=part, model=model, task=task, test_set=name,
                                psnr=round(float(np.mean(psnr)), 2),
                                diverged=int(diverged_all[start:stop].sum()),
                                images=len(truth), **extra))
            if task == "cs" and name.startswith("ood"):
                sheets.setdefault(part, {"truth": truth})[model] = x
        start = stop


def _train_variants(config: Config, out: pathlib.Path) -> list[tuple[str, object, object, dict]]:
    """The ``--train-prior`` recipe trained with ``ε = 5e-4`` and ``ε = 0`` for each seed."""
    import flowinv
    from flowinv import priors, train
    from flowinv.flows.layers import ACTNORM_EPS

    recipe = priors.PRIORS[config.train_prior]
    models = []
    for seed in config.train_seeds:
        for eps in (ACTNORM_EPS, 0.0):
            arch = dict(recipe.architecture, actnorm_eps=eps)
            run_config = dataclasses.replace(recipe, architecture=arch, seed=seed,
                                             steps=config.train_steps or recipe.steps)
            run_config = dataclasses.replace(
                run_config, eval_every=min(run_config.eval_every, run_config.steps),
                ckpt_every=min(run_config.ckpt_every, run_config.steps))
            workdir = (out / f"train_{config.train_prior}_eps{eps:g}_seed{seed}"
                             f"_steps{run_config.steps}")
            result = train.train(run_config, workdir, export_to=str(workdir / "model"),
                                 progress=config.progress)
            flow, params = flowinv.load_prior(str(workdir / "model"))
            label = f"trained ε={eps:g}" + (f" seed {seed}" if len(config.train_seeds) > 1
                                             else "")
            models.append((label, flow, params,
                           dict(test_bpd=round(float(result["test_bpd"]), 4))))
    return models


def run(config: Config) -> dict:
    """Runs both parts; returns ``{"rows", "summary", "out"}``."""
    from tqdm.auto import tqdm


    out, prior_name, flow, params = common.setup_run(config)
    _check_glow(flow, prior_name)
    key = jax.random.PRNGKey(config.seed)
    table = common.ResultTable("stabilisers", config.dataset, prior_name)
    summary, sheets = [], {}
    part1 = [("as trained", flow), (f"clip={config.clip:g}",
                                    dataclasses.replace(flow, clip=config.clip)),
             ("ε removed", dataclasses.replace(flow, actnorm_eps=0.0))]
    sets = _test_sets(config.dataset, config.ood_dataset, flow.image_shape, config.num_images)
    bar = tqdm(total=len(part1) + (2 * len(config.train_seeds) if config.train_prior else 0),
               desc="stabilisers", disable=not config.progress)
    for model, variant in part1:
        _evaluate(table, summary, model, f"1:{prior_name}", variant, params, sets, key,
                  config, {"test_bpd": ""}, sheets)
        bar.update()
    if config.train_prior:
        from flowinv import priors

        recipe = priors.PRIORS[config.train_prior]
        shape = tuple(recipe.architecture["image_shape"])
        train_sets = _test_sets(recipe.dataset, None, shape, config.num_images)
        for model, tflow, tparams, extra in _train_variants(config, out):
            _evaluate(table, summary, model, f"2:{config.train_prior}", tflow, tparams,
                      train_sets, key, config, extra, sheets)
            bar.update()
    bar.close()

    table.write(out / "results.csv")
    common.write_csv(out / "summary.csv", summary)
    _plot(out / "psnr.png", summary)
    for part, cols in sheets.items():
        tag = part.split(":")[0]
        common.sample_sheet(out / f"samples_ood_cs_part{tag}.png", list(cols.items()),
                            f"CS m/n={CS_RATIO} on out-of-distribution images, {part}")
    print(f"\nStabilisers (Asim et al. supplement §1.2.1), {config.num_images} images per test "
          f"set, {config.maxiter} L-BFGS iterations; CS m/n = {CS_RATIO} (γ = 0), denoising "
          f"σ = {SIGMA} (γ = {DENOISE_GAMMA}); mean PSNR (dB), diverged = images flagged:")
    print(common.format_table(summary))
    print(f"\nwrote {out}/results.csv, summary.csv, psnr.png, samples_ood_cs_part*.png")
    return {"rows": table.rows, "summary": summary, "out": str(out)}


def _plot(path: pathlib.Path, summary: list[dict]) -> None:
    import matplotlib.pyplot as plt

    parts = sorted({r["part"] for r in summary})
    fig, axes = plt.subplots(1, len(parts), figsize=(6 * len(parts), 4), squeeze=False)
    for ax, part in zip(axes[0], parts, strict=True):
        rows = [r for r in summary if r["part"] == part]
        groups = sorted({(r["task"], r["test_set"]) for r in rows})
        models = list(dict.fromkeys(r["model"] for r in rows))
        width = 0.8 / len(models)
        for j, model in enumerate(models):
            vals = [next((r["psnr"] for r in rows if r["model"] == model
                          and (r["task"], r["test_set"]) == g), np.nan) for g in groups]
            ax.bar(np.arange(len(groups)) + j * width, vals, width, label=model)
        ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2)
        ax.set_xticklabels([f"{t}\n{s}" for t, s in groups], fontsize=7)
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(part, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle("Asim et al. stabilisers: actnorm ε and activation clipping")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
