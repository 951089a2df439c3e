"""Train a flow prior by maximum likelihood: ``python -m experiments.train --prior glow-mnist``.

Resumable: rerunning the same command after an interruption (even ``kill -9``) continues from
the newest checkpoint in ``--workdir``. With ``--export`` the result replaces the shipped
checkpoint in ``checkpoints/NAME`` (retrain only when clearly better: every retrain stays in git
history).

Your own prior: ``--dataset`` trains a recipe on other images (``folder:PATH`` with ``train/``
and ``test/`` subfolders, ``tfds:NAME``, or another bundled set), converted to the recipe's
image shape or to ``--image-shape``; ``--export-to DIR`` then writes a checkpoint that every
experiment takes as ``--prior DIR``, e.g. ``python -m experiments.train --prior glow-patches64
--dataset folder:~/faces --export-to priors/faces`` and then ``python -m experiments.denoise
--dataset folder:~/faces --prior priors/faces``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

from experiments import common
from flowinv import checkpoints, priors, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", required=True, choices=sorted(priors.PRIORS),
                   help="which shipped prior's recipe to train")
    p.add_argument("--dataset", default=None,
                   help="train on this dataset spec instead of the recipe's own (a bundled "
                        "name, tfds:NAME, folder:PATH with train/ and test/ subfolders); "
                        "images are converted to the image shape")
    p.add_argument("--image-shape", type=_image_shape, default=None, metavar="H,W,C",
                   help="override the recipe's image shape, e.g. 32,32,3 (H and W divisible by "
                        "2**levels)")
    p.add_argument("--workdir", default=None,
                   help="checkpoints, log.csv and sample grids (default runs/NAME, or "
                        "runs/NAME-DATASET-HxWxC with another --dataset or --image-shape)")
    p.add_argument("--steps", type=common.positive_int, default=None,
                   help="override training steps")
    p.add_argument("--batch-size", type=common.positive_int, default=None,
                   help="override batch size")
    p.add_argument("--lr", type=common.positive_float, default=None, help="override learning rate")
    p.add_argument("--lr-schedule", choices=train.LR_SCHEDULES, default=None,
                   help="override the learning-rate decay after the warm-up")
    p.add_argument("--seed", type=common.seed, default=None, help="override the seed")
    p.add_argument("--width", type=common.positive_int, default=None,
                   help="override the coupling-network width (tiny smoke runs)")
    p.add_argument("--levels", type=common.positive_int, default=None, help="override Glow levels")
    p.add_argument("--flow-steps", type=common.positive_int, default=None,
                   help="override Glow steps per level")
    p.add_argument("--actnorm-eps", type=common.nonnegative_float, default=None,
                   help="Glow only: constant added to every actnorm scale (default 5e-4, the "
                        "Asim et al. supplement's stabiliser; 0 for plain Glow)")
    p.add_argument("--eval-every", type=common.positive_int, default=None,
                   help="override the period, in steps, of the test bits/dim and sample grid")
    p.add_argument("--ckpt-every", type=common.positive_int, default=None,
                   help="override the checkpoint period in steps (a rerun resumes from the "
                        "last checkpoint)")
    p.add_argument("--export", action="store_true",
                   help=f"write the trained prior to {checkpoints.checkpoint_root()}/NAME")
    p.add_argument("--export-to", default=None, help="write the trained prior to this folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _image_shape(text: str) -> list[int]:
    """``"32,32,3"`` -> ``[32, 32, 3]`` (argparse type)."""
    try:
        shape = [int(v) for v in text.split(",")]
    except ValueError:
        shape = []
    if len(shape) != 3 or min(shape) < 1 or shape[2] not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected H,W,C with C = 1 or 3, got {text!r}")
    return shape


def config_from_args(args: argparse.Namespace) -> train.TrainConfig:
    config = priors.prior_config(args.prior)
    arch = dict(config.architecture)
    for key, value in (("width", args.width), ("levels", args.levels), ("steps", args.flow_steps),
                       ("actnorm_eps", args.actnorm_eps), ("image_shape", args.image_shape)):
        if value is not None:
            arch[key] = value
    overrides = {"architecture": arch}
    for key in ("dataset", "steps", "batch_size", "lr", "lr_schedule", "seed", "eval_every",
                "ckpt_every"):
        if getattr(args, key) is not None:
            overrides[key] = getattr(args, key)
    config = dataclasses.replace(config, **overrides)
    checkpoints.flow_from_config(config.architecture)  # validate before any work
    if args.export and _retargeted(config, args.prior):
        raise ValueError(f"--export would replace the shipped {args.prior!r} with a prior of "
                         "other data or another shape; write it elsewhere with --export-to DIR")
    common.check_separate_training_split(config.dataset)
    return config


def _retargeted(config: train.TrainConfig, name: str) -> bool:
    """Whether ``config`` trains recipe ``name`` on other data or at another image shape."""
    recipe = priors.prior_config(name)
    return (config.dataset != recipe.dataset
            or list(config.architecture["image_shape"]) != list(
                recipe.architecture["image_shape"]))


def default_workdir(config: train.TrainConfig, name: str) -> str:
    """``runs/NAME``, or ``runs/NAME-DATASET-HxWxC`` for a recipe trained on other data or at
    another shape (so that it never resumes from the recipe's own checkpoints)."""
    if not _retargeted(config, name):
        return f"runs/{name}"
    shape = "x".join(map(str, config.architecture["image_shape"]))
    slug = re.sub(r"[^A-Za-z0-9]+", "-", config.dataset).strip("-")
    return f"runs/{name}-{slug}-{shape}"


def run(config: train.TrainConfig, workdir: str, *, export_to: str | None = None,
        command: str | None = None, progress: bool = True) -> dict:
    return train.train(config, workdir, export_to=export_to, command=command, progress=progress)


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args, config = common.parse_args_and_config(parser, config_from_args, argv)
    workdir = args.workdir or default_workdir(config, args.prior)
    export_to = args.export_to or (str(checkpoints.checkpoint_root() / args.prior)
                                   if args.export else None)
    try:
        common.check_out_dir(workdir, "--workdir")
        if export_to is not None:  # before training, not after it
            common.check_export_dir(export_to)
    except OSError as e:
        parser.error(str(e))
    command = common.command_line("experiments.train", argv)
    try:
        result = run(config, workdir, export_to=export_to, command=command,
                     progress=not args.no_progress)
    except train.TrainSetupError as e:  # found after loading the data, before any step
        parser.error(str(e))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
