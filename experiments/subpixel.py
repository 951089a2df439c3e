r"""Sub-pixel imputation at the largest shipped resolution (Whang et al. 2020, §5.4.5, Fig. 9).

The measurement keeps each *sub-pixel* (every colour channel of every pixel separately) with
probability 0.75: :math:`y = M \odot x`, :math:`M_{hwc} \sim \mathrm{Bernoulli}(1 - p)` i.i.d.,
:math:`p = 0.25`, one mask per image; the task is linear and noiseless. The paper runs it at
256×256 with a pretrained Glow to show speed and scalability; here it runs at the largest
resolution a shipped prior supports (``patches64`` with ``glow-patches64``, 64×64×3, by
default; ``--dataset mnist`` for 28×28×1). Two recoveries, both with the same L-BFGS from
:math:`z_0 = 0`:

* MAP (Whang et al.) with a Gaussian noise model :math:`\mathcal N(0, \sigma^2 I)`
  (``--noise-sigma``, small, as the measurements are noiseless) and smoothing :math:`\beta`:

  .. math:: \hat z = \arg\min_z \frac{\|y - M \odot G(z)\|^2}{2\sigma^2}
            - \beta \log p_G(G(z)) + \text{const};

* Asim, as Whang et al. run it (their eq. (9), the proxy loss Asim et al. report using):
  :math:`\hat z = \arg\min_z \|y - M \odot G(z)\|^2 + \gamma \|z\|`; ``--asim-penalty sq``
  gives Asim et al.'s :math:`\gamma \|z\|^2`, which this experiment used before.

:math:`\beta` and :math:`\gamma` are swept (the paper's grids with ``--full``) and the best value
of each is chosen on validation images from the *training* split (``--val-split test``:
the test split's images after the reported ones; refused for the default ``patches64``,
whose later test images are crops of the reported ones' photographs), never on the test
images. The
masked input (missing sub-pixels at 0) is reported as the floor.

Both methods use flowinv's L-BFGS (``--solver lbfgs``, Armijo backtracking, its first step
capped at norm 1, flowinv's default) by default. With
jaxopt's implementation of that method the very first MAP step could land on a non-finite loss
for priors with logit preprocessing, so optax's L-BFGS (``--solver optax-lbfgs``) was the
default until the flat implementation: on glow-mnist (``--dataset mnist``, 100 iterations, 4
images per solve) it ran 1.7 s per image against optax's 6.7 s, with no divergence. The quick
preset runs 200 iterations (optax's ran 100). ``diverged`` in the summary counts test images
whose loss became non-finite.

Runtime: each sweep point is one batched solve of the test and validation images; the reported
``seconds_per_image`` is its wall time minus JAX's compilation time (measured from JAX's
monitoring events), divided by the number of images solved together; ``compile_seconds`` is the
one-off compilation of each method.

Writes ``results.csv`` (tidy, one row per test image × method × parameter; ``seconds`` is the
solve time per image), ``summary.csv`` (with an ``edge`` column where a pick sits at an end of
its grid), ``comparison.csv`` (MAP minus Asim and each minus the
masked input, each at its picked weight, paired per test image with its 95 % interval),
``curves.csv``, ``psnr_vs_param.png`` and ``samples.png`` under ``--out``, and prints the
summary and the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments import _whang_cs, common
from experiments.inpainting import with_holes

QUICK = dict(num_images=2, val_images=2, maxiter=200, betas=(0.1, 1.0), gammas=(0.0, 0.5))
# Quick γ of Asim's γ‖z‖ (Whang et al. eq. (9)): the quick grid was γ ∈ {0, 0.01} of γ‖z‖²,
# converted by matching the penalties' gradients, γ_norm ≈ 2 γ_sq ‖ẑ‖, at the ‖ẑ‖ that the
# γ‖z‖² solve reaches (glow-patches64, 200 L-BFGS iterations from z0 = 0, 25% dropped, 2 patches
# of the *training* split): ‖ẑ‖ = 12.9 and 42.9 (mean 27.9; ‖G⁻¹(x)‖ 62 and 109) at γ = 0.01,
# so γ_norm ≈ 0.56: the --full grid's 0.5 (γ = 0 stays 0).
# Whang et al.'s grids (appendix B) for β and γ, plus smaller values: σ of the noise model is a
# free temperature here (noiseless task), and only σ²β sets the weight of the prior.
FULL = dict(num_images=20, val_images=4, maxiter=500,
            betas=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0),
            gammas=(0.0, 0.001, 0.01, 0.1, 0.5, 1.0, 5.0))


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "patches64"
    prior: str | None = None
    drop: float = 0.25
    noise_sigma: float = 0.05
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    betas: tuple[float, ...] = QUICK["betas"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    asim_penalty: str = "norm"  # γ‖z‖ (Whang et al. eq. 9); "sq": γ‖z‖²
    solver: str = "lbfgs"
    batch_size: int | None = None  # None: common.chunk_size()
    seed: int = 0
    out: str = "results/subpixel"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.subpixel", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "subpixel", quick=QUICK, full=FULL, dataset="patches64",
                                uses_gan=False)
    p.add_argument("--drop", type=float, default=0.25,
                   help="fraction p of sub-pixels dropped, in [0, 1) (default 0.25)")
    p.add_argument("--noise-sigma", type=float, default=0.05,
                   help="σ of the Gaussian noise model of MAP, > 0 (default 0.05)")
    p.add_argument("--betas", type=common.float_list, default=None,
                   help="MAP smoothing values β, comma separated (picked on validation)")
    p.add_argument("--gammas", type=common.float_list, default=None,
                   help=_whang_cs.GAMMAS_HELP + " (picked on validation)")
    _whang_cs.add_asim_penalty_argument(p)
    p.add_argument("--val-images", type=common.positive_int, default=None,
                   help="validation images (see --val-split) used to pick β and γ")
    common.add_val_split_argument(p)
    p.add_argument("--solver", choices=_whang_cs.SOLVERS, default="lbfgs",
                   help="solver of both methods (default lbfgs; jaxopt-lbfgs's first MAP step "
                        "can land on a non-finite loss: see above)")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="images per compiled solve; larger batches run in chunks (default 8 "
                        "on a CPU, the whole batch elsewhere)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    if not 0 <= args.drop < 1:
        raise ValueError(f"--drop must lie in [0, 1), got {args.drop}")
    common.note_unused_gan(args, "subpixel")
    if not (np.isfinite(args.noise_sigma) and args.noise_sigma > 0):
        raise ValueError(f"--noise-sigma must be a finite number > 0, got {args.noise_sigma}")
    return Config(
        dataset=args.dataset, prior=args.prior, drop=args.drop, noise_sigma=args.noise_sigma,
        num_images=pick(args.num_images, "num_images"),
        val_images=pick(args.val_images, "val_images"), val_split=args.val_split,
        maxiter=pick(args.maxiter, "maxiter"),
        betas=pick(args.betas, "betas"), gammas=pick(args.gammas, "gammas"),
        asim_penalty=args.asim_penalty, solver=args.solver,
        batch_size=args.batch_size, seed=args.seed, out=args.out,
        progress=not args.no_progress)


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import metrics, noise, operators

    _whang_cs.check_asim_penalty(config.asim_penalty)
    out, prior_name, flow, params = common.setup_run(config)
    shape = tuple(flow.image_shape)
    test, val = common.load_test_and_val(config.dataset, shape, config.num_images,
                                         config.val_images, config.val_split)
    nt = len(test)
    images = np.concatenate([test, val])  # one batch; the validation images pick β and γ
    keys = jax.random.split(jax.random.PRNGKey(config.seed), len(images))
    op = jax.vmap(lambda k: operators.subpixel(k, shape, config.drop))(keys)
    y = jax.vmap(lambda o, x: o(x))(op, jnp.asarray(images))  # noiseless, as in the paper
    masks = np.asarray(op.mask)
    model = noise.gaussian(config.noise_sigma)

    table = common.ResultTable("subpixel", config.dataset, prior_name)
    curves, recovered = [], {}

    def score(x_hat, method, pname, pvalue, clock, r):
        x_hat = np.clip(np.asarray(x_hat), 0.0, 1.0)
        p = metrics.batch_psnr(x_hat, images)
        per_image = clock.seconds / len(images) if clock else 0.0
        table.add(method=method, psnr=p[:nt], ssim=metrics.batch_ssim(x_hat[:nt], test),
                  seconds=per_image * nt, param_name=pname, param_value=pvalue,
                  setting_name="drop", setting_value=config.drop, image_ids=range(nt))
        curves.append(dict(method=method, param=pvalue, val_psnr=float(np.mean(p[nt:])),
                           test_psnr=float(np.mean(p[:nt])), seconds_per_image=per_image,
                           compile_seconds=clock.compile_seconds if clock else 0.0,
                           iterations=float(np.mean(r.iterations[:nt])) if r else 0.0,
                           diverged=int(np.sum(r.diverged[:nt])) if r else 0))
        recovered[(method, pvalue)] = x_hat[:nt]

    score(np.asarray(y), "masked", "", "", None, None)
    jobs = [("map", b) for b in config.betas] + [("asim", g) for g in config.gammas]
    for method, value in tqdm(jobs, desc="sub-pixel imputation", disable=not config.progress):
        weights = ({"beta": value} if method == "map"
                   else {"gamma": value, "penalty": config.asim_penalty})
        with common.SolveClock() as clock:
            r = flowinv.recover((flow, params), y, operator=op, per_image_operator=True,
                                chunk_size=config.batch_size or common.chunk_size(),
                                method=method, noise=model if method == "map" else None,
                                init="zeros", solver=config.solver,
                                maxiter=config.maxiter, **weights)
            x_hat = np.asarray(r.x)
        score(x_hat, method, "beta" if method == "map" else "gamma", value, clock,
              jax.tree.map(np.asarray, r))

    table.write(out / "results.csv")
    summary = _summarise(table.rows, curves)
    common.write_csv(out / "summary.csv", summary)
    comparison = _compare(table.rows, summary)
    common.write_csv(out / "comparison.csv", comparison)
    common.write_csv(out / "curves.csv", curves)
    _plot(out / "psnr_vs_param.png", curves, config, prior_name, shape)
    observed = f"observed, {config.drop:.0%} dropped (grey)"  # the table scores y itself
    cols = [("truth", test), (observed, with_holes(np.asarray(y[:nt]), masks[:nt]))]
    cols += [(f"{r['method']} {r['param']}", recovered[(r["method"], r["param_value"])])
             for r in summary if r["method"] != "masked"]
    common.sample_sheet(out / "samples.png", [(n, x[: 6]) for n, x in cols],
                        f"sub-pixel imputation, {config.dataset}, prior {prior_name}",
                        unscored=[observed])
    print(f"\nSub-pixel imputation ({config.drop:.0%} of sub-pixels dropped) at "
          f"{'x'.join(map(str, shape))}, prior {prior_name}, {config.maxiter} iterations of "
          f"{config.solver}, mean over {common.count(nt, 'test image')} of {config.dataset}; β, γ "
          f"picked on {common.validation_text(len(val), config.val_split)} (none a test image); "
          f"{_whang_cs.asim_penalty_note(config.asim_penalty)}; seconds_per_image excludes "
          f"compilation ({len(images)} images per batched solve):")
    print(common.format_table([{k: v for k, v in r.items() if k != "param_value"}
                               for r in summary]))
    common.print_grid_edge_note(summary, lambda r: r["method"])
    if comparison:
        print(f"\nMAP minus Asim, and each minus the masked input, {common.COMPARISON_NOTE}:")
        print(common.format_table(comparison))
    print(f"\nwrote {out}/results.csv, summary.csv, comparison.csv, curves.csv, "
          "psnr_vs_param.png, samples.png")
    return {"rows": table.rows, "summary": summary, "comparison": comparison, "out": str(out)}


COMPARED = (("map", "asim"), ("map", "masked"), ("asim", "masked"))


def _compare(rows: list[dict], summary: list[dict]) -> list[dict]:
    """Each pair of :data:`COMPARED` present, each side at its validation-picked weight, paired
    per test image (:func:`common.paired_difference`)."""
    return common.compare_picked(rows, {r["method"]: r for r in summary}, COMPARED, {})


def _summarise(rows: list[dict], curves: list[dict]) -> list[dict]:
    """Per method: the parameter with the best validation PSNR, its test PSNR/SSIM, runtime."""
    out = []
    for method in ("masked", "map", "asim"):
        cands = [c for c in curves if c["method"] == method]
        if not cands:
            continue
        best = common.best_on_validation(cands)
        rs = [r for r in rows if r["method"] == method and r["param_value"] == best["param"]]
        label = {"map": "β", "asim": "γ"}.get(method)
        out.append(dict(
            method=method, param=f"{label}={best['param']}" if label else "",
            param_value=best["param"], val_psnr=round(best["val_psnr"], 2),
            psnr=round(float(np.mean([r["psnr"] for r in rs])), 2),
            ssim=round(float(np.mean([r["ssim"] for r in rs])), 3),
            seconds_per_image=round(best["seconds_per_image"], 3),
            compile_seconds=round(max(c["compile_seconds"] for c in cands), 1),
            iterations=round(best["iterations"], 1), diverged=best["diverged"],
            edge=common.grid_edge([c["param"] for c in cands], best["param"])))
    return out


def _plot(path, curves, config, prior, shape) -> None:
    import matplotlib.pyplot as plt

    masked = [c["test_psnr"] for c in curves if c["method"] == "masked"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, method, sym in ((axes[0], "map", "β"), (axes[1], "asim", "γ")):
        pts = sorted((c["param"], c["test_psnr"], c["val_psnr"], c["seconds_per_image"])
                     for c in curves if c["method"] == method)
        if not pts:
            continue
        v = np.array([p[0] for p in pts], float)
        floor = v[v > 0].min() / 3 if (v > 0).any() else 1e-3
        xs = np.maximum(v, floor)  # a zero is drawn at the left edge of the log axis
        ax.plot(xs, [p[1] for p in pts], "o-", label="test")
        ax.plot(xs, [p[2] for p in pts], "s--", label="validation")
        if masked:
            ax.axhline(masked[0], ls=":", color="C7", label="masked input")
        secs = np.mean([p[3] for p in pts])
        ax.set_xscale("log")
        ax.set_xlabel(f"{sym} (0 drawn at the left edge)")
        ax.set_ylabel("PSNR (dB)")
        ax.set_title(f"{'MAP' if method == 'map' else 'Asim'}: {secs:.2f} s/image (mean over "
                     f"{sym}, compilation excluded)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Sub-pixel imputation, {config.drop:.0%} dropped, "
                 f"{'x'.join(map(str, shape))} ({config.dataset}, {prior})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
