r"""Shared code of the Whang et al. experiments: noisy and 1-bit compressed sensing.

:mod:`experiments.noisy_cs` and :mod:`experiments.one_bit_cs` differ only in the measurement
model and the methods, so both run through :func:`run_cs` here. The generic pieces
(:class:`Sweep`, :func:`summarise`, :func:`plot_vs`) are
also used by :mod:`experiments.structured_noise`.

Measurements, with ``A`` an ``m × n`` matrix of i.i.d. :math:`\mathcal N(0, 1/m)` entries (one
matrix per ``m``, shared by all images) and :math:`\delta` positive-mean sinusoidal noise in
measurement space, :math:`\delta_k \sim \mathcal N(\mu, \sigma_k^2)` with
:math:`\sigma_k \propto e^{\sin(2\pi k/16)}`, :math:`\max_k \sigma_k = s` and :math:`\mu = s`
(:func:`flowinv.noise.positive_mean_sinusoidal`, ``s`` = ``noise_scale``):

* noisy CS: :math:`y = A x + \delta`;
* 1-bit CS: :math:`y = \mathrm{sign}(A x + \delta)`.

Methods (all from ``z0 = 0`` with the same solver, flowinv's L-BFGS by default, see
:data:`SOLVER_NOTE`; the hyperparameter of each is picked per ``m`` on validation images drawn
from the *training* split, or with ``--val-split test`` the test split's images after the
reported ones, never on the test images):

* ``map`` (Whang et al.): :math:`-\log p_\Delta(y - f(G(z))) - \beta \log p_G(G(z))` with the
  true noise density and ``f = A`` or ``f = sign∘A`` (straight-through gradient);
* ``map-probit`` (1-bit only): the exact posterior of :math:`y = \mathrm{sign}(Ax + \delta)`,
  :math:`-\sum_i \log\Phi\big(y_i (a_i^T G(z) + \mu_i)/\sigma_i\big) - \beta\log p_G(G(z))`
  (see :class:`SignChannel`);
* ``mle`` (Whang et al., DCGAN prior): :math:`-\log p_\Delta(y - f(G_{\mathrm{GAN}}(z)))`;
* ``asim``: :math:`\|y - f(G(z))\|^2 + \gamma\|z\|` with the flow, Whang et al.'s "Asim"
  baseline, their eq. (9) (2020 §3.3.2: the proxy loss Asim et al. report using), by default;
  ``--asim-penalty sq`` gives Asim et al.'s :math:`\gamma\|z\|^2` instead (these experiments'
  form until the penalty became an option; see :data:`ASIM_PENALTIES`);
* ``bora``: :math:`\|y - f(G_{\mathrm{GAN}}(z))\|^2 + \lambda\|z\|^2` with the DCGAN.

The ``--full`` grids are the papers' (Whang et al. 2020 appendix B: γ ∈ {0, 0.1, 0.5, 1, 5}
for the :math:`\gamma\|z\|` penalty), with β extended down to 0.003 (at large β, −β log p_G
pulls pixels to saturated values the flow over-rates).

All values of ``m`` share one compiled solve per method: ``A`` is padded with zero rows (and
``y`` with zeros) to the largest ``m``. A padded entry has ``f(x) = 0 = y``, so it adds a
constant to every loss and nothing to any gradient.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from experiments import common
from flowinv import solvers

Array = jax.Array

#: The hyperparameter of each method (``""``: none) and its symbol in the summary.
PARAM_NAMES = {"map": "beta", "map-probit": "beta", "latent-map": "beta", "asim": "gamma",
               "asim-centred": "gamma", "bora": "lambda", "mle": "", "bm3d": "sigma",
               "noisy": ""}
SYMBOLS = {"beta": "β", "gamma": "γ", "lambda": "λ", "sigma": "σ"}
GAN_METHODS = ("bora", "mle")

#: Which solver the Whang experiments use, and why.
SOLVER_NOTE = """\
Solver: every method runs the same optimiser (``--solver``), flowinv's L-BFGS with Armijo
backtracking (``lbfgs``) by default, whose first step is capped at norm 1 (its default
``first_step=1``, as optax's L-BFGS does). The MAP and MLE losses weight the residual by the
noise's inverse variance, so their gradient at z0 = 0 is huge (~10¹² for the DCGAN's MLE under
digit noise): from a unit step, all 30 halvings of the backtracking still overshoot, and the
forced last step saturated the generator (MLE: 10 dB, stopped at iteration 2). These
experiments used optax's L-BFGS (``--solver optax-lbfgs``, zoom line search) until flowinv's
became one flat loop. On 6 glow-mnist images (MAP, β = 0.1, no cap yet) 100 ``lbfgs``
iterations took 8 s for 32.3 dB under sinusoidal noise (s = 0.1) where 50 optax iterations
took 26 s for 28.0 dB, and 62 s for 20.35 dB under digit noise (s = 0.25) against 136 s for
20.35 dB. So the quick presets run 100 iterations instead of optax's 50, and still finish
2.4-3x sooner (quick structured_noise 687 s, noisy_cs 160 s, one_bit_cs 101 s)."""
SOLVERS = solvers.SOLVERS

#: Asim's penalty on the latent: ``"norm"``, :math:`\gamma\|z\|`, the proxy loss of Whang et al.
#: 2020 eq. (9) (§3.3.2), the baseline their experiments ran, with γ from {0, 0.1, 0.5, 1, 5}
#: (appendix B), the default; ``"sq"``, :math:`\gamma\|z\|^2`, Asim et al.'s own form, which
#: these experiments used before the option. Passed as ``penalty=`` to ``flowinv.recover``.
ASIM_PENALTIES = ("norm", "sq")


# ---- data and models --------------------------------------------------------------------


def finite_images(x: Any) -> np.ndarray:
    """``x`` as float32 NumPy clipped to ``[0, 1]``, non-finite pixels set to 0."""
    x = np.asarray(x, np.float32)
    return np.clip(np.where(np.isfinite(x), x, 0.0), 0.0, 1.0)


# ---- scoring, summary, figures ----------------------------------------------------------


class Sweep:
    """Scores recoveries of one batch ``[test; val]`` and keeps what the outputs need.

    Every recovery covers the test images followed by the validation images; the test ones go
    to the tidy table (one row per image), the mean validation PSNR picks hyperparameters.
    """

    def __init__(self, experiment: str, dataset: str, prior: str, test: np.ndarray,
                 val: np.ndarray):
        self.table = common.ResultTable(experiment, dataset, prior)
        self.truth = np.concatenate([test, val])
        self.n_test = len(test)
        self.curves: list[dict] = []
        self.samples: dict[tuple, np.ndarray] = {}

    def score(self, x_hat: Any, *, setting_name: str, setting_value, method: str,
              param_value="", seconds: float = 0.0) -> None:
        from flowinv import metrics

        x_hat = finite_images(x_hat)
        nt = self.n_test
        psnr = metrics.batch_psnr(x_hat, self.truth)
        ssim = metrics.batch_ssim(x_hat[:nt], self.truth[:nt])
        param_name = PARAM_NAMES[method]
        self.table.add(method=method, psnr=psnr[:nt], ssim=ssim,
                       seconds=seconds * nt / len(x_hat), param_name=param_name,
                       param_value=param_value, setting_name=setting_name,
                       setting_value=setting_value, image_ids=range(nt))
        self.curves.append(dict(setting_name=setting_name, setting_value=setting_value,
                                method=method, param_name=param_name, param_value=param_value,
                                test_psnr=float(np.mean(psnr[:nt])),
                                test_ssim=float(np.mean(ssim)),
                                val_psnr=float(np.mean(psnr[nt:]))))
        self.samples[(setting_name, setting_value, method, param_value)] = x_hat[:nt]


def summarise(curves: list[dict]) -> list[dict]:
    """Per setting and method, the hyperparameter with the best mean validation PSNR, with
    its mean test PSNR and SSIM (in the order the settings and methods first appear), and
    ``edge``: ``"low"``/``"high"`` where that pick is an end of the method's grid
    (:func:`common.grid_edge`; BM3D's σ is given, not picked)."""
    groups: dict[tuple, list[dict]] = {}
    for c in curves:
        groups.setdefault((c["setting_name"], c["setting_value"], c["method"]), []).append(c)
    rows = []
    for (sname, svalue, method), cands in groups.items():
        best = common.best_on_validation(cands)
        pname = best["param_name"]
        edge = (common.grid_edge([c["param_value"] for c in cands], best["param_value"])
                if method in WEIGHTED else "")
        rows.append(dict(
            setting_name=sname, setting_value=svalue, method=method,
            param=f"{SYMBOLS.get(pname, pname)}={best['param_value']}" if pname else "",
            param_value=best["param_value"], psnr=round(best["test_psnr"], 2),
            ssim=round(best["test_ssim"], 3), val_psnr=round(best["val_psnr"], 2), edge=edge))
    return rows


def compare(rows: list[dict], summary: list[dict], leads: tuple[str, ...] = ("map",)) -> list[dict]:
    """Per setting, each ``leads`` method at its picked hyperparameter minus every other method
    at its own (``noisy`` and earlier leads excepted), paired per test image
    (:func:`common.compare_picked` over the tidy ``rows``; ``summary`` from :func:`summarise`),
    each row led by its ``setting_name`` and ``setting_value``."""
    out = []
    for lead in summary:
        if lead["method"] not in leads:
            continue
        setting = {k: lead[k] for k in ("setting_name", "setting_value")}
        here = {r["method"]: r for r in summary
                if (r["setting_name"], r["setting_value"]) == tuple(setting.values())}
        skip = {"noisy", *leads[: leads.index(lead["method"]) + 1]}
        pairs = [(lead["method"], other) for other in here if other not in skip]
        out += [{**setting, **c} for c in common.compare_picked(rows, here, pairs, setting)]
    return out


COMPARISON_NOTE = common.COMPARISON_NOTE


def print_grid_edge_note(summary: list[dict]) -> None:
    """Prints :func:`common.grid_edge_note` of a :func:`summarise` table, if any pick is at an
    end of its grid."""
    common.print_grid_edge_note(
        summary, lambda r: f"{r['method']} at {r['setting_name']} = {r['setting_value']}")


def plot_vs(path: pathlib.Path, summary: list[dict], panels: list[tuple[str, str]], *,
            xlabel: str, title: str, xscale: str = "linear") -> None:
    """PSNR (test images, best validation hyperparameter) vs the setting, one line per
    method; ``panels`` lists ``(setting_name, panel title)``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (sname, ptitle) in zip(axes[0], panels, strict=True):
        rows = [r for r in summary if r["setting_name"] == sname]
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((float(r["setting_value"]), r["psnr"]) for r in rows
                         if r["method"] == method)
            style = "--" if method in ("bm3d", "noisy") else "o-"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=method)
        ax.set_xscale(xscale)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test PSNR (dB)")
        ax.set_title(ptitle, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


#: Methods whose loss has a weight (β, γ or λ) that validation picks.
WEIGHTED = ("map", "map-probit", "latent-map", "asim", "asim-centred", "bora")
#: A weight of the grid is "near the best" when its test PSNR is within this many dB of it.
NEAR_BEST_DB = 1.0


def sensitivity(curves: list[dict], summary: list[dict]) -> list[dict]:
    r"""How much each weighted method's test PSNR depends on its weight (Whang et al. 2021,
    §5.1.5, Fig. 6b: MAP is less sensitive to β than Asim et al. are to γ).

    Per setting and method of :data:`WEIGHTED`, over the weights of its grid (``curves`` from
    :class:`Sweep`, one entry per weight; ``summary`` from :func:`summarise`, for the weight
    validation picked):

    * ``best_psnr`` at ``best_weight`` and ``worst_psnr`` at ``worst_weight``: the highest and
      lowest mean test PSNR;
    * ``drop_db`` = best − worst, what a bad weight of the grid costs;
    * ``near_best``: how many of the ``weights`` reach within :data:`NEAR_BEST_DB` dB of the best
      (a flat curve: all of them);
    * ``regret_db`` = best − the test PSNR at the weight validation picked, what picking on
      validation images instead of the (unknowable) test images cost.

    Reading the test PSNR of every weight describes the curve and picks nothing; two methods'
    counts compare only over grids that span the same values (e.g. ``--betas`` = ``--gammas``).
    A NaN test PSNR (a failed solve) counts as the worst.
    """
    picked = _picked_weights(summary)
    groups: dict[tuple, list[dict]] = {}
    for c in curves:
        if c["method"] in WEIGHTED:
            groups.setdefault((c["setting_name"], c["setting_value"], c["method"]), []).append(c)
    rows = []
    for (sname, svalue, method), cands in groups.items():
        psnr = np.nan_to_num(np.array([float(c["test_psnr"]) for c in cands]), nan=-np.inf)
        best, worst = int(np.argmax(psnr)), int(np.argmin(psnr))
        at_pick = next(p for c, p in zip(cands, psnr, strict=True)
                       if c["param_value"] == picked[(sname, svalue, method)])
        rows.append(dict(
            setting_name=sname, setting_value=svalue, method=method,
            param=SYMBOLS[cands[0]["param_name"]], weights=len(cands),
            best_weight=cands[best]["param_value"], best_psnr=round(float(psnr[best]), 2),
            worst_weight=cands[worst]["param_value"], worst_psnr=round(float(psnr[worst]), 2),
            drop_db=round(float(psnr[best] - psnr[worst]), 2),
            near_best=int(np.sum(psnr >= psnr[best] - NEAR_BEST_DB)),
            picked_weight=picked[(sname, svalue, method)],
            regret_db=round(float(psnr[best] - at_pick), 2)))
    return rows


def _picked_weights(summary: list[dict]) -> dict[tuple, Any]:
    """``{(setting_name, setting_value, method): weight validation picked}`` from
    :func:`summarise`."""
    return {(r["setting_name"], r["setting_value"], r["method"]): r["param_value"]
            for r in summary}


SENSITIVITY_NOTE = (f"test PSNR over each method's grid of weights (dB): drop = best − worst; "
                    f"near_best = weights within {NEAR_BEST_DB:g} dB of the best; regret = best − "
                    "the weight validation picked")


def plot_sensitivity(path: pathlib.Path, curves: list[dict], summary: list[dict], *,
                     panel_title, title: str) -> None:
    """Mean test PSNR vs the weight (β, γ, λ), one line per weighted method, one panel per
    setting (a row of panels per ``setting_name``), the validation-picked weight starred.

    ``panel_title(setting_name, setting_value) -> str``. The x axis is logarithmic, linear
    below the smallest positive weight when a grid holds 0.
    """
    import matplotlib.pyplot as plt

    weighted = [c for c in curves if c["method"] in WEIGHTED]
    settings: dict[str, list] = {}
    for c in weighted:
        values = settings.setdefault(c["setting_name"], [])
        if c["setting_value"] not in values:
            values.append(c["setting_value"])
    if not settings:
        return
    picked = _picked_weights(summary)
    positive = [float(c["param_value"]) for c in weighted if float(c["param_value"]) > 0]
    ncols = max(len(v) for v in settings.values())
    fig, axes = plt.subplots(len(settings), ncols, figsize=(3.4 * ncols, 2.9 * len(settings)),
                             squeeze=False)
    for row, (sname, values) in zip(axes, settings.items(), strict=True):
        for ax in row[len(values):]:
            ax.set_visible(False)
        for ax, svalue in zip(row, values, strict=False):
            here = [c for c in weighted
                    if (c["setting_name"], c["setting_value"]) == (sname, svalue)]
            for method in dict.fromkeys(c["method"] for c in here):
                pts = sorted((float(c["param_value"]), float(c["test_psnr"]))
                             for c in here if c["method"] == method)
                line, = ax.plot(*zip(*pts, strict=True), "o-", ms=3,
                                label=f"{method} ({SYMBOLS[PARAM_NAMES[method]]})")
                pick = float(picked[(sname, svalue, method)])
                ax.plot([pick], [dict(pts)[pick]], "*", ms=11, color=line.get_color())
            if positive:
                ax.set_xscale("symlog", linthresh=min(positive))
            ax.set_xlabel("weight β / γ / λ (★ picked on validation)", fontsize=7)
            ax.set_ylabel("test PSNR (dB)", fontsize=8)
            ax.set_title(panel_title(sname, svalue), fontsize=8)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def best_columns(sweep: Sweep, summary: list[dict], setting_name: str,
                 setting_value) -> list[tuple[str, np.ndarray]]:
    """Sample-sheet columns: each method's test recoveries at its selected hyperparameter."""
    cols = []
    for r in summary:
        if r["setting_name"] == setting_name and r["setting_value"] == setting_value:
            key = (setting_name, setting_value, r["method"], r["param_value"])
            cols.append((f"{r['method']} {r['param']}".strip(), sweep.samples[key]))
    return cols


# ---- compressed sensing -----------------------------------------------------------------


@struct.dataclass
class SignChannel:
    r"""Exact likelihood of 1-bit measurements :math:`y = \mathrm{sign}(Ax + \delta)` with
    independent :math:`\delta_i \sim \mathcal N(\mu_i, \sigma_i^2)`:

    .. math:: P(y_i = \pm 1 \mid x) = \Phi\big(\pm(a_i^T x + \mu_i)/\sigma_i\big), \qquad
              \log p(y \mid x) = \sum_i \log\Phi\big(y_i (a_i^T x + \mu_i)/\sigma_i\big).

    Used through ``flowinv.recover``'s MAP loss, which evaluates ``log_prob(y - f(x))``: with
    the *linear* operator ``f = A`` the argument is ``r = y - Ax``, and the channel keeps its
    own copy of the signs ``y`` to read off :math:`a_i^T x = y_i - r_i`. Entries with
    ``y_i = 0`` (padding) contribute nothing. Arrays ``(m,)`` per image; pass a batch with
    ``per_image_noise=True``.
    """

    signs: Array
    mean: Array
    std: Array

    def log_prob(self, r: Array) -> Array:
        ax = self.signs - r
        t = self.signs * (ax + self.mean) / self.std
        return jnp.sum(jnp.where(self.signs != 0, jax.scipy.stats.norm.logcdf(t), 0.0))


def gaussian_matrix(key: Array, shape, m: int) -> Array:
    """The ``(m, n)`` matrix of :func:`flowinv.operators.gaussian_cs` (i.i.d. N(0, 1/m));
    for ``m > n`` (more 1-bit measurements than pixels) the same recipe directly."""
    from flowinv import operators

    n = math.prod(shape)
    if m <= n:
        return operators.gaussian_cs(key, shape, m).matrix
    return jax.random.normal(key, (m, n), jnp.float32) / jnp.sqrt(jnp.float32(m))


def build_cs_parser(prog: str, doc: str, name: str, *, ratio_help: str,
                    methods: tuple[str, ...], quick: dict, full: dict,
                    default_methods: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, name, quick=quick, full=full)
    p.add_argument("--ratios", type=common.float_list, default=None, help=ratio_help)
    p.add_argument("--noise-scale", type=common.positive_float, default=None,
                   help="s: max std and mean of the positive-mean sinusoidal noise")
    p.add_argument("--betas", type=common.float_list, default=None,
                   help="β values of the MAP loss, comma separated")
    p.add_argument("--gammas", type=common.float_list, default=None, help=GAMMAS_HELP)
    add_asim_penalty_argument(p)
    p.add_argument("--val-images", type=common.positive_int, default=None,
                   help="validation images (see --val-split) used to pick β, γ, λ")
    common.add_val_split_argument(p)
    add_solver_argument(p)
    p.add_argument("--methods", default=None,
                   help=f"comma-separated subset of {','.join(methods)}" + (
                       f" (default {','.join(default_methods)})" if default_methods
                       else " (default all)"))
    return p


GAMMAS_HELP = ("γ values of the Asim baseline's penalty, comma separated: γ weighs ‖z‖ (γ‖z‖, "
               "Whang et al. 2020 eq. (9)), or ‖z‖² with --asim-penalty sq")


def add_asim_penalty_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--asim-penalty", choices=ASIM_PENALTIES, default="norm",
                   help="penalty of the Asim baseline (default norm): norm = γ‖z‖, the proxy "
                        "loss of Whang et al. 2020 eq. (9), their Asim baseline; sq = γ‖z‖², "
                        "Asim et al.'s own form, which these experiments used before")


def check_asim_penalty(penalty: str) -> str:
    """``penalty`` if it is one of :data:`ASIM_PENALTIES`, else ValueError."""
    if penalty not in ASIM_PENALTIES:
        raise ValueError(f"asim_penalty must be one of {ASIM_PENALTIES} (norm: γ‖z‖, Whang et "
                         f"al. 2020 eq. (9); sq: γ‖z‖²), got {penalty!r}")
    return penalty


def asim_penalty_note(penalty: str) -> str:
    """``"Asim's γ weighs ‖z‖ (γ‖z‖, Whang et al. eq. 9)"`` or the ``sq`` form, for headers."""
    if penalty == "norm":
        return "Asim's γ weighs ‖z‖ (γ‖z‖, Whang et al. 2020 eq. (9))"
    return "Asim's γ weighs ‖z‖² (γ‖z‖², Asim et al.'s form)"


def add_solver_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--solver", choices=SOLVERS, default="lbfgs",
                   help="optimiser of every method (default lbfgs: see the note below)")


def parse_methods(text: str | None, allowed: tuple[str, ...], flag: str = "--methods", *,
                  default: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``"a,b"`` -> ``("a", "b")``, each one of ``allowed`` (ValueError otherwise);
    ``None`` or ``""`` -> ``default``, or ``allowed`` without one."""
    if not text:
        return allowed if default is None else default
    return common.list_entries(text, flag, allowed)


def cs_config_from_args(config_cls, args: argparse.Namespace, quick: dict, full: dict, *,
                        max_ratio: float | None, methods: tuple[str, ...],
                        default_methods: tuple[str, ...] | None = None):
    preset = full if args.full else quick
    pick = lambda v, k: preset[k] if v is None else v
    ratios = pick(args.ratios, "ratios")
    if any(r <= 0 or (max_ratio is not None and r > max_ratio) for r in ratios):
        bound = f"(0, {max_ratio:g}]" if max_ratio is not None else "> 0"
        raise ValueError(f"--ratios must lie in {bound}, got {ratios}")
    scale = pick(args.noise_scale, "noise_scale")
    if scale <= 0:
        raise ValueError(f"--noise-scale must be > 0, got {scale}")
    chosen = parse_methods(args.methods, methods, default=default_methods)
    common.check_methods_without_gan(chosen, args.gan, GAN_METHODS)
    return config_cls(
        dataset=args.dataset, prior=args.prior, gan=args.gan,
        num_images=pick(args.num_images, "num_images"),
        val_images=pick(args.val_images, "val_images"), val_split=args.val_split,
        maxiter=pick(args.maxiter, "maxiter"),
        ratios=tuple(ratios), noise_scale=float(scale), betas=pick(args.betas, "betas"),
        gammas=pick(args.gammas, "gammas"),
        asim_penalty=args.asim_penalty, gan_lams=preset["gan_lams"],
        methods=chosen, solver=args.solver, seed=args.seed,
        out=args.out,
        progress=not args.no_progress)


def run_cs(config, *, one_bit: bool, experiment: str) -> dict:
    """Runs noisy (``one_bit=False``) or 1-bit compressed sensing; see the module docstring.

    Returns ``{"rows": [...], "summary": [...], "out": path}``.
    """
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import noise, operators

    check_asim_penalty(config.asim_penalty)
    out, prior_name, flow, params = common.setup_run(config)
    shape, n = tuple(flow.image_shape), flow.dim
    test, val = common.load_test_and_val(config.dataset, shape, config.num_images,
                                         config.val_images, config.val_split)
    images = jnp.asarray(np.concatenate([test, val]))
    batch = images.shape[0]
    gan = (common.load_gan_or_none(config.gan, config.dataset, shape)
           if set(GAN_METHODS) & set(config.methods) else None)
    methods = [m for m in config.methods if gan is not None or m not in GAN_METHODS]
    grids = {"map": config.betas, "map-probit": config.betas, "asim": config.gammas,
             "asim-centred": config.gammas, "bora": config.gan_lams, "mle": ("",)}
    ms = list(dict.fromkeys(max(1, int(round(r * n))) for r in config.ratios))
    m_max = max(ms)
    sweep = Sweep(experiment, config.dataset, prior_name, test, val)
    key = jax.random.PRNGKey(config.seed)
    jobs = [(m, meth, v) for m in ms for meth in methods for v in grids[meth]]
    bar = tqdm(total=len(jobs), desc=experiment, disable=not config.progress)
    for m in ms:
        k_op, k_noise = jax.random.split(jax.random.fold_in(key, m))
        matrix = gaussian_matrix(k_op, shape, m)
        eta = noise.positive_mean_sinusoidal((m,), scale=config.noise_scale)
        delta = jax.vmap(lambda k, eta=eta: eta.sample(k))(jax.random.split(k_noise, batch))
        ax = jax.vmap(operators.matrix_operator(matrix, shape))(images)
        y = jnp.sign(ax + delta) if one_bit else ax + delta
        # zero padding to m_max: one compiled solve per method for every m (module docstring)
        pad = m_max - m
        y = jnp.pad(y, ((0, 0), (0, pad)))
        linear = operators.matrix_operator(jnp.pad(matrix, ((0, pad), (0, 0))), shape)
        op = operators.sign_measurements(linear) if one_bit else linear
        std = jnp.pad(jnp.broadcast_to(eta.std, (m,)), (0, pad), constant_values=1.0)
        mean = jnp.pad(jnp.broadcast_to(eta.mean, (m,)), (0, pad))
        eta_pad = noise.diagonal_gaussian(std, mean)
        for meth in methods:
            for value in grids[meth]:
                kw = dict(operator=op, maxiter=config.maxiter, solver=config.solver,
                          chunk_size=common.chunk_size())
                with common.SolveClock() as t:
                    if meth == "map":
                        r = flowinv.recover((flow, params), y, noise=eta_pad, method="map",
                                            beta=value, **kw)
                    elif meth == "map-probit":
                        channel = SignChannel(signs=y, mean=jnp.broadcast_to(mean, y.shape),
                                              std=jnp.broadcast_to(std, y.shape))
                        r = flowinv.recover((flow, params), y, operator=linear, noise=channel,
                                            method="map", beta=value, per_image_noise=True,
                                            maxiter=config.maxiter, solver=config.solver,
                                            chunk_size=common.chunk_size())
                    elif meth in ("asim", "asim-centred"):
                        # asim-centred: y less the noise's mean (0 on the padding)
                        yc = y - mean if meth == "asim-centred" else y
                        r = flowinv.recover((flow, params), yc, method="asim", gamma=value,
                                            penalty=config.asim_penalty, **kw)
                    elif meth == "bora":
                        r = flowinv.recover(gan, y, method="bora", gamma=value, **kw)
                    else:  # mle
                        r = flowinv.recover(gan, y, noise=eta_pad, method="mle", **kw)
                    x_hat = np.asarray(r.x)
                sweep.score(x_hat, setting_name="m", setting_value=m, method=meth,
                            param_value=value, seconds=t.seconds)
                bar.update()
    bar.close()

    sweep.table.write(out / "results.csv")
    summary = summarise(sweep.curves)
    common.write_csv(out / "summary.csv", summary)
    common.write_csv(out / "curves.csv", sweep.curves)
    leads = tuple(m for m in ("map", "map-probit", "asim-centred") if m in methods)
    comparison = compare(sweep.table.rows, summary, leads)
    common.write_csv(out / "comparison.csv", comparison)
    sens = sensitivity(sweep.curves, summary)
    common.write_csv(out / "sensitivity.csv", sens)
    what = "1-bit CS, y = sign(Ax + δ)" if one_bit else "noisy CS, y = Ax + δ"
    plot_vs(out / "psnr_vs_m.png", summary, [("m", f"{config.dataset}, n = {n}")],
            xlabel="m (measurements)", xscale="log",
            title=f"{what}, positive-mean sinusoidal δ (s={config.noise_scale}), "
                  f"prior {pathlib.Path(prior_name).name}")
    plot_sensitivity(out / "psnr_vs_weight.png", sweep.curves, summary,
                     panel_title=lambda _, m: f"m = {m} of n = {n}",
                     title=f"{what}: sensitivity to the weight, "
                           f"prior {pathlib.Path(prior_name).name}")
    for m in ms:
        cols = [("truth", test)] + best_columns(sweep, summary, "m", m)
        common.sample_sheet(out / f"samples_m{m}.png", cols, f"{what}, m={m} of n={n}")
    print(f"\n{what} with positive-mean sinusoidal noise (s={config.noise_scale}), "
          f"{common.count(len(test), 'held-out test image')} of {config.dataset} (β/γ/λ picked "
          f"on {common.validation_text(len(val), config.val_split)}, none of them a test image), "
          f"prior {prior_name}, n={n}, "
          f"{config.maxiter} {config.solver} iterations; "
          f"{asim_penalty_note(config.asim_penalty)}:")
    print(common.format_table([{k: v for k, v in r.items()
                                if k not in ("setting_name", "param_value")} for r in summary]))
    print_grid_edge_note(summary)
    if comparison:
        print(f"\n{' and '.join(leads)}, each at its picked weight, minus each other method "
              f"at its own, {COMPARISON_NOTE}:")
        print(common.format_table([{k: v for k, v in r.items() if k != "setting_name"}
                                   for r in comparison]))
    if sens:
        print(f"\nSensitivity to the weight, {SENSITIVITY_NOTE}:")
        print(common.format_table([{k: v for k, v in r.items() if k != "setting_name"}
                                   for r in sens]))
    print(f"\nwrote {out}/results.csv, summary.csv, comparison.csv, sensitivity.csv, curves.csv, "
          "psnr_vs_m.png, psnr_vs_weight.png, samples_m*.png")
    sys.stdout.flush()
    return {"rows": sweep.table.rows, "summary": summary, "comparison": comparison,
            "out": str(out)}
