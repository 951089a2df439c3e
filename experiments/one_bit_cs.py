r"""Noisy 1-bit compressed sensing (Whang et al., ICML 2021, §5.1.4, Fig. 7 and appendix B.3;
Whang et al. 2020, §5.4.4, Fig. 4).

``y = sign(A x + δ)`` with ``A`` an m×n Gaussian matrix (i.i.d. N(0, 1/m); m may exceed n,
each measurement carrying one bit) and ``δ`` positive-mean sinusoidal noise in measurement
space, :math:`\delta_k \sim \mathcal N(s, \sigma_k^2)`,
:math:`\sigma_k \propto e^{\sin(2\pi k/16)}` with :math:`\max_k \sigma_k = s`
(:func:`flowinv.noise.positive_mean_sinusoidal`). The positive mean flips more signs from −1
to +1 than back, which hurts methods that assume zero-mean noise. The gradient of ``sign`` is
taken with the straight-through estimator (:func:`flowinv.operators.one_bit_cs`).

Default ``s = 0.1`` (not the papers' 1): with A ~ N(0, 1/m), :math:`a_i^T x` has standard
deviation :math:`\|x\|/\sqrt m \approx 0.3` for an MNIST digit at m = n, so ``s = 1`` would set
almost every sign to +1; ``--noise-scale`` changes it (Whang et al. appendix B.3 sweep it).

Compared, for several m (PSNR vs m):

* ``map`` (Whang et al.): :math:`-\log p_\Delta(y - \mathrm{sign}(A G(z))) - \beta\log
  p_G(G(z))`, their generic MAP loss with ``f = sign∘A`` (straight-through gradient) and the
  true noise density;
* ``map-probit`` (ours, an addition): the exact posterior of ``y = sign(Ax + δ)``,
  :math:`-\sum_i \log\Phi(y_i (a_i^T G(z) + \mu_i)/\sigma_i) - \beta\log p_G(G(z))`, which
  Whang et al.'s loss approximates (it scores ``y − sign(AG(z)) ∈ {−2, 0, 2}`` under the
  Gaussian density of ``δ``);
* ``mle`` (Whang et al., DCGAN prior): :math:`-\log p_\Delta(y - \mathrm{sign}(A
  G_{\mathrm{GAN}}(z)))`;
* ``asim``: :math:`\|y - \mathrm{sign}(A G(z))\|^2 + \gamma\|z\|` (Whang et al. 2020
  eq. (9)); ``--asim-penalty sq`` gives Asim et al.'s :math:`\gamma\|z\|^2`, used here
  before;
* ``bora``: :math:`\|y - \mathrm{sign}(A G_{\mathrm{GAN}}(z))\|^2 + \lambda\|z\|^2`.

``mle`` and ``bora`` need a DCGAN checkpoint (skipped with a note otherwise). β, γ and λ are
picked per m on validation images from the *training* split (``--val-split test``: the test
split's images after the reported ones), never on the test images.
Writes ``results.csv`` (tidy), ``summary.csv``, ``comparison.csv`` (each MAP minus each other
method, paired per test image), ``sensitivity.csv`` and ``psnr_vs_weight.png`` (test PSNR over
each method's grid of weights, as Whang et al. 2021 §5.1.5 compare MAP's β with Asim's γ),
``curves.csv``, ``psnr_vs_m.png`` and ``samples_m*.png`` under ``--out`` and prints the
summary, the comparison and the sensitivity. Shared code:
:mod:`experiments._whang_cs`.
"""

from __future__ import annotations

import argparse
import dataclasses

from experiments import _whang_cs, common

METHODS = ("map", "map-probit", "mle", "asim", "bora")
QUICK = dict(num_images=4, val_images=2, maxiter=100, ratios=(0.5, 2.0), noise_scale=0.1,
             betas=(0.01, 0.1), gammas=(0.0, 5.0), gan_lams=(0.01, 0.1))
# Quick γ of Asim's γ‖z‖ (Whang et al. eq. (9)): the quick grid was γ ∈ {0, 1} of γ‖z‖²,
# converted by matching the penalties' gradients, γ_norm ≈ 2 γ_sq ‖ẑ‖, at the ‖ẑ‖ that the
# γ‖z‖² solves reach (glow-mnist, 100 L-BFGS iterations from z0 = 0, both quick m, 4 images of
# the *training* split): per image ‖ẑ‖ ≈ 0.8–1.4 (median 1.2) at γ = 1, so γ_norm ≈ 2.4, between the
# --full grid's 1 and 5 and nearer 5 on its log scale (γ = 0 stays 0; there ‖ẑ‖ ≈ 1.0–2.3).
FULL = dict(num_images=100, val_images=10, maxiter=300, ratios=(0.1, 0.25, 0.5, 1.0, 2.0, 4.0),
            noise_scale=0.1, betas=(0.003, 0.01, 0.03, 0.1, 0.5, 1.0, 5.0, 10.0),
            gammas=(0.0, 0.1, 0.5, 1.0, 5.0),
            gan_lams=(0.0, 0.001, 0.01, 0.1, 1.0))
MAX_RATIO = 8.0


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    prior: str | None = None
    gan: str | None = None
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    ratios: tuple[float, ...] = QUICK["ratios"]
    noise_scale: float = QUICK["noise_scale"]
    betas: tuple[float, ...] = QUICK["betas"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    asim_penalty: str = "norm"  # γ‖z‖ (Whang et al. eq. 9); "sq": γ‖z‖²
    gan_lams: tuple[float, ...] = QUICK["gan_lams"]
    methods: tuple[str, ...] = METHODS
    solver: str = "lbfgs"
    seed: int = 0
    out: str = "results/one_bit_cs"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    parser = _whang_cs.build_cs_parser(
        "python -m experiments.one_bit_cs", __doc__, "one_bit_cs",
        ratio_help=f"measurement ratios m/n, comma separated, in (0, {MAX_RATIO:g}]",
        methods=METHODS, quick=QUICK, full=FULL)
    parser.epilog = _whang_cs.SOLVER_NOTE
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return _whang_cs.cs_config_from_args(Config, args, QUICK, FULL, max_ratio=MAX_RATIO,
                                         methods=METHODS)


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    return _whang_cs.run_cs(config, one_bit=True, experiment="one_bit_cs")


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
