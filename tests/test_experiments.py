"""Smoke tests of the denoise, compressed-sensing, theorem1 and train_gan experiments: each runs
end to end on a tiny prior and writes the tidy outputs every experiment promises; and the
compilation cache of the experiments' command lines."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flowinv
from experiments import common
from flowinv import checkpoints


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory):
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    params = flow.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(1),
                                                                 (8, 8, 8, 1)))
    path = tmp_path_factory.mktemp("prior") / "tiny-glow"
    checkpoints.save(path, params, {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    return str(path)


def _read(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _check_results(out, n_rows):
    rows = _read(out / "results.csv")
    assert tuple(rows[0]) == common.RESULT_COLUMNS
    assert len(rows) == n_rows
    assert all(math.isfinite(float(r["psnr"])) for r in rows)
    return rows


def test_denoise_runs_end_to_end(tiny_prior, tmp_path):
    from experiments import denoise

    config = denoise.Config(dataset="digits", prior=tiny_prior, gan="none", sigmas=(0.1,),
                            num_images=2, val_images=1, maxiter=3, gammas=(0.0, 0.1),
                            norm_gammas=(0.1,), reference_gammas=None, out=str(tmp_path),
                            progress=False)
    result = denoise.run(config)
    # per test image: bm3d + noisy at σ=0.1, glow-sq at σ∈{0, 0.1} × 2 γ (reference_gammas=None:
    # the σ = 0 reference sweeps every γ), glow-norm × 1
    rows = _check_results(tmp_path, 2 * (2 + 2 * 2 + 1))
    assert {r["method"] for r in rows} == {"bm3d", "noisy", "glow-sq", "glow-norm"}
    assert {"glow-sq", "glow-norm", "bm3d"} <= {r["method"] for r in result["summary"]}
    for name in ("summary.csv", "curves.csv", "psnr_vs_gamma.png", "samples_sigma0.1.png"):
        assert (tmp_path / name).stat().st_size > 0
    # comparison.csv: each Glow method at its picked γ minus BM3D, recomputed from results.csv
    comparison = _read(tmp_path / "comparison.csv")
    assert {c["method"] for c in comparison} == {"glow-sq", "glow-norm"}
    picked = {r["method"]: r["param_value"] for r in result["summary"] if r["sigma"] == 0.1}
    for c in comparison:
        psnr = {(r["method"], r["param_value"], r["image_id"]): float(r["psnr"]) for r in rows
                if r["setting_value"] == "0.1"}
        d = [psnr[(c["method"], str(picked[c["method"]]), i)] - psnr[("bm3d", "", i)]
             for i in ("0", "1")]
        assert float(c["diff_db"]) == pytest.approx(np.mean(d), abs=0.006)
        assert float(c["se_db"]) == pytest.approx(abs(d[0] - d[1]) / 2, abs=0.006)
        assert int(c["ahead"]) == sum(v > 0 for v in d) and c["images"] == "2"
    # environment.json: where and how it ran, with the config it ran
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["config"]["sigmas"] == [0.1] and env["config"]["maxiter"] == 3
    assert env["prior"] == tiny_prior and env["device"].startswith(jax.devices()[0].platform)
    assert env["versions"]["jax"] == jax.__version__ and env["cpu_count"] == os.cpu_count()
    commit = env["flowinv_commit"]
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit), commit


def test_this_command_names_the_module_of_a_module_run(monkeypatch):
    from experiments import common

    main = type(sys)("__main__")
    main.__spec__ = type("Spec", (), {"name": "experiments.denoise"})()
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["/x/experiments/denoise.py", "--out", "a b"])
    assert common.this_command() == "python -m experiments.denoise --out 'a b'"
    main.__spec__ = None  # `python script.py` or `python -c`
    assert common.this_command() == "python /x/experiments/denoise.py --out 'a b'"


def test_source_commit_is_none_outside_a_checkout(monkeypatch, tmp_path):
    from experiments import common

    monkeypatch.setattr(common, "__file__", str(tmp_path / "experiments" / "common.py"))
    assert common._source_commit() is None


def test_denoise_restarts_reach_recover(tiny_prior, tmp_path, monkeypatch, capsys):
    """--restarts R > 1: the Glow solves start from R random draws (the DCGAN is not run
    here), and the printed header says so."""
    from experiments import denoise

    calls = []
    real = flowinv.recover
    monkeypatch.setattr(flowinv, "recover", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    args = denoise.build_parser().parse_args(["--restarts", "2", "--init-scale", "0.5"])
    config = dataclasses.replace(
        denoise.config_from_args(args), dataset="digits", prior=tiny_prior, gan="none",
        sigmas=(0.1,), num_images=2, val_images=1, maxiter=2, gammas=(0.1,),
        norm_gammas=(0.1,), reference_gammas=None, out=str(tmp_path), progress=False)
    denoise.run(config)
    assert len(calls) == 2  # glow-sq, glow-norm
    assert all(kw["restarts"] == 2 and kw["init"] == "normal" and kw["init_scale"] == 0.5
               for kw in calls)
    assert "best of 2 starts from N(0, 0.5² I)" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        denoise.build_parser().parse_args(["--restarts", "0"])
    calls.clear()
    args = denoise.build_parser().parse_args(["--restarts", "3", "--zero-start"])
    denoise.run(dataclasses.replace(config, zero_start=denoise.config_from_args(args).zero_start,
                                    restarts=3))
    assert len(calls) == 2 and all(
        kw["restarts"] == 3 and kw["init"] == "zeros" and kw["restart_init"] == "normal"
        for kw in calls)
    assert "best of 3 starts, z0 = 0 and 2 draws of N(0, 0.5² I)" in capsys.readouterr().out


def test_paired_difference():
    rows = [dict(method=m, param_value=p, setting_value=0.1, image_id=i, psnr=v)
            for m, p, vals in (("a", 1.0, (30.0, 28.0, 25.0)), ("a", 2.0, (10.0, 10.0, 10.0)),
                               ("b", "", (29.0, 28.5, 22.0)))
            for i, v in enumerate(vals)]
    d = common.paired_difference(rows, dict(method="a", param_value=1.0), dict(method="b"))
    # differences 1.0, −0.5, 3.0: mean 7/6, sample std 1.7559, s.e. = std/√3; the 95 %
    # interval 7/6 ± t(0.975, 2)·s.e. = 7/6 ± 4.3027·1.0138 and p from scipy's paired t-test
    from scipy import stats

    test = stats.ttest_rel([30.0, 28.0, 25.0], [29.0, 28.5, 22.0])
    assert d == {"diff_db": 1.17, "se_db": 1.01, "ci_low_db": -3.2, "ci_high_db": 5.53,
                 "p": float(f"{test.pvalue:.2g}"), "ahead": 2, "images": 3}
    assert d["p"] == 0.37
    one = common.paired_difference(rows[:1] + rows[6:7], dict(method="a"), dict(method="b"))
    assert one["diff_db"] == 1.0 and math.isnan(one["se_db"]) and one["images"] == 1
    assert math.isnan(one["ci_low_db"]) and math.isnan(one["p"])
    same = [dict(method=m, image_id=i, psnr=v + (m == "a")) for m in "ab"
            for i, v in enumerate((20.0, 25.0))]
    tied = common.paired_difference(same, dict(method="a"), dict(method="b"))
    assert (tied["se_db"], tied["ci_low_db"], tied["ci_high_db"], tied["p"]) == (0, 1, 1, 0)
    exact = [dict(r, psnr=math.inf) if (r["method"], r["image_id"]) == ("a", 0) else r
             for r in same]  # an exact recovery scores inf: no interval, no p
    d_inf = common.paired_difference(exact, dict(method="a"), dict(method="b"))
    assert d_inf["diff_db"] == math.inf
    assert all(math.isnan(d_inf[k]) for k in ("se_db", "ci_low_db", "ci_high_db", "p"))
    with pytest.raises(ValueError, match="more than one row"):
        common.paired_difference(rows, dict(method="a"), dict(method="b"))
    with pytest.raises(ValueError, match="no image"):
        common.paired_difference(rows, dict(method="a", param_value=3.0), dict(method="b"))


def test_denoise_compares_each_learned_method_with_bm3d_and_each_glow_with_the_dcgan():
    """``comparison.csv``'s pairs at each σ > 0, each side at its own picked weight (an unpicked
    weight's rows are there to be ignored): Glow − BM3D, DCGAN − BM3D and Glow − DCGAN (the
    README's Glow-vs-DCGAN claims had no paired comparison behind them)."""
    from experiments import denoise

    psnr = {("glow-sq", 0.1): (30.0, 27.0, 29.0), ("glow-sq", 1.0): (10.0, 10.0, 10.0),
            ("dcgan", 0.01): (28.0, 26.0, 26.5), ("bm3d", ""): (27.0, 26.5, 27.5)}
    rows = [dict(method=m, param_value=w, setting_value=s, image_id=i, psnr=v)
            for s in (0.0, 0.1) for (m, w), vals in psnr.items() for i, v in enumerate(vals)]
    summary = [dict(sigma=s, method=m, param=f"w={w}" if w != "" else "", param_value=w)
               for s in (0.0, 0.1) for m, w in (("glow-sq", 0.1), ("dcgan", 0.01), ("bm3d", ""))]
    comparison = denoise._compare(rows, summary)
    assert [(c["sigma"], c["method"], c["vs"]) for c in comparison] == [
        (0.1, "glow-sq", "bm3d"), (0.1, "dcgan", "bm3d"), (0.1, "glow-sq", "dcgan")]
    expected = {"bm3d": (3.0, 0.5, 1.5), "dcgan": (2.0, 1.0, 2.5)}
    for c in comparison:
        if c["method"] == "glow-sq":
            assert c["diff_db"] == round(float(np.mean(expected[c["vs"]])), 2)
            assert c["vs_param"] == ("" if c["vs"] == "bm3d" else "w=0.01")
    assert comparison[1]["diff_db"] == round(float(np.mean([1.0, -0.5, -1.0])), 2)


def test_grid_edge_flags_a_pick_at_an_end_of_its_grid():
    """A pick at an end of a grid of two or more weights is flagged (a better weight may lie
    beyond); inside, for a lone weight, for no weight, or at a lower end of 0, it is not."""
    assert common.grid_edge([0.01, 0.1, 1.0], 1.0) == "high"
    assert common.grid_edge(["0.1", "0.01", "1.0"], "0.01") == "low"  # order and str don't matter
    assert common.grid_edge([0.01, 0.1, 1.0], 0.1) == ""
    assert common.grid_edge([0.0, 0.1], 0.0) == "" and common.grid_edge([0.0, 0.1], 0.1) == "high"
    assert common.grid_edge([0.3], 0.3) == "" and common.grid_edge(["", ""], "") == ""
    rows = [dict(method="a", edge="low"), dict(method="b", edge=""), dict(method="c", edge="high")]
    note = common.grid_edge_note(rows, lambda r: r["method"])
    assert "a (low); c (high)" in note and "widen" in note
    assert common.grid_edge_note(rows[1:2], lambda r: r["method"]) is None


def test_denoise_summary_picks_gamma_on_validation_only():
    from experiments import denoise

    curves = [dict(sigma=0.1, method="glow-sq", param=0.0, test_psnr=30.0, val_psnr=np.nan),
              dict(sigma=0.1, method="glow-sq", param=0.1, test_psnr=20.0, val_psnr=25.0),
              dict(sigma=0.1, method="glow-sq", param=0.3, test_psnr=28.0, val_psnr=24.0)]
    (row,) = denoise._summarise(curves, denoise.Config(sigmas=(0.1,)))
    assert row["param_value"] == 0.1 and row["test_psnr"] == 20.0 and row["val_psnr"] == 25.0
    assert row["edge"] == ""  # 0.1 is inside the grid 0, 0.1, 0.3
    (edge,) = denoise._summarise(curves[1:], denoise.Config(sigmas=(0.1,)))
    assert edge["param_value"] == 0.1 and edge["edge"] == "low"
    # the shared rule of every experiment: NaN ranks last whatever its position
    for order in (curves, curves[::-1]):
        assert common.best_on_validation(order)["param"] == 0.1


def test_compressed_sensing_runs_end_to_end(tiny_prior, tmp_path):
    """On ``lfw``, which has no training split: λ is chosen on its images after the test ones
    (loading a training split of it failed)."""
    from experiments import compressed_sensing as cs

    config = cs.Config(dataset="lfw", prior=tiny_prior, gan="none", num_images=2,
                       val_images=1, maxiter=3, ratios=(0.25, 0.255, 1.0), lasso_lams=(1e-2,),
                       methods=("glow", "lasso-dct", "lasso-wavelet"), out=str(tmp_path),
                       progress=False)
    cs.run(config)
    rows = _check_results(tmp_path, 2 * 2 * 3)  # 0.25 and 0.255 both give m = 16: run once
    assert {r["param_value"] for r in rows} == {"16", "64"}  # m = ratio · 64
    assert (tmp_path / "psnr_vs_m.png").stat().st_size > 0
    # comparison.csv: Glow minus each Lasso per m, recomputed from results.csv
    comparison = _read(tmp_path / "comparison.csv")
    assert sorted((c["m"], c["vs"]) for c in comparison) == [
        (m, v) for m in ("16", "64") for v in ("lasso-dct", "lasso-wavelet")]
    psnr = {(r["param_value"], r["method"], r["image_id"]): float(r["psnr"]) for r in rows}
    for c in comparison:
        d = [psnr[(c["m"], "glow", i)] - psnr[(c["m"], c["vs"], i)] for i in ("0", "1")]
        assert c["method"] == "glow" and c["images"] == "2"
        assert float(c["diff_db"]) == pytest.approx(np.mean(d), abs=0.006)
        assert float(c["se_db"]) == pytest.approx(abs(d[0] - d[1]) / 2, abs=0.006)


def test_float_list_reads_finite_nonnegative_numbers_once_each():
    assert common.float_list("0.1, 0,0.1,1e-3") == (0.1, 0.0, 1e-3)
    for bad in ("", "x", "-1", "nan", "0.1,inf"):
        with pytest.raises(argparse.ArgumentTypeError):
            common.float_list(bad)


def test_compressed_sensing_compares_glow_per_test_set_and_m_and_only_glow():
    from experiments import compressed_sensing as cs

    psnr = {("in-dist:a", 10, "glow"): (20.0, 22.0, 24.0),
            ("in-dist:a", 10, "dcgan"): (19.0, 21.0, 21.0),
            ("in-dist:a", 20, "dcgan"): (1.0, 2.0, 3.0),  # no Glow at this m: no row
            ("ood:b", 10, "glow"): (5.0, 5.0, 5.0), ("ood:b", 10, "dcgan"): (6.0, 6.0, 7.0),
            ("ood:b", 10, "deep-decoder"): (4.0, 5.0, 6.0)}
    rows = [dict(setting_value=t, param_value=m, method=meth, image_id=i, psnr=v)
            for (t, m, meth), vals in psnr.items() for i, v in enumerate(vals)]
    comparison = cs._compare(rows)
    assert [(c["test_set"], c["m"], c["vs"], c["diff_db"]) for c in comparison] == [
        ("in-dist:a", 10, "dcgan", round(5 / 3, 2)), ("ood:b", 10, "dcgan", round(-4 / 3, 2)),
        ("ood:b", 10, "deep-decoder", 0.0)]


def test_compressed_sensing_picks_lasso_weight_on_validation_and_labels_each_set(
        tiny_prior, tmp_path, monkeypatch):
    """λ comes from the validation images, a failed (NaN) validation solve ranking last; the
    rows of the out-of-distribution set carry its name in ``dataset``."""
    from experiments import compressed_sensing as cs

    calls, real = [], cs._lasso

    def lasso(y, op, basis, lam):  # the real solve, failing for λ = 1e-3
        calls.append((y.shape[0], lam))
        x = real(y, op, basis, lam)
        return x * jnp.nan if lam == 1e-3 else x

    monkeypatch.setattr(cs, "_lasso", lasso)
    config = cs.Config(dataset="digits", ood_dataset="cartoon", prior=tiny_prior, gan="none",
                       num_images=2, val_images=1, maxiter=2, ratios=(0.25,),
                       lasso_lams=(1e-3, 1e-2), methods=("lasso-dct",), out=str(tmp_path),
                       progress=False)
    cs.run(config)
    # per set: both λ on the 1 validation image, then the pick on the 2 test images
    assert calls == [(1, 1e-3), (1, 1e-2), (2, 1e-2)] * 2
    rows = _check_results(tmp_path, 2 * 2)
    assert {(r["setting_value"], r["dataset"]) for r in rows} == {
        ("in-dist:digits", "digits"), ("ood:cartoon", "cartoon")}


def _experiment_modules() -> list[str]:
    """Every runnable experiment: the modules of ``experiments/`` but its private helpers."""
    import pkgutil

    import experiments

    return sorted(m.name for m in pkgutil.iter_modules(experiments.__path__)
                  if not m.name.startswith("_") and m.name != "common")


def test_every_experiment_is_collected_for_the_help_test():
    assert {"denoise", "compressed_sensing", "stabilisers", "train"} <= set(_experiment_modules())
    assert "common" not in _experiment_modules()


@pytest.mark.parametrize("module", _experiment_modules())
def test_help_exits_cleanly(module, capsys):
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"experiments.{module}").main(["--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m experiments.{module} ")


def test_command_line_quotes_what_the_shell_would_split():
    cmd = common.command_line("experiments.train", ["--prior", "glow-mnist", "--workdir", "a b"])
    assert cmd == "python -m experiments.train --prior glow-mnist --workdir 'a b'"
    assert common.command_line("experiments.train_gan", []) == "python -m experiments.train_gan"


def test_training_rejects_an_architecture_that_does_not_fit_as_a_usage_error(capsys):
    from experiments import train

    with pytest.raises(SystemExit) as e:  # 28 is not divisible by 2**3
        train.main(["--prior", "glow-mnist", "--levels", "3", "--workdir", "unused"])
    assert e.value.code == 2
    assert "divisible by 2**levels" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["compressed_sensing", "denoise", "init_study", "inpainting",
                                    "jacobian_spectrum", "noisy_cs", "one_bit_cs",
                                    "structured_noise", "subpixel"])
def test_help_states_the_experiments_own_defaults(module):
    import importlib

    mod = importlib.import_module(f"experiments.{module}")
    parser = mod.build_parser()
    text = " ".join(parser.format_help().split())  # argparse wraps lines
    quick, full = mod.QUICK, mod.FULL
    assert f"number of test images (default: quick {quick['num_images']}; --full " \
           f"{full['num_images']})" in text
    if "maxiter" in quick:
        assert f"(default: quick {quick['maxiter']}; --full {full['maxiter']})" in text
    else:
        assert "solver iterations (not used by this experiment)" in text
    has_gan = "gan" in {f.name for f in dataclasses.fields(mod.Config)}
    assert ("DCGAN checkpoint (not used by this experiment)" in text) is not has_gan
    # every option named after a preset states a default
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.dest in quick or action.dest in full:
            assert "default" in formatter._get_help_string(action), action.dest


def test_preset_help_text():
    quick, full = {"a": 4, "g": (0.0, 0.01), "s": 1.0}, {"a": 50, "g": (1e-3,), "s": 1.0, "f": 2}
    assert common.preset_help(quick, full, "a") == "default: quick 4; --full 50"
    assert common.preset_help(quick, full, "g") == "default: quick 0,0.01; --full 0.001"
    assert common.preset_help(quick, full, "s") == "default 1"
    assert common.preset_help(quick, full, "f") == "default: --full 2"
    assert common.preset_help(quick, full, "missing") is None


@pytest.mark.parametrize("method", ["adversarial", "imle"])
def test_train_gan_exports_a_loadable_generator(tmp_path, method):
    import dataclasses

    import jax.numpy as jnp

    from experiments import train_gan
    from flowinv import priors

    config = dataclasses.replace(priors.gan_config("dcgan-mnist"), steps=2, batch_size=4,
                                 base_channels=4, method=method, candidates=8)
    result = train_gan.run(config, export_to=str(tmp_path / "g"), command="test",
                           progress=False)
    gen, params = checkpoints.load_gan(tmp_path / "g")
    assert gen.image_shape == (28, 28, 1) and gen.latent_dim == config.latent_dim
    x = gen.apply(params, jnp.zeros(gen.latent_dim))
    assert x.shape == (28, 28, 1) and bool(jnp.all(jnp.isfinite(x)))
    meta = checkpoints.read_metadata(tmp_path / "g")
    assert meta["kind"] == "dcgan" and meta["command"] == "test"
    assert meta["training"]["steps"] == 2 and result["train_images"] == 4500
    assert meta["training"]["method"] == method
    # only the chosen method's settings: IMLE has no discriminator (b1, r1), GANs no candidates
    assert ("candidates" in meta["training"]) == (method == "imle")
    assert ("r1" in meta["training"]) == ("b1" in meta["training"]) == (method != "imle")
    expected = {"loss"} if method == "imle" else {"d_loss", "g_loss"}
    assert set(meta["final_losses"]) == expected | {"averaged_over_last_steps"}


def test_train_gan_dataset_override(tmp_path):
    from experiments import train_gan

    parser = train_gan.build_parser()
    config = train_gan.config_from_args(parser.parse_args(["--gan", "dcgan-mnist", "--dataset",
                                                           "digits"]))
    assert config.dataset == "digits" and config.image_shape == (28, 28, 1)
    images = train_gan.training_images(config)
    assert images.shape[1:] == (28, 28, 1)  # converted
    assert len(images) == 1797 - 180  # the digits' training split (MNIST's would be 4,500)


def test_sample_diversity_is_the_mean_pairwise_rms_distance():
    from experiments import samples

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 4, 4, 3))
    brute = np.mean([np.sqrt(np.mean((x[i] - x[j]) ** 2))
                     for i in range(5) for j in range(i + 1, 5)])
    np.testing.assert_allclose(samples.diversity(x), brute, rtol=1e-10)
    assert samples.diversity(np.repeat(x[:1], 4, axis=0)) == 0.0  # collapse reads as zero
    with pytest.raises(ValueError, match="at least 2"):
        samples.diversity(x[:1])


def test_samples_sheet_of_a_flow_and_a_gan(tmp_path):
    from experiments import samples

    config = samples.Config(priors=("glow-digits", "dcgan-mnist"), num=3, diversity_num=4,
                            out=str(tmp_path), progress=False)
    result = samples.run(config)
    rows = {r["prior"]: r for r in result["summary"]}
    assert rows["glow-digits"]["kind"] == "flow" and rows["dcgan-mnist"]["kind"] == "dcgan"
    assert rows["glow-digits"]["dataset"] == "digits" and rows["dcgan-mnist"]["dataset"] == "mnist"
    for r in rows.values():
        assert r["sample_diversity"] > 0 and r["data_diversity"] > 0
    assert (tmp_path / "samples.png").stat().st_size > 0
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == 3


def test_samples_that_overflow_are_counted_blank_and_left_out_of_the_diversity(
        tmp_path, monkeypatch, capsys):
    """A flow's generative direction can overflow to inf or NaN (glow-mnist at T = 1 does for
    a few latents in a hundred): such samples are counted, drawn blank and kept out of the
    diversity, which would otherwise read NaN."""
    from experiments import samples

    rng = np.random.default_rng(0)
    drawn = rng.uniform(-0.2, 1.2, size=(6, 8, 8, 1)).astype(np.float32)
    drawn[1, 3, 4, 0] = np.nan
    drawn[4, 0, 0, 0] = np.inf
    real_draw = samples.draw

    def draw(name, num, key, temperature, clip=None):
        _, meta = real_draw(name, 2, key, temperature, clip)
        return drawn[:num], meta

    monkeypatch.setattr(samples, "draw", draw)
    real_plot = samples._plot
    sheets = []
    monkeypatch.setattr(samples, "_plot", lambda path, sheet, t: sheets.append(sheet))
    config = samples.Config(priors=("glow-digits",), num=3, diversity_num=6, out=str(tmp_path),
                            progress=False)
    result = samples.run(config)
    (row,) = result["summary"]
    assert row["nonfinite"] == 2
    kept = np.clip(drawn[[0, 2, 3, 5]], 0, 1)
    np.testing.assert_allclose(row["sample_diversity"], samples.diversity(kept), rtol=1e-12)
    shown = sheets[0][0][2]
    assert np.isnan(shown[1]).all() and np.isfinite(shown[[0, 2]]).all()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    texts = []
    real_subplots = plt.subplots

    def subplots(*args, **kwargs):  # records what the sheet writes on its panels
        fig, axes = real_subplots(*args, **kwargs)
        for ax in axes.ravel():
            ax.text = lambda *a, _f=ax.text, **k: texts.append(a[2]) or _f(*a, **k)
        return fig, axes

    monkeypatch.setattr(plt, "subplots", subplots)
    real_plot(tmp_path / "sheet.png", sheets[0], 0.7)
    assert texts == ["inf/NaN"]  # the one non-finite sample among the 3 shown
    samples.print_nonfinite_note(result["summary"])
    assert "glow-digits 2 at T = 0.7" in capsys.readouterr().out
    samples.print_nonfinite_note([{**row, "nonfinite": 0}])
    assert capsys.readouterr().out == ""


def test_samples_clip_draws_glow_priors_with_clipped_activations():
    """``--clip C`` reaches the flow (a tiny clip changes a Glow's samples), is recorded for
    Glow priors only, and must be positive."""
    from experiments import samples

    key = jax.random.PRNGKey(0)
    plain, meta = samples.draw("glow-digits", 2, key, 0.7)
    clipped, meta_clipped = samples.draw("glow-digits", 2, key, 0.7, clip=1e-3)
    assert "clip" not in meta and meta_clipped["clip"] == 1e-3
    assert np.abs(plain - clipped).max() > 0.05
    _, gan_meta = samples.draw("dcgan-mnist", 2, key, 1.0, clip=1e-3)
    assert "clip" not in gan_meta
    config = samples.config_from_args(samples.build_parser().parse_args(["--clip", "40"]))
    assert config.clip == 40.0
    with pytest.raises(SystemExit):
        samples.build_parser().parse_args(["--clip", "0"])


def test_command_lines_keep_compiled_programs_in_the_cache_folder(tmp_path):
    """With ``FLOWINV_COMPILATION_CACHE=DIR`` an experiment's command line stores what it
    compiles in DIR (a fresh process, so the cache starts uninitialised; the 1 s threshold is
    lowered so that a small program is stored)."""
    folder = tmp_path / "xla"
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, pathlib, sys
        from experiments import common
        folder = common.use_compilation_cache()
        assert folder == pathlib.Path(sys.argv[1]), folder
        assert jax.config.jax_compilation_cache_dir == sys.argv[1]
        print(float(jax.jit(lambda a: jnp.sin(a) @ a)(jnp.ones((3, 3))).sum()))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    env.update(FLOWINV_COMPILATION_CACHE=str(folder),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    res = subprocess.run([sys.executable, "-c", script, str(folder)], env=env,
                         cwd=pathlib.Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert any(folder.iterdir()), "nothing was written to the cache folder"


@pytest.fixture
def no_cache_folder():
    """JAX's cache folder unset for one test (a ``JAX_COMPILATION_CACHE_DIR`` of the user's
    would otherwise be kept by :func:`common.use_compilation_cache`), restored afterwards."""
    was = jax.config.jax_compilation_cache_dir
    jax.config.update("jax_compilation_cache_dir", None)
    try:
        yield
    finally:
        jax.config.update("jax_compilation_cache_dir", was)


@pytest.mark.parametrize("setting", ["off", "OFF", "0", "none", "false"])
def test_compilation_cache_off(monkeypatch, no_cache_folder, setting):
    monkeypatch.setenv("FLOWINV_COMPILATION_CACHE", setting)
    assert common.use_compilation_cache() is None
    assert not jax.config.jax_compilation_cache_dir


def test_compilation_cache_keeps_the_users_folder_and_survives_an_unwritable_one(
        monkeypatch, no_cache_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("FLOWINV_COMPILATION_CACHE", str(blocker / "xla"))
    assert common.use_compilation_cache() is None
    assert "no compilation cache" in capsys.readouterr().err
    assert not jax.config.jax_compilation_cache_dir
    # No program is compiled while the folder is set, so the process's cache stays uninitialised.
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))
    assert common.use_compilation_cache() == tmp_path / "users"


_USER_FLOWS = '''
import dataclasses
import flowinv
from flowinv import checkpoints


@dataclasses.dataclass(frozen=True)
class TiltedGlow(flowinv.Glow):
    tilt: float = 0.0


def tilted(image_shape, *, tilt, **glow_args):
    g = flowinv.glow(image_shape, **glow_args)
    return TiltedGlow(**{f.name: getattr(g, f.name) for f in dataclasses.fields(g)}, tilt=tilt)


checkpoints.register_flow("import-test-glow", tilted, TiltedGlow)
'''


@pytest.mark.parametrize("form", ["file", "module"])
def test_import_option_lets_a_command_line_load_a_flow_class_of_your_own(
        form, tmp_path, monkeypatch, capsys):
    """A checkpoint of a registered class of the user's own: without ``--import`` the
    command line cannot rebuild it, and the error names ``--import``; with ``--import`` of the
    module that registers it (as a .py file or a module name on the path), the experiment's
    own loading step (``setup_run``) rebuilds a flow of that class with the saved params. A
    module that cannot be found is a usage error."""
    from experiments import denoise

    monkeypatch.setattr(checkpoints, "FLOW_BUILDERS", dict(checkpoints.FLOW_BUILDERS))
    monkeypatch.setattr(checkpoints, "_FLOW_TYPES", dict(checkpoints._FLOW_TYPES))
    monkeypatch.setattr(sys, "path", list(sys.path))
    name = f"user_flows_{form}"
    for module in (name, f"{name}_base"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    # the module imports a file beside it, as a script may
    (tmp_path / f"{name}_base.py").write_text("import dataclasses\nimport flowinv\n")
    (tmp_path / f"{name}.py").write_text(f"import {name}_base\n" + _USER_FLOWS)
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8)
    params = flow.init(jax.random.PRNGKey(0), jax.random.uniform(jax.random.PRNGKey(1),
                                                                 (4, 8, 8, 1)))
    arch = {**checkpoints.flow_config(flow), "type": "import-test-glow", "tilt": 0.5}
    ckpt = checkpoints.save(tmp_path / "mine", params, {"kind": "flow", "architecture": arch})
    argv = ["--prior", str(ckpt), "--dataset", "digits", "--out", str(tmp_path / "out")]

    config = common.parse_config(denoise.build_parser(), denoise.config_from_args, argv)
    with pytest.raises(ValueError, match="--import MODULE"):
        common.setup_run(config)

    if form == "module":
        monkeypatch.syspath_prepend(str(tmp_path))
    module_arg = str(tmp_path / f"{name}.py") if form == "file" else name
    config = common.parse_config(denoise.build_parser(), denoise.config_from_args,
                                 ["--import", module_arg, *argv])
    _, _, loaded_flow, loaded = common.setup_run(config)
    assert type(loaded_flow) is sys.modules[name].TiltedGlow and loaded_flow.tilt == 0.5
    jax.tree.map(np.testing.assert_array_equal, params, loaded)

    (tmp_path / "json.py").write_text("raise AssertionError('never run')\n")
    for bad, words in (("no_such_module_of_yours", "no_such_module"),
                       (str(tmp_path / "missing.py"), "no such file"),
                       (str(tmp_path / "json.py"), "already imported")):
        with pytest.raises(SystemExit) as e:
            common.parse_config(denoise.build_parser(), denoise.config_from_args,
                                ["--import", bad, *argv])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "--import" in err and words in err
    import json

    assert json.dumps([1]) == "[1]"  # the standard module is still the one imported


def test_compressed_sensing_gan_seconds_are_per_test_image(monkeypatch, tmp_path):
    """The CSGM solve covers the test and the validation images (IAGAN starts from both), so
    its per-image seconds divide its time by all of them, not by the test images alone."""
    from experiments import compressed_sensing as cs

    class OneSecond:  # every timed block takes 1 s
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.wall, self.compile_seconds, self.seconds = 1.0, 0.0, 1.0

    solved = []

    def fake_csgm(gan, y, op, key, restarts, maxiter):
        solved.append(y.shape[0])
        return jnp.zeros((y.shape[0], 28, 28, 1)), jnp.zeros((y.shape[0], 100))

    monkeypatch.setattr(common, "SolveClock", OneSecond)
    monkeypatch.setattr(cs, "_csgm", fake_csgm)
    result = cs.run(cs.Config(num_images=2, val_images=4, ratios=(0.1,), methods=("dcgan",),
                              ood_dataset="none", out=str(tmp_path), progress=False))
    assert solved == [6]
    assert {r["seconds"] for r in result["rows"]} == {round(1 / 6, 4)}
