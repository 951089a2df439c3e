"""Smoke test of ``experiments.stabilisers`` on a tiny prior and a 3-step retraining."""

from __future__ import annotations

import csv
import math

import jax
import pytest

import flowinv
from experiments import common, stabilisers
from flowinv import checkpoints


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory) -> str:
    flow = flowinv.glow((8, 8, 1), levels=1, steps=1, width=8, preprocess="logit")
    images = jax.random.uniform(jax.random.PRNGKey(0), (4, 8, 8, 1), minval=0.05, maxval=0.95)
    params = jax.jit(flow.init)(jax.random.PRNGKey(1), images)
    path = tmp_path_factory.mktemp("prior") / "glow-tiny"
    checkpoints.save(path, params, {"kind": "flow", "architecture": checkpoints.flow_config(flow)})
    return str(path)


def _read(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_stabilisers_outputs(tiny_prior, tmp_path):
    out = tmp_path / "stab"
    argv = ["--prior", tiny_prior, "--dataset", "digits", "--train-steps", "3",
            "--num-images", "2", "--maxiter", "3", "--out", str(out), "--no-progress"]
    result = stabilisers.main(argv)
    summary = _read(out / "summary.csv")
    part1 = [r for r in summary if r["part"].startswith("1:")]
    part2 = [r for r in summary if r["part"].startswith("2:")]
    # 3 variants × 2 tasks × (in-dist + OOD), then 2 trained models × 2 tasks × 2 sets
    assert len(part1) == 12 and len(part2) == 8
    assert {r["model"] for r in part1} == {"as trained", "clip=40", "ε removed"}
    assert {r["model"] for r in part2} == {"trained ε=0.0005", "trained ε=0"}
    assert {r["test_set"] for r in summary} == {"in-dist:digits", "ood:lfw"}
    assert all(math.isfinite(float(r["psnr"])) for r in summary)
    assert all(0 <= int(r["diverged"]) <= int(r["images"]) == 2 for r in summary)
    for model in ("trained ε=0.0005", "trained ε=0"):
        bpds = {r["test_bpd"] for r in part2 if r["model"] == model}
        assert len(bpds) == 1 and float(bpds.pop()) > 0
    rows = _read(out / "results.csv")
    assert tuple(rows[0]) == common.RESULT_COLUMNS
    assert len(rows) == 2 * (12 + 8)
    for name in ("psnr.png", "samples_ood_cs_part1.png", "samples_ood_cs_part2.png"):
        assert (out / name).stat().st_size > 1000
    # the retrained models stay in --out, never in checkpoints/
    models = sorted(p.name for p in out.glob("train_*"))
    assert models == ["train_glow-digits_eps0.0005_seed0_steps3",
                      "train_glow-digits_eps0_seed0_steps3"]
    assert result["out"] == str(out)


def test_stabilisers_rejects_a_realnvp_training_recipe():
    parser = stabilisers.build_parser()
    args = parser.parse_args(["--train-prior", "realnvp-mnist"])
    with pytest.raises(ValueError, match="Glow recipe"):
        stabilisers.config_from_args(args)
