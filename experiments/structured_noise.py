r"""Denoising structured noise with a flow prior and a noise model (Whang et al., ICML 2021,
§5.1.1, §5.1.3, §5.1.5, appendix B.1–B.2, Figs. 2, 3, 5, 6, 8, 9; Whang et al. 2020, §5.4.1–5.4.3).

Three noises, each at several scales ``s`` (PSNR vs noise scale):

* ``digits``: :math:`y = \tfrac12 x + \delta`, :math:`\delta = s\,d` with ``d`` an MNIST digit;
  ``d`` is modelled by a second flow, the noise flow (``realnvp-mnist``), so
  :math:`\log p_\Delta(\delta) = \log p_{\mathrm{flow}}(\delta / s) - n\log s` (on the box
  :math:`\delta/s \in [0, 1]^n`; see :class:`DigitNoise`).
* ``sinusoidal``: :math:`y = x + \delta`, :math:`\delta_{hw} \sim \mathcal N(0, \sigma_h^2)`,
  :math:`\sigma_h \propto e^{\sin(2\pi h / 16)}` over the row ``h``, with
  :math:`\max_h \sigma_h = s` (:func:`flowinv.noise.sinusoidal`; the papers' "maximum variance
  of 1" is ``s = 1``).
* ``radial``: :math:`y = x + \delta`, :math:`\sigma_{hw} = s\,e^{-0.005\, d_{hw}^2}`, ``d`` the
  distance in pixels to the centre pixel (:func:`flowinv.noise.radial`).

The period (16 rows) and the decay (0.005 per squared pixel) are the papers' values in pixels,
kept as such at our image size.

Methods (all from z0 = 0 with the same solver, flowinv's L-BFGS by default; see the solver note
at the end of ``--help``):

* ``map`` (Whang et al.): :math:`-\log p_\Delta(y - f(G(z))) - \beta\log p_G(G(z))` with the
  true noise model and ``f(x) = x/2`` (digits) or ``f(x) = x``;
* ``asim``: :math:`\|y - f(G(z))\|^2 + \gamma\|z\|`, Whang et al.'s Asim baseline (2020 eq.
  (9), the proxy loss Asim et al. report using); ``--asim-penalty sq`` gives Asim et al.'s
  :math:`\gamma\|z\|^2`, which this experiment used before;
* ``bora``: :math:`\|y - f(G_{\mathrm{GAN}}(z))\|^2 + \lambda\|z\|^2` with the DCGAN, and
  ``mle`` (Whang et al. §3.3): :math:`-\log p_\Delta(y - f(G_{\mathrm{GAN}}(z)))`; both only
  when a DCGAN checkpoint loads (skipped with a note otherwise);
* ``bm3d``: BM3D given σ = the noise's RMS, :math:`\sqrt{\mathrm{mean}(\delta^2)}` (the mean
  of :math:`\sigma^2` over pixels for the Gaussian noises, the empirical mean square of the
  drawn digits for ``digits``), then divided by the factor of ``f``;
* ``noisy``: the measurement itself, :math:`f^{-1}(y)`;
* ``latent-map`` (an ablation, only with ``--methods``):
  :math:`-\log p_\Delta(y - f(G(z))) + \beta\|z\|` (``\beta\|z\|^2`` with
  ``--asim-penalty sq``), MAP's noise model with Asim's penalty in place of the image density
  :math:`p_G(G(z))`. Beside ``map`` and ``asim`` it tells which part of MAP's loss helps: the
  noise model (``asim`` → ``latent-map``) or the density (``latent-map`` → ``map``).

β, γ and λ are picked per noise and scale on validation images from the *training* split
(``--val-split test``: the test split's images after the reported ones); the test images are
only reported. ``--full`` searches the papers' grids (Whang et al. 2020
appendix B; γ also at 0.01 and 0.03), with β extended down to 0.003: at large β, −β log p_G
pulls pixels towards the saturated values a logit-preprocessed flow over-rates (the failure
that motivates β), and the solve collapses. ``--full`` reports 100 test images (Whang et al.:
1000; ``--num-images``).

Adaptation of the digit noise. Whang et al. add several MNIST digits, at different locations
and colour channels, to 64×64×3 CelebA faces, the digits sampled from their MNIST RealNVP. Our
clean images are MNIST-sized (28×28×1 with ``glow-mnist``), the same size as the noise flow,
so one digit fills the frame: ``d`` is a real held-out MNIST digit, taken from the *end* of the
MNIST test split (never one of the reported test images; the noise flow was trained on the
training split), one per image. The factor ½ on ``x`` stays. Signal and noise are then both
digits, told apart only by intensity: at ``s = 0.5`` they are exchangeable and the problem is
not identifiable, so the default scales avoid it. ``--noise-digits`` takes the digits from
another dataset's test split, resized to the noise flow's shape; without a ``realnvp-mnist``
checkpoint (or with a noise flow of another shape) the digit noise is skipped with a note,
or, when it is the only noise asked for, refused before anything runs.

Writes ``results.csv`` (tidy, one row per test image × noise × scale × method × setting),
``summary.csv``, ``comparison.csv`` (MAP minus each other method, and ``latent-map`` minus the
others where it ran, paired per test image),
``sensitivity.csv`` and ``psnr_vs_weight.png`` (test PSNR over each method's grid of weights:
Whang et al. 2021 §5.1.5, Fig. 6b, MAP less sensitive to β than Asim to γ; compare over equal
grids, ``--betas`` = ``--gammas``), ``curves.csv``, ``psnr_vs_scale.png`` and
``samples_<noise>.png`` (at the largest scale) under ``--out``, and prints the summary, the
comparison and the sensitivity.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from experiments import _whang_cs, common

NOISES = ("digits", "sinusoidal", "radial")
METHODS = ("map", "asim", "bora", "mle", "bm3d", "noisy", "latent-map")
#: What runs without --methods: every method but the ablation ``latent-map``.
DEFAULT_METHODS = METHODS[:-1]
DIGIT_FACTOR = 0.5
QUICK = dict(num_images=4, val_images=2, maxiter=100, digit_scales=(0.25, 1.0),
             sine_scales=(0.1, 0.3), radial_scales=(0.1, 0.3), betas=(0.01, 0.1, 1.0),
             gammas=(0.5, 1.0), gan_lams=(0.01, 0.1), latent_betas=(1.0, 3.0, 10.0))
# Quick γ of Asim's γ‖z‖ (Whang et al. eq. (9)): the quick grid was γ ∈ {0.03, 0.3} of γ‖z‖²,
# converted by matching the penalties' gradients, γ_norm ≈ 2 γ_sq ‖ẑ‖, at the ‖ẑ‖ that the
# γ‖z‖² solves reach (glow-mnist, 100 L-BFGS iterations from z0 = 0, all six quick (noise, s)
# settings, 4 images of the *training* split): per image ‖ẑ‖ ≈ 3.0–8.5 (median 5.2) at
# γ = 0.03 and 2.0–4.7 (median 3.3) at γ = 0.3 (‖G⁻¹(x)‖ of those images: 61–65), so
# γ_norm ≈ 0.31 and 2.0; the nearest values of the --full grid are 0.5 and 1.
FULL = dict(num_images=100, val_images=10, maxiter=300, digit_scales=(0.25, 0.75, 1.0),
            sine_scales=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
            radial_scales=(0.05, 0.1, 0.2, 0.3, 0.5, 1.0),
            betas=(0.003, 0.01, 0.03, 0.1, 0.5, 1.0, 5.0, 10.0),
            gammas=(0.0, 0.01, 0.03, 0.1, 0.5, 1.0, 5.0), gan_lams=(0.0, 0.001, 0.01, 0.1, 1.0),
            latent_betas=(0.3, 1.0, 3.0, 10.0, 30.0))


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    prior: str | None = None
    gan: str | None = None
    noise_flow: str = "realnvp-mnist"
    noise_digits: str = "mnist"
    noises: tuple[str, ...] = NOISES
    digit_scales: tuple[float, ...] = QUICK["digit_scales"]
    sine_scales: tuple[float, ...] = QUICK["sine_scales"]
    radial_scales: tuple[float, ...] = QUICK["radial_scales"]
    num_images: int = QUICK["num_images"]
    val_images: int = QUICK["val_images"]
    val_split: str = "train"
    maxiter: int = QUICK["maxiter"]
    betas: tuple[float, ...] = QUICK["betas"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    asim_penalty: str = "norm"  # γ‖z‖ (Whang et al. eq. 9); "sq": γ‖z‖²
    gan_lams: tuple[float, ...] = QUICK["gan_lams"]
    latent_betas: tuple[float, ...] = QUICK["latent_betas"]
    methods: tuple[str, ...] = DEFAULT_METHODS
    solver: str = "lbfgs"
    seed: int = 0
    out: str = "results/structured_noise"
    progress: bool = True


# ---- forward operator and digit noise model ------------------------------------------------


@struct.dataclass
class ScaledIdentity:
    r""":math:`y = a\,x` on images of shape ``in_shape`` (self-adjoint, :math:`A^T y = a\,y`).

    ``factor`` and ``in_shape`` are static, so an instance is a leafless pytree that
    ``flowinv.recover`` can pass through ``jax.jit``.
    """

    in_shape: tuple[int, int, int] = struct.field(pytree_node=False)
    factor: float = struct.field(pytree_node=False)
    is_linear: ClassVar[bool] = True

    @property
    def out_shape(self) -> tuple[int, int, int]:
        return self.in_shape

    def __call__(self, x: jax.Array) -> jax.Array:
        """``x``: ``in_shape`` -> ``a x``: ``in_shape``."""
        return self.factor * x

    def A(self, x: jax.Array) -> jax.Array:  # noqa: N802 (the usual name of the matrix)
        return self(x)

    def A_adjoint(self, y: jax.Array) -> jax.Array:  # noqa: N802
        return self.factor * y


@struct.dataclass
class DigitNoise:
    r"""Digit noise :math:`\delta = s\,u`, :math:`u \in [0, 1]^n` with the noise flow's density.

    The flow (e.g. a RealNVP with logit preprocessing) only defines :math:`\log p(u)` on the
    open box, and the optimiser, starting from ``z0 = 0``, soon proposes residuals outside it
    (``log`` of a negative number: NaN). So outside :math:`[\epsilon, 1-\epsilon]^n` the
    density is continued by its value at the nearest point of the box times a Gaussian falloff:

    .. math:: \log p_\Delta(\delta) = \log p_{\mathrm{flow}}(\bar u) - n\log s
              - \frac{\|u - \bar u\|^2}{2\tau^2}, \quad u = \delta / s,\ \
              \bar u = \mathrm{clip}(u, \epsilon, 1 - \epsilon),

    exactly the flow noise density inside the box. ``ε = 1/512`` (the centre of the extreme
    8-bit dequantisation bins the flow was trained on), ``τ = 1/256`` (one grey level).
    """

    base: Any  # flowinv.noise.FlowNoise with offset 0
    eps: float = struct.field(pytree_node=False, default=1.0 / 512)
    tau: float = struct.field(pytree_node=False, default=1.0 / 256)

    def log_prob(self, delta: jax.Array) -> jax.Array:
        """``delta``: the flow's image shape -> scalar log density."""
        u = (delta - self.base.offset) / self.base.scale
        u_box = jnp.clip(u, self.eps, 1.0 - self.eps)
        inside = self.base.log_prob(self.base.offset + self.base.scale * u_box)
        return inside - 0.5 * jnp.sum((u - u_box) ** 2) / self.tau**2


# ---- CLI --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.structured_noise",
                                description=__doc__, epilog=_whang_cs.SOLVER_NOTE,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "structured_noise", quick=QUICK, full=FULL)
    p.add_argument("--noises", default=None,
                   help=f"comma-separated subset of {','.join(NOISES)} (default all)")
    p.add_argument("--digit-scales", type=common.float_list, default=None,
                   help="digit intensities s (δ = s·digit), comma separated, > 0")
    p.add_argument("--sine-scales", type=common.float_list, default=None,
                   help="max std of the sinusoidal noise, comma separated, > 0")
    p.add_argument("--radial-scales", type=common.float_list, default=None,
                   help="centre std of the radial noise, comma separated, > 0")
    p.add_argument("--betas", type=common.float_list, default=None,
                   help="β values of the MAP loss, comma separated")
    p.add_argument("--gammas", type=common.float_list, default=None,
                   help=_whang_cs.GAMMAS_HELP)
    _whang_cs.add_asim_penalty_argument(p)
    p.add_argument("--val-images", type=common.positive_int, default=None,
                   help="validation images (see --val-split) used to pick β, γ, λ")
    common.add_val_split_argument(p)
    p.add_argument("--noise-flow", default="realnvp-mnist",
                   help="flow modelling the digit noise: a shipped name or a checkpoint "
                        "folder (default realnvp-mnist)")
    p.add_argument("--noise-digits", default="mnist",
                   help="dataset whose test split supplies the noise digits (default mnist)")
    _whang_cs.add_solver_argument(p)
    p.add_argument("--latent-betas", type=common.float_list, default=None,
                   help="β values of latent-map, comma separated (its presets suit the norm "
                        "penalty; with --asim-penalty sq, β = 0.5 is the latent posterior's "
                        "mode)")
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(METHODS)} (default all but "
                        "latent-map)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    noises = _whang_cs.parse_methods(args.noises, NOISES, "--noises")
    scales = {k: pick(getattr(args, k), k) for k in ("digit_scales", "sine_scales",
                                                     "radial_scales")}
    for k, v in scales.items():
        if any(s <= 0 for s in v):
            raise ValueError(f"--{k.replace('_', '-')} must be > 0, got {v}")
    methods = _whang_cs.parse_methods(args.methods, METHODS, default=DEFAULT_METHODS)
    common.check_methods_without_gan(methods, args.gan, _whang_cs.GAN_METHODS)
    return Config(
        dataset=args.dataset, prior=args.prior, gan=args.gan, noise_flow=args.noise_flow,
        noise_digits=args.noise_digits, noises=noises, **scales,
        num_images=pick(args.num_images, "num_images"),
        val_images=pick(args.val_images, "val_images"), val_split=args.val_split,
        maxiter=pick(args.maxiter, "maxiter"),
        betas=pick(args.betas, "betas"), gammas=pick(args.gammas, "gammas"),
        asim_penalty=args.asim_penalty, latent_betas=pick(args.latent_betas, "latent_betas"),
        gan_lams=preset["gan_lams"],
        methods=methods, solver=args.solver, seed=args.seed, out=args.out,
        progress=not args.no_progress)


# ---- experiment -------------------------------------------------------------------------


def _noise_digits(config: Config, shape, images: np.ndarray) -> np.ndarray:
    """One digit per image of ``images`` (the test then the validation images), from the end
    of the noise-digit dataset's test split, none of them one of ``images``."""
    from flowinv import data

    batch = len(images)
    digits = data.load_dataset(config.noise_digits, "test")
    _check_noise_digit_count(config, len(digits), batch)
    chosen = data.fit_shape(digits[len(digits) - batch:][::-1], shape)
    # also where the validation images come after the test images for another reason (a
    # dataset without a training split)
    if data.num_shared_images(np.asarray(images), chosen):
        raise ValueError(
            f"the noise digits from the end of the test split of {config.noise_digits!r} include "
            "a test or validation image; ask for fewer images")
    return chosen


def _check_noise_digit_count(config: Config, total: int, batch: int) -> None:
    """ValueError where a noise-digit test split of ``total`` images cannot give ``batch`` noise
    digits (one per test and validation image) disjoint from the images it is noise for."""
    # the head of the split that the test images (and, with --val-split test, the validation
    # images) come from
    head = config.num_images + (config.val_images if config.val_split == "test" else 0)
    which = "test and validation" if config.val_split == "test" else "the test images"
    if config.noise_digits == config.dataset and total - batch < head:
        raise ValueError(
            f"the {config.noise_digits!r} test split ({total} images) is too small for "
            f"its first {head} images ({which}) plus {batch} disjoint noise digits")
    if total < batch:
        raise ValueError(f"the {config.noise_digits!r} test split has {total} images, "
                         f"fewer than the {batch} noise digits needed")


def _sidecar_image_shape(name: str) -> tuple[int, ...]:
    """The image shape in flow checkpoint ``name``'s sidecar; ValueError where there is none
    (as :func:`flowinv.load_prior` raises, and ``run`` then skips the digit noise)."""
    from flowinv import checkpoints

    path, metadata = checkpoints.find_checkpoint(name, "flow")
    try:
        return tuple(metadata["architecture"]["image_shape"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"checkpoint {str(path)!r}: its sidecar has no architecture with an "
                         "image_shape") from e


def check_noises_can_run(config: Config) -> None:
    """ValueError, before the prior is loaded, when the digit noise is the only noise asked
    for and it cannot run: its noise flow models images of another shape than the prior's (read
    from the two sidecars; with other noises beside it, ``run`` skips it with a note). Also,
    where the digit noise runs, when a bundled noise-digit set is too small for one digit per
    test and validation image (a ``folder:`` or ``tfds:`` set is counted by the run)."""
    from flowinv import data

    if "digits" not in config.noises:
        return
    only = tuple(config.noises) == ("digits",)
    try:
        prior = config.prior or common.default_prior(config.dataset)
        noise_shape, prior_shape = (_sidecar_image_shape(name)
                                    for name in (config.noise_flow, prior))
    except ValueError:
        if only:
            raise
        return  # the run skips the digit noise with a note (or check_sources names the source)
    if noise_shape != prior_shape:
        if only:
            raise ValueError(
                f"--noises digits: the noise flow {config.noise_flow!r} models images of shape "
                f"{noise_shape}, the prior {prior!r} {prior_shape}; pass a --noise-flow of the "
                "prior's shape, or --noises sinusoidal,radial")
        return  # the run skips the digit noise with a note: no noise digits are drawn
    if not config.noise_digits.startswith(("tfds:", "folder:")):
        _check_noise_digit_count(config, len(data.load_dataset(config.noise_digits, "test")),
                                 config.num_images + config.val_images)


def _checked_config(args: argparse.Namespace) -> Config:
    config = config_from_args(args)
    check_noises_can_run(config)
    return config


def _digit_model(config: Config, shape) -> Any:
    """The noise flow ``(flow, params)`` for the digit noise, or None (with a printed note)."""
    import flowinv

    try:
        nflow, nparams = flowinv.load_prior(config.noise_flow)
    except ValueError as e:
        print(f"note: digit noise skipped (noise flow unavailable: {e})")
        return None
    if tuple(nflow.image_shape) != tuple(shape):
        print(f"note: digit noise skipped (noise flow {config.noise_flow!r} has image shape "
              f"{tuple(nflow.image_shape)}, the prior {tuple(shape)})")
        return None
    return nflow, nparams


def _corrupt(kind: str, scale: float, key, images: jax.Array, digits, noise_flow):
    """``(operator f, its factor a, noise model, y = f(x) + δ, RMS of δ, δ)`` for one noise
    at one scale, for the whole batch ``images``."""
    from flowinv import noise, operators

    shape = tuple(images.shape[1:])
    if kind == "digits":
        op = ScaledIdentity(in_shape=shape, factor=DIGIT_FACTOR)
        model = DigitNoise(base=noise.flow_noise(*noise_flow, scale=scale))
        delta = scale * jnp.asarray(digits)
        rms = float(jnp.sqrt(jnp.mean(delta**2)))
        return op, DIGIT_FACTOR, model, DIGIT_FACTOR * images + delta, rms, delta
    model = (noise.sinusoidal if kind == "sinusoidal" else noise.radial)(shape, scale=scale)
    delta = jax.vmap(lambda k: model.sample(k))(jax.random.split(key, images.shape[0]))
    var = jnp.broadcast_to(model.std**2 + model.mean**2, shape)
    return operators.identity(shape), 1.0, model, images + delta, float(jnp.sqrt(
        jnp.mean(var))), delta


def run(config: Config) -> dict:
    """Runs the experiment; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    from tqdm.auto import tqdm

    from flowinv.baselines import classical

    check_noises_can_run(config)
    _whang_cs.check_asim_penalty(config.asim_penalty)
    out, prior_name, flow, params = common.setup_run(config)
    shape = tuple(flow.image_shape)
    test, val = common.load_test_and_val(config.dataset, shape, config.num_images,
                                           config.val_images, config.val_split)
    images = jnp.asarray(np.concatenate([test, val]))
    nt = len(test)
    gan = (common.load_gan_or_none(config.gan, config.dataset, shape)
           if set(_whang_cs.GAN_METHODS) & set(config.methods) else None)
    noise_flow = digits = None
    if "digits" in config.noises:
        noise_flow = _digit_model(config, shape)
        if noise_flow is not None:
            digits = _noise_digits(config, shape, np.asarray(images))
    kinds = [k for k in config.noises if k != "digits" or noise_flow is not None]
    if not kinds:
        raise ValueError("no noise left to run: the digit noise, the only one asked for, was "
                         "skipped (see the note above)")
    scales = {"digits": config.digit_scales, "sinusoidal": config.sine_scales,
              "radial": config.radial_scales}
    grids = {"map": config.betas, "asim": config.gammas, "bora": config.gan_lams,
             "mle": ("",), "bm3d": (None,), "noisy": ("",), "latent-map": config.latent_betas}
    methods = [m for m in config.methods if gan is not None or m not in _whang_cs.GAN_METHODS]
    jobs = sum(len(scales[k]) for k in kinds) * sum(len(grids[m]) for m in methods)
    sweep = _whang_cs.Sweep("structured_noise", config.dataset, prior_name, test, val)
    measured, noises = {}, {}
    key = jax.random.PRNGKey(config.seed)
    bar = tqdm(total=jobs, desc="structured noise", disable=not config.progress)
    for kind in kinds:
        setting = f"{kind}_scale"
        for j, s in enumerate(scales[kind]):
            # keyed by the noise's place in NOISES, not in this run's list, so a run of a
            # subset of the noises (--noises, or digits skipped) draws the noise the full run
            # draws; within a noise by the scale's place in its list, so runs compare draw for
            # draw only with the same scale list (quick and --full lists differ)
            draw = jax.random.fold_in(key, 100 * NOISES.index(kind) + j)
            op, a, model, y, rms, delta = _corrupt(kind, s, draw, images, digits, noise_flow)
            measured[(kind, s)], noises[(kind, s)] = np.asarray(y), np.asarray(delta)
            for meth in methods:
                for value in grids[meth]:
                    with common.SolveClock() as t:
                        if meth == "noisy":
                            x_hat = np.asarray(y) / a
                        elif meth == "bm3d":
                            value = round(rms, 4)
                            # BM3D runs on the host (the bm3d package), one image at a time
                            x_hat = np.stack([classical.bm3d_denoise(yy, rms)
                                              for yy in np.asarray(y)]) / a
                        else:
                            x_hat = _recover(meth, value, flow, params, gan, y, op, model,
                                             maxiter=config.maxiter, solver=config.solver,
                                             chunk_size=common.chunk_size(),
                                             asim_penalty=config.asim_penalty)
                    sweep.score(x_hat, setting_name=setting, setting_value=s, method=meth,
                                param_value=value, seconds=t.seconds)
                    bar.update()
    bar.close()

    sweep.table.write(out / "results.csv")
    summary = _whang_cs.summarise(sweep.curves)
    pretty = [_by_noise(r) for r in summary]
    common.write_csv(out / "summary.csv", pretty)
    common.write_csv(out / "curves.csv", sweep.curves)
    # MAP minus the others; and latent-map minus the others, where it ran (the ablation)
    comparison = [_by_noise(r) for r in _whang_cs.compare(sweep.table.rows, summary,
                                                          leads=("map", "latent-map"))]
    common.write_csv(out / "comparison.csv", comparison)
    sensitivity = [_by_noise(r) for r in _whang_cs.sensitivity(sweep.curves, summary)]
    common.write_csv(out / "sensitivity.csv", sensitivity)
    name = pathlib.Path(prior_name).name
    if kinds:
        _whang_cs.plot_vs(out / "psnr_vs_scale.png", summary,
                          [(f"{k}_scale", _TITLES[k]) for k in kinds], xlabel="noise scale s",
                          title=f"Structured-noise denoising ({config.dataset}, prior {name})")
        _whang_cs.plot_sensitivity(
            out / "psnr_vs_weight.png", sweep.curves, summary,
            panel_title=lambda sname, s: f"{_TITLES[sname.removesuffix('_scale')]}, s={s}",
            title=f"Sensitivity to the weight ({config.dataset}, prior {name})")
    for kind in kinds:
        s = max(scales[kind])
        cols = [("truth", test), ("y", measured[(kind, s)][:nt])]
        if kind == "digits":
            cols.append(("δ", noises[(kind, s)][:nt]))
        cols += [c for c in _whang_cs.best_columns(sweep, summary, f"{kind}_scale", s)
                 if not c[0].startswith("noisy")]
        common.sample_sheet(out / f"samples_{kind}.png", cols,
                            f"{kind} noise, s={s}, {config.dataset}, prior {name}",
                            unscored=["δ"] if kind == "digits" else [])  # the noise itself
    print(f"\nStructured-noise denoising on {common.count(nt, 'held-out test image')} of "
          f"{config.dataset} (β/γ/λ picked on "
          f"{common.validation_text(len(val), config.val_split)}, none of them a test image), "
          "prior "
          f"{prior_name}, {config.maxiter} {config.solver} iterations; "
          f"{_whang_cs.asim_penalty_note(config.asim_penalty)}:")
    print(common.format_table([{k: v for k, v in r.items() if k != "param_value"}
                               for r in pretty]))
    _whang_cs.print_grid_edge_note(summary)
    if comparison:
        print("\nMAP with the true noise model (and latent-map, where it ran) at its picked β "
              f"minus each other method at its picked weight, {_whang_cs.COMPARISON_NOTE}:")
        print(common.format_table(comparison))
    if sensitivity:
        print(f"\nSensitivity to the weight, {_whang_cs.SENSITIVITY_NOTE}:")
        print(common.format_table(sensitivity))
    print(f"\nwrote {out}/results.csv, summary.csv, comparison.csv, sensitivity.csv, curves.csv, "
          "psnr_vs_scale.png, psnr_vs_weight.png, samples_*.png")
    return {"rows": sweep.table.rows, "summary": pretty, "comparison": comparison,
            "out": str(out)}


def _by_noise(row: dict) -> dict:
    """A row keyed by ``setting_name="<noise>_scale"``, ``setting_value`` as ``noise, scale``."""
    return dict(noise=row["setting_name"].removesuffix("_scale"), scale=row["setting_value"],
                **{k: v for k, v in row.items() if k not in ("setting_name", "setting_value")})


_TITLES = {"digits": "MNIST digits, y = x/2 + s·d",
           "sinusoidal": "sinusoidal, σ_h ∝ exp(sin(2πh/16))",
           "radial": "radial, σ = s·exp(−0.005 d²)"}


def _recover(method: str, value, flow, params, gan, y, op, model, *, asim_penalty: str = "norm",
             **kw) -> np.ndarray:
    """One batched solve of ``method`` (``kw``: maxiter, solver, chunk_size; ``asim_penalty``:
    the ``penalty`` of ``asim`` and ``latent-map``) -> recovered images."""
    import flowinv

    if method == "map":
        r = flowinv.recover((flow, params), y, operator=op, noise=model, method="map",
                            beta=value, **kw)
    elif method == "latent-map":
        r = flowinv.recover((flow, params), y, operator=op, noise=model, method="latent-map",
                            beta=value, penalty=asim_penalty, **kw)
    elif method == "asim":
        r = flowinv.recover((flow, params), y, operator=op, method="asim", gamma=value,
                            penalty=asim_penalty, **kw)
    elif method == "bora":
        r = flowinv.recover(gan, y, operator=op, method="bora", gamma=value, **kw)
    else:  # mle
        r = flowinv.recover(gan, y, operator=op, noise=model, method="mle", **kw)
    return np.asarray(r.x)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), _checked_config, argv))


if __name__ == "__main__":
    main()
