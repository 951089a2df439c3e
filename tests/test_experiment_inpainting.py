"""Smoke tests of ``experiments.inpainting`` and ``experiments.subpixel`` on a tiny prior.

Each experiment runs once (module-scoped fixtures) on 8×8 digits with a one-step Glow and 3
solver iterations; the tests then check the files and tables it wrote. The CLI tests never
reach a solve.
"""

from __future__ import annotations

import csv
import math

import jax
import numpy as np
import pytest

import flowinv
from experiments import common, inpainting, subpixel
from flowinv import checkpoints, data


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    """A one-level, one-step Glow on 8×8×1 images, data-initialised, saved as a checkpoint."""
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    x = data.load_dataset("digits", "train", limit=16)
    params = flow.init(jax.random.PRNGKey(0), x)
    path = tmp_path_factory.mktemp("prior") / "glow-tiny"
    checkpoints.save(path, params, {"kind": "flow",
                                    "architecture": checkpoints.flow_config(flow)})
    return str(path)


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def inpainting_result(tiny_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("inpainting")
    config = inpainting.Config(
        dataset="digits", ood_dataset="lfw", prior=tiny_prior, gan="none",
        masks=("box", "random"), fractions=(0.25, 0.5), num_images=2, val_images=1,
        maxiter=3, gammas=(0.0, 0.1), batch_size=8, out=str(out), progress=False)
    return config, inpainting.run(config)


@pytest.fixture(scope="module")
def subpixel_result(tiny_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("subpixel")
    config = subpixel.Config(dataset="digits", prior=tiny_prior, num_images=2, val_images=1,
                             maxiter=3, betas=(0.1, 1.0), gammas=(0.0,), out=str(out),
                             progress=False)
    return config, subpixel.run(config)


def test_inpainting_results_csv(inpainting_result):
    config, result = inpainting_result
    rows = _read(f"{result['out']}/results.csv")
    assert tuple(rows[0]) == common.RESULT_COLUMNS
    # 2 test sets × 4 mask settings × 2 images × (2 γ values + the masked input)
    assert len(rows) == len(result["rows"]) == 2 * 4 * 2 * 3
    assert {r["dataset"] for r in rows} == {"digits", "lfw"}
    assert {r["setting_value"] for r in rows} == {"box:0.25", "box:0.5", "random:0.25",
                                                  "random:0.5"}
    assert {r["method"] for r in rows} == {"masked", "glow"}
    assert all(math.isfinite(float(r["psnr"])) and math.isfinite(float(r["ssim"]))
               for r in rows)


def test_inpainting_summary_and_figures(inpainting_result):
    config, result = inpainting_result
    summary = _read(f"{result['out']}/summary.csv")
    # per test set × mask setting: masked and glow (no DCGAN with gan="none")
    assert len(summary) == len(result["summary"]) == 2 * 4 * 2
    assert {r["test_set"] for r in summary} == {"in-dist:digits", "ood:lfw"}
    assert all(float(r["param_value"]) in config.gammas
               for r in summary if r["method"] == "glow")
    # γ ∈ {0, 0.1}: a pick of 0.1 is at the grid's high end; 0 is no edge (nothing is smaller)
    assert all(r["edge"] == ("high" if r["method"] == "glow" and float(r["param_value"]) == 0.1
                             else "") for r in summary)
    for name in ("psnr_vs_missing.png", "samples_in-dist_box.png", "samples_in-dist_random.png",
                 "samples_ood_box.png", "samples_ood_random.png"):
        path = f"{result['out']}/{name}"
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


def test_inpainting_comparison_is_recomputed_from_results_csv(inpainting_result):
    # without a DCGAN: Glow at its picked γ minus the masked input, per test set × mask setting
    config, result = inpainting_result
    rows = _read(f"{result['out']}/results.csv")
    comparison = _read(f"{result['out']}/comparison.csv")
    assert len(comparison) == 2 * 4
    assert {(c["method"], c["vs"]) for c in comparison} == {("glow", "masked")}
    picked = {(r["test_set"], r["mask"], r["missing"], r["method"]): r["param_value"]
              for r in result["summary"]}
    for c in comparison:
        spec = c["test_set"].split(":", 1)[1]
        gamma = picked[(c["test_set"], c["mask"], float(c["missing"]), "glow")]
        psnr = {(r["method"], r["param_value"], r["image_id"]): float(r["psnr"]) for r in rows
                if r["dataset"] == spec and r["setting_value"] == f"{c['mask']}:{c['missing']}"}
        d = [psnr[("glow", str(gamma), i)] - psnr[("masked", "", i)] for i in ("0", "1")]
        assert float(c["diff_db"]) == pytest.approx(np.mean(d), abs=0.006)
        assert float(c["se_db"]) == pytest.approx(abs(d[0] - d[1]) / 2, abs=0.006)


def test_inpainting_compares_each_side_at_its_own_picked_weight():
    """Glow − DCGAN, Glow − masked and DCGAN − masked per test set and mask setting, each at the
    weight the summary picked (an unpicked weight's rows are there to be ignored), and each set
    from its own table, even where two sets are the same dataset."""
    psnr = {("glow", 0.0): (20.0, 22.0), ("glow", 0.1): (0.0, 0.0),
            ("dcgan", 0.1): (19.0, 19.0), ("masked", ""): (10.0, 11.0)}

    def table(glow_shift):
        return common.ResultTable("inpainting", "digits", "p", [
            dict(method=m, param_value=w, setting_value="box:0.5", image_id=i,
                 psnr=v + (glow_shift if m == "glow" else 0.0))
            for (m, w), vals in psnr.items() for i, v in enumerate(vals)])

    tables = {"in-dist": table(0.0), "ood": table(1.0)}  # Glow 1 dB higher on "ood"
    sets = {"in-dist": ("digits", None), "ood": ("digits", None)}
    summary = [dict(test_set=f"{name}:digits", mask="box", missing=0.5, method=m,
                    param=p, param_value=w)
               for name in sets for m, p, w in (("masked", "", ""), ("glow", "γ=0.0", 0.0),
                                                ("dcgan", "λ=0.1", 0.1))]
    comparison = inpainting._compare(tables, summary, sets)
    assert [(c["test_set"], c["method"], c["vs"], c["diff_db"]) for c in comparison] == [
        (t, a, b, d + (shift if a == "glow" else 0.0))
        for t, shift in (("in-dist:digits", 0.0), ("ood:digits", 1.0))
        for a, b, d in (("glow", "dcgan", 2.0), ("glow", "masked", 10.5),
                        ("dcgan", "masked", 8.5))]
    assert comparison[0]["param"] == "γ=0.0" and comparison[0]["vs_param"] == "λ=0.1"


def test_inpainting_masks_hide_the_requested_fraction():
    key = jax.random.PRNGKey(0)
    box = inpainting.make_masks(key, (28, 28, 1), "box", 0.25, 3)
    assert box.shape == (3, 28, 28, 1)
    assert np.mean(1 - box) == pytest.approx(0.25)  # a 14×14 hole
    rnd = inpainting.make_masks(key, (28, 28, 3), "random", 0.25, 4)
    assert rnd.shape == (4, 28, 28, 3)
    assert np.all(rnd == rnd[..., :1])  # whole pixels go missing
    assert not np.array_equal(rnd[0], rnd[1])  # one mask per image
    # 4·784 Bernoulli pixels: standard error √(0.25·0.75/3136) ≈ 0.0077, so 0.04 is 5 of them;
    # kept and missing swapped would read 0.75
    assert abs(np.mean(1 - rnd) - 0.25) < 0.04


def test_inpainting_missing_gan_is_skipped(capsys):
    assert common.load_gan_or_none("/nonexistent/dcgan", "digits", (8, 8, 1)) is None
    assert "DCGAN baseline skipped" in capsys.readouterr().err


def test_solve_clock_separates_compilation():
    f = jax.jit(lambda x: x * 2.0 + 1.0)
    with common.SolveClock() as clock:
        np.asarray(f(np.arange(7.0)))
    assert clock.compile_seconds > 0
    assert clock.seconds >= 0
    assert clock.seconds + clock.compile_seconds == pytest.approx(clock.wall)


def test_solve_clock_counts_overlapping_compile_spans_once():
    """Nested compilation events (a jit inside a jit's tracing) overlap: their union counts,
    not their sum. Two spans of 20 ms overlapping by 10 ms: 30 ms, not 40."""
    import time

    with common.SolveClock() as clock:
        t0 = time.perf_counter()
        clock._listener(common._COMPILE_EVENT_PREFIX + "outer", t0, t0 + 0.02)
        clock._listener(common._COMPILE_EVENT_PREFIX + "inner", t0 + 0.01, t0 + 0.03)
        clock._listener("/jax/some/other/event", t0, t0 + 0.5)  # not compilation
        time.sleep(0.05)
    assert clock.compile_seconds == pytest.approx(0.03, abs=1e-9)
    assert clock.seconds == pytest.approx(clock.wall - 0.03, abs=1e-9)


def test_subpixel_outputs(subpixel_result):
    config, result = subpixel_result
    rows = _read(f"{result['out']}/results.csv")
    assert tuple(rows[0]) == common.RESULT_COLUMNS
    # 2 images × (2 β values + 1 γ value + the masked input)
    assert len(rows) == 2 * 4
    assert {r["method"] for r in rows} == {"masked", "map", "asim"}
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    summary = {r["method"]: r for r in _read(f"{result['out']}/summary.csv")}
    assert set(summary) == {"masked", "map", "asim"}
    assert float(summary["map"]["param_value"]) in config.betas
    # β ∈ {0.1, 1}: either pick is an end of the grid; Asim's single γ has none
    assert summary["map"]["edge"] == {"0.1": "low", "1.0": "high"}[summary["map"]["param_value"]]
    assert summary["asim"]["edge"] == summary["masked"]["edge"] == ""
    for r in (summary["map"], summary["asim"]):
        assert math.isfinite(float(r["psnr"]))
        assert 0 <= int(r["diverged"]) <= 2
        assert float(r["seconds_per_image"]) >= 0
    for name in ("psnr_vs_param.png", "samples.png"):
        with open(f"{result['out']}/{name}", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
    # comparison.csv: each pair at its picked weights, recomputed from results.csv
    comparison = _read(f"{result['out']}/comparison.csv")
    assert [(c["method"], c["vs"]) for c in comparison] == [
        ("map", "asim"), ("map", "masked"), ("asim", "masked")]
    psnr = {(r["method"], r["param_value"], r["image_id"]): float(r["psnr"]) for r in rows}
    for c in comparison:
        d = [psnr[(c["method"], summary[c["method"]]["param_value"], i)]
             - psnr[(c["vs"], summary[c["vs"]]["param_value"], i)] for i in ("0", "1")]
        assert float(c["diff_db"]) == pytest.approx(np.mean(d), abs=0.006)
        assert float(c["se_db"]) == pytest.approx(abs(d[0] - d[1]) / 2, abs=0.006)


@pytest.mark.parametrize("module, argv", [
    (inpainting, ["--fractions", "1.5"]),
    (inpainting, ["--fractions", "0"]),
    (inpainting, ["--masks", "oval"]),
    (inpainting, ["--num-images", "0"]),
    (inpainting, ["--gammas", "-1"]),
    (subpixel, ["--drop", "1"]),
    (subpixel, ["--noise-sigma", "0"]),
    (subpixel, ["--betas", "x"]),
    (subpixel, ["--maxiter", "-3"]),
    (subpixel, ["--solver", "newton"]),
])
def test_bad_cli_values_exit_2(module, argv, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and argv[0] in err  # the value of that flag, not an unknown flag
