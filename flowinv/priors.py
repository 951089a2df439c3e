"""The shipped priors: how each one in ``checkpoints/`` is (re)trained.

Each entry is the :class:`flowinv.train.TrainConfig` that produced the checkpoint of that name;
``python -m experiments.train --prior NAME`` reruns it from scratch. The sizes are what a
2-core CPU trains in well under an hour (no GPU was available when they were trained); the
papers' sizes are given for comparison in the README.
"""

from __future__ import annotations

from flowinv.train import TrainConfig

PRIORS: dict[str, TrainConfig] = {
    "glow-digits": TrainConfig(
        architecture={"type": "glow", "image_shape": [8, 8, 1], "levels": 1, "steps": 4,
                      "width": 32, "coupling": "affine", "learn_prior": True},
        dataset="digits", bits=8, batch_size=64, steps=1500, lr=1e-3, warmup=100,
        eval_every=500, ckpt_every=250, eval_limit=None),
    "glow-mnist": TrainConfig(
        architecture={"type": "glow", "image_shape": [28, 28, 1], "levels": 2, "steps": 12,
                      "width": 96, "coupling": "affine", "learn_prior": True,
                      "preprocess": "logit"},
        dataset="mnist", bits=8, batch_size=64, steps=5000, lr=1e-3, warmup=200,
        eval_every=1000, ckpt_every=250),
    "realnvp-mnist": TrainConfig(
        architecture={"type": "realnvp", "image_shape": [28, 28, 1], "scales": 2, "blocks": 2,
                      "width": 64, "preprocess": "logit"},
        dataset="mnist", bits=8, batch_size=64, steps=2500, lr=1e-3, warmup=200,
        eval_every=500, ckpt_every=250),
    "glow-patches64": TrainConfig(
        architecture={"type": "glow", "image_shape": [64, 64, 3], "levels": 4, "steps": 6,
                      "width": 64, "coupling": "affine", "learn_prior": True},
        dataset="patches64", bits=5, batch_size=16, steps=3000, lr=1e-3, warmup=200,
        augment=True, eval_every=500, ckpt_every=250, eval_limit=200),
}


def prior_config(name: str) -> TrainConfig:
    """The training config of shipped prior ``name``; ValueError for an unknown name."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
    return PRIORS[name]
