r"""Inpainting with a Glow prior (Asim et al., ICML 2020, §3.3, Fig. 8; supplement §1.5).

The measurement is the masked image :math:`y = M \odot x` with a binary mask :math:`M`
(1 = observed, 0 = missing). Two mask families, each at several missing fractions :math:`f`:

* ``box``: a centred :math:`b_h \times b_w` hole with :math:`b = \mathrm{round}(H\sqrt f)`
  (missing fraction :math:`b_h b_w / HW \approx f`), the same hole in every image;
* ``random``: every pixel missing independently with probability :math:`f` (all channels of a
  pixel together), one mask per image.

Recovery with the Glow prior is the empirical risk of Asim et al.,

.. math:: \hat z = \arg\min_z \|M \odot G(z) - y\|^2 + \gamma \|z\|^2,
          \qquad \hat x = G(\hat z),

solved with L-BFGS from :math:`z_0 = 0` (the paper's algorithmic regularisation, which works
with :math:`\gamma = 0`); :math:`\gamma` is swept and the best value per mask setting is chosen
on validation images drawn from the *training* split (``--val-split test``: the test
split's images after the reported ones), never on the test images. The baseline
is a DCGAN prior (CSGM, Bora et al. 2017: :math:`\|M \odot G(w) - y\|^2 + \lambda\|w\|^2` over
its low-dimensional latent :math:`w`, from :math:`w_0 \sim \mathcal N(0, I)`) when a DCGAN
checkpoint is available, and the masked input itself (``masked``) as the floor. Results are
reported on the in-distribution test split and on an out-of-distribution set (``lfw`` faces for
``mnist``, ``cartoon`` shapes for ``patches64``) with the hyperparameters chosen in
distribution.

All images × mask settings form one batch (one compilation per method, per-image masks via
``per_image_operator=True``), solved in chunks of ``--batch-size`` images (``recover``'s
``chunk_size``: 8 on a CPU, the whole batch elsewhere).

Writes ``results.csv`` (tidy, one row per test image × mask setting × method × parameter;
``dataset`` is the set the images come from), ``summary.csv`` (mean PSNR/SSIM per test set ×
mask setting × method at the validated parameter; ``edge`` says where it sits at an end of its
grid), ``comparison.csv`` (per test set and mask
setting, Glow minus the DCGAN and each prior minus the masked input, each at its validated
parameter, paired per test image with its 95 % interval), ``curves.csv`` (mean PSNR per
parameter), ``psnr_vs_missing.png`` and ``samples_{in-dist,ood}_{box,random}.png`` under
``--out``, and prints the summary and the comparison.
"""

from __future__ import annotations

import argparse
import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common

MASK_KINDS = ("box", "random")
OOD = {"mnist": "lfw", "patches64": "cartoon"}
QUICK = dict(num_images=3, val_images=2, maxiter=100, fractions=(0.25, 0.5),
             gammas=(0.0, 0.01), gan_lams=(0.1,))
FULL = dict(num_images=50, val_images=10, maxiter=300, fractions=(0.1, 0.25, 0.5, 0.75),
            gammas=(0.0, 0.001, 0.01, 0.03, 0.1, 0.3), gan_lams=(0.0, 0.01, 0.1, 1.0))
SHEET_ROWS = 6  # images shown per sample sheet


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    ood_dataset: str | None = None
    prior: str | None = None
    gan: str | None = None
    masks: tuple[str, ...] = MASK_KINDS
    fractions: tuple[float, ...] = QUICK["fractions"]
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    gan_lams: tuple[float, ...] = QUICK["gan_lams"]
    batch_size: int | None = None  # None: common.chunk_size()
    seed: int = 0
    out: str = "results/inpainting"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m experiments.inpainting", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "inpainting", quick=QUICK, full=FULL)
    p.add_argument("--masks", default=None,
                   help="comma-separated mask families: box,random (default both)")
    p.add_argument("--fractions", type=common.float_list, default=None,
                   help="missing fractions in (0, 1), comma separated")
    p.add_argument("--gammas", type=common.float_list, default=None,
                   help="γ values of the Glow ‖z‖² penalty, comma separated (picked on "
                        "validation images)")
    p.add_argument("--val-images", type=common.positive_int, default=None,
                   help="validation images (see --val-split) used to pick γ and λ")
    common.add_val_split_argument(p)
    p.add_argument("--ood-dataset", default=None,
                   help="out-of-distribution set (default lfw for mnist, cartoon for "
                        "patches64; 'none' skips it)")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="images per compiled solve; larger batches run in chunks (default 8 "
                        "on a CPU, the whole batch elsewhere)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    masks = MASK_KINDS
    if args.masks is not None:
        masks = common.list_entries(args.masks, "--masks", MASK_KINDS)
    fractions = pick(args.fractions, "fractions")
    if any(not 0 < f < 1 for f in fractions):
        raise ValueError(f"--fractions must lie in (0, 1), got {fractions}")
    return Config(
        dataset=args.dataset, ood_dataset=args.ood_dataset, prior=args.prior, gan=args.gan,
        masks=masks, fractions=tuple(sorted(set(fractions))),
        num_images=pick(args.num_images, "num_images"),
        val_images=pick(args.val_images, "val_images"), val_split=args.val_split,
        maxiter=pick(args.maxiter, "maxiter"),
        gammas=pick(args.gammas, "gammas"), gan_lams=preset["gan_lams"],
        batch_size=args.batch_size, seed=args.seed, out=args.out,
        progress=not args.no_progress)


# ---- helpers shared with experiments.subpixel -----------------------------------------------


def with_holes(y: np.ndarray, mask: np.ndarray, fill: float = 0.5) -> np.ndarray:
    """The observed image for display: :math:`M \\odot y + (1 - M)\\,\\text{fill}`."""
    return mask * y + (1.0 - mask) * fill


# ---- the experiment --------------------------------------------------------------------------


def box_side(size: int, fraction: float) -> int:
    """Side of the centred hole along an axis of ``size`` pixels: ``round(size·√f)``, ≥ 1."""
    return min(size, max(1, round(size * math.sqrt(fraction))))


def make_masks(key, shape, kind: str, fraction: float, count: int) -> np.ndarray:
    """``count`` masks ``(count, H, W, C)`` of one setting (1 = observed)."""
    from flowinv import operators

    if kind == "box":
        h, w, _ = shape
        box = operators.center_box_mask(shape, (box_side(h, fraction), box_side(w, fraction)))
        return np.broadcast_to(np.asarray(box), (count, *shape))
    keys = jax.random.split(key, count)
    return np.asarray(jax.vmap(lambda k: operators.random_mask(k, shape, 1.0 - fraction))(keys))


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import data, metrics, operators

    out, prior_name, flow, params = common.setup_run(config)
    shape = tuple(flow.image_shape)
    test, val = common.load_test_and_val(config.dataset, shape, config.num_images,
                                         config.val_images, config.val_split)
    sets = {"in-dist": (config.dataset, test)}
    ood = config.ood_dataset or OOD.get(config.dataset)
    if ood and ood != "none":
        sets["ood"] = (ood, data.load_dataset(ood, "test", image_shape=shape,
                                              limit=config.num_images)[: config.num_images])
    gan = common.load_gan_or_none(config.gan, config.dataset, shape)

    # One batch: for every mask setting, all test sets then the validation images.
    groups = [(name, spec, imgs) for name, (spec, imgs) in sets.items()]
    groups.append(("val", config.dataset, val))
    per_setting = np.concatenate([g[2] for g in groups])
    n = len(per_setting)
    settings = [(k, f) for k in config.masks for f in config.fractions]
    key = jax.random.PRNGKey(config.seed)
    masks = np.concatenate([
        make_masks(jax.random.fold_in(key, i), shape, k, f, n)
        for i, (k, f) in enumerate(settings)]).astype(np.float32)
    truth = np.tile(per_setting, (len(settings), 1, 1, 1))
    y = jnp.asarray(masks * truth)
    op = jax.vmap(lambda m: operators.inpainting(m, shape))(jnp.asarray(masks))

    # slices[(setting index, group name)] -> rows of the batch
    slices, start = {}, 0
    for s in range(len(settings)):
        for name, _, imgs in groups:
            slices[(s, name)] = slice(start, start + len(imgs))
            start += len(imgs)

    tables = {name: common.ResultTable("inpainting", spec, prior_name)
              for name, spec, _ in groups if name != "val"}
    curves, recovered = [], {}

    def score(x_hat, method, pname, pvalue, seconds):
        x_hat = np.clip(np.asarray(x_hat), 0.0, 1.0)
        p_all = metrics.batch_psnr(x_hat, truth)
        for s, (kind, frac) in enumerate(settings):
            sl = slices[(s, "val")]
            curve = dict(mask=kind, missing=frac, method=method, param=pvalue,
                         val_psnr=float(np.mean(p_all[sl])))
            for name, table in tables.items():
                sl = slices[(s, name)]
                ids = range(sl.stop - sl.start)
                table.add(method=method, psnr=p_all[sl],
                          ssim=metrics.batch_ssim(x_hat[sl], truth[sl]),
                          seconds=seconds * len(ids) / len(truth), param_name=pname,
                          param_value=pvalue, setting_name="mask",
                          setting_value=f"{kind}:{frac:g}", image_ids=ids)
                curve[f"{name}_psnr"] = float(np.mean(p_all[sl]))
                recovered[(name, kind, frac, method, pvalue)] = x_hat[sl]
            curves.append(curve)

    score(np.asarray(y), "masked", "", "", 0.0)
    jobs = [("glow", g) for g in config.gammas]
    if gan is not None:
        jobs += [("dcgan", lam) for lam in config.gan_lams]
    chunk = config.batch_size or common.chunk_size()
    for method, value in tqdm(jobs, desc="inpainting", disable=not config.progress):
        with common.SolveClock() as clock:
            if method == "glow":
                r = flowinv.recover((flow, params), y, operator=op, per_image_operator=True,
                                    chunk_size=chunk, method="asim", gamma=value,
                                    init="zeros", maxiter=config.maxiter)
            else:
                r = flowinv.recover(gan, y, operator=op, per_image_operator=True,
                                    chunk_size=chunk, method="bora", gamma=value,
                                    init="normal", init_scale=1.0, key=key,
                                    maxiter=config.maxiter)
            x_hat = np.asarray(r.x)
        score(x_hat, method, "gamma" if method == "glow" else "lambda", value, clock.seconds)

    rows = [row for table in tables.values() for row in table.rows]
    all_rows = common.ResultTable("inpainting", config.dataset, prior_name, rows)
    all_rows.write(out / "results.csv")
    summary = _summarise(tables, curves, settings, sets)
    common.write_csv(out / "summary.csv", summary)
    comparison = _compare(tables, summary, sets)
    common.write_csv(out / "comparison.csv", comparison)
    common.write_csv(out / "curves.csv", curves)
    _plot(out / "psnr_vs_missing.png", summary, sets, prior_name)
    sheets = _sample_sheets(out, summary, recovered, sets, settings, masks, np.asarray(y),
                            slices, prior_name)
    print(f"\nInpainting, prior {prior_name} ({'x'.join(map(str, shape))}), "
          f"{config.maxiter} L-BFGS iterations, mean over "
          f"{common.count(len(test), 'test image')} per set; γ/λ picked on "
          f"{common.validation_text(len(val), config.val_split)} of {config.dataset} "
          "(none of them a test image) per mask setting:")
    print(common.format_table(summary))
    common.print_grid_edge_note(
        [r for r in summary if r["test_set"].startswith("in-dist:")],  # ood reuses its picks
        lambda r: f"{r['method']} at {r['mask']} {r['missing']:g}")
    if comparison:
        print("\nGlow minus the DCGAN, and each prior minus the masked input, each at its "
              f"picked weight, {common.COMPARISON_NOTE}:")
        print(common.format_table(comparison))
    print(f"\nwrote {out}/results.csv, summary.csv, comparison.csv, curves.csv, "
          f"psnr_vs_missing.png, {', '.join(sheets)}")
    return {"rows": rows, "summary": summary, "comparison": comparison, "out": str(out)}


COMPARED = (("glow", "dcgan"), ("glow", "masked"), ("dcgan", "masked"))


def _compare(tables: dict, summary: list[dict], sets: dict) -> list[dict]:
    """Per test set and mask setting, each pair of :data:`COMPARED` present, each side at its
    validation-picked parameter, paired per test image (:func:`common.paired_difference`)."""
    out = []
    for name, (spec, _) in sets.items():
        test_set = f"{name}:{spec}"
        settings: dict[tuple, dict] = {}
        for r in summary:
            if r["test_set"] == test_set:
                settings.setdefault((r["mask"], r["missing"]), {})[r["method"]] = r
        for (kind, frac), picked in settings.items():
            where = {"setting_value": f"{kind}:{float(frac):g}"}
            out += [dict(test_set=test_set, mask=kind, missing=frac, **c)
                    for c in common.compare_picked(tables[name].rows, picked, COMPARED, where)]
    return out


def _summarise(tables, curves, settings, sets) -> list[dict]:
    """Per test set, mask setting and method: the parameter with the best validation PSNR."""
    out = []
    for name, (spec, _) in sets.items():
        for kind, frac in settings:
            setting = f"{kind}:{frac:g}"
            for method in ("masked", "glow", "dcgan"):
                cands = [c for c in curves if c["mask"] == kind and c["missing"] == frac
                         and c["method"] == method]
                if not cands:
                    continue
                best = common.best_on_validation(cands)
                rs = [r for r in tables[name].rows if r["method"] == method
                      and r["setting_value"] == setting and r["param_value"] == best["param"]]
                label = {"glow": "γ", "dcgan": "λ"}.get(method)
                out.append(dict(
                    test_set=f"{name}:{spec}", mask=kind, missing=frac, method=method,
                    param=f"{label}={best['param']}" if label else "",
                    param_value=best["param"], val_psnr=round(best["val_psnr"], 2),
                    psnr=round(float(np.mean([r["psnr"] for r in rs])), 2),
                    ssim=round(float(np.mean([r["ssim"] for r in rs])), 3),
                    seconds_per_image=round(float(np.mean([r["seconds"] for r in rs])), 3),
                    edge=common.grid_edge([c["param"] for c in cands], best["param"])))
    return out


def _plot(path, summary, sets, prior) -> None:
    import matplotlib.pyplot as plt

    names = [f"{k}:{spec}" for k, (spec, _) in sets.items()]
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    colors = {"glow": "C0", "dcgan": "C1", "masked": "C7"}
    for j, test_set in enumerate(names):
        for method in ("glow", "dcgan", "masked"):
            for kind, style in (("box", "o-"), ("random", "s--")):
                pts = sorted((r["missing"], r["psnr"], r["ssim"]) for r in summary
                             if r["test_set"] == test_set and r["method"] == method
                             and r["mask"] == kind)
                if not pts:
                    continue
                fr = [p[0] for p in pts]
                for i in (0, 1):
                    axes[i, j].plot(fr, [p[i + 1] for p in pts], style, color=colors[method],
                                    label=f"{method}, {kind}")
        for i, lab in enumerate(("PSNR (dB)", "SSIM")):
            axes[i, j].set_xlabel("missing fraction")
            axes[i, j].set_ylabel(f"test {lab}")
            axes[i, j].grid(alpha=0.3)
        axes[0, j].set_title(test_set)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Inpainting vs missing fraction (prior {prior}; γ, λ picked on validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _sample_sheets(out, summary, recovered, sets, settings, masks, y, slices,
                   prior) -> list[str]:
    """Per test set and mask family: truth, then per fraction the observed image and each
    method's recovery at its validated parameter."""
    written = []
    for name, (spec, imgs) in sets.items():
        for kind in dict.fromkeys(k for k, _ in settings):
            rows = min(len(imgs), SHEET_ROWS)
            cols, observed = [("truth", imgs[:rows])], []
            for s, (k, frac) in enumerate(settings):
                if k != kind:
                    continue
                sl = slices[(s, name)]
                observed.append(f"{kind} {frac:g} (grey=missing)")  # the table scores y itself
                cols.append((observed[-1], with_holes(y[sl], masks[sl])[:rows]))
                for r in summary:
                    if (r["test_set"] == f"{name}:{spec}" and r["mask"] == kind
                            and r["missing"] == frac and r["method"] != "masked"):
                        x = recovered[(name, kind, frac, r["method"], r["param_value"])]
                        cols.append((f"{r['method']} {r['param']}", x[:rows]))
            fname = f"samples_{name}_{kind}.png"
            common.sample_sheet(out / fname, cols,
                                f"inpainting, {spec}, {kind} masks, prior {prior}",
                                unscored=observed)
            written.append(fname)
    return written


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
