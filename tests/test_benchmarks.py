"""Smoke tests of the benchmarks: each one's quick mode runs on the CPU and writes a complete JSON.

The benchmarks are meant for a GPU; these runs (tiny models, a few L-BFGS iterations, the
smallest sweep each quick mode allows) only make sure the scripts cannot rot: every required
field is recorded, ratios are positive finite numbers, out-of-memory handling and the goals
check work. The scaling benchmark runs its workers in subprocesses with forced host devices.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys
import time

import jax
import pytest

from benchmarks import _common as C
from benchmarks import all as bench_all
from benchmarks import (
    compile_time,
    eager_calls,
    goals,
    iterations,
    precision,
    progress_bar,
    recovery,
    restarts,
    scaling,
    training,
)

ENV_FIELDS = ("device", "platform", "device_count", "jax", "dtype", "matmul_precision",
              "xla_most_optimizations_disabled")
MEASURE_FIELDS = ("device", "precision", "batch", "image_shape", "num_params", "compile_s",
                  "run_s", "images_per_s", "ratio_vs_floor", "floor_images_per_s",
                  "peak_memory_bytes", "peak_memory_source", "status")


def _positive_finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _load(payload: dict) -> dict:
    """The JSON as written to disk (not the in-memory dict), checked for the common fields."""
    path = pathlib.Path(payload["paths"]["json"])
    assert path.is_file() and pathlib.Path(payload["paths"]["md"]).is_file()
    data = json.loads(path.read_text())
    assert data["quick"] is True and data["rows"]
    for field in ENV_FIELDS:
        assert data["environment"].get(field) is not None, field
    assert data["environment"]["dtype"] == "float32"
    assert any("quick mode" in n for n in data["notes"])
    optimisation_off = data["environment"]["xla_most_optimizations_disabled"]
    assert optimisation_off is bool(jax.config.read("jax_disable_most_optimizations"))
    assert any("JAX_DISABLE_MOST_OPTIMIZATIONS" in n for n in data["notes"]) is optimisation_off
    return data


def _check_rows(rows, fields=MEASURE_FIELDS, ratios=("ratio_vs_floor",)):
    for row in rows:
        assert row["status"] == "ok", row
        for field in fields:
            assert field in row and row[field] is not None, (field, row)
        for field in ("images_per_s", "run_s", "compile_s", "peak_memory_bytes", *ratios):
            assert _positive_finite(row[field]), (field, row[field])
        assert "RSS" in row["peak_memory_source"] or "peak_bytes_in_use" in \
            row["peak_memory_source"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def recovery_payload(out):
    # --model-batches overrides --batches for its model: the sweep runs batches 1 and 2
    return recovery.main(["--quick", "--out", str(out), "--models", "tiny8",
                          "--tasks", "cs-dense", "--batches", "4", "--model-batches",
                          "tiny8=1,2"])


@pytest.fixture(scope="module")
def compile_payload(out):
    return compile_time.main(["--quick", "--out", str(out), "--cases", "tiny8:scan",
                              "--functions", "init,inverse"])


def test_recovery_quick(recovery_payload):
    data = _load(recovery_payload)
    rows = data["rows"]
    assert [(r["task"], r["operator"], r["batch"]) for r in rows] == [("cs", "dense", 1),
                                                                      ("cs", "dense", 2)]
    _check_rows(rows, MEASURE_FIELDS + ("iterations_max", "s_per_image", "psnr_mean",
                                        "setup_s"))
    for r in rows:
        assert r["iterations_max"] == r["maxiter"] == 5  # tol=0: every image runs them all
        assert r["iterations_note"] and "300" in r["iterations_note"]
        assert r["num_params"] > 0 and r["devices_used"] == 1
    assert any("fewer than the paper setting" in n for n in data["notes"])
    assert all(_positive_finite(r["speedup_vs_batch1"]) for r in rows)


def test_recovery_out_of_memory_is_a_result(monkeypatch):
    def boom(cfg):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")

    monkeypatch.setattr(recovery, "_measure", boom)
    rows = recovery.sweep(dict(models=("tiny16",), groups={"tiny16": (("cs", "dense"),)},
                               batches={"tiny16": (1, 2, 4)}, maxiter=1, floor_iters=1,
                               repeats=1, precision="default"), isolate=False)
    assert len(rows) == 1 and rows[0]["status"] == "does not fit"  # the sweep stops there
    assert "RESOURCE_EXHAUSTED" in rows[0]["error"]


def test_recovery_marks_a_diverged_solve_and_the_goals_skip_it(monkeypatch):
    """A solve whose loss went non-finite timed no recovery (a NaN loss at z0 stops every image
    at iteration 0): its row says so and no goal reads its timings; the batch did fit in
    memory, so the sweep goes on to the next batch."""
    def nan_at_start(cfg):
        return dict(diverged=cfg["batch"], iterations_max=0, s_per_image=1e-3,
                    images_per_s=1e3, compile_s=1.0, ratio_vs_floor=1.0), None

    monkeypatch.setattr(recovery, "_measure", nan_at_start)
    rows = recovery.sweep(dict(models=("tiny16",), groups={"tiny16": (("cs", "dense"),)},
                               batches={"tiny16": (1, 2)}, maxiter=5, floor_iters=1,
                               repeats=1, precision="default"), isolate=False)
    assert [r["status"] for r in rows] == ["diverged", "diverged"]
    assert "1 of 1 images" in rows[0]["error"] and "0 of 5 iterations" in rows[0]["error"]
    payload = {"recovery": {"quick": True, "environment": C.environment("default"),
                            "rows": rows}}
    by_id = {g["id"]: g for g in goals.evaluate(payload)}
    assert by_id["cs64_time"]["status"] == by_id["solver_overhead"]["status"] == "NOT MEASURED"


def _fit128(statuses: dict[int, str]) -> dict:
    rows = [dict(model="glow128", task="cs", operator="dense", batch=b, status=s, compile_s=1.0)
            for b, s in statuses.items()]
    payload = {"recovery": {"quick": False, "environment": C.environment("default"),
                            "rows": rows}}
    return {g["id"]: g for g in goals.evaluate(payload)}["fit128"]


def test_the_128_goal_counts_only_memory_as_not_fitting():
    """A diverged solve ran, so its batch fit; a crash or a timeout ("failed") says nothing
    about memory: below the target it is not measured, not a miss."""
    assert _fit128({8: "ok", 16: "diverged"})["measured"] == 16
    assert _fit128({8: "ok", 16: "does not fit"})["status"] == "MISS"
    failed = _fit128({8: "ok", 16: "failed"})
    assert failed["measured"] == 8 and failed["status"] == "NOT MEASURED"


def test_a_worker_that_logs_the_allocators_warning_is_not_out_of_memory(monkeypatch, tmp_path):
    """XLA's allocator logs "ran out of memory ... this is not a failure" on runs that fit; a
    worker that then fails for another reason, or times out, did not run out of memory."""
    import subprocess

    warning = ("W bfc_allocator.cc:291] Allocator (GPU_0_bfc) ran out of memory trying to "
               "allocate 2.00GiB. The caller indicates that this is not a failure.\n")

    def crash(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", warning + "ValueError: boom")

    def slow(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, 1, stderr=warning + "RESOURCE_EXHAUSTED")

    def oom(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 1, "", "RESOURCE_EXHAUSTED: Out of memory")

    for run, status in ((crash, "failed"), (slow, "failed"), (oom, "does not fit")):
        monkeypatch.setattr(subprocess, "run", run)
        assert C.run_worker("recovery", {"batch": 1}, timeout=1)["status"] == status


def test_benchmark_params_keep_a_glow_of_the_paper_width_and_depth_finite():
    """Regression: ``0.02·N(0, 1)`` added to every leaf moved each coupling's log-scale by about
    1 at width 512, and G(z) of the paper-size glow64 overflowed to NaN (every GPU solve stopped
    at iteration 0). On an 8×8 image with the paper's width and steps per level it did too;
    the fan-in scaled perturbation keeps G finite and still moves it off the initialised flow
    (by about 12 % in RMS here)."""
    import numpy as np

    flow = C.make_flow(dict(image_shape=(8, 8, 3), levels=2, steps=18, width=512))
    key = jax.random.PRNGKey(0)
    x = jax.numpy.asarray(C.synthetic_images(np.random.default_rng(0), 2, flow.image_shape))
    z = jax.numpy.asarray(0.7 * np.random.default_rng(5).standard_normal((4, flow.dim)),
                          jax.numpy.float32)
    generate = jax.jit(jax.vmap(lambda p, zz: flow.forward(p, zz)[0], in_axes=(None, 0)))
    g = np.asarray(generate(C.benchmark_params(flow, key), z))
    g_init = np.asarray(generate(flow.init(key, x), z))
    assert np.isfinite(g).all()
    moved = np.sqrt(np.mean((g - g_init) ** 2) / np.mean(g_init ** 2))
    assert 0.02 < moved < 0.5


def test_training_quick(out):
    data = _load(training.main(["--quick", "--out", str(out), "--models", "tiny8",
                                "--batches", "2", "--steps", "2"]))
    _check_rows(data["rows"], ("device", "precision", "batch", "image_shape", "num_params",
                               "iterations", "setup_s", "compile_s", "run_s", "images_per_s",
                               "ratio_vs_floor", "peak_memory_bytes", "status"))
    assert all(r["loss_finite"] for r in data["rows"])


def test_training_marks_a_non_finite_loss(monkeypatch):
    """The first GPU run's training rows trained a flow whose loss was inf and said "ok"."""
    monkeypatch.setattr(training, "_measure", lambda cfg: dict(
        loss_finite=False, final_loss_bpd=float("inf"), images_per_s=10.0))
    row = training.measure(dict(model="tiny8", batch=2), with_environment=False)
    assert row["status"] == "diverged" and "inf bits/dim" in row["error"]
    assert row["images_per_s"] == 10.0  # the timing is kept


def test_compile_time_quick(compile_payload):
    data = _load(compile_payload)
    assert [r["function"] for r in data["rows"]] == ["init", "inverse"]
    for r in data["rows"]:
        assert r["status"] == "ok" and r["num_params"] > 0
        assert all(_positive_finite(r[k]) for k in ("lower_s", "compile_s", "total_s"))


def test_precision_quick(out):
    data = _load(precision.main(["--quick", "--out", str(out), "--modes",
                                 "bfloat16-dtype", "--tasks", "denoise", "--batch", "1",
                                 "--model", "tiny8"]))
    rows = data["rows"]
    assert {r["precision"] for r in rows} == {"highest", "bfloat16-dtype"}
    assert {r["task"] for r in rows} == {"denoise"}
    _check_rows(rows, MEASURE_FIELDS + ("psnr_mean", "psnr_vs_highest_db", "speedup"),
                ratios=("ratio_vs_floor", "speedup"))
    for r in rows:
        if r["precision"] == "highest":
            assert r["psnr_vs_highest_db"] > 100  # the reference against itself
        else:  # a bfloat16 solve cannot match the float32 one bit for bit (that reads 200 dB)
            assert math.isfinite(r["psnr_vs_highest_db"]) and r["psnr_vs_highest_db"] < 200
    assert data["recommendation"]


def test_eager_calls_quick_in_subprocesses(out):
    data = _load(eager_calls.main(["--quick", "--out", str(out)]))
    assert [r["call"] for r in data["rows"]] == list(eager_calls.CALLS)
    for r in data["rows"]:
        for key in ("op-by-op_first_s", "compiled_first_s", "op-by-op_second_s",
                    "compiled_second_s", "first_ratio", "second_ratio"):
            assert _positive_finite(r[key]), (key, r)
        assert isinstance(r["compiled_programs"], int) and isinstance(r["op-by-op_programs"],
                                                                      int)
    # The first public call compiles its program; the second reuses it.
    assert data["rows"][0]["compiled_programs"] >= 1


def test_restarts_quick(out, capsys):
    """Both modes measured; the batched restarts keep the loop's minimum loss per image (the
    same solves in another batch shape: float32 rounding at most)."""
    data = _load(restarts.main(["--quick", "--out", str(out), "--chunk-size", "3"]))
    assert [r["mode"] for r in data["rows"]] == list(restarts.MODES)
    for r in data["rows"]:
        for key in ("first_s", "second_s", "images_per_s", "ratio_loop_over_batched"):
            assert _positive_finite(r[key]), (key, r)
        assert r["chunk_size"] == 3 and r["loss_gap"] < 1e-4
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        restarts.main(["--quick", "--out", str(out), "--restarts", "1"])
    assert e.value.code == 2 and "--restarts must be >= 2" in capsys.readouterr().err


def test_progress_bar_quick(out, capsys):
    """Both modes measured; the bar does not change the solve (same final losses up to
    float32 rounding of two separately compiled programs)."""
    data = _load(progress_bar.main(["--quick", "--out", str(out)]))
    assert [r["mode"] for r in data["rows"]] == list(progress_bar.MODES)
    for r in data["rows"]:
        for key in ("first_s", "best_s", "s_per_iteration", "images_per_s",
                    "ratio_progress_over_plain"):
            assert _positive_finite(r[key]), (key, r)
        assert r["loss_gap"] < 1e-5
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        progress_bar.main(["--quick", "--out", str(out), "--repeats", "0"])
    assert e.value.code == 2 and "--repeats must be >= 1" in capsys.readouterr().err


def test_eager_calls_combine_reports_a_failed_mode():
    ok = {"status": "ok", "model_label": "m", "num_params": 3,
          "rows": [dict(call=c, first_s=2.0, second_s=1.0, compile_s=1.0, programs_compiled=1)
                   for c in eager_calls.CALLS]}
    rows = eager_calls.combine({"op-by-op": ok, "compiled": {"status": "failed", "error": "x"}})
    assert all(r["compiled_error"] == "x" and r["first_ratio"] is None for r in rows)
    rows = eager_calls.combine({"op-by-op": ok, "compiled": ok})
    assert all(r["first_ratio"] == 1.0 and r["second_ratio"] == 1.0 for r in rows)


def test_iterations_quick(out):
    data = _load(iterations.main(["--quick", "--out", str(out), "--tasks", "denoise:0.1:0.01",
                                  "--iterations", "1,3", "--images", "1"]))
    rows = data["rows"]
    assert [(r["task"], r["maxiter"]) for r in rows] == [("denoise:0.1:0.01", 1),
                                                         ("denoise:0.1:0.01", 3)]
    for r in rows:
        assert r["status"] == "ok" and r["diverged"] == 0 and r["batch"] == 1
        assert 1 <= r["iterations_mean"] <= r["maxiter"]
        assert math.isfinite(r["psnr_mean"]) and len(r["psnr"]) == 1
        assert all(_positive_finite(r[k]) for k in ("first_call_s", "run_s", "compile_s",
                                                    "images_per_s", "peak_memory_bytes",
                                                    "num_params"))
        assert r["compile_s"] == pytest.approx(r["first_call_s"] - r["run_s"])


@pytest.mark.parametrize("bad", ["denoise:0.1", "blur:0.1:0", "cs:0:0", "cs:1.5:0",
                                 "denoise:-0.1:0", "denoise:0.1:nan", "denoise:a:0",
                                 "denoise:0.1:0:1"])
def test_iterations_task_errors(bad, capsys):
    with pytest.raises(ValueError, match="task"):
        iterations.parse_task(bad)
    with pytest.raises(SystemExit) as e:
        iterations.main(["--quick", "--tasks", bad])
    assert e.value.code == 2 and "task" in capsys.readouterr().err


def test_iterations_parses_tasks_and_default_dataset():
    assert iterations.parse_task("cs:0.2:0") == ("cs", 0.2, 0.0)
    assert iterations.parse_task("denoise:0:0.01") == ("denoise", 0.0, 0.01)
    assert iterations._training_dataset("glow-mnist") == "mnist"
    assert iterations._training_dataset("glow-patches64") == "patches64"
    with pytest.raises(SystemExit, match="unknown prior 'glow-imagenet'"):
        iterations._training_dataset("glow-imagenet")


def test_scaling_quick_in_subprocesses(out):
    # One worker (2 forced host devices) keeps the test short; the 1-device baseline and the
    # efficiency column are exercised by `python -m benchmarks.scaling --quick`.
    data = _load(scaling.main(["--quick", "--out", str(out), "--devices", "2",
                               "--model", "tiny8"]))
    rows = data["rows"]
    assert [r["devices_requested"] for r in rows] == [2]
    _check_rows(rows, MEASURE_FIELDS + ("devices_used", "local_device_count"))
    assert rows[0]["local_device_count"] == 2 and rows[0]["devices_used"] == 2  # sharded
    assert _positive_finite(rows[0]["worker_s"])  # the worker process's wall time
    assert rows[0]["batch"] == 4  # 2 images per device
    assert "xla_force_host_platform_device_count=2" in data["environment"]["env"]["XLA_FLAGS"]


def test_goals_and_summary(out, recovery_payload, compile_payload):
    payloads = {"recovery": recovery_payload, "compile_time": compile_payload}
    rows = goals.evaluate(payloads)
    assert [g["id"] for g in rows] == ["cs64_time", "solver_overhead", "fit128", "compile"]
    for g in rows:
        assert g["status"] in ("PASS", "MISS", "NOT MEASURED")
    by_id = {g["id"]: g for g in rows}
    assert by_id["cs64_time"]["status"] in ("PASS", "MISS")
    assert "quick mode" in by_id["cs64_time"]["caveat"]
    optimisation_off = bool(jax.config.read("jax_disable_most_optimizations"))
    assert ("XLA optimisation off" in by_id["cs64_time"]["caveat"]) is optimisation_off
    assert by_id["fit128"]["status"] == "NOT MEASURED"  # no 128×128 stand-in in this sweep
    summary = bench_all.summarize(out, payloads, quick=True)
    text = pathlib.Path(summary["path"]).read_text()
    assert pathlib.Path(summary["path"]).name == "summary_quick_cpu.md"
    assert "Goals" in text and ("PASS" in text or "MISS" in text)


def test_goal_verdicts():
    g = goals.GOALS["cs64_time"]
    assert goals._verdict(g, 0.25) == ("PASS", "2.00x under the target")
    assert goals._verdict(g, 1.0) == ("MISS", "2.00x over the target")
    assert goals._verdict(goals.GOALS["fit128"], 8)[0] == "MISS"
    assert goals._verdict(goals.GOALS["fit128"], 8, at_least=True)[0] == "NOT MEASURED"
    assert goals._verdict(goals.GOALS["compile"], 60.0)[0] == "MISS"  # strictly under 60 s
    assert goals._verdict(g, None)[0] == "NOT MEASURED"


def test_cs_goal_scales_a_solve_that_stopped_early_to_300_iterations():
    """Every image of a solve can stop before 300 iterations (with tol=0, once its line search
    cannot lower the float32 loss); the goal is about 300, so the time per iteration is scaled
    to 300 and the detail says so."""
    row = dict(model="glow64", task="cs", operator="dense", batch=64, maxiter=300,
               iterations_max=75, s_per_image=0.1, images_per_s=10.0, ratio_vs_floor=1.5,
               compile_s=20.0, status="ok")
    payload = {"recovery": {"quick": False, "environment": {"device_kind": "NVIDIA H100"},
                            "rows": [row]}}
    by_id = {g["id"]: g for g in goals.evaluate(payload)}
    assert math.isclose(by_id["cs64_time"]["measured"], 0.4)
    assert "scaled to 300 from the 75 that ran" in by_id["cs64_time"]["detail"]
    assert by_id["cs64_time"]["caveat"] is None  # the paper-size model, 300 asked, an H100
    assert by_id["solver_overhead"]["measured"] == 1.5
    full = {**row, "iterations_max": 300, "s_per_image": 0.4}
    (cs,) = [g for g in goals.evaluate({"recovery": {**payload["recovery"], "rows": [full]}})
             if g["id"] == "cs64_time"]
    assert cs["measured"] == 0.4 and "scaled" not in cs["detail"]


def test_helpers():
    assert C.powers_of_two(8) == (1, 2, 4, 8) and C.powers_of_two(6) == (1, 2, 4)
    assert C.iterations_note(300) is None and "10" in C.iterations_note(10)
    assert C.is_oom(RuntimeError("RESOURCE_EXHAUSTED: out of memory"))
    assert not C.is_oom(ValueError("shape mismatch"))
    assert scaling.device_env("cpu", 4)["XLA_FLAGS"].endswith("device_count=4")
    env = C.environment("bfloat16")
    assert env["matmul_precision"] == "bfloat16" and "TF32" in env["matmul_precision_meaning"]


def test_benchmarks_switch_the_persistent_compilation_cache_off():
    """Every benchmark reports compile seconds, so its parser turns JAX's disk cache off."""
    import jax

    was = jax.config.jax_enable_compilation_cache
    try:
        jax.config.update("jax_enable_compilation_cache", True)
        C.base_parser("python -m benchmarks.x", None)
        assert jax.config.jax_enable_compilation_cache is False
        assert C.environment()["compilation_cache_enabled"] is False
    finally:
        jax.config.update("jax_enable_compilation_cache", was)


@pytest.mark.parametrize("spec", ["glow64=16", "tiny8=", "tiny8=two"])
def test_recovery_model_batches_usage_errors(spec, tmp_path):
    """A model the run does not sweep, or no batch sizes, is a usage error before any work."""
    with pytest.raises(SystemExit) as e:
        recovery.main(["--quick", "--out", str(tmp_path), "--models", "tiny8",
                       "--model-batches", spec])
    assert e.value.code == 2


class _Planned(Exception):
    """Raised in place of a benchmark's first measurement; carries its arguments."""


def _stop(*args, **kwargs):
    raise _Planned(args, kwargs)


@pytest.mark.parametrize("name", list(bench_all.SESSION))
def test_session_plan_parses(name, monkeypatch, tmp_path):
    """``benchmarks.all --session`` gives each benchmark flags its command line accepts, and
    they configure what the plan says (checked up to the first measurement, which is stopped:
    these are paper-size models)."""
    monkeypatch.setattr(recovery, "sweep", _stop)
    monkeypatch.setattr(C, "run_worker", _stop)
    monkeypatch.setattr(precision, "run", _stop)
    monkeypatch.setattr(progress_bar, "measure", _stop)
    module = {"recovery": recovery, "training": training, "precision": precision,
              "progress_bar": progress_bar}[name]
    with pytest.raises(_Planned) as e:
        module.main([*bench_all.SESSION[name], "--out", str(tmp_path)])
    args, kwargs = e.value.args
    if name == "recovery":
        config = args[0]
        assert config["batches"] == {"glow64": (64,), "glow128": (16,)}
        assert config["models"] == ("glow64", "glow128")
        assert all(config["groups"][m] == (("cs", "dense"),) for m in config["models"])
        assert config["maxiter"] == C.PAPER_ITERATIONS
        assert kwargs["isolate"] is True and kwargs["worker_timeout"] == 300.0
    elif name == "training":
        assert args[0] == "training" and args[1]["model"] == "glow64"
        assert args[1]["batch"] == 64
    elif name == "progress_bar":
        assert args[0] == dict(model="glow64", batch=16, maxiter=100, repeats=1,
                               precision="default")
    else:
        config = args[0]
        assert config["model"] == "glow64" and config["batch"] == 16
        # the flow in bfloat16: the "bfloat16" matmul setting is TF32 on a GPU, as "default"
        assert config["modes"] == ("highest", "default", "bfloat16-dtype")
        assert config["maxiter"] == C.PAPER_ITERATIONS


def test_all_takes_only_the_json_a_benchmark_wrote_in_this_run(tmp_path):
    """A committed result (another machine's paths inside) is not mistaken for this run's,
    and reading it does not touch the paths it records."""
    import json
    import os

    old = tmp_path / "training_gpu.json"
    old.write_text(json.dumps({"paths": {"json": "/elsewhere/training_gpu.json"}, "run": 1}))
    os.utime(old, (1e9, 1e9))
    assert bench_all._latest_json(tmp_path, "training", False) == json.loads(old.read_text())
    assert bench_all._latest_json(tmp_path, "training", False, since=2e9) is None
    new = tmp_path / "training_cpu.json"
    new.write_text(json.dumps({"run": 2}))
    os.utime(new, (3e9, 3e9))
    assert bench_all._latest_json(tmp_path, "training", False, since=2e9) == {"run": 2}
    assert bench_all._latest_json(tmp_path, "training", True) is None  # quick files only


def test_all_budget_leaves_out_what_it_cannot_start(tmp_path):
    result = bench_all.main(["--quick", "--only", "compile_time", "--budget", "1",
                             "--out", str(tmp_path)])
    assert result["failures"]["compile_time"].startswith("not started: ")
    assert "Not available: not started" in pathlib.Path(result["path"]).read_text()
    assert not list(tmp_path.glob("compile_time*.json"))


@pytest.mark.parametrize("argv", [["--session", "--quick"], ["--budget", "10", "--in-process"],
                                  ["--budget", "0"], ["--session", "--only", "scaling"]])
def test_all_usage_errors(argv, tmp_path):
    with pytest.raises(SystemExit) as e:
        bench_all.main([*argv, "--out", str(tmp_path)])
    assert e.value.code == 2


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie no parent has reaped counts as exited)."""
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").is_file(), reason="needs /proc")
def test_run_until_kills_the_benchmark_and_its_workers(tmp_path):
    """At the deadline the benchmark's whole process group goes, its worker processes too (a
    surviving worker would keep the GPU busy into the next benchmark)."""
    pidfile = tmp_path / "worker.pid"
    benchmark = ("import subprocess, sys, time; w = subprocess.Popen([sys.executable, '-c', "
                 "'import time; time.sleep(120)']); "
                 f"open({str(pidfile)!r}, 'w').write(str(w.pid)); time.sleep(120)")
    t = time.monotonic()
    assert bench_all.run_until([sys.executable, "-c", benchmark], t + 5) is None
    assert time.monotonic() - t < 60
    worker = int(pidfile.read_text())
    deadline = time.monotonic() + 10
    while not _gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(worker)
    assert bench_all.run_until([sys.executable, "-c", "raise SystemExit(3)"], None) == 3


def test_recovery_saves_each_measurement(monkeypatch, tmp_path):
    """A sweep stopped part-way (``benchmarks.all --budget`` kills it) keeps the measurements it
    finished: the JSON is rewritten after each one, with a note that it is partial."""
    def measure(cfg, with_environment=True):
        if cfg["batch"] == 2:
            raise KeyboardInterrupt  # stands in for the kill at the deadline
        return {**cfg, "status": "ok", "images_per_s": 4.0, "s_per_image": 0.25,
                "compile_s": 1.0, "ratio_vs_floor": 1.1}

    monkeypatch.setattr(recovery, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        recovery.main(["--quick", "--out", str(tmp_path), "--models", "tiny8", "--tasks",
                       "cs-dense", "--batches", "1,2"])
    (path,) = tmp_path.glob("recovery_quick_*.json")
    data = json.loads(path.read_text())
    assert [r["batch"] for r in data["rows"]] == [1]
    assert any(n.startswith("partial: the 1 measurements") for n in data["notes"])


def test_the_floor_runs_on_the_devices_the_solve_ran_on():
    """``recover`` pads a batch of 1 to the 2 devices and shards it; the floor stayed on one
    device, so the ratio compared 2 devices with 1."""
    row = C.run_worker("recovery", dict(model="tiny8", batch=1, maxiter=2, floor_iters=1,
                                        repeats=0), env=scaling.device_env("cpu", 2),
                       timeout=600)
    assert row["status"] == "ok", row.get("error")
    assert row["devices_used"] == row["floor_devices_used"] == 2 and row["floor_batch"] == 2


def test_precision_saves_each_measurement_and_measures_the_reference_first(monkeypatch,
                                                                           tmp_path):
    """A run stopped part-way (``benchmarks.all --budget``) keeps its finished rows (it wrote
    nothing before its end); ``highest``, the reference, comes first whatever the order
    asked for (``--modes default,highest`` left ``default`` without a reference)."""
    seen = []

    def measure(cfg, return_images=False, with_environment=True):
        seen.append(cfg["precision"])
        if len(seen) == 2:
            raise KeyboardInterrupt  # stands in for the kill at the deadline
        return {**cfg, "status": "ok", "images_per_s": 4.0, "psnr_mean": 30.0}, None

    monkeypatch.setattr(recovery, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        precision.main(["--quick", "--out", str(tmp_path), "--modes", "default,highest"])
    assert seen == ["highest", "default"]
    (path,) = tmp_path.glob("precision_quick_*.json")
    data = json.loads(path.read_text())
    assert [r["precision"] for r in data["rows"]] == ["highest"]
    assert any(n.startswith("partial: the 1 measurements") for n in data["notes"])


def test_training_saves_each_measurement(monkeypatch, tmp_path):
    calls = []

    def measure(cfg, with_environment=True):
        calls.append(cfg)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return {**cfg, "status": "ok", "images_per_s": 4.0, "ratio_vs_floor": 1.1}

    monkeypatch.setattr(training, "measure", measure)
    with pytest.raises(KeyboardInterrupt):
        training.main(["--quick", "--out", str(tmp_path), "--batches", "2,4"])
    (path,) = tmp_path.glob("training_quick_*.json")
    assert [r["batch"] for r in json.loads(path.read_text())["rows"]] == [2]


@pytest.mark.parametrize("module,argv", [
    (recovery, ["--floor-iters", "0"]), (recovery, ["--maxiter", "0"]),
    (recovery, ["--max-batch", "-1"]), (recovery, ["--max-batch", "0"]),
    (recovery, ["--repeats", "-3"]), (recovery, ["--models", ","]),
    (training, ["--steps", "0"]), (compile_time, ["--batch", "0"]),
    (compile_time, ["--batch", "-2"]), (scaling, ["--per-device-batch", "0"]),
    (precision, ["--tolerance-db", "-1"]), (precision, ["--tolerance-db", "nan"]),
    (precision, ["--batch", "0"]), (bench_all, ["--skip", "nonesuch"])],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v.__name__.split(".")[-1])
def test_bad_numbers_are_usage_errors(module, argv, monkeypatch, tmp_path):
    """Each compiled and solved, then divided by zero in a 'failed' row, wrote an empty result,
    or was silently ignored (a tolerance below 0 crashed after every mode had run)."""
    for target, name in ((recovery, "sweep"), (C, "run_worker"), (precision, "run"),
                         (training, "measure"), (compile_time, "measure"),
                         (recovery, "measure")):
        if hasattr(target, name):
            monkeypatch.setattr(target, name, _stop)
    with pytest.raises(SystemExit) as e:
        module.main(["--quick", *argv, "--out", str(tmp_path)])
    assert e.value.code == 2


def test_the_compile_goal_reads_only_the_goal_models():
    rec = {"quick": False, "environment": {}, "rows": [
        dict(model="mnist28", task="cs", operator="dense", batch=1, status="ok", compile_s=9.0,
             images_per_s=1.0, s_per_image=1.0, ratio_vs_floor=1.0, maxiter=300,
             iterations_max=300)]}
    compile_goal = next(g for g in goals.evaluate({"recovery": rec}) if g["id"] == "compile")
    assert compile_goal["status"] == "NOT MEASURED"  # it was PASS, from mnist28
    assert goals._verdict(goals.GOALS["compile"], 60.0) == (
        "MISS", "at the target, which it must be below")
