"""Compressed sensing with a Glow prior (Asim et al., ICML 2020, §3.2, Fig. 5).

``y = A x + η`` with ``A`` an m×n Gaussian matrix (i.i.d. N(0, 1/m)) and ``η`` normalised so
that ``sqrt(E‖η‖²) = 0.1``. Glow recovers with ``γ = 0`` from ``z0 = 0`` (regularised by the
optimiser alone); baselines are Lasso in the DCT and wavelet bases, a DCGAN prior (CSGM, best of
3 random restarts by the final objective ``‖A G(z) − y‖² + λ‖z‖²``, λ = 0.1), IAGAN (Hussein et
al. 2020: the DCGAN's weights and latent adapted to each image from the CSGM solution, then
optionally back-projected), and an unlearned Deep Decoder. PSNR and SSIM vs m, on the
in-distribution test split and on an out-of-distribution set.

Hyperparameters of the baselines (Lasso λ; IAGAN's weight learning rate and whether to
back-project) are picked on validation images from the training split (``--val-split test``:
the test split's images after the reported ones), never on the test images.

Writes ``results.csv`` (tidy), ``summary.csv`` (mean PSNR/SSIM per test set × m × method),
``comparison.csv`` (Glow minus each other method per test set and m, paired per test image,
with its 95 % interval: :func:`experiments.common.paired_difference`), ``psnr_vs_m.png``,
``samples_{in-dist,ood}.png`` and, with IAGAN, ``iagan_choices.csv`` under ``--out``, and
prints the summary and the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common

QUICK = dict(num_images=4, val_images=2, maxiter=100, ratios=(0.02, 0.05, 0.1, 0.25, 0.5),
             dd_steps=300, gan_restarts=3, lasso_lams=(1e-3, 1e-2), iagan_steps=200,
             iagan_lrs=(1e-3,))
FULL = dict(num_images=20, val_images=4, maxiter=300,
            ratios=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0), dd_steps=2000,
            gan_restarts=3, lasso_lams=(1e-4, 1e-3, 1e-2, 1e-1), iagan_steps=500,
            iagan_lrs=(1e-4, 1e-3))
OOD = {"mnist": "lfw", "patches64": "cartoon"}


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    ood_dataset: str | None = None
    prior: str | None = None
    gan: str | None = None
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    ratios: tuple[float, ...] = QUICK["ratios"]
    dd_steps: int = QUICK["dd_steps"]
    gan_restarts: int = QUICK["gan_restarts"]
    lasso_lams: tuple[float, ...] = QUICK["lasso_lams"]
    iagan_steps: int = QUICK["iagan_steps"]
    iagan_lrs: tuple[float, ...] = QUICK["iagan_lrs"]
    methods: tuple[str, ...] = ("glow", "lasso-dct", "lasso-wavelet", "dcgan", "iagan",
                                "deep-decoder")
    seed: int = 0
    out: str = "results/compressed_sensing"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.compressed_sensing",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "compressed_sensing", quick=QUICK, full=FULL)
    p.add_argument("--ratios", type=common.float_list, default=None,
                   help="undersampling ratios m/n, comma separated, in (0, 1]")
    p.add_argument("--ood-dataset", default=None,
                   help="out-of-distribution set (default lfw for mnist, cartoon for patches64;"
                        " 'none' to skip)")
    p.add_argument("--methods", default=None,
                   help="comma-separated subset of glow,lasso-dct,lasso-wavelet,dcgan,"
                        "iagan,deep-decoder (default all); Lasso's λ and IAGAN's learning "
                        "rate are picked on the validation images (quick "
                        f"{QUICK['val_images']}, --full {FULL['val_images']}; see --val-split)")
    common.add_val_split_argument(p)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    ratios = args.ratios or preset["ratios"]
    if any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"--ratios must lie in (0, 1], got {ratios}")
    methods = Config.methods
    if args.methods:
        methods = common.list_entries(args.methods, "--methods", Config.methods)
    common.check_methods_without_gan(methods, args.gan, ("dcgan", "iagan"))
    return Config(
        dataset=args.dataset, ood_dataset=args.ood_dataset, prior=args.prior, gan=args.gan,
        num_images=args.num_images or preset["num_images"], val_images=preset["val_images"],
        val_split=args.val_split,
        maxiter=args.maxiter or preset["maxiter"], ratios=ratios, dd_steps=preset["dd_steps"],
        gan_restarts=preset["gan_restarts"], lasso_lams=preset["lasso_lams"],
        iagan_steps=preset["iagan_steps"], iagan_lrs=preset["iagan_lrs"], methods=methods,
        seed=args.seed, out=args.out, progress=not args.no_progress)


# ---- baselines (thin adapters) -------------------------------------------------------------


def _lasso(y, op, basis, lam):
    from flowinv.baselines import classical

    return jax.vmap(lambda yy: classical.lasso_cs(yy, op, basis=basis, lam=lam))(y)


def _deep_decoder(key, y, op, shape, steps):
    from flowinv.baselines import deep_decoder

    k, depth = (64, 4) if shape[0] <= 32 else (128, 5)
    depth = min(depth, deep_decoder.max_depth(shape))  # 8x8 digits: 2 (4 made a flat image)
    keys = jax.random.split(key, y.shape[0])
    return jnp.stack([deep_decoder.deep_decoder_recover(kk, yy, op, k=k, depth=depth,
                                                        steps=steps)
                      for kk, yy in zip(keys, y, strict=True)])


def _csgm(gan, y, op, key, restarts, maxiter):
    """CSGM images and latents ``(x, z)`` of the batch ``y``: the best of ``restarts`` random
    starts per image, by the lowest final objective ``‖A G(z) − y‖² + λ‖z‖²`` with λ = 0.1, not
    the data term alone (``recover``'s ``restarts``, one batched solve)."""
    import flowinv

    r = flowinv.recover(gan, y, operator=op, method="bora", gamma=0.1, init="normal",
                        init_scale=1.0, key=key, restarts=restarts, maxiter=maxiter,
                        chunk_size=common.chunk_size())
    return r.x, r.z


def _iagan(gan, y, op, z0, steps, lr):
    """IAGAN images of the batch ``y`` from the CSGM latents ``z0``: ``(adapted, adapted and
    back-projected)``, both ``(B, H, W, C)``."""
    from flowinv.baselines import iagan

    generator, params = gan
    fit = jax.vmap(lambda yy, zz: iagan.iagan_recover(generator, params, yy, op, zz,
                                                      steps=steps, lr_weights=lr))
    x = fit(y, z0)
    return x, _back_project_batch(op, x, y)


@jax.jit
def _back_project_batch(op, x, y):
    """:func:`flowinv.baselines.iagan.back_project` of a batch ``x``, ``y`` (``δ = 0``); the
    operator is an argument, not a closure, so its matrix is never a compile-time constant."""
    from flowinv.baselines import iagan

    return jax.vmap(iagan.back_project, in_axes=(None, 0, 0))(op, x, y)


def _pick_iagan(gan, y, op, z_gan, nt, val, config, csgm_seconds):
    """IAGAN on the test images (the first ``nt`` of ``y``) with the learning rate and the
    back-projection choice of best validation PSNR; test and validation images are adapted in
    one batch per learning rate. Returns ``(images, seconds, choice)``; the seconds are the
    test images' share (``nt`` of the batch's images) of the CSGM start and one adaptation,
    which run on the validation images too; ``choice`` names the pick and its score."""
    from flowinv import metrics

    candidates = []
    for lr in config.iagan_lrs:
        with common.SolveClock() as t:
            adapted, projected = jax.block_until_ready(
                _iagan(gan, y, op, z_gan, config.iagan_steps, lr))
        for bp, x in ((False, adapted), (True, projected)):
            x = np.clip(np.asarray(x), 0, 1)
            candidates.append(dict(val_psnr=metrics.batch_psnr(x[nt:], val).mean(), x=x[:nt],
                                   seconds=(csgm_seconds + t.seconds) * nt / (nt + len(val)),
                                   lr=lr,
                                   back_projection=bp))
    best = common.best_on_validation(candidates)
    choice = {k: best[k] for k in ("lr", "back_projection")}
    choice["val_psnr"] = round(float(best["val_psnr"]), 2)
    return best["x"], best["seconds"], choice


def run(config: Config) -> dict:
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import data, metrics, noise, operators

    out, prior_name, flow, params = common.setup_run(config)
    shape, n = flow.image_shape, flow.dim
    sets = {"in-dist": config.dataset}
    ood = config.ood_dataset or OOD.get(config.dataset)
    if ood and ood != "none":
        sets["ood"] = ood
    gan = (common.load_gan_or_none(config.gan, config.dataset, shape)
           if {"dcgan", "iagan"} & set(config.methods) else None)
    test_in, val = common.load_test_and_val(config.dataset, shape, config.num_images,
                                            config.val_images, config.val_split)
    tests = {name: test_in if name == "in-dist" else
             data.load_dataset(spec, "test", image_shape=shape, limit=config.num_images)
             for name, spec in sets.items()}
    tables = {name: common.ResultTable("compressed_sensing", spec, prior_name)
              for name, spec in sets.items()}  # each set's rows name it as their dataset
    key = jax.random.PRNGKey(config.seed)
    sheets, iagan_choices = {}, []
    ms = dict.fromkeys(max(1, int(round(ratio * n))) for ratio in config.ratios)  # no repeats
    jobs = [(name, spec, m) for name, spec in sets.items() for m in ms]
    for name, spec, m in tqdm(jobs, desc="compressed sensing", disable=not config.progress):
        test = tests[name]
        k_op, k_noise = jax.random.split(jax.random.fold_in(key, m))
        op = operators.gaussian_cs(k_op, shape, m)
        eta = noise.cs_gaussian(m)
        images = jnp.asarray(np.concatenate([test, val]))
        y = jax.vmap(op)(images) + jax.vmap(eta.sample)(
            jax.random.split(k_noise, images.shape[0]))
        nt = len(test)
        results = {}  # method -> (recovered test images, seconds)
        if "glow" in config.methods:
            with common.SolveClock() as t:
                r = flowinv.recover((flow, params), y[:nt], operator=op, gamma=0.0,
                                    init="zeros", maxiter=config.maxiter,
                                    chunk_size=common.chunk_size())
                x = np.asarray(r.x)
            results["glow"] = (x, t.seconds)
        for basis in ("dct", "wavelet"):
            meth = f"lasso-{basis}"
            if meth not in config.methods:
                continue
            # λ chosen on the validation images' PSNR; then applied to the test images
            lam = common.best_on_validation([dict(val_psnr=metrics.batch_psnr(np.clip(
                np.asarray(_lasso(y[nt:], op, basis, lam)), 0, 1), val).mean(), lam=lam)
                for lam in config.lasso_lams])["lam"]
            with common.SolveClock() as t:
                x = np.asarray(_lasso(y[:nt], op, basis, lam))
            results[meth] = (x, t.seconds)
        if gan is not None:
            # the validation images get CSGM latents too: IAGAN starts from them
            with common.SolveClock() as t:
                x_gan, z_gan = jax.block_until_ready(
                    _csgm(gan, y, op, key, config.gan_restarts, config.maxiter))
            if "dcgan" in config.methods:  # the test images' share of the batch's time
                results["dcgan"] = (np.asarray(x_gan[:nt]), t.seconds * nt / len(y))
            if "iagan" in config.methods:
                x_ia, s_ia, choice = _pick_iagan(gan, y, op, z_gan, nt, val, config, t.seconds)
                results["iagan"] = (x_ia, s_ia)
                iagan_choices.append(dict(test_set=f"{name}:{spec}", m=m, **choice))
        if "deep-decoder" in config.methods:
            with common.SolveClock() as t:
                x = np.asarray(_deep_decoder(key, y[:nt], op, shape, config.dd_steps))
            results["deep-decoder"] = (x, t.seconds)
        for meth, (x_hat, seconds) in results.items():
            x_hat = np.clip(x_hat, 0, 1)
            tables[name].add(method=meth, psnr=metrics.batch_psnr(x_hat, test),
                             ssim=metrics.batch_ssim(x_hat, test), seconds=seconds,
                             param_name="m", param_value=m, setting_name="test_set",
                             setting_value=f"{name}:{spec}", image_ids=range(nt))
            sheets.setdefault((name, spec), {}).setdefault(meth, {})[m] = x_hat
        sheets.setdefault((name, spec), {})["truth"] = test

    table = common.ResultTable("compressed_sensing", config.dataset, prior_name,
                               rows=[row for t in tables.values() for row in t.rows])
    table.write(out / "results.csv")
    summary = _summary(table.rows)
    common.write_csv(out / "summary.csv", summary)
    comparison = _compare(table.rows)
    common.write_csv(out / "comparison.csv", comparison)
    _plot(out / "psnr_vs_m.png", summary, n, prior_name)
    for (name, spec), cols in sheets.items():
        ms = sorted({m for meth, v in cols.items() if meth != "truth" for m in v})
        mid = ms[len(ms) // 2] if ms else None
        columns = [("truth", cols["truth"])] + [
            (f"{meth} m={mid}", v[mid]) for meth, v in cols.items()
            if meth != "truth" and mid in v]
        common.sample_sheet(out / f"samples_{name}.png", columns,
                            f"compressed sensing, {spec}, m={mid} of n={n}")
    print(f"\nCompressed sensing, prior {prior_name}, n={n}, mean over test images:")
    print(common.format_table(summary))
    if comparison:
        print(f"\nGlow minus each other method, {common.COMPARISON_NOTE}:")
        print(common.format_table(comparison))
    written = "results.csv, summary.csv, comparison.csv, psnr_vs_m.png, samples_*.png"
    if iagan_choices:
        common.write_csv(out / "iagan_choices.csv", iagan_choices)
        picked = common.validation_text(len(val), config.val_split)
        print(f"\nIAGAN's learning rate and back-projection, picked on {picked}:")
        print(common.format_table(iagan_choices))
        written += ", iagan_choices.csv"
    print(f"\nwrote {out}/{written}")
    return {"rows": table.rows, "summary": summary, "comparison": comparison, "out": str(out)}


def _compare(rows: list[dict]) -> list[dict]:
    """Per test set and m, Glow minus each other method, paired per test image
    (:func:`common.paired_difference`; Lasso's λ and IAGAN's settings are already picked on
    validation images, so each method has one row per image and m). Empty without Glow."""
    out = []
    for test_set in dict.fromkeys(r["setting_value"] for r in rows):
        for m in sorted({r["param_value"] for r in rows if r["setting_value"] == test_set},
                        key=float):
            here = [r for r in rows if r["setting_value"] == test_set and r["param_value"] == m]
            methods = list(dict.fromkeys(r["method"] for r in here))
            if "glow" not in methods:
                continue
            for other in (meth for meth in methods if meth != "glow"):
                d = common.paired_difference(here, {"method": "glow"}, {"method": other})
                out.append(dict(test_set=test_set, m=m, method="glow", vs=other, **d))
    return out


def _summary(rows: list[dict]) -> list[dict]:
    groups = {}
    for r in rows:
        groups.setdefault((r["setting_value"], r["param_value"], r["method"]), []).append(r)
    out = []
    for (test_set, m, meth), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                          kv[0][2])):
        out.append(dict(test_set=test_set, m=m, method=meth,
                        psnr=round(float(np.mean([r["psnr"] for r in rs])), 2),
                        ssim=round(float(np.mean([r["ssim"] for r in rs])), 3),
                        seconds_per_image=round(float(np.mean([r["seconds"] for r in rs])), 2)))
    return out


def _plot(path, summary, n, prior):
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    sets = sorted({r["test_set"] for r in summary})
    fig, axes = plt.subplots(2, len(sets), figsize=(5 * len(sets), 7), squeeze=False)
    for j, s in enumerate(sets):
        for meth in sorted({r["method"] for r in summary}):
            pts = sorted((r["m"], r["psnr"], r["ssim"]) for r in summary
                         if r["test_set"] == s and r["method"] == meth)
            if not pts:
                continue
            ms = [p[0] / n for p in pts]
            axes[0, j].plot(ms, [p[1] for p in pts], "o-", label=meth)
            axes[1, j].plot(ms, [p[2] for p in pts], "o-", label=meth)
        ratios = sorted({r["m"] / n for r in summary if r["test_set"] == s})
        for i, lab in enumerate(("PSNR (dB)", "SSIM")):
            axes[i, j].set_xscale("log")
            axes[i, j].set_xticks(ratios, [f"{v:.2g}" for v in ratios], fontsize=7)
            axes[i, j].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            axes[i, j].set_xlabel("m / n")
            axes[i, j].set_ylabel(lab)
            axes[i, j].grid(alpha=0.3)
        axes[0, j].set_title(s)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Compressed sensing vs m (prior {prior})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
