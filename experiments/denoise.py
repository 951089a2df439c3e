"""Denoising with a Glow prior (Asim et al., ICML 2020, §3.1 and supplement §1.3).

``y = x + σ·ε``; recovery ``min_z ‖G(z) − y‖² + γ‖z‖²`` (and the ``γ‖z‖`` variant) from
``z0 = 0`` with L-BFGS, for σ ∈ {0.05, 0.1, 0.2} and a sweep of γ, with the σ = 0 reference;
compared with BM3D (given the true σ), a DCGAN prior (CSGM/Bora, ``‖G(z) − y‖² + λ‖z‖²``,
when a DCGAN checkpoint is available) and the noisy input. Every estimate, the noisy input
included, is clipped to ``[0, 1]`` before its PSNR and SSIM, so the "noisy" reference reads
higher than the unclipped noisy PSNR (MNIST, σ = 0.1: about 22.6 against 20.0 dB).

The best γ (and λ) per σ is chosen on validation images drawn from the *training* split
(``--val-split test``: the test split's images after the reported ones) and then reported on
the held-out test images, so nothing is tuned on the test set.

``--restarts R`` (R > 1; not the paper's protocol) solves the Glow problems from R draws of
N(0, s² I) (``s`` = ``--init-scale``) instead of ``z0 = 0`` and keeps, per
image, the start with the lowest loss (``flowinv.recover``'s ``restarts``); with
``--zero-start`` the first start is ``z0 = 0`` and the other R − 1 are draws, so no image ends
at a higher loss than from ``z0 = 0`` alone.

Writes ``results.csv`` (tidy, one row per image × method × setting), ``summary.csv``,
``comparison.csv`` (each learned method at its picked weight minus BM3D, and each Glow minus
the DCGAN, paired per test image, with the standard error, 95 % t interval and p-value of the
mean difference), ``psnr_vs_gamma.png`` and ``samples_sigma*.png`` under ``--out``, and
prints the summary and the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common

# The quick grid runs the σ = 0 reference at γ = 0 only; --full sweeps γ at σ = 0 as well, and
# adds σ = 0.01 (Asim et al. supplement §1.3, Fig. 4: σ = 0.01, 0.05, 0.1, 0.2).
QUICK = dict(num_images=4, val_images=3, maxiter=100, sigmas=(0.05, 0.1, 0.2),
             gammas=(0.0, 0.01, 0.03, 0.1), norm_gammas=(0.3, 1.0, 3.0),
             gan_lams=(0.0, 0.01, 0.1), reference_gammas=(0.0,))
FULL = dict(num_images=50, val_images=10, maxiter=300, sigmas=(0.01, 0.05, 0.1, 0.2),
            gammas=(0.0, 0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.3, 1.0),
            norm_gammas=(0.03, 0.1, 0.3, 1.0, 2.0, 3.0, 10.0), gan_lams=(0.0, 0.01, 0.1, 1.0),
            reference_gammas=None)


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    prior: str | None = None
    gan: str | None = None
    sigmas: tuple[float, ...] = QUICK["sigmas"]
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    norm_gammas: tuple[float, ...] = QUICK["norm_gammas"]
    gan_lams: tuple[float, ...] = QUICK["gan_lams"]
    reference_gammas: tuple[float, ...] | None = QUICK["reference_gammas"]  # None: all gammas
    seed: int = 0
    out: str = "results/denoise"
    progress: bool = True
    restarts: int = 1  # > 1: Glow from `restarts` draws of N(0, init_scale² I), best by loss
    init_scale: float = 0.1
    zero_start: bool = False  # with restarts > 1: start 0 is z0 = 0, the others random


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.denoise", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "denoise", quick=QUICK, full=FULL)
    p.add_argument("--sigmas", type=common.float_list, default=None,
                   help="noise levels, comma separated (default 0.05,0.1,0.2; --full: "
                        "0.01,0.05,0.1,0.2; σ=0 is always added as the reference)")
    p.add_argument("--gammas", type=common.float_list, default=None,
                   help="γ values of the ‖z‖² penalty, comma separated")
    p.add_argument("--norm-gammas", type=common.float_list, default=None,
                   help="γ values of the ‖z‖ penalty, comma separated")
    p.add_argument("--val-images", type=common.positive_int, default=None,
                   help="validation images (see --val-split) used to pick γ")
    common.add_val_split_argument(p)
    p.add_argument("--restarts", type=common.positive_int, default=1,
                   help="Glow solves per image: 1 (default) starts from z0 = 0 as the paper "
                        "does; R > 1 starts from R draws of N(0, s² I) (s = --init-scale) and "
                        "keeps the one with the lowest loss (recover's restarts); the DCGAN "
                        "keeps z0 = 0")
    p.add_argument("--init-scale", type=common.positive_float, default=None,
                   help="s of the random starts with --restarts > 1 (default 0.1)")
    p.add_argument("--zero-start", action="store_true",
                   help="with --restarts R > 1: the first start is z0 = 0 and the other R - 1 "
                        "draw from N(0, s² I), so the kept loss is never above z0 = 0's")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    if args.sigmas is not None and any(s <= 0 for s in args.sigmas):
        raise ValueError(f"--sigmas must be > 0 (σ=0 is added as the reference), "
                         f"got {args.sigmas}")
    unused = [o for o, given in (("--init-scale", args.init_scale is not None),
                                 ("--zero-start", args.zero_start)) if given]
    if unused and args.restarts == 1:
        print(f"note: {' and '.join(unused)} {'is' if len(unused) == 1 else 'are'} used only "
              "with --restarts > 1 (ignored)")
    return Config(
        dataset=args.dataset, prior=args.prior, gan=args.gan,
        sigmas=args.sigmas or preset["sigmas"],
        num_images=pick(args.num_images, "num_images"),
        val_images=pick(args.val_images, "val_images"), val_split=args.val_split,
        maxiter=pick(args.maxiter, "maxiter"),
        gammas=pick(args.gammas, "gammas"), norm_gammas=pick(args.norm_gammas, "norm_gammas"),
        gan_lams=preset["gan_lams"],
        reference_gammas=preset["reference_gammas"] if args.gammas is None else None,
        seed=args.seed, out=args.out,
        progress=not args.no_progress, restarts=args.restarts,
        init_scale=Config.init_scale if args.init_scale is None else args.init_scale,
        zero_start=args.zero_start)


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import metrics, operators
    from flowinv.baselines import classical

    out, prior_name, flow, params = common.setup_run(config)
    test, val = common.load_test_and_val(config.dataset, flow.image_shape,
                                         config.num_images, config.val_images, config.val_split)
    images = np.concatenate([test, val])  # one batch: val images ride along for γ selection
    n_test = len(test)
    op = operators.identity(flow.image_shape)
    gan = common.load_gan_or_none(config.gan, config.dataset, flow.image_shape)

    table = common.ResultTable("denoise", config.dataset, prior_name)
    curves = []  # (sigma, method, param, mean test psnr, mean val psnr)
    samples = {}
    sigmas = (0.0, *config.sigmas)
    ref_gammas = config.gammas if config.reference_gammas is None else config.reference_gammas
    # One recover call per method: every (σ, weight) pair rides in the batch with its own
    # weight, so each method compiles and runs once.
    groups = {"glow-sq": [(s, g) for s in config.sigmas for g in config.gammas]
              + [(0.0, g) for g in ref_gammas],
              "glow-norm": [(s, g) for s in config.sigmas for g in config.norm_gammas]}
    if gan is not None:
        groups["dcgan"] = [(s, lam) for s in config.sigmas for lam in config.gan_lams]
    key = jax.random.PRNGKey(config.seed)
    noisy = {s: np.asarray(images + s * jax.random.normal(jax.random.fold_in(key, i),
                                                           images.shape))
             for i, s in enumerate(sigmas)}

    def score(x_hat, s, method, pname, pvalue, seconds):  # seconds: per image
        x_hat = np.clip(np.asarray(x_hat), 0, 1)
        p = metrics.batch_psnr(x_hat, images)
        table.add(method=method, psnr=p[:n_test], ssim=metrics.batch_ssim(x_hat[:n_test],
                  images[:n_test]), seconds=seconds * n_test,
                  param_name=pname, param_value=pvalue, setting_name="sigma", setting_value=s,
                  image_ids=range(n_test))
        curves.append(dict(sigma=s, method=method, param=pvalue,
                           test_psnr=float(np.mean(p[:n_test])),
                           val_psnr=float(np.mean(p[n_test:])) if len(p) > n_test else np.nan))
        samples[(s, method, pvalue)] = x_hat[:n_test]

    for s in tqdm(config.sigmas, desc="baselines", disable=not config.progress):
        with common.SolveClock() as t:
            x_bm3d = np.stack([classical.bm3d_denoise(y, s) for y in noisy[s]])
        score(x_bm3d, s, "bm3d", "", "", t.seconds / len(images))
        score(noisy[s], s, "noisy", "", "", 0.0)

    chunk = common.chunk_size()
    # a bar over each call's chunks: the plain solve, which the compilation cache keeps
    bar = "chunks" if config.progress else False
    for method, pairs in tqdm(groups.items(), desc="denoise", disable=not config.progress):
        y = jnp.asarray(np.concatenate([noisy[s] for s, _ in pairs]))
        weights = jnp.repeat(jnp.asarray([w for _, w in pairs], y.dtype), len(images))
        with common.SolveClock() as t:
            if method == "dcgan":
                r = flowinv.recover(gan, y, operator=op, method="bora", gamma=weights,
                                    maxiter=config.maxiter, chunk_size=chunk, progress=bar)
            else:
                starts = {} if config.restarts == 1 else dict(
                    init="zeros" if config.zero_start else "normal", restart_init="normal",
                    init_scale=config.init_scale, restarts=config.restarts,
                    key=jax.random.fold_in(key, 1000))
                r = flowinv.recover((flow, params), y, operator=op, method="asim",
                                    gamma=weights, maxiter=config.maxiter,
                                    chunk_size=chunk, progress=bar,
                                    penalty="sq" if method == "glow-sq" else "norm", **starts)
            x_hat = np.asarray(r.x).reshape(len(pairs), *images.shape)
        for (s, w), xh in zip(pairs, x_hat, strict=True):
            score(xh, s, method, "lambda" if method == "dcgan" else "gamma", w,
                  t.seconds / len(y))

    table.write(out / "results.csv")
    summary = _summarise(curves, config)
    common.write_csv(out / "summary.csv", summary)
    comparison = _compare(table.rows, summary)
    common.write_csv(out / "comparison.csv", comparison)
    common.write_csv(out / "curves.csv", curves)
    _plot_curves(out / "psnr_vs_gamma.png", curves, config, prior_name)
    for s in config.sigmas:
        cols = [("truth", test), (f"noisy σ={s}", noisy[s][:n_test])]
        for row in summary:
            if row["sigma"] == s and row["method"] not in ("noisy",):
                cols.append((f"{row['method']} {row['param']}".strip(),
                             samples[(s, row["method"], row["param_value"])]))
        common.sample_sheet(out / f"samples_sigma{s}.png", cols,
                            f"denoising, {config.dataset}, prior {prior_name}, σ={s}")
    draws = f"N(0, {config.init_scale:g}² I)"
    if config.restarts == 1:
        start_text = "from z0 = 0"
    elif config.zero_start:
        start_text = (f"(Glow: best of {config.restarts} starts, z0 = 0 and "
                      f"{common.count(config.restarts - 1, 'draw')} of {draws})")
    else:
        start_text = f"(Glow: best of {config.restarts} starts from {draws})"
    print(f"\nDenoising on {common.count(n_test, 'held-out test image')} of {config.dataset} "
          f"(γ/λ picked on {common.validation_text(len(val), config.val_split)}, "
          "none of them a test image), "
          f"prior {prior_name}, {config.maxiter} L-BFGS iterations {start_text}:")
    print(common.format_table([{k: v for k, v in r.items() if k != "param_value"}
                               for r in summary]))
    common.print_grid_edge_note(summary, lambda r: f"{r['method']} at σ = {r['sigma']}")
    if comparison:
        print("\nEach learned method at its picked weight minus BM3D, and each Glow minus the "
              f"DCGAN, {common.COMPARISON_NOTE}:")
        print(common.format_table(comparison))
    print(f"\nwrote {out}/results.csv, summary.csv, comparison.csv, psnr_vs_gamma.png, "
          "samples_sigma*.png")
    return {"rows": table.rows, "summary": summary, "comparison": comparison, "out": str(out)}


def _compare(rows: list[dict], summary: list[dict]) -> list[dict]:
    """Per σ > 0, each learned method at its validation-picked weight minus BM3D, and each Glow
    method minus the DCGAN, paired per test image (:func:`common.paired_difference`)."""
    pairs = [(m, "bm3d") for m in ("glow-sq", "glow-norm", "dcgan")] + [
        (m, "dcgan") for m in ("glow-sq", "glow-norm")]
    out = []
    for s in sorted({r["sigma"] for r in summary if r["sigma"] != 0}):
        picked = {r["method"]: r for r in summary if r["sigma"] == s}
        out += [dict(sigma=s, **c) for c in common.compare_picked(rows, picked, pairs,
                                                                  {"setting_value": s})]
    return out


def _summarise(curves: list[dict], config: Config) -> list[dict]:
    """Per σ and method: the setting with the best validation PSNR, and its test PSNR/SSIM."""
    rows = []
    for s in (0.0, *config.sigmas):
        for method in ("noisy", "bm3d", "glow-sq", "glow-norm", "dcgan"):
            cands = [c for c in curves if c["sigma"] == s and c["method"] == method]
            if not cands:
                continue
            best = common.best_on_validation(cands)
            name = {"glow-sq": "γ", "glow-norm": "γ", "dcgan": "λ"}.get(method, "")
            rows.append(dict(sigma=s, method=method,
                             param=f"{name}={best['param']}" if name else "",
                             param_value=best["param"],
                             test_psnr=round(best["test_psnr"], 2),
                             val_psnr=round(best["val_psnr"], 2),
                             edge=common.grid_edge([c["param"] for c in cands], best["param"])
                             if name else ""))
    return rows


def _plot_curves(path: pathlib.Path, curves: list[dict], config: Config, prior: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    sigmas = (0.0, *config.sigmas)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, (method, ax) in enumerate((("glow-sq", axes[0]), ("glow-norm", axes[1]))):
        gammas = sorted({c["param"] for c in curves if c["method"] == method})
        positive = [g for g in gammas if g > 0] or [1e-2]
        zero_at = min(positive) / 3  # a log axis has no 0: draw γ = 0 one third below
        x_of = {g: g if g > 0 else zero_at for g in gammas}
        for i, s in enumerate(sigmas):
            pts = sorted((c["param"], c["test_psnr"]) for c in curves
                         if c["sigma"] == s and c["method"] == method)
            if not pts:
                continue
            ax.plot([x_of[g] for g, _ in pts], [v for _, v in pts], "o-",
                    color=colors[i], label=f"σ={s}")
            for base, style in (("bm3d", "--"), ("noisy", ":")):
                b = [c["test_psnr"] for c in curves if c["sigma"] == s and c["method"] == base]
                if b and s > 0:
                    ax.axhline(b[0], ls=style, color=colors[i], lw=1,
                               label=f"{base} σ={s}" if j == 0 else None)
        ax.set_xscale("log")
        ax.set_xticks([x_of[g] for g in gammas], [f"{g:g}" for g in gammas])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("γ")
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title({"glow-sq": "Glow, γ‖z‖²", "glow-norm": "Glow, γ‖z‖"}[method])
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(sigmas) + 1, fontsize=7)
    fig.suptitle(f"Denoising PSNR vs γ ({config.dataset}, {prior}); dashed BM3D, dotted noisy")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
