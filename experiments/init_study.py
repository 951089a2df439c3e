"""Initialisation study for compressed sensing with a Glow prior (Asim et al., supplement §1.4,
Fig. 6; preprint Fig. 4 right and Fig. 5).

Compressed sensing ``y = A x₀ + η`` (``A`` m×n with i.i.d. N(0, 1/m) entries, ``η`` scaled so
that ``sqrt(E‖η‖²) = 0.1``), recovered by L-BFGS on

    min_z ‖A G(z) − y‖² + γ ‖z‖²

from each initialisation ``z₀`` below, for a sweep of ``γ``:

* ``zeros``: ``z₀ = 0`` (the paper's default; algorithmic regularisation);
* ``normal(σ)``: ``z₀ ~ N(0, σ² I)`` (the paper uses σ = 0.1 and 0.7); one draw per image,
  the same direction for every σ, so only the norm ``‖z₀‖ ≈ σ√n`` changes;
* ``lasso-wavelet``: ``z₀ = G⁻¹(clip(x_L))``, ``x_L`` the Lasso-wavelet recovery from ``y``
  (FISTA, λ = 0.01 in flowinv's ``½‖AΨw − y‖² + λ‖w‖₁``, i.e. 0.02 in Asim et al.'s
  unhalved ``‖AΦz − y‖² + λ‖z‖₁``, whose CS baseline uses 0.01; exactly
  ``flowinv.recover(init="lasso-wavelet")``; the Lasso is solved once per ratio and its image
  passed as ``x0`` so it is not recomputed for every γ);
* ``null-space``: ``z₀ = G⁻¹(x_ns)`` with ``x_ns`` the truth perturbed by a random point of the
  null space of ``A``: ``x_ns = x₀ + p``, ``p = (I − A⁺A) ε``, ``‖p‖ = s·√n``. The priors
  shipped here preprocess pixels with a logit, so ``G⁻¹`` is only defined on ``(0, 1)ⁿ`` and
  ``x₀ + p`` (which leaves ``[0, 1]`` wherever ``x₀`` is saturated, e.g. MNIST's background)
  has no latent at all; ``flowinv.recover(init="null-space")`` clips ``x₀ + p`` to ``[0, 1]``,
  which removes much of ``p`` on MNIST and leaves a start that no longer fits the measurements
  (its ``‖p‖`` is ``init_scale·√n``, default 0.1). We therefore project ``x₀ + p`` onto the
  intersection of the measurement-consistent affine space ``{x : A x = A x₀}`` and the box
  ``[0, 1]ⁿ`` by alternating projections (POCS; both sets are convex and ``x₀`` lies in both,
  so the iterates converge to a point of the intersection), ending with the box projection.
  The remaining inconsistency ``‖A(x_ns − x₀)‖`` is reported (column ``init_datafit`` of
  ``latents.csv`` holds ``‖A G(z₀) − y‖`` for every init).
* ``inverse-train``: ``z₀ = G⁻¹(x_tr)`` of a random *training* image: a natural image that is
  not consistent with the measurements (not in the paper; the brief asked for an inverse init
  of a random training image besides the paper's Lasso one, so both are run).

The paper runs 64 px CelebA at m/n ≈ 0.5 and finds ``γ = 0`` from ``z₀ = 0`` best (Fig. 6);
larger ``‖z₀‖`` gives larger ``‖ẑ‖`` and lower PSNR, and ``‖z_t‖`` grows monotonically over
the iterations (preprint Fig. 5). Nothing here is tuned on the test images: every setting is
reported.

Outputs under ``--out``: ``results.csv`` (tidy; ``method`` = ``glow-cs-m<M>``, param γ,
setting the init), ``summary.csv`` (mean over images per m × init × γ), ``latents.csv`` (per
image: ``‖z₀‖``, ``‖ẑ‖``, PSNR of the init ``G(z₀)`` and of the recovery, data fits),
``znorm_history.csv`` (``‖z_t‖`` per iteration at the smallest γ; iteration 0 is ``z₀``),
``psnr_vs_gamma.png``, ``znorm_vs_iteration.png``, ``psnr_vs_z0norm.png``, ``samples_m*.png``.
``--gan`` is accepted for a uniform command line and not used.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common

INITS = ("zeros", "normal", "lasso-wavelet", "null-space", "inverse-train")
QUICK = dict(num_images=3, maxiter=60, ratios=(0.25,), gammas=(0.0, 1e-4, 1e-2),
             normal_scales=(0.1, 0.7))
FULL = dict(num_images=12, maxiter=300, ratios=(0.1, 0.25, 0.5),
            gammas=(0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 1.0),
            normal_scales=(0.05, 0.1, 0.3, 0.7, 1.0))
LASSO_LAM = 0.01  # the default of flowinv.recover(init="lasso-wavelet")


@dataclasses.dataclass(frozen=True)
class Config:
    dataset: str = "mnist"
    prior: str | None = None
    num_images: int = QUICK["num_images"]
    maxiter: int = QUICK["maxiter"]
    ratios: tuple[float, ...] = QUICK["ratios"]
    gammas: tuple[float, ...] = QUICK["gammas"]
    inits: tuple[str, ...] = INITS
    normal_scales: tuple[float, ...] = QUICK["normal_scales"]
    null_scale: float = 0.2
    pocs_iters: int = 30
    seed: int = 0
    out: str = "results/init_study"
    progress: bool = True


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.init_study", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    common.add_common_arguments(p, "init_study", quick=QUICK, full=FULL, uses_gan=False)
    p.add_argument("--ratios", type=common.float_list, default=None,
                   help="undersampling ratios m/n, comma separated, in (0, 1]")
    p.add_argument("--gammas", type=common.float_list, default=None,
                   help="γ values of the γ‖z‖² penalty, comma separated")
    p.add_argument("--inits", default=None,
                   help=f"comma-separated subset of {','.join(INITS)} (default all)")
    p.add_argument("--normal-scales", type=common.float_list, default=None,
                   help="σ of the N(0, σ²I) initialisations, comma separated, > 0")
    p.add_argument("--null-scale", type=common.nonnegative_float, default=None,
                   help="null-space perturbation size s, ‖p‖ = s·√n before the box "
                        "projection (default 0.2; 0 starts at the truth, an oracle)")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    pick = lambda v, k: preset[k] if v is None else v
    ratios = pick(args.ratios, "ratios")
    if any(not 0 < r <= 1 for r in ratios):
        raise ValueError(f"--ratios must lie in (0, 1], got {ratios}")
    scales = pick(args.normal_scales, "normal_scales")
    if any(s <= 0 for s in scales):
        raise ValueError(f"--normal-scales must be > 0 (use the 'zeros' init for σ = 0), "
                         f"got {scales}")
    inits = INITS
    if args.inits:
        inits = common.list_entries(args.inits, "--inits", INITS)
    common.note_unused_gan(args, "init_study")
    return Config(
        dataset=args.dataset, prior=args.prior, num_images=pick(args.num_images, "num_images"),
        maxiter=pick(args.maxiter, "maxiter"), ratios=ratios,
        gammas=tuple(sorted(pick(args.gammas, "gammas"))), inits=inits, normal_scales=scales,
        null_scale=0.2 if args.null_scale is None else args.null_scale, seed=args.seed,
        out=args.out, progress=not args.no_progress)


# ---- initial images ------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("iters",))
def null_space_images(key: jax.Array, op, x_true: jax.Array, scale: float,
                      iters: int) -> jax.Array:
    r"""Measurement-consistent images in ``[0, 1]ⁿ`` near ``x₀ + p``, ``p`` in the null space.

    ``p = P_N ε`` with :math:`P_N = I - A^T(AA^T)^{-1}A` and ``ε ~ N(0, I)``, rescaled so that
    :math:`\|p\| = s\sqrt n`; then ``iters`` rounds of alternating projections (POCS)

    .. math:: x \leftarrow \Pi_{[0,1]^n}(x), \qquad
              x \leftarrow x_0 + P_N (x - x_0)

    onto the box and onto the affine set :math:`\{x : Ax = Ax_0\}`, ending with the box
    projection so that ``G⁻¹`` of the result exists for logit-preprocessed flows.

    Args:
      key: PRNG key (split per image).
      op: a linear operator with ``A``/``A_adjoint`` (one for the whole batch).
      x_true: ``(B, H, W, C)`` true images in ``[0, 1]``.
      scale: ``s`` above.
      iters: POCS rounds.

    Returns:
      ``(B, H, W, C)`` images in ``[0, 1]``.
    """
    from flowinv.recover import null_space_projection

    n = math.prod(x_true.shape[1:])

    def one(k, x0):
        p = null_space_projection(op, jax.random.normal(k, x0.shape, x0.dtype))
        p = p * scale * jnp.sqrt(jnp.asarray(n, x0.dtype)) / jnp.maximum(jnp.linalg.norm(p),
                                                                          1e-12)

        def body(_, x):
            x = jnp.clip(x, 0.0, 1.0)
            return x0 + null_space_projection(op, x - x0)

        return jnp.clip(jax.lax.fori_loop(0, iters, body, x0 + p), 0.0, 1.0)

    return jax.vmap(one)(jax.random.split(key, x_true.shape[0]), x_true)


@functools.partial(jax.jit, static_argnames=("flow",))
def _forward_batch(flow, params, zs):
    """``G(z_b)`` for a batch ``(B, n)``."""
    return jax.vmap(lambda z: flow.forward(params, z)[0])(zs)


def _training_images(config: Config, shape, count: int, rng: np.random.Generator,
                     test: np.ndarray | None = None):
    """``count`` random training images (other test images for test-only datasets); ``test``:
    the run's test images, if already loaded."""
    pool = common.load_train_images(config.dataset, shape, max(64, count), config.num_images,
                                    test=test, purpose="drawing 'inverse-train' starts")
    if len(pool) == 0:
        raise ValueError(f"dataset {config.dataset!r} has no images left for 'inverse-train'")
    idx = rng.choice(len(pool), size=count, replace=len(pool) < count)
    return np.asarray(pool[idx], np.float32)


def _init_names(config: Config) -> dict[str, float | None]:
    """Setting name -> σ of the normal inits (``None`` for the others), in run order."""
    names = {}
    for init in config.inits:
        if init == "normal":
            names.update({f"normal({s:g})": float(s) for s in config.normal_scales})
        else:
            names[init] = None
    return names


# ---- the experiment ------------------------------------------------------------------------


def run(config: Config) -> dict:
    """Runs the study; returns ``{"rows": [...], "summary": [...], "out": path}``."""
    from tqdm.auto import tqdm

    import flowinv
    from flowinv import data, metrics, noise, operators
    from flowinv.baselines import classical
    from flowinv.recover import initial_latents, invert_images

    out, prior_name, flow, params = common.setup_run(config)
    shape, n = tuple(flow.image_shape), flow.dim
    test = data.load_dataset(config.dataset, "test", image_shape=shape,
                             limit=config.num_images)[: config.num_images]
    nt = len(test)
    truth = jnp.asarray(test)
    key = jax.random.PRNGKey(config.seed)
    rng = np.random.default_rng(config.seed)
    train_imgs = (_training_images(config, shape, nt, rng, test)
                  if "inverse-train" in config.inits else None)
    inverse = lambda xs: invert_images(flow, params, xs)[0]
    generate = lambda zs: _forward_batch(flow, params, zs)
    names = _init_names(config)
    g0 = min(config.gammas)  # the histories and sample sheets are shown at the smallest γ
    # G⁻¹-type inits share one recover call per γ (their batches are concatenated)
    inv_names = [nm for nm in ("lasso-wavelet", "null-space", "inverse-train") if nm in names]

    table = common.ResultTable("init_study", config.dataset, prior_name)
    latents, histories, sheets = [], [], {}
    jobs = [(r, g) for r in config.ratios for g in config.gammas]
    bar = tqdm(total=len(jobs) * (len([nm for nm in names if nm not in inv_names])
                                  + bool(inv_names)),
               desc="init study", disable=not config.progress)
    for ratio in config.ratios:
        m = max(1, int(round(ratio * n)))
        k_op, k_noise, k_init, k_ns = jax.random.split(jax.random.fold_in(key, m), 4)
        op = operators.gaussian_cs(k_op, shape, m)
        eta = noise.cs_gaussian(m)
        y = jax.vmap(op)(truth) + jax.vmap(lambda k, m=m, eta=eta: eta.sample(k, (m,)))(
            jax.random.split(k_noise, nt))

        # initial latents of every init (for ‖z₀‖ and the init's own PSNR); the recover calls
        # below rebuild exactly these from the same arguments
        init_imgs = {}
        if "lasso-wavelet" in names:
            xl = jax.vmap(lambda yy, op=op: classical.lasso_cs(yy, op, basis="wavelet",
                                                               lam=LASSO_LAM))(y)
            init_imgs["lasso-wavelet"] = jnp.clip(xl, 0.0, 1.0)
        if "null-space" in names:
            init_imgs["null-space"] = null_space_images(k_ns, op, truth, config.null_scale,
                                                        config.pocs_iters)
        if "inverse-train" in names:
            init_imgs["inverse-train"] = jnp.asarray(train_imgs)
        z0 = {}
        for nm in names:
            if nm == "zeros":
                z0[nm] = jnp.zeros((nt, n), truth.dtype)
            elif nm.startswith("normal("):
                z0[nm] = initial_latents(flow, params, y, op, init="normal", key=k_init,
                                         init_scale=names[nm], x0=None, dim=n)
            else:
                z0[nm] = inverse(init_imgs[nm])
        x_init = {nm: np.asarray(generate(z)) for nm, z in z0.items()}

        for gamma in config.gammas:
            rec = {}
            for nm in names:
                if nm in inv_names:
                    continue
                with common.SolveClock() as t:
                    if nm == "zeros":
                        r = flowinv.recover((flow, params), y, operator=op, gamma=gamma,
                                            init="zeros", maxiter=config.maxiter,
                                            chunk_size=common.chunk_size())
                    else:
                        r = flowinv.recover((flow, params), y, operator=op, gamma=gamma,
                                            init="normal", init_scale=names[nm],
                                            key=k_init, maxiter=config.maxiter,
                                            chunk_size=common.chunk_size())
                    r = jax.block_until_ready(r)
                rec[nm] = (r, t.seconds)
                bar.update()
            if inv_names:
                x0 = jnp.concatenate([init_imgs[nm] for nm in inv_names])
                with common.SolveClock() as t:
                    r = flowinv.recover((flow, params), jnp.tile(y, (len(inv_names), 1)),
                                        operator=op, gamma=gamma, init="inverse", x0=x0,
                                        maxiter=config.maxiter, chunk_size=common.chunk_size())
                    r = jax.block_until_ready(r)
                for j, nm in enumerate(inv_names):
                    rec[nm] = (jax.tree.map(lambda a, j=j: a[j * nt:(j + 1) * nt], r),
                               t.seconds / len(inv_names))
                bar.update()

            for nm in names:
                r, seconds = rec[nm]
                x_hat = np.clip(np.asarray(r.x), 0, 1)
                psnr = metrics.batch_psnr(x_hat, test)
                table.add(method=f"glow-cs-m{m}", psnr=psnr, ssim=metrics.batch_ssim(x_hat, test),
                          seconds=seconds, param_name="gamma", param_value=gamma,
                          setting_name="init", setting_value=nm, image_ids=range(nt))
                z0n = np.linalg.norm(np.asarray(z0[nm]), axis=1)
                zhn = np.linalg.norm(np.asarray(r.z), axis=1)
                init_psnr = metrics.batch_psnr(x_init[nm], test)
                fit0 = _datafit(op, x_init[nm], y)
                fit = _datafit(op, r.x, y)
                for i in range(nt):
                    latents.append(dict(
                        m=m, ratio=ratio, init=nm, gamma=gamma, image_id=i,
                        z0_norm=round(float(z0n[i]), 4), zhat_norm=round(float(zhn[i]), 4),
                        init_psnr=round(float(init_psnr[i]), 4),
                        psnr=round(float(psnr[i]), 4), init_datafit=round(float(fit0[i]), 5),
                        datafit=round(float(fit[i]), 5), loss=float(r.loss[i]),
                        iterations=int(r.iterations[i]), diverged=bool(r.diverged[i])))
                if gamma == g0:
                    hist = np.asarray(r.znorm_history)
                    for i in range(nt):
                        histories.append((m, nm, i, np.concatenate([[z0n[i]], hist[i]])))
                    sheets.setdefault(m, {})[nm] = x_hat
        for nm in ("lasso-wavelet", "null-space"):
            sheets.setdefault(m, {})[f"init:{nm}"] = x_init.get(nm)
    bar.close()

    table.write(out / "results.csv")
    common.write_csv(out / "latents.csv", latents)
    common.write_csv(out / "znorm_history.csv", [
        dict(m=m, init=nm, image_id=i, iteration=t, znorm=round(float(v), 5))
        for m, nm, i, h in histories for t, v in enumerate(h) if np.isfinite(v)])
    summary = _summarise(table.rows, latents, names)
    common.write_csv(out / "summary.csv", summary)
    _plot_psnr_vs_gamma(out / "psnr_vs_gamma.png", summary, config, prior_name)
    _plot_histories(out / "znorm_vs_iteration.png", histories, latents, names, config,
                    prior_name)
    _plot_vs_z0(out / "psnr_vs_z0norm.png", latents, names, config, prior_name)
    for m, cols in sheets.items():
        columns = [("truth", test)]
        columns += [(f"{nm} G(z0)", cols[f"init:{nm}"]) for nm in ("lasso-wavelet", "null-space")
                    if cols.get(f"init:{nm}") is not None]
        columns += [(nm, cols[nm]) for nm in names if nm in cols]
        common.sample_sheet(out / f"samples_m{m}.png", columns,
                            f"CS, {config.dataset}, m={m} of n={n}, γ={g0:g}: "
                            f"recoveries per init")
    print(f"\nInitialisation study, compressed sensing, prior {prior_name}, n={n}, "
          f"{common.count(nt, 'test image')}, {config.maxiter} L-BFGS iterations; "
          "means over images:")
    print(common.format_table([{**r, "gamma": f"{r['gamma']:g}"} for r in summary]))
    print(f"\nwrote {out}/results.csv, summary.csv, latents.csv, znorm_history.csv, "
          "psnr_vs_gamma.png, znorm_vs_iteration.png, psnr_vs_z0norm.png, samples_m*.png")
    return {"rows": table.rows, "summary": summary, "out": str(out)}


@jax.jit
def _datafit_jit(op, x, y):
    return jax.vmap(lambda xx, yy: jnp.linalg.norm(op(xx) - yy))(x, y)


def _datafit(op, x, y) -> np.ndarray:
    """``‖A x_b − y_b‖`` per image of a batch (one compilation per shape)."""
    return np.asarray(_datafit_jit(op, jnp.asarray(x), y))


def _summarise(rows: list[dict], latents: list[dict], names: dict) -> list[dict]:
    """Mean over images per (m, init, γ), in the order m, init (as run), γ."""
    groups: dict = {}
    for r, lat in zip(rows, latents, strict=True):  # both appended in the same order
        groups.setdefault((lat["m"], lat["init"], lat["gamma"]), []).append((r, lat))
    out = []
    order = {nm: i for i, nm in enumerate(names)}
    for (m, nm, g), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], order[kv[0][1]],
                                                                 kv[0][2])):
        col = lambda k, rs=rs: np.array([lat[k] for _, lat in rs], float)
        psnr = np.array([r["psnr"] for r, _ in rs], float)
        out.append(dict(
            m=m, ratio=rs[0][1]["ratio"], init=nm, gamma=g,
            psnr=round(float(np.mean(psnr)), 2), psnr_std=round(float(np.std(psnr)), 2),
            ssim=round(float(np.mean([r["ssim"] for r, _ in rs])), 3),
            init_psnr=round(float(np.mean(col("init_psnr"))), 2),
            z0_norm=round(float(np.mean(col("z0_norm"))), 2),
            zhat_norm=round(float(np.mean(col("zhat_norm"))), 2),
            init_datafit=round(float(np.mean(col("init_datafit"))), 4),
            datafit=round(float(np.mean(col("datafit"))), 4),
            diverged=int(sum(lat["diverged"] for _, lat in rs))))
    return out


def _plt():
    import matplotlib.pyplot as plt

    return plt


def _plot_psnr_vs_gamma(path, summary, config: Config, prior: str) -> None:
    plt = _plt()
    ms = sorted({r["m"] for r in summary})
    fig, axes = plt.subplots(1, len(ms), figsize=(max(6.5, 5 * len(ms)), 4.2), squeeze=False)
    pos = [g for g in config.gammas if g > 0]
    floor = min(pos) / 10 if pos else 1e-6  # γ = 0 is drawn one decade left of the smallest γ
    for ax, m in zip(axes[0], ms, strict=True):
        for nm in dict.fromkeys(r["init"] for r in summary):
            pts = [(r["gamma"], r["psnr"], r["psnr_std"]) for r in summary
                   if r["m"] == m and r["init"] == nm]
            g = np.array([max(p[0], floor) for p in pts])
            ax.errorbar(g, [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o-", ms=3,
                        capsize=2, label=nm)
        ax.set_xscale("log")
        ax.set_xlabel(f"γ (γ=0 drawn at {floor:g})")
        ax.set_ylabel("PSNR (dB)")
        ratio = next(r["ratio"] for r in summary if r["m"] == m)
        ax.set_title(f"m={m} (m/n={ratio:g})")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"CS PSNR vs γ per initialisation ({config.dataset}, {prior})\n"
                 "mean ± std over images", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_histories(path, histories, latents, names, config: Config, prior: str) -> None:
    """Mean ``‖z_t‖`` over images; a stopped solve keeps its last value (its ‖z‖ is final).

    Solves whose loss became non-finite (``diverged``; the result is then the best finite
    iterate) are counted in the legend.
    """
    plt = _plt()
    g0 = min(config.gammas)
    ms = sorted({h[0] for h in histories})
    fig, axes = plt.subplots(1, len(ms), figsize=(max(6.5, 5 * len(ms)), 4.2), squeeze=False)
    for ax, m in zip(axes[0], ms, strict=True):
        for nm in names:
            hs = [h for mm, n_, _, h in histories if mm == m and n_ == nm]
            if not hs:
                continue
            filled = np.stack([_forward_fill(h) for h in hs])
            div = sum(r["diverged"] for r in latents
                      if r["m"] == m and r["init"] == nm and r["gamma"] == g0)
            label = f"{nm} ({div}/{len(hs)} diverged)" if div else nm
            ax.plot(np.arange(filled.shape[1]), filled.mean(0), label=label)
        ax.set_xlabel("iteration (0 = initialisation)")
        ax.set_ylabel("‖z_t‖ (mean over images)")
        ax.set_title(f"m={m}, γ={g0:g}")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Norm of the latent iterates ({config.dataset}, {prior})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _forward_fill(h: np.ndarray) -> np.ndarray:
    h = np.array(h, float)
    for t in range(1, len(h)):
        if not np.isfinite(h[t]):
            h[t] = h[t - 1]
    return h


def _plot_vs_z0(path, latents, names, config: Config, prior: str) -> None:
    """PSNR and ``‖ẑ‖`` against ``‖z₀‖`` at the smallest γ, one point per image and init."""
    plt = _plt()
    g0 = min(config.gammas)
    ms = sorted({r["m"] for r in latents})
    fig, axes = plt.subplots(len(ms), 2, figsize=(10, 3.8 * len(ms)), squeeze=False)
    for row, m in enumerate(ms):
        for nm in names:
            pts = [r for r in latents if r["m"] == m and r["init"] == nm and r["gamma"] == g0]
            z0 = [r["z0_norm"] for r in pts]
            axes[row, 0].scatter(z0, [r["psnr"] for r in pts], s=14, label=nm)
            axes[row, 1].scatter(z0, [r["zhat_norm"] for r in pts], s=14, label=nm)
        axes[row, 0].set_ylabel("PSNR of G(ẑ) (dB)")
        axes[row, 1].set_ylabel("‖ẑ‖")
        for ax in axes[row]:
            ax.set_xlabel("‖z₀‖")
            ax.set_title(f"m={m}, γ={g0:g}")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Effect of the initialisation norm ({config.dataset}, {prior})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    return run(common.parse_config(build_parser(), config_from_args, argv))


if __name__ == "__main__":
    main()
