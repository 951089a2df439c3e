"""Theorem 1 of Asim et al. (ICML 2020), checked by Monte Carlo for a linear invertible model.

For ``x₀ = G z₀`` (``z₀ ~ N(0, I)``), ``y = A x₀`` with ``A ∈ Rᵐˣⁿ`` i.i.d. ``N(0, 1)`` and the
maximum likelihood estimate ``x̂ = G Gᵀ Aᵀ (A G Gᵀ Aᵀ)⁻¹ y``, the theorem states, for
``4 ≤ m < n``::

    Σ_{i>m} σᵢ²  ≤  E_A E_{x₀} ‖x̂ − x₀‖²  ≤  m Σ_{i>m−2} σᵢ².

For three spectra ``σᵢ ∝ i⁻¹``, ``i^(−1/2)`` and ``0.9^(i−1)`` (all with ``σ₁ = 1``) and
``G = U diag(σ) Vᵀ`` with random orthogonal ``U``, ``V``, the middle term is estimated by Monte
Carlo over a sweep of ``m`` (float64). A *violation* is a Monte Carlo mean outside the bounds by
more than 3 standard errors.

Writes ``results.csv`` (spectrum, m, n, mc_error, mc_stderr, lower, upper, violation),
``summary.csv`` (one row per spectrum) and ``theorem1.png`` (log-log, bounds shaded) under
``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import common
from flowinv import theory

SPECTRA = {
    "inv_i": ("σᵢ ∝ i⁻¹", lambda i: 1.0 / i),
    "inv_sqrt_i": ("σᵢ ∝ i^(−1/2)", lambda i: i ** -0.5),
    "geom_0.9": ("σᵢ ∝ 0.9^i", lambda i: 0.9 ** (i - 1)),
}
COLUMNS = ("spectrum", "m", "n", "mc_error", "mc_stderr", "lower", "upper", "violation")
QUICK = dict(n=64, trials=2000, num_m=10)
FULL = dict(n=256, trials=2000, num_m=14)
Z_VIOLATION = 3.0  # a bound is violated when the mean is beyond it by > 3 standard errors


@dataclasses.dataclass(frozen=True)
class Config:
    n: int = QUICK["n"]
    ms: tuple[int, ...] | None = None  # None: default_ms(n, num_m)
    num_m: int = QUICK["num_m"]
    spectra: tuple[str, ...] = tuple(SPECTRA)
    trials: int = QUICK["trials"]
    batch_size: int = 500
    seed: int = 0
    out: str | None = "results/theorem1"  # None: write nothing
    progress: bool = True


def spectrum(name: str, n: int) -> np.ndarray:
    """Singular values ``σ₁ = 1 ≥ … ≥ σₙ`` of the named spectrum (see :data:`SPECTRA`)."""
    if name not in SPECTRA:
        raise ValueError(f"spectrum must be one of {sorted(SPECTRA)}, got {name!r}")
    return SPECTRA[name][1](np.arange(1, n + 1, dtype=np.float64))


def default_ms(n: int, num: int) -> tuple[int, ...]:
    """About ``num`` log-spaced ``m`` in the theorem's range ``4 ≤ m < n``, ending at ``n − 1``."""
    if n < 5:
        raise ValueError(f"n must be >= 5 so that 4 <= m < n is possible, got {n}")
    ms = np.unique(np.round(np.geomspace(4, n - 1, num)).astype(int))
    return tuple(int(m) for m in ms)


def violation(mean: float, stderr: float, lower: float, upper: float) -> str:
    """``"below_lower"``/``"above_upper"`` when beyond a bound by > 3 stderr, else ``"none"``."""
    if mean + Z_VIOLATION * stderr < lower:
        return "below_lower"
    if mean - Z_VIOLATION * stderr > upper:
        return "above_upper"
    return "none"


def run(config: Config) -> dict:
    """Runs the sweep; returns ``{"rows", "summary", "seconds", "files"}``."""
    from tqdm.auto import tqdm

    ms = config.ms if config.ms is not None else default_ms(config.n, config.num_m)
    bad = [m for m in ms if not 1 <= m <= config.n]
    if bad:
        raise ValueError(f"ms must lie in [1, n = {config.n}], got {bad}")
    for name in config.spectra:
        spectrum(name, 1)  # validates the name before any work
    start = time.perf_counter()
    root = jax.random.PRNGKey(config.seed)
    key_g, key_mc = jax.random.split(root)
    rows: list[dict] = []
    with jax.enable_x64(True):
        jobs = [(s, m) for s in range(len(config.spectra)) for m in ms]
        models = {}
        for s, m in tqdm(jobs, desc="theorem 1", disable=not config.progress):
            name = config.spectra[s]
            sigma = jnp.asarray(spectrum(name, config.n), jnp.float64)
            if s not in models:
                models[s] = theory.linear_model(jax.random.fold_in(key_g, s), sigma)
            key = jax.random.fold_in(jax.random.fold_in(key_mc, s), m)
            mean, se = theory.expected_error(models[s], m, key, config.trials,
                                             batch_size=config.batch_size)
            lower, upper = theory.theorem1_bounds(sigma, m)
            mean, se, lower, upper = (float(v) for v in (mean, se, lower, upper))
            rows.append(dict(spectrum=name, m=m, n=config.n, mc_error=mean, mc_stderr=se,
                             lower=lower, upper=upper,
                             violation=violation(mean, se, lower, upper)))
    seconds = time.perf_counter() - start
    summary = summarise(rows, config.trials)
    files = {}
    if config.out is not None:
        out = pathlib.Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        files = dict(results=out / "results.csv", summary=out / "summary.csv",
                     plot=out / "theorem1.png")
        common.write_csv(files["results"], rows)
        common.write_csv(files["summary"], summary)
        plot(files["plot"], rows)
    return dict(rows=rows, summary=summary, seconds=seconds, files=files)


def summarise(rows: list[dict], trials: int) -> list[dict]:
    """One row per spectrum: how close the Monte Carlo error gets to each bound."""
    out = []
    for name in dict.fromkeys(r["spectrum"] for r in rows):
        rs = [r for r in rows if r["spectrum"] == name]
        lo = [r["mc_error"] / r["lower"] for r in rs if r["lower"] > 0]
        out.append(dict(
            spectrum=name, n=rs[0]["n"], num_m=len(rs), trials=trials,
            min_error_over_lower=min(lo) if lo else float("nan"),
            max_error_over_upper=max(r["mc_error"] / r["upper"] for r in rs),
            # m = n recovers x0 exactly: an error and its s.e. of 0 have no relative s.e.
            max_rel_stderr=max((r["mc_stderr"] / r["mc_error"] if r["mc_error"] else 0.0)
                               for r in rs),
            violations=sum(r["violation"] != "none" for r in rs)))
    return out


def plot(path: pathlib.Path, rows: list[dict]) -> None:
    """Log-log MC error (± 2 stderr) against ``m``, the band between the bounds shaded."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = list(dict.fromkeys(r["spectrum"] for r in rows))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rs = sorted((r for r in rows if r["spectrum"] == name), key=lambda r: r["m"])
        col = {k: np.array([r[k] for r in rs]) for k in COLUMNS}
        m = col["m"]
        get = col.__getitem__
        ax.fill_between(m, get("lower"), get("upper"), color="C0", alpha=0.2,
                        label=r"Theorem 1: $[\sum_{i>m}\sigma_i^2,\ m\sum_{i>m-2}\sigma_i^2]$")
        ax.plot(m, get("lower"), "C0--", lw=0.8)
        ax.plot(m, get("upper"), "C0--", lw=0.8)
        ax.errorbar(m, get("mc_error"), yerr=2 * get("mc_stderr"), fmt="o-", color="C3", ms=3,
                    lw=1, label=r"Monte Carlo $E\|\hat x-x_0\|^2$")
        bad = get("violation") != "none"
        if bad.any():
            ax.plot(m[bad], get("mc_error")[bad], "kx", ms=8, label="violation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ticks = [t for t in 2 ** np.arange(0, 20) if m.min() <= t <= m.max()] + [int(m.max())]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("measurements m")
        ax.set_ylabel("expected squared error")
        ax.set_title(f"{SPECTRA[name][0] if name in SPECTRA else name}, n = {rs[0]['n']}",
                     fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments.theorem1", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true",
                   help=f"larger setting (n={FULL['n']}, {FULL['trials']} trials, "
                        f"{FULL['num_m']} values of m; default quick: n={QUICK['n']}, "
                        f"{QUICK['trials']} trials)")
    p.add_argument("--n", type=common.positive_int, default=None,
                   help=f"signal dimension (default: quick {QUICK['n']}, --full {FULL['n']})")
    p.add_argument("--ms", default=None,
                   help="measurement counts, comma separated (default: log-spaced in [4, n-1])")
    p.add_argument("--trials", type=common.positive_int, default=None,
                   help=f"Monte Carlo trials per (spectrum, m) (default: quick "
                        f"{QUICK['trials']}, --full {FULL['trials']})")
    p.add_argument("--spectra", default=",".join(SPECTRA),
                   help=f"comma separated, from {', '.join(SPECTRA)} (default all)")
    p.add_argument("--seed", type=common.seed, default=0,
                   help="PRNG seed, in [0, 2**32) (default 0)")
    p.add_argument("--out", default="results/theorem1",
                   help="output folder (default results/theorem1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    preset = FULL if args.full else QUICK
    n = args.n or preset["n"]
    ms = None
    if args.ms is not None:
        entries = common.list_entries(args.ms, "--ms")
        try:
            ms = tuple(sorted({int(t) for t in entries}))
        except ValueError:
            raise ValueError(f"--ms must be comma-separated integers, got {args.ms!r}") from None
        if not ms or not all(1 <= m <= n for m in ms):
            raise ValueError(f"--ms must be integers in [1, n = {n}], got {args.ms!r}")
    elif n < 5:
        raise ValueError(f"--n must be >= 5 for the default m sweep (4 <= m < n), got {n}")
    spectra = common.list_entries(args.spectra, "--spectra", SPECTRA)
    trials = args.trials or preset["trials"]
    if trials < 2:
        raise ValueError(f"--trials must be >= 2 (for a standard error), got {trials}")
    return Config(n=n, ms=ms, num_m=preset["num_m"], spectra=spectra, trials=trials,
                  seed=args.seed, out=args.out, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> dict:
    result = run(common.parse_config(build_parser(), config_from_args, argv))
    print(common.format_table([{k: _cell(r[k]) for k in COLUMNS} for r in result["rows"]]))
    print()
    print(common.format_table(result["summary"]))
    bad = [r for r in result["rows"] if r["violation"] != "none"]
    if bad:
        print(f"\nVIOLATION of Theorem 1 (beyond a bound by > {Z_VIOLATION:g} stderr) at "
              + ", ".join(f"{r['spectrum']} m={r['m']} ({r['violation']})" for r in bad))
    else:
        inside = sum(r["lower"] <= r["mc_error"] <= r["upper"] for r in result["rows"])
        print(f"\nno violation: no Monte Carlo mean lies outside [lower, upper] by more than "
              f"{Z_VIOLATION:g} standard errors ({inside}/{len(result['rows'])} lie inside)")
    print(f"{result['seconds']:.1f} s; wrote {', '.join(str(f) for f in result['files'].values())}")
    return result


def _cell(v):
    return f"{v:.4g}" if isinstance(v, float) else v


if __name__ == "__main__":
    main()
