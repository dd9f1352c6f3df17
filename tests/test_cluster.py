"""The cluster path (sea_minimal/cluster.py) through submitit's local executor: K jobs give the records of one
process; a job killed mid-run loses at most its current item, and submitting again completes the grid without
duplicates. The SLURM executor is built (not submitted: no cluster here)."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sea_minimal import runner

pytest.importorskip("submitit", reason="the cluster extra is not installed: pip install -e \".[cluster]\"")
from sea_minimal import cluster  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "Write a poem.", "Explain gravity.", "Say hi."]


def spec(results, sleep=0.0):
    return {"name": "tiny", "policy": "tiny-random", "reward": "linear", "length": 4, "seeds": [0, 1],
            "dataset": {"name": "inline", "prompts": PROMPTS}, "results": str(results), "sleep": sleep, "threads": 1,
            "methods": [{"name": "greedy", "method": "greedy"},
                        {"name": "bon", "method": "best_of_n", "params": {"n": 2, "initial": False}}]}


def comparable(path):
    recs = [json.loads(line) for line in Path(path).read_text().splitlines()]
    keep = ("label", "config_hash", "prompt_id", "seed", "text", "candidates", "metrics")
    return sorted(({k: r[k] for k in keep} for r in recs), key=lambda r: (r["label"], r["prompt_id"], r["seed"]))


def test_plan_deals_every_pending_item_once_and_deterministically(tmp_path):
    grid = runner.parse_grid(spec(tmp_path / "r.jsonl"))
    chunks = cluster.plan(grid, 3)
    keys = [k for chunk in chunks for k in chunk]
    assert len(chunks) == 3 and len(keys) == len(set(keys)) == 20
    assert [len(c) for c in chunks] == [7, 7, 6] and cluster.plan(grid, 3) == chunks
    assert len(cluster.plan(grid, 50)) == 20  # no empty jobs


def test_only_runs_the_given_items(tmp_path):
    grid = runner.parse_grid(spec(tmp_path / "r.jsonl"))
    mine = set(cluster.plan(grid, 4)[1])
    out = runner.run_grid(grid, only=mine, progress=False, log=lambda s: None)
    assert out["done"] == len(mine) and out["pending_left"] == 0
    assert {runner.record_key(r) for r in runner.read_records(grid.results)} == mine


@pytest.mark.heavy  # processes started by submitit: tens of seconds
def test_two_local_jobs_give_the_records_of_one_process(tmp_path):
    single = runner.parse_grid(spec(tmp_path / "one.jsonl"))
    runner.run_grid(single, progress=False, log=lambda s: None)
    grid = runner.parse_grid(spec(tmp_path / "jobs.jsonl"))
    logged = []
    out = cluster.submit(grid, "local", 2, log=logged.append)
    assert out == {"jobs": 2, "items": 20, "added": 20, "failed": 0, "pending_left": 0}, logged
    assert comparable(tmp_path / "jobs.jsonl") == comparable(tmp_path / "one.jsonl")
    assert not cluster.shard_dir(grid).exists() or not list(cluster.shard_dir(grid).glob("job-*.jsonl"))
    again = cluster.submit(grid, "local", 2, log=logged.append)
    assert again["jobs"] == 0 and len(runner.read_records(grid.results)) == 20


@pytest.mark.heavy  # processes started by submitit: tens of seconds
def test_a_killed_job_loses_at_most_its_current_item_and_a_resubmission_completes_the_grid(tmp_path):
    grid = runner.parse_grid(spec(tmp_path / "r.jsonl", sleep=0.4))
    out = cluster.submit(grid, "local", 2, wait=False, log=lambda s: None)
    assert out["jobs"] == 2
    shard = cluster.shard_dir(grid) / "job-000.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(runner.read_records(shard)) < 2:
        time.sleep(0.1)
    assert len(runner.read_records(shard)) >= 2, "job 0 wrote nothing in two minutes"
    kill_job_writing(shard)  # SIGKILL job 0 mid-run, as a scheduler or the OOM killer would
    while True:  # wait for job 1 to end by itself
        time.sleep(0.5)
        try:
            runner.ResultsFile(cluster.shard_dir(grid) / "job-001.jsonl").close()
            break
        except RuntimeError:
            continue
    cluster.fold_shards(grid)
    partial = runner.read_records(grid.results)
    assert 0 < len(partial) < 20 and len({runner.record_key(r) for r in partial}) == len(partial)
    done = cluster.submit(grid, "local", 2, log=lambda s: None)
    recs = runner.read_records(grid.results)
    assert done["pending_left"] == 0 and done["items"] == 20 - len(partial)
    assert len(recs) == 20 and len({runner.record_key(r) for r in recs}) == 20


def kill_job_writing(shard: Path) -> None:
    """SIGKILL the process that holds the lock on ``shard`` (a job's python), found through /proc."""
    import os
    import signal

    target = str(shard.resolve())
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    os.kill(int(pid), signal.SIGKILL)
                    return
            except OSError:
                continue


def test_slurm_executor_is_configured_from_the_options_and_needs_a_cluster(tmp_path, monkeypatch):
    from submitit.slurm import slurm

    with pytest.raises(runner.GridError, match="^--executor slurm needs a SLURM cluster .*--executor local"):
        cluster.make_executor("slurm", tmp_path)
    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # pretend srun is there
    ex = cluster.make_executor("slurm", tmp_path, partition="gpu", gpus_per_job=1, time_min=240)
    params = ex._executor.parameters
    assert params["partition"] == "gpu" and params["gpus_per_node"] == 1 and params["time"] == 240
    assert params["nodes"] == 1 and params["ntasks_per_node"] == 1
    with pytest.raises(runner.GridError, match="--executor must be one of"):
        cluster.make_executor("kubernetes", tmp_path)


@pytest.mark.heavy  # processes started by submitit: tens of seconds
def test_cli_runs_a_grid_through_local_jobs_and_refuses_bad_options(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(spec(tmp_path / "r.jsonl")))
    run = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(path), "--executor", "local", "--jobs", "2",
                          "--quiet"], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(runner.read_records(tmp_path / "r.jsonl")) == 20 and "folded 20 records" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(path), "--executor", "local", "--jobs", "0"],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--jobs" in bad.stderr


def test_a_dry_run_counts_records_still_in_shards_and_a_fold_moves_them_once(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(spec(tmp_path / "r.jsonl")))
    grid = runner.load_grid(path)
    chunk = cluster.plan(grid, 4)[0]
    cluster.run_shard(grid, str(cluster.shard_dir(grid) / "job-000.jsonl"), chunk)  # one job's work, in-process
    dry = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(path), "--dry-run"], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert dry.returncode == 0 and f"20 items, {len(chunk)} done, {20 - len(chunk)} pending" in dry.stdout
    assert f"({len(chunk)} of the done in job shards not folded yet" in dry.stdout
    assert cluster.fold_shards(grid) == len(chunk) and cluster.fold_shards(grid) == 0
    assert not cluster.shard_dir(grid).exists() and len(runner.read_records(grid.results)) == len(chunk)
