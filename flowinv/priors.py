"""The shipped priors: how each one in ``checkpoints/`` is (re)trained.

Each entry is the :class:`flowinv.train.TrainConfig` that produced the checkpoint of that name;
``python -m experiments.train --prior NAME`` reruns it from scratch. The sizes are what a
2-core CPU trains in about an hour or less (no GPU was available when they were trained);
the papers' sizes are given for comparison in the README.
"""

from __future__ import annotations

import dataclasses

from flowinv.train import TrainConfig

PRIORS: dict[str, TrainConfig] = {
    "glow-digits": TrainConfig(
        architecture={"type": "glow", "image_shape": [8, 8, 1], "levels": 1, "steps": 4,
                      "width": 32, "coupling": "affine", "learn_prior": True,
                      "preprocess": "logit"},
        dataset="digits", bits=8, batch_size=64, steps=3000, lr=1e-3, warmup=100,
        eval_every=500, ckpt_every=250, eval_limit=None),
    "glow-mnist": TrainConfig(
        architecture={"type": "glow", "image_shape": [28, 28, 1], "levels": 2, "steps": 12,
                      "width": 96, "coupling": "affine", "learn_prior": True,
                      "preprocess": "logit"},
        dataset="mnist", bits=8, batch_size=64, steps=3000, lr=1e-3, warmup=200,
        eval_every=1000, ckpt_every=250),
    "realnvp-mnist": TrainConfig(
        architecture={"type": "realnvp", "image_shape": [28, 28, 1], "scales": 2, "blocks": 1,
                      "width": 32, "preprocess": "logit"},
        dataset="mnist", bits=8, batch_size=32, steps=1500, lr=1e-3, warmup=200,
        eval_every=500, ckpt_every=250),
    "glow-patches64": TrainConfig(
        architecture={"type": "glow", "image_shape": [64, 64, 3], "levels": 4, "steps": 8,
                      "width": 64, "coupling": "affine", "learn_prior": True},
        dataset="patches64", bits=5, batch_size=16, steps=5000, lr=1e-3, warmup=200,
        lr_schedule="cosine", augment=True, eval_every=1000, ckpt_every=250, eval_limit=200),
}


def prior_config(name: str) -> TrainConfig:
    """The training config of shipped prior ``name``; ValueError for an unknown name."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}; expected one of {sorted(PRIORS)}")
    return PRIORS[name]


@dataclasses.dataclass(frozen=True)
class GANConfig:
    """How a shipped DCGAN baseline is trained (``python -m experiments.train_gan --gan NAME``).

    Attributes:
      dataset: training data (``flowinv.data.load_dataset`` spec; train split only).
      image_shape, latent_dim, base_channels: the :class:`flowinv.baselines.dcgan.DCGANConfig`.
      method: ``"adversarial"`` (:func:`flowinv.baselines.dcgan.train_dcgan`, Radford et al.)
        or ``"imle"`` (:func:`flowinv.baselines.imle.train_imle`, non-adversarial; the same
        generator).
      steps, batch_size, lr, seed: the training (``lr`` 2e-4 is Radford et al.'s).
      b1, r1: adversarial only: Adam's first-moment decay, and the weight of the R1 gradient
        penalty on the discriminator (0: none).
      candidates: IMLE only: latents drawn per step to match the batch against.
    """

    dataset: str
    image_shape: tuple[int, int, int]
    latent_dim: int = 100
    base_channels: int = 64
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-4
    b1: float = 0.5
    r1: float = 0.0
    seed: int = 0
    method: str = "adversarial"
    candidates: int = 256

    def __post_init__(self):
        if self.method not in ("adversarial", "imle"):
            raise ValueError(f"method must be 'adversarial' or 'imle', got {self.method!r}")


GANS: dict[str, GANConfig] = {
    "dcgan-mnist": GANConfig(dataset="mnist", image_shape=(28, 28, 1), latent_dim=100,
                             base_channels=32, batch_size=32, steps=10000),
    # Adversarial training collapsed on these 6,170 patches within the CPU budget (README,
    # "Shipped priors"), so this generator is fitted by IMLE.
    "dcgan-patches64": GANConfig(dataset="patches64", image_shape=(64, 64, 3), latent_dim=100,
                                 base_channels=16, batch_size=32, steps=2500, lr=1e-3,
                                 method="imle", candidates=256),
}


def gan_config(name: str) -> GANConfig:
    """The training config of shipped DCGAN ``name``; ValueError for an unknown name."""
    if name not in GANS:
        raise ValueError(f"unknown GAN {name!r}; expected one of {sorted(GANS)}")
    return GANS[name]
