"""The benchmark scripts whose ratios the README quotes run end to end at a tiny size and write what they claim
(chapter 6 runs scripts/benchmark_methods.py at smoke scale; the two below have no notebook)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow  # the bundled model, a few seconds each


def run_script(name, *args):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_benchmark_batching_at_a_tiny_size(tmp_path):
    out = tmp_path / "batching.json"
    stdout = run_script("benchmark_batching.py", "--prompts", "2", "--tokens", "2", "--sizes", "1", "2",
                        "--rounds", "1", "--threads", "1", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data["prompts_per_minute"]) == {"1", "2"} and all(v > 0 for v in data["prompts_per_minute"].values())
    assert "ratio to N = 1:  1.00x" in stdout and "N =   2" in stdout


def test_benchmark_batching_sea_at_a_tiny_size(tmp_path):
    out = tmp_path / "batching_sea.json"
    stdout = run_script("benchmark_batching.py", "--method", "sea", "--prompts", "2", "--tokens", "3", "--steps", "2",
                        "--chains", "1", "--sizes", "1", "2", "--rounds", "1", "--threads", "1", "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data["prompts_per_minute"]) == {"1", "2"} and all(v > 0 for v in data["prompts_per_minute"].values())
    assert data["logits_mib"]["2"] == pytest.approx(2 * data["logits_mib"]["1"])  # N x C x T x V grows with N
    assert all(v > 0 for v in data["bare_forward_backward_s"].values()) and "a bare forward+backward" in stdout


def test_benchmark_sampler_at_a_tiny_size(tmp_path):
    out = tmp_path / "sampler.json"
    stdout = run_script("benchmark_sampler.py", "--chains", "1", "--length", "2", "--steps", "3", "--rounds", "1",
                        "--json", str(out))
    data = json.loads(out.read_text())
    assert set(data["median_s"]) == {"bare_fwd_bwd", "langevin_p32", "langevin_p256", "reference_p32"}
    assert all(math.isfinite(data[k]) and data[k] > 0 for k in ("ratio_a", "ratio_b"))
    assert "(a) langevin iteration / bare forward+backward" in stdout


def test_round_2_benchmark_measures_every_round_2_method_in_the_grids_settings():
    from conftest import load_script

    from sea_minimal import analysis

    bench = load_script("benchmark_methods")
    specs = {s["label"]: s for s in bench.method_specs("book", 2)}
    assert list(specs) == ["greedy", "bon[n=4]", "bon[n=16]", "bon[n=64]", "bon[n=256]", "args", "cbs[chunk=10]",
                           "cbs[chunk=32]", "sea-langevin[its=10]", "sea-langevin[its=30]", "sea-langevin[its=100]",
                           "sea-reference[its=10]", "sea-reference[its=30]", "sea-reference[its=100]"]
    assert all(s["params"]["length"] == 50 for s in specs.values())  # the round-2 grids' 50 tokens
    assert [specs[f"bon[n={n}]"]["params"]["n"] for n in (4, 16, 64, 256)] == [4, 16, 64, 256]
    assert [s["params"]["n"] for s in specs.values() if s["method"] == "best_of_n"] == list(analysis.BEST_OF_SIZES)
    assert specs["sea-langevin[its=100]"]["params"]["steps"] == 100
    assert specs["sea-langevin[its=30]"]["params"]["alpha"] == 0.568  # the weight rule's alpha, not round 1's 500
    assert "bon[n=128]" not in specs  # round 1's extra sizes stay in round 1
    assert "bon[n=128]" in {s["label"] for s in bench.method_specs("book", 1)}


def test_round_2_benchmark_runs_at_smoke_scale_and_refuses_an_unknown_method(tmp_path):
    from sea_minimal import experiments

    out = tmp_path / "cost_v2.json"
    # the command chapter 6 runs when its cost file is missing
    cmd = experiments.benchmark_command("smoke", out, round_=2, prompts=1, only=("greedy", "bon[n=4]"))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    stdout = done.stdout
    data = json.loads(out.read_text())
    assert data["round"] == 2 and [r["label"] for r in data["runs"]] == ["greedy", "bon[n=4]"], data
    assert all(r["peak_mib_above_loaded"] >= 0 and r["forward_tokens"] > 0 for r in data["runs"]) and "greedy" in stdout
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark_methods.py"), "--round", "2", "--only",
                           "sea-langevin", "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode != 0 and "no such method in round 2" in done.stderr and "sea-langevin[its=30]" in done.stderr
