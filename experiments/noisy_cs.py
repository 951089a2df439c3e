r"""Noisy compressed sensing with structured noise (Whang et al., ICML 2021, §5.1.2, Fig. 4;
Whang et al. 2020, §5.4.4).

``y = A x + δ`` with ``A`` an m×n Gaussian matrix (i.i.d. N(0, 1/m)) and ``δ`` the
positive-mean sinusoidal noise of the papers, in measurement space: independent
:math:`\delta_k \sim \mathcal N(s, \sigma_k^2)`, :math:`\sigma_k \propto e^{\sin(2\pi k/16)}`,
normalised to a maximum standard deviation ``s`` (the papers' "maximum variance of 1" is
``s = 1``, the default) and shifted by ``s`` "so that the mean is positive for all dimensions"
(the shift is not stated in the papers; see :func:`flowinv.noise.positive_mean_sinusoidal`).

Compared, for several m (PSNR vs m):

* ``map``: Whang et al.'s MAP loss with the true noise model,
  :math:`-\log p_\Delta(y - A G(z)) - \beta \log p_G(G(z))`;
* ``asim``: :math:`\|y - A G(z)\|^2 + \gamma\|z\|` (Whang et al. 2020 eq. (9), their proxy
  of Asim et al.'s loss; implicitly zero-mean isotropic Gaussian noise);
  ``--asim-penalty sq`` gives Asim et al.'s :math:`\gamma\|z\|^2`, used here before;
* ``bora``: :math:`\|y - A G_{\mathrm{GAN}}(z)\|^2 + \lambda\|z\|^2` with the DCGAN (CSGM),
  when a DCGAN checkpoint loads (otherwise skipped with a note);
* ``asim-centred`` (a control, only with ``--methods``): Asim's loss on :math:`y - \mu`, the
  measurements less the noise's mean, which MAP's noise model knows and Asim's loss does not:
  MAP − ``asim-centred`` is MAP's lead without the mean.

β, γ and λ are picked per m on validation images from the *training* split (``--val-split test``:
the test split's images after the reported ones); the test images are only reported. Writes
``results.csv`` (tidy), ``summary.csv``, ``comparison.csv`` (MAP minus each other method, and
``asim-centred`` minus Asim where it ran, paired per test image), ``sensitivity.csv`` and
``psnr_vs_weight.png`` (test PSNR over each method's grid of weights, as Whang et al. 2021 §5.1.5
compare MAP's β with Asim's γ), ``curves.csv``, ``psnr_vs_m.png`` and ``samples_m*.png`` under
``--out`` and prints the summary, the comparison and the sensitivity. Shared code:
:mod:`experiments._whang_cs`."""

from __future__ import annotations

import argparse
import dataclasses

from experiments import _whang_cs, common

METHODS = ("map", "asim", "bora", "asim-centred")
#: What runs without --methods: every method but the control ``asim-centred``.
DEFAULT_METHODS = METHODS[:-1]
QUICK = dict(num_images=4, val_images=2, maxiter=100, ratios=(0.1, 0.25, 0.5), noise_scale=1.0,
             betas=(0.01, 0.1), gammas=(0.0, 5.0), gan_lams=(0.01, 0.1))
# Quick γ of Asim's γ‖z‖ (Whang et al. eq. (9)): the quick grid was γ ∈ {0, 1} of γ‖z‖²,
# converted by matching the penalties' gradients, γ_norm ≈ 2 γ_sq ‖ẑ‖, at the ‖ẑ‖ that the
# γ‖z‖² solves reach (glow-mnist, 100 L-BFGS iterations from z0 = 0, the three quick m, 4 images
# of the *training* split): per image ‖ẑ‖ ≈ 1.8–3.5 (median 3.0) at γ = 1, so γ_norm ≈ 6: the
# --full grid's 5 (γ = 0 stays 0; there ‖ẑ‖ ≈ 9–22).
FULL = dict(num_images=100, val_images=10, maxiter=300,
            ratios=(0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75), noise_scale=1.0,
            betas=(0.003, 0.01, 0.03, 0.1, 0.5, 1.0, 5.0, 10.0), gammas=(0.0, 0.1, 0.5, 1.0, 5.0),
            gan_lams=(0.0, 0.001, 0.01, 0.1, 1.0))


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
    methods: tuple[str, ...] = DEFAULT_METHODS
    solver: str = "lbfgs"
    seed: int = 0
    out: str = "results/noisy_cs"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    parser = _whang_cs.build_cs_parser(
        "python -m experiments.noisy_cs", __doc__, "noisy_cs",
        ratio_help="undersampling ratios m/n, comma separated, in (0, 1]",
        methods=METHODS, quick=QUICK, full=FULL, default_methods=DEFAULT_METHODS)
    parser.epilog = _whang_cs.SOLVER_NOTE
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    return _whang_cs.cs_config_from_args(Config, args, QUICK, FULL, max_ratio=1.0,
                                         methods=METHODS, default_methods=DEFAULT_METHODS)


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    return _whang_cs.run_cs(config, one_bit=False, experiment="noisy_cs")


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
