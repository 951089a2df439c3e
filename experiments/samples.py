"""Samples of every shipped prior beside held-out images of its data.

    python -m experiments.samples

For each checkpoint in ``checkpoints/`` (or ``--priors``) this draws samples — flows at
temperature ``--temperature`` (0.7, as Kingma & Dhariwal show Glow's), DCGANs at
``z ~ N(0, I)`` — and puts them under test images of the dataset its sidecar names (test split:
never seen in training). The summary gives each set's *diversity*, the mean pairwise RMS
distance between its images, over ``--diversity-num`` images: a collapsed generator (one image
for every latent) shows as a number far below its data's.

A flow's generative direction can overflow: an affine coupling divides by its scale, and a
latent far enough from the data (more likely at a higher temperature) drives a scale to 0 and the
image to inf or NaN. Such samples (of the ``--diversity-num`` scored) are counted in the
``nonfinite`` column, marked "inf/NaN" on the sheet, and left out of the diversity, which is
that of the finite ones; a note under the table says so. ``--clip 40`` draws the Glow priors with
``glow(clip=40)`` (``dataclasses.replace(flow, clip=40.0)`` on a loaded prior), which clips the
activations after every step, as Asim et al.'s supplement does.

Writes ``samples.png`` (per prior, a row of data and a row of samples) and ``summary.csv``
under ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

import jax
import numpy as np

from experiments import common
from flowinv import checkpoints, data, plotting

COLUMNS = ("prior", "kind", "dataset", "temperature", "clip", "nonfinite", "sample_diversity",
           "data_diversity", "ratio")


@dataclasses.dataclass(frozen=True)
class Config:
    priors: tuple[str, ...] | None = None  # None: every shipped checkpoint
    num: int = 8
    diversity_num: int = 64
    temperature: float = 0.7
    clip: float | None = None  # glow(clip=...) for the Glow priors; None: as shipped
    seed: int = 0
    out: str | None = "results/samples"  # None: write nothing
    progress: bool = True


def diversity(images: np.ndarray) -> float:
    r"""Mean pairwise RMS distance :math:`\frac{2}{N(N-1)}\sum_{i<j}\|x_i - x_j\|_2/\sqrt n`.

    Args:
      images: ``(N, ...)`` with ``N >= 2``.
    """
    flat = np.asarray(images, np.float64).reshape(len(images), -1)
    if len(flat) < 2:
        raise ValueError(f"diversity needs at least 2 images, got {len(flat)}")
    # Differences, not the Gram expansion |a|^2 - 2ab + |b|^2: a collapsed set (identical
    # samples) must read exactly 0, not the square root of BLAS rounding (~1e-8).
    dists = [np.sqrt(np.mean((flat[i + 1:] - flat[i]) ** 2, axis=1)) for i in range(len(flat) - 1)]
    return float(np.mean(np.concatenate(dists)))


def draw(name: str, num: int, key: jax.Array, temperature: float,
         clip: float | None = None) -> tuple[np.ndarray, dict]:
    """``num`` samples of shipped prior (or checkpoint folder) ``name``, as generated (not
    clipped to ``[0, 1]``; a flow's may hold inf or NaN, see the module docstring), and its
    sidecar. ``clip``: a flow with a ``clip`` field (Glow) is drawn with that activation clip;
    the sidecar returned holds the clip the flow was drawn with as ``"clip"``, absent where it
    has none."""
    meta = checkpoints.read_metadata(checkpoints.checkpoint_path(name))
    keys = jax.random.split(key, num)
    if meta.get("kind") == "dcgan":
        gen, params = checkpoints.load_gan(name)
        z = jax.vmap(lambda k: jax.random.normal(k, (gen.latent_dim,)))(keys)
        x = jax.jit(jax.vmap(lambda zz: gen.apply(params, zz)))(z)
    else:
        flow, params = checkpoints.load_prior(name)
        if clip is not None and hasattr(flow, "clip"):
            flow = dataclasses.replace(flow, clip=float(clip))
        if getattr(flow, "clip", None) is not None:  # --clip, or a checkpoint saved with one
            meta = {**meta, "clip": float(flow.clip)}
        x = jax.jit(jax.vmap(lambda k: flow.sample(params, k, temperature)))(keys)
    return np.asarray(x), meta


def finite_images(images: np.ndarray) -> np.ndarray:
    """``(N,)`` bool: which of ``images`` ``(N, ...)`` have every value finite."""
    images = np.asarray(images)
    return np.isfinite(images.reshape(len(images), -1)).all(axis=1)


def run(config: Config) -> dict:
    """Draws and scores the samples; returns ``{"summary", "files", "seconds"}``."""
    from tqdm.auto import tqdm

    t0 = time.time()
    names = config.priors or tuple(checkpoints.available_priors())
    if not names:
        raise ValueError(f"no checkpoints under {checkpoints.checkpoint_root()}")
    num = max(config.num, config.diversity_num)
    summary, sheet = [], []
    for i, name in enumerate(tqdm(names, desc="samples", disable=not config.progress)):
        samples, meta = draw(name, num, jax.random.fold_in(jax.random.PRNGKey(config.seed), i),
                             config.temperature, config.clip)
        kind = meta.get("kind", "flow")
        dataset = meta["data"]["dataset"]
        truth = data.load_dataset(dataset, "test", image_shape=samples.shape[1:], limit=num)
        finite_all = finite_images(samples)
        scored, finite = samples[:config.diversity_num], finite_all[:config.diversity_num]
        # A non-finite sample becomes all NaN, marked "inf/NaN" on the sheet (clip keeps NaN).
        samples = np.clip(np.where(finite_all[:, None, None, None], samples, np.nan), 0.0, 1.0)
        summary.append({
            "prior": name, "kind": kind, "dataset": dataset,
            "temperature": config.temperature if kind == "flow" else 1.0,
            "clip": meta.get("clip", ""),
            "nonfinite": int(np.sum(~finite)),
            "sample_diversity": (diversity(np.clip(scored[finite], 0.0, 1.0))
                                 if finite.sum() >= 2 else float("nan")),
            "data_diversity": diversity(truth[:config.diversity_num]),
        })
        summary[-1]["ratio"] = summary[-1]["sample_diversity"] / summary[-1]["data_diversity"]
        sheet.append((name, truth[:config.num], samples[:config.num]))
    files = {}
    if config.out is not None:
        out = pathlib.Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        files["summary"] = out / "summary.csv"
        common.write_csv(files["summary"], summary)
        files["samples"] = out / "samples.png"
        _plot(files["samples"], sheet, config.temperature)
    return {"summary": summary, "files": files, "seconds": time.time() - t0}


def _plot(path: pathlib.Path, sheet, temperature: float) -> None:
    import matplotlib.pyplot as plt

    cols = max(len(s) for _, t, s in sheet for s in (t, s))
    fig, axes = plt.subplots(2 * len(sheet), cols, figsize=(1.1 * cols, 2.3 * len(sheet)),
                             squeeze=False)
    for r, (name, truth, samples) in enumerate(sheet):
        for row, (label, images) in enumerate((("test data", truth), (name, samples))):
            for c in range(cols):
                ax = axes[2 * r + row, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < len(images) and not np.isfinite(images[c]).all():
                    ax.text(0.5, 0.5, "inf/NaN", ha="center", va="center", color="red",
                            fontsize=7, transform=ax.transAxes)
                elif c < len(images):
                    img, kw = plotting.displayable(images[c])
                    ax.imshow(img, **kw)
                if c == 0:
                    ax.set_ylabel(label, fontsize=7)
    fig.suptitle(f"shipped priors: test images and samples (flows at T = {temperature:g}, "
                 "DCGANs at T = 1)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def print_nonfinite_note(summary: list[dict]) -> None:
    """Says, under the table, which priors drew samples that are not finite, and what that
    does to their row."""
    bad = [r for r in summary if r["nonfinite"]]
    if bad:
        print("nonfinite: samples with an inf or NaN pixel (the generative direction "
              "overflowed), marked on the sheet and left out of the sample diversity: "
              + "; ".join(f"{r['prior']} {r['nonfinite']} at T = {r['temperature']:g}"
                          for r in bad)
              + ". --clip 40 draws Glow priors with their activations clipped after every "
                "step (glow(clip=40)), which keeps more of them finite.")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.samples", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--priors", default=None,
                   help="comma-separated shipped names or checkpoint folders (default: all in "
                        "checkpoints/)")
    p.add_argument("--num", type=common.positive_int, default=8,
                   help="images shown per row (default 8)")
    p.add_argument("--diversity-num", type=common.positive_int, default=64,
                   help="images the diversity is measured on (>= 2; default 64)")
    p.add_argument("--temperature", type=common.nonnegative_float, default=0.7,
                   help="sampling temperature of the flows (default 0.7)")
    p.add_argument("--clip", type=common.positive_float, default=None,
                   help="draw the Glow priors with activations clipped to [-CLIP, CLIP] after "
                        "every step (Asim et al. use 40); default: as shipped, no clip")
    p.add_argument("--seed", type=common.seed, default=0,
                   help="PRNG seed, in [0, 2**32) (default 0)")
    p.add_argument("--out", default="results/samples",
                   help="output folder (default results/samples)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    priors = None
    if args.priors is not None:
        priors = common.list_entries(args.priors, "--priors")
        known = checkpoints.available_priors()
        unknown = [p for p in priors if p not in known and not pathlib.Path(p).is_dir()]
        if unknown:
            raise ValueError(f"unknown prior(s) {', '.join(unknown)}; shipped: {', '.join(known)}")
        for prior in priors:  # a folder without a sidecar fails here, not after the others
            checkpoints.read_metadata(checkpoints.checkpoint_path(prior))
    if args.diversity_num < 2:
        raise ValueError(f"--diversity-num must be >= 2, got {args.diversity_num}")
    return Config(priors=priors, num=args.num, diversity_num=args.diversity_num,
                  temperature=args.temperature, clip=args.clip, seed=args.seed, out=args.out,
                  progress=not args.no_progress)


def main(argv: list[str] | None = None) -> dict:
    result = run(common.parse_config(build_parser(), config_from_args, argv))
    print(common.format_table([{k: r[k] for k in COLUMNS} for r in result["summary"]]))
    print_nonfinite_note(result["summary"])
    print(f"{result['seconds']:.1f} s; wrote "
          f"{', '.join(str(f) for f in result['files'].values()) or 'nothing'}")
    return result


if __name__ == "__main__":
    main()
