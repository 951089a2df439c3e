"""Train a shipped DCGAN baseline (for the CSGM, Bora and MLE comparisons).

    python -m experiments.train_gan --gan dcgan-mnist --export

trains the generator on the train split of its dataset (never the test split) and, with
``--export``, writes it to ``checkpoints/NAME`` with a sidecar giving its architecture, data,
steps and the command. ``--dataset`` trains it on other images (a ``folder:PATH`` with
``train/`` and ``test/`` subfolders, ``tfds:NAME``, another bundled set), converted to its
image shape; ``--export-to DIR`` then gives a generator the experiments take as ``--gan DIR``.
A GAN has no likelihood, so the sidecar records no bits/dim; it records the final
discriminator/generator losses instead (the IMLE loss for ``dcgan-patches64``, whose
generator is fitted by IMLE: see ``flowinv.baselines.imle``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import time

import jax
import numpy as np

from experiments import common
from flowinv import _checks, checkpoints, data, priors
from flowinv.baselines import dcgan, imle
from flowinv.flows import num_params


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train_gan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gan", required=True, choices=sorted(priors.GANS),
                   help="which shipped DCGAN to train")
    p.add_argument("--dataset", default=None,
                   help="train on this dataset spec instead of the recipe's own (a bundled "
                        "name, tfds:NAME, folder:PATH with train/ and test/ subfolders); "
                        "images are converted to the GAN's image shape")
    p.add_argument("--steps", type=common.positive_int, default=None,
                   help="override training steps")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="override batch size")
    p.add_argument("--seed", type=common.seed, default=None, help="override the seed")
    p.add_argument("--method", choices=("adversarial", "imle"), default=None,
                   help="override the training method (adversarial GAN training, or IMLE)")
    p.add_argument("--r1", type=common.nonnegative_float, default=None,
                   help="override the weight of the R1 gradient penalty (0: none; adversarial)")
    p.add_argument("--export", action="store_true",
                   help="write the result to checkpoints/NAME (replacing the shipped one)")
    p.add_argument("--export-to", default=None, help="write the result to this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def training_images(config: priors.GANConfig) -> np.ndarray:
    """The train split of ``config.dataset``; natural patches also get their mirror images."""
    images = data.load_dataset(config.dataset, "train", image_shape=config.image_shape)
    if config.dataset.startswith("patches"):
        images = np.concatenate([images, images[:, :, ::-1]], axis=0)
    return images


def training_record(config: priors.GANConfig) -> dict:
    """The sidecar's ``training`` entry: the config without the other method's settings."""
    unused = ("candidates",) if config.method == "adversarial" else ("b1", "r1")
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in unused}


def run(config: priors.GANConfig, *, export_to: str | None = None, command: str | None = None,
        progress: bool = True) -> dict:
    """Trains the DCGAN of ``config``; returns a summary (and exports when asked)."""
    images = training_images(config)
    arch = dcgan.DCGANConfig(config.image_shape, config.latent_dim, config.base_channels)
    t0 = time.time()
    key = jax.random.PRNGKey(config.seed)
    if config.method == "imle":
        params, history = imle.train_imle(
            key, images, config=arch, steps=config.steps, batch_size=config.batch_size,
            candidates=config.candidates, lr=config.lr, progress=progress, return_history=True)
    else:
        params, history = dcgan.train_dcgan(
            key, images, config=arch, steps=config.steps, batch_size=config.batch_size,
            lr=config.lr, b1=config.b1, r1=config.r1, progress=progress, return_history=True)
    seconds = time.time() - t0
    tail = max(1, min(100, config.steps // 10))
    final = {f"final_{k}": float(np.mean(v[-tail:])) for k, v in history.items()
             if k in ("d_loss", "g_loss", "loss")}
    result = {"steps": config.steps, "method": config.method, "seconds": round(seconds, 1),
              "train_images": int(images.shape[0]), **final, "num_params": num_params(params)}
    if export_to is not None:
        if not _checks.all_finite(params):
            raise ValueError(f"the {config.method} run diverged: its parameters hold NaN or "
                             f"inf, so nothing was exported to {str(export_to)!r}")
        checkpoints.save_gan(export_to, params, arch, {
            "data": {"dataset": config.dataset, "split": "train (see README: Data)",
                     "train_images": result["train_images"],
                     "augment": "horizontal flips" if config.dataset.startswith("patches")
                     else "none"},
            "training": training_record(config),
            "test_bits_per_dim": None,
            "test_bits_per_dim_note": "a GAN has no likelihood",
            # a diverged loss is null: a sidecar is strict JSON, which has no NaN
            "final_losses": {**{k.removeprefix("final_"): round(v, 4) if math.isfinite(v)
                                else None for k, v in final.items()},
                             "averaged_over_last_steps": tail},
            "num_params": result["num_params"],
            "command": command,
            "device": f"{jax.devices()[0].device_kind} ({platform.machine()})",
            "jax_version": jax.__version__,
            "train_seconds": result["seconds"],
        })
        result["exported_to"] = str(export_to)
    return result


def config_from_args(args: argparse.Namespace) -> priors.GANConfig:
    config = priors.gan_config(args.gan)
    overrides = {k: getattr(args, k) for k in ("dataset", "steps", "batch_size", "seed", "r1",
                                               "method")
                 if getattr(args, k) is not None}
    config = dataclasses.replace(config, **overrides)
    if args.export and config.dataset != priors.gan_config(args.gan).dataset:
        raise ValueError(f"--export would replace the shipped {args.gan!r} with a generator of "
                         "other data; write it elsewhere with --export-to DIR")
    common.check_separate_training_split(config.dataset)
    return config


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args, config = common.parse_args_and_config(parser, config_from_args, argv)
    export_to = args.export_to or (str(checkpoints.checkpoint_root() / args.gan)
                                   if args.export else None)
    if export_to is not None:
        try:  # before training, not after it
            common.check_export_dir(export_to)
        except OSError as e:
            parser.error(str(e))
    command = common.command_line("experiments.train_gan", argv)
    result = run(config, export_to=export_to, command=command, progress=not args.no_progress)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
