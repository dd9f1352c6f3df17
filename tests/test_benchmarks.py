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
