"""Jacobian of the Glow generator: singular-value decay and latent-perturbation sensitivity
(Asim et al., supplement §1.6, Figs. 19–20).

For test images ``x`` and their latents ``z = G⁻¹(x)`` (for logit-preprocessed flows ``x`` at
its 8-bit bin centres, as ``flowinv.recover`` inverts images: exact 0/1 pixels would put ``z``
in tails where ``G(z + εv)`` overflows already at ``ε ≈ 0.003``):

* **Spectrum** (Fig. 20): the singular values ``σ_1 ≥ … ≥ σ_n`` of ``J = ∂G/∂z`` at ``z``,
  plotted log-log (index ``i`` vs ``σ_i``), one curve per image. Since ``G`` is invertible,
  ``∏ σ_i = |det J| = exp(log|det ∂G/∂z|)``, which the flow computes explicitly; the gap
  ``|Σ log σ_i − logdet|`` is reported as a check.

  Precision: the spectrum of a trained Glow spans many decades (≥ 10⁸ for the shipped
  logit-preprocessed priors), beyond what a float32 Jacobian resolves (``σ_i ≲ 10⁻⁷ σ_1`` are
  lost in rounding, and ``Σ log σ_i`` drifts from the log-det by ~0.3 nats). So latents,
  Jacobians and log-dets are computed in float64 (``jax.enable_x64``, params cast) unless
  ``--float32``; the perturbation study runs in float32, as the solvers use the model.

  How ``J`` is obtained: for ``n ≤ dense_max`` (default 4096: MNIST's 784, 32×32×3) the dense
  ``J`` is built column by column with forward-mode products ``J e_j`` (``jax.linearize`` once
  per image, then the linear map vmapped over chunks of basis vectors, all images at once) and
  its singular values are computed by a float64 LAPACK SVD. This is exact and, for n = 784,
  takes seconds, so it is preferred over iterative methods there. For larger images the
  Jacobian is never formed: a randomized SVD (Halko et al. 2011, Alg. 4.4: range finder with
  ``q`` power iterations, products ``JV`` by vmapped ``jvp`` and ``JᵀU`` by vmapped ``vjp``)
  gives the top ``k`` singular values, and the bottom ``k`` come from the same method applied
  to the inverse flow, using ``σ_{n+1−i}(∂G/∂z) = 1/σ_i(∂G⁻¹/∂x)`` at ``x = G(z)``. That last
  step is accurate for centre-preprocessed flows; for logit-preprocessed ones ``G⁻¹``'s
  Jacobian at saturated pixels suffers float32 cancellation, so prefer the dense path there.

* **Perturbation** (Fig. 19): ``‖G(z + εv) − G(z)‖₂`` against ``ε`` (log-log), for *natural*
  directions ``v = (z' − z)/‖z' − z‖`` with ``z'`` the latent of another test image, and for
  *random* directions ``v = g/‖g‖``, ``g ~ N(0, I)``; mean and 95% confidence band over
  (image, direction) pairs. For small ``ε`` the change is ``ε‖Jv‖`` (reported as ``jv_norm``,
  computed by ``jvp``); the paper's point is that natural directions move the image more than
  random ones of the same latent size.

Outputs under ``--out``: ``results.csv`` (tidy schema; PSNR/SSIM are NaN, ``seconds`` is the
time per image), ``spectrum.csv`` (image, index, σ), ``perturbation.csv`` (image, direction,
ε, ‖ΔG‖, ‖Jv‖), ``summary.csv`` (per image: σ_max, σ_min, condition number, log-det check),
``perturbation_summary.csv`` (per direction kind: small-ε gain, log-log slopes),
``spectrum.png``, ``perturbation.png``, ``samples_perturbation.png``.
``--maxiter`` and ``--gan`` are accepted for a uniform command line and not used.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common

SOLVERS = ("auto", "dense", "randomized")
DENSE_MAX = 4096
QUICK = dict(num_images=6, spectrum_images=3, directions=2,
             eps=tuple(float(e) for e in np.logspace(-3, 1, 9)))
FULL = dict(num_images=100, spectrum_images=10, directions=5,
            eps=tuple(float(e) for e in np.logspace(-3, 1.5, 19)))


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    prior: str | None = None
    num_images: int = QUICK["num_images"]
    spectrum_images: int = QUICK["spectrum_images"]
    directions: int = QUICK["directions"]
    eps: tuple[float, ...] = QUICK["eps"]
    solver: str = "auto"
    rank: int = 32
    power_iters: int = 2
    chunk: int = 64
    float64: bool = True
    seed: int = 0
    out: str = "results/jacobian_spectrum"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.jacobian_spectrum",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "jacobian_spectrum", quick=QUICK, full=FULL,
                                uses_gan=False)
    p.add_argument("--spectrum-images", type=common.positive_int, default=None,
                   help="images whose full spectrum is computed")
    p.add_argument("--directions", type=common.positive_int, default=None,
                   help="random (and at most num_images−1 natural) directions per image")
    p.add_argument("--eps", type=common.float_list, default=None,
                   help="latent perturbation sizes ε > 0, comma separated "
                        "(default: quick 9 log-spaced in [1e-3, 10]; --full 19 in "
                        "[1e-3, 10^1.5])")
    p.add_argument("--solver", choices=SOLVERS, default="auto",
                   help=f"Jacobian SVD: dense (jacfwd + LAPACK), randomized (matrix-free), "
                        f"auto = dense when n <= {DENSE_MAX} (default auto)")
    p.add_argument("--rank", type=common.positive_int, default=32,
                   help="singular values at each end for the randomized solver (default 32)")
    p.add_argument("--float32", action="store_true",
                   help="compute the spectrum in float32 (default float64)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    eps = pick(args.eps, "eps")
    if any(e <= 0 for e in eps):
        raise ValueError(f"--eps must all be > 0 (log-log plot), got {eps}")
    num_images = pick(args.num_images, "num_images")
    if num_images < 2:
        raise ValueError("--num-images must be >= 2 (natural directions join two test images)")
    if args.dataset.startswith("folder:"):  # counted by file name before anything loads
        from flowinv import data

        if len(data.folder_files(args.dataset, "test")) < 2:
            raise ValueError(f"{args.dataset!r} holds fewer than 2 test images; the natural "
                             "directions join two of them")
    ignored = [f for f, v in (("--maxiter", args.maxiter), ("--gan", args.gan)) if v is not None]
    if ignored:
        print(f"note: {', '.join(ignored)} not used by jacobian_spectrum (ignored)")
    return Config(
        dataset=args.dataset, prior=args.prior, num_images=num_images,
        spectrum_images=min(pick(args.spectrum_images, "spectrum_images"), num_images),
        directions=pick(args.directions, "directions"), eps=tuple(sorted(eps)),
        solver=args.solver, rank=args.rank, float64=not args.float32, seed=args.seed,
        out=args.out,
        progress=not args.no_progress)


# ---- Jacobians ----------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("flow", "chunk"))
def dense_jacobians(flow, params, zs: jax.Array, chunk: int = 64) -> jax.Array:
    r"""Dense Jacobians :math:`J_b = \partial\,\mathrm{vec}\,G(z)/\partial z` at each ``z_b``.

    Column ``j`` is the forward-mode product :math:`J e_j`; ``G`` is linearised once per image
    and the linear map is applied to ``chunk`` basis vectors at a time (``lax.map`` over
    chunks), so memory is ``B · chunk`` tangents, not ``B · n``.

    Args:
      flow, params: the flow (static) and its params.
      zs: ``(B, n)`` latents.
      chunk: basis vectors per vmapped batch.

    Returns:
      ``(B, n, n)``, ``J[b, i, j] = ∂x_i/∂z_j`` with ``x`` the row-major flattened image.
    """
    n = flow.dim
    nchunks = -(-n // chunk)
    basis = jnp.eye(nchunks * chunk, n, dtype=zs.dtype).reshape(nchunks, chunk, n)

    def one(z):
        _, f_jvp = jax.linearize(lambda u: flow.forward(params, u)[0].ravel(), z)
        cols = jax.lax.map(jax.vmap(f_jvp), basis).reshape(nchunks * chunk, n)[:n]
        return cols.T

    return jax.vmap(one)(zs)


def dense_singular_values(flow, params, zs: jax.Array, chunk: int = 64) -> np.ndarray:
    """All singular values ``(B, n)`` (descending, float64) of the dense Jacobians."""
    jac = np.asarray(dense_jacobians(flow, params, zs, chunk=chunk), np.float64)
    return np.linalg.svd(jac, compute_uv=False)


def _top_singular_values(f, u, key, rank: int, oversample: int, power_iters: int):
    r"""Top ``rank`` singular values of ``∂f/∂u`` (``f``: ``Rⁿ → Rⁿ``), matrix-free.

    Randomized range finder with power iterations: ``Q = orth((JJᵀ)^q J Ω)``,
    ``Ω ∈ R^{n×(rank+oversample)}`` Gaussian, re-orthonormalised after every product; then
    the singular values of the small matrix :math:`B = Q^T J = (J^T Q)^T` approximate the top
    ones of ``J`` (exact when the range of ``J Ω`` captures them).
    """
    n = u.shape[0]
    _, f_jvp = jax.linearize(f, u)
    f_vjp = jax.linear_transpose(f_jvp, u)
    jv = jax.vmap(f_jvp, in_axes=1, out_axes=1)
    jtv = jax.vmap(lambda c: f_vjp(c)[0], in_axes=1, out_axes=1)
    q, _ = jnp.linalg.qr(jv(jax.random.normal(key, (n, rank + oversample), u.dtype)))
    for _ in range(power_iters):
        w, _ = jnp.linalg.qr(jtv(q))
        q, _ = jnp.linalg.qr(jv(w))
    return jnp.linalg.svd(jtv(q).T, compute_uv=False)[:rank]


@functools.partial(jax.jit, static_argnames=("flow", "rank", "oversample", "power_iters"))
def randomized_singular_values(flow, params, zs: jax.Array, key: jax.Array, rank: int,
                               oversample: int = 10,
                               power_iters: int = 2) -> tuple[jax.Array, jax.Array]:
    r"""Top and bottom ``rank`` singular values of ``∂G/∂z`` at each ``z_b``, matrix-free.

    Top: :func:`_top_singular_values` of ``G``. Bottom: since ``G⁻¹ ∘ G = id``,
    :math:`\partial G^{-1}/\partial x\,|_{G(z)} = (\partial G/\partial z)^{-1}`, whose
    singular values are the reciprocals, so
    :math:`\sigma_{n+1-i}(\partial G/\partial z) = 1/\sigma_i(\partial G^{-1}/\partial x)`.

    Returns:
      ``(top, bottom)``, each ``(B, rank)``; ``top`` descending (``σ_1 …``), ``bottom``
      descending too (``σ_{n−rank+1} … σ_n``).
    """
    shape = tuple(flow.image_shape)
    fwd = lambda z: flow.forward(params, z)[0].ravel()
    inv = lambda x: flow.inverse(params, x.reshape(shape))[0]

    def one(z, k):
        k1, k2 = jax.random.split(k)
        top = _top_singular_values(fwd, z, k1, rank, oversample, power_iters)
        inv_top = _top_singular_values(inv, fwd(z), k2, rank, oversample, power_iters)
        return top, (1.0 / inv_top)[::-1]

    return jax.vmap(one)(zs, jax.random.split(key, zs.shape[0]))


@functools.partial(jax.jit, static_argnames=("flow",))
def _forward_batch(flow, params, zs):
    """``(G(z_b), log|det ∂G/∂z|)`` for a batch ``(B, n)``."""
    return jax.vmap(flow.forward, in_axes=(None, 0))(params, zs)


# ---- perturbations ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("flow",))
def perturbation_norms(flow, params, zs: jax.Array, dirs: jax.Array,
                       eps: jax.Array) -> tuple[jax.Array, jax.Array]:
    r"""Image change along latent directions, and its linearisation.

    .. math:: \Delta_{b,d}(\varepsilon) = \|G(z_b + \varepsilon v_{b,d}) - G(z_b)\|_2,
              \qquad g_{b,d} = \|J(z_b)\, v_{b,d}\|_2

    Args:
      zs: ``(B, n)`` latents; dirs: ``(B, D, n)`` unit directions; eps: ``(E,)`` sizes.

    Returns:
      ``(Δ (B, D, E), g (B, D))``; ``Δ(ε)/ε → g`` as ``ε → 0``.
    """
    gen = lambda z: flow.forward(params, z)[0]

    def one(z, vs):
        x = gen(z)

        def along(v):
            delta = jax.lax.map(lambda e: jnp.linalg.norm(gen(z + e * v) - x), eps)
            return delta, jnp.linalg.norm(jax.jvp(gen, (z,), (v,))[1])

        return jax.vmap(along)(vs)

    return jax.vmap(one)(zs, dirs)


def directions(zs: jax.Array, key: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """Unit natural and random directions per latent.

    Natural: ``v_{b,d} = (z_{(b+d) mod B} − z_b)/‖·‖`` for ``d = 1..min(count, B−1)``;
    random: ``g/‖g‖``, ``g ~ N(0, I)``, ``count`` per latent.

    Returns:
      ``(natural (B, min(count, B−1), n), random (B, count, n))``.
    """
    b = zs.shape[0]
    shifts = jnp.arange(1, min(count, b - 1) + 1)
    partners = (jnp.arange(b)[:, None] + shifts[None, :]) % b
    nat = zs[partners] - zs[:, None, :]
    rnd = jax.random.normal(key, (b, count, zs.shape[1]), zs.dtype)
    unit = lambda v: v / jnp.linalg.norm(v, axis=-1, keepdims=True)
    return unit(nat), unit(rnd)


# ---- the experiment ------------------------------------------------------------------------


def run(config: Config) -> dict:
    """Runs both studies; returns ``{"rows", "summary", "perturbation_summary", "out"}``."""
    from tqdm.auto import tqdm

    from flowinv import data
    from flowinv.recover import invert_images

    if config.num_images < 2:
        raise ValueError("num_images must be >= 2 (natural directions join two test images)")
    if config.solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {config.solver!r}")
    out, prior_name, flow, params = common.setup_run(config)
    shape, n = tuple(flow.image_shape), flow.dim
    test = data.load_dataset(config.dataset, "test", image_shape=shape,
                             limit=config.num_images)[: config.num_images]
    nt = len(test)
    if nt < 2:
        raise ValueError(f"dataset {config.dataset!r} gave {nt} test image(s); need >= 2")
    if nt < config.num_images:
        print(f"note: dataset {config.dataset!r} gave {nt} of the {config.num_images} test "
              "images asked for", file=sys.stderr)
    ns = min(config.spectrum_images, nt)
    solver = config.solver if config.solver != "auto" else (
        "dense" if n <= DENSE_MAX else "randomized")
    rank = min(config.rank, n)
    key = jax.random.PRNGKey(config.seed)
    k_svd, k_dir = jax.random.split(key)
    table = common.ResultTable("jacobian_spectrum", config.dataset, prior_name)
    bar = tqdm(total=3, desc="jacobian spectrum", disable=not config.progress)

    bar.set_postfix_str("latents")
    zs = invert_images(flow, params, jnp.asarray(test))[0]
    bar.update()

    bar.set_postfix_str(f"spectrum ({solver})")
    spectrum_rows, summary = [], []
    precision = "float64" if config.float64 else "float32"
    with common.SolveClock() as t, jax.enable_x64(config.float64):
        dt = jnp.float64 if config.float64 else jnp.float32
        p_hi = jax.tree.map(lambda a: jnp.asarray(a, dt), params)
        z_hi, logdet_inv = invert_images(flow, p_hi, jnp.asarray(test[:ns], dt))
        logdet = np.asarray(_forward_batch(flow, p_hi, z_hi)[1], np.float64)
        logdet_inv = np.asarray(logdet_inv, np.float64)
        if solver == "dense":
            svals = dense_singular_values(flow, p_hi, z_hi, chunk=min(config.chunk, n))
            parts = [("all", np.arange(1, n + 1), svals)]
        else:
            top, bottom = randomized_singular_values(flow, p_hi, z_hi, k_svd, rank=rank,
                                                     power_iters=config.power_iters)
            top, bottom = np.asarray(top, np.float64), np.asarray(bottom, np.float64)
            parts = [("top", np.arange(1, rank + 1), top),
                     ("bottom", np.arange(n - rank + 1, n + 1), bottom)]
    for part, idx, vals in parts:
        for b in range(ns):
            spectrum_rows += [dict(image_id=b, part=part, index=int(i), sigma=float(s))
                              for i, s in zip(idx, vals[b], strict=True)]
    table.add(method="jacobian-svd", psnr=[np.nan] * ns, ssim=[np.nan] * ns, seconds=t.seconds,
              param_name="n", param_value=n, setting_name="solver",
              setting_value=f"{solver}-{precision}", image_ids=range(ns))
    for b in range(ns):
        smax, smin = parts[0][2][b, 0], parts[-1][2][b, -1]
        sum_log = float(np.sum(np.log(svals[b]))) if solver == "dense" else np.nan
        summary.append(dict(
            image_id=b, n=n, solver=f"{solver}-{precision}", sigma_max=float(smax),
            sigma_min=float(smin),
            condition=float(smax / smin), log10_condition=round(float(np.log10(smax / smin)), 3),
            sum_log_sigma=round(sum_log, 4), logdet=round(float(logdet[b]), 4),
            minus_logdet_inverse=round(float(-logdet_inv[b]), 4),
            logdet_gap=abs(sum_log - float(logdet[b])) if solver == "dense" else np.nan))
    bar.update()

    bar.set_postfix_str("perturbations")
    nat, rnd = directions(zs, k_dir, config.directions)
    eps = jnp.asarray(config.eps, zs.dtype)
    pert_rows, curves = [], {}
    for kind, dirs in (("natural", nat), ("random", rnd)):
        with common.SolveClock() as t:
            delta, gain = jax.block_until_ready(perturbation_norms(flow, params, zs, dirs, eps))
        delta, gain = np.asarray(delta, np.float64), np.asarray(gain, np.float64)
        curves[kind] = (delta.reshape(-1, len(config.eps)), gain.ravel())
        table.add(method="perturbation", psnr=[np.nan] * nt, ssim=[np.nan] * nt,
                  seconds=t.seconds, param_name="num_eps", param_value=len(config.eps),
                  setting_name="direction", setting_value=kind, image_ids=range(nt))
        for b in range(nt):
            for d in range(dirs.shape[1]):
                pert_rows += [dict(image_id=b, direction=kind, direction_id=d, eps=e,
                                   delta_norm=float(delta[b, d, j]),
                                   jv_norm=float(gain[b, d]))
                              for j, e in enumerate(config.eps)]
    pert_summary = _perturbation_summary(curves, config.eps)
    bar.update()
    bar.close()

    table.write(out / "results.csv")
    common.write_csv(out / "spectrum.csv", spectrum_rows)
    common.write_csv(out / "perturbation.csv", pert_rows)
    common.write_csv(out / "summary.csv", summary)
    common.write_csv(out / "perturbation_summary.csv", pert_summary)
    _plot_spectrum(out / "spectrum.png", parts, ns, n, config, prior_name)
    _plot_perturbation(out / "perturbation.png", curves, config.eps, config, prior_name)
    _perturbation_sheet(out / "samples_perturbation.png", flow, params, zs[:ns], nat[:ns, 0],
                        rnd[:ns, 0], config.eps, test[:ns])

    print(f"\nJacobian of G at z = G⁻¹(x) for {ns} {config.dataset} test images, prior "
          f"{prior_name}, n={n}, solver {solver} ({precision}):")
    print(common.format_table([{k: f"{v:.3e}" if k in ("sigma_max", "sigma_min", "condition",
                                                         "logdet_gap") else v
                                for k, v in r.items()} for r in summary]))
    print(f"\nImage change ‖G(z+εv) − G(z)‖ over {nt} test images, ε in "
          f"[{config.eps[0]:g}, {config.eps[-1]:g}]:")
    print(common.format_table(pert_summary))
    if len(pert_summary) == 2:
        ratio = pert_summary[0]["gain_small_eps"] / pert_summary[1]["gain_small_eps"]
        print(f"natural/random gain ratio at ε={config.eps[0]:g}: {ratio:.3f}")
    print(f"\nwrote {out}/results.csv, spectrum.csv, perturbation.csv, summary.csv, "
          "perturbation_summary.csv, spectrum.png, perturbation.png, samples_perturbation.png")
    return {"rows": table.rows, "summary": summary, "perturbation_summary": pert_summary,
            "out": str(out)}


def _nanmean(a: np.ndarray) -> np.ndarray:
    """Column means over the finite entries (NaN where a column has none)."""
    a = np.where(np.isfinite(a), a, np.nan)
    count = np.sum(np.isfinite(a), axis=0)
    return np.where(count > 0, np.nansum(a, axis=0) / np.maximum(count, 1), np.nan)


def _mean_band(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means over the finite entries and the half-width of their 95 % t interval,
    ``t(0.975, count − 1)·s/√count`` (the normal 1.96 is too narrow for a dozen pairs; NaN
    where a column has fewer than 2 finite entries)."""
    from scipy import stats

    delta = np.where(np.isfinite(delta), delta, np.nan)
    mean = _nanmean(delta)
    count = np.sum(np.isfinite(delta), axis=0)
    sq = np.nansum((delta - mean) ** 2, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = (stats.t.ppf(0.975, count - 1) * np.sqrt(sq / (count - 1)) / np.sqrt(count))
    return mean, np.where(count > 1, half, np.nan)


def _slope(eps, values) -> float:
    """Least-squares slope of ``log values`` against ``log ε``."""
    x, y = np.log(np.asarray(eps)), np.log(np.asarray(values))
    ok = np.isfinite(y)
    return float(np.polyfit(x[ok], y[ok], 1)[0]) if ok.sum() >= 2 else np.nan


def _perturbation_summary(curves: dict, eps: tuple[float, ...]) -> list[dict]:
    """Per direction kind: ``Δ(ε₁)/ε₁`` and ``‖Jv‖`` means, log-log slopes of the mean curve.

    ``G(z + εv)`` overflows to NaN for some large ``ε`` with priors trained without activation
    clipping; such entries are counted (``nonfinite``) and left out of the means.
    """
    rows = []
    half = max(2, len(eps) // 2)
    for kind, (delta, gain) in curves.items():
        mean = _nanmean(delta)
        rows.append(dict(
            direction=kind, pairs=delta.shape[0],
            nonfinite=int(np.sum(~np.isfinite(delta))),
            gain_small_eps=round(float(np.nanmean(delta[:, 0] / eps[0])), 4),
            jv_norm=round(float(gain.mean()), 4),
            slope_small_eps=round(_slope(eps[:half], mean[:half]), 3),
            slope_all=round(_slope(eps, mean), 3),
            delta_at_eps_max=round(float(mean[-1]), 4)))
    return rows


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _plot_spectrum(path, parts, ns, n, config: Config, prior: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for b in range(ns):
        for j, (_, idx, vals) in enumerate(parts):
            ax.plot(idx, vals[b], color=colors[b % len(colors)], lw=1.2,
                    label=f"image {b}" if j == 0 else None)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("index i")
    ax.set_ylabel("singular value σ_i of ∂G/∂z")
    ax.set_title(f"Jacobian spectrum ({config.dataset}, {prior}, n={n})", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_perturbation(path, curves, eps, config: Config, prior: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    eps = np.asarray(eps)
    for kind, (delta, _) in curves.items():
        mean, half = _mean_band(delta)
        line, = ax.plot(eps, mean, "o-", ms=3, label=f"{kind} ({delta.shape[0]} pairs)")
        ax.fill_between(eps, np.maximum(mean - half, mean * 1e-3), mean + half,
                        color=line.get_color(), alpha=0.2)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("latent perturbation size ε")
    ax.set_ylabel("‖G(z + εv) − G(z)‖₂")
    ax.set_title(f"Image change vs latent perturbation ({config.dataset}, {prior});\n"
                 "mean and 95% CI", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _perturbation_sheet(path, flow, params, zs, nat, rnd, eps, truth) -> None:
    """``G(z + εv)`` along one natural and one random direction, at three sizes ε."""
    picks = sorted({eps[len(eps) // 2], eps[(3 * len(eps)) // 4], eps[-1]})
    columns = [("truth", truth)]
    for kind, v in (("natural", nat), ("random", rnd)):
        columns += [(f"{kind} ε={e:.3g}", np.asarray(_forward_batch(flow, params, zs + e * v)[0]))
                    for e in picks]
    common.sample_sheet(path, columns, "G(z + εv) along a natural and a random direction "
                        "(blank: non-finite)")


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
