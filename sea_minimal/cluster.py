"""Fan a grid out over jobs with submitit: SLURM job arrays on a cluster, local processes for tests and one machine.

    python -m sea_minimal run GRID --executor slurm --jobs 16 --partition gpu --gpus-per-job 1 --time 240
    python -m sea_minimal run GRID --executor local --jobs 2

The pending items of the grid (those not in its results file) are dealt round-robin, in the runner's prompt-major
order, into ``jobs`` fixed lists. Each job loads the policy and the reward once, runs its list with
:func:`sea_minimal.runner.run_grid` (``only=`` its items) and appends every finished record to its own shard,
``<results>.shards/job-NNN.jsonl``, so a job that dies loses at most the item it was running. When the jobs end
(or on the next ``run``), the shards are folded into the results file in job order with
:func:`~sea_minimal.runner.merge_results` (deduplicated by the record key) and removed; a shard whose job still
holds its lock is left for later. Submitting again runs only what is still missing.

``submitit`` is the optional extra ``pip install -e ".[cluster]"``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from .runner import (Grid, GridError, ResultsFile, load_prompts, merge_results, pending_items, read_records,
                     record_key, run_grid)

EXECUTORS = ("local", "slurm")


def shard_dir(grid: Grid) -> Path:
    """Where the jobs of ``grid`` write: ``results/X.shards/`` beside ``results/X.jsonl``."""
    return grid.results.parent / f"{grid.results.stem}.shards"


def fold_shards(grid: Grid) -> int:
    """Folds every finished shard into the grid's results file (job order), removes it; returns records added.

    A shard still locked by its job (running) is skipped: the next fold picks it up."""
    added = 0
    folder = shard_dir(grid)
    for shard in sorted(folder.glob("job-*.jsonl")) if folder.is_dir() else []:
        try:
            held = ResultsFile(shard)  # the job's lock: refused while the job runs
        except RuntimeError:
            continue
        with held:
            added += merge_results(grid.results, shard)
            shard.unlink()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    return added


def plan(grid: Grid, jobs: int) -> list[list[tuple]]:
    """The pending items' keys (label, config hash, prompt id, seed), dealt round-robin into ``jobs`` lists (the
    empty ones dropped); deterministic for a given grid and results file."""
    prompts = load_prompts(grid.dataset, grid.data_dir)
    pending = pending_items(grid, prompts, {record_key(r) for r in read_records(grid.results)})
    keys = [(spec.label, spec.config_hash, row["id"], seed) for spec, row, seed in pending]
    return [chunk for chunk in (keys[k::jobs] for k in range(jobs)) if chunk]


def run_shard(grid: Grid, shard: str, keys: list[tuple]) -> dict:
    """One job: the items ``keys`` of ``grid``, appended to ``shard`` (models loaded once)."""
    return run_grid(replace(grid, results=Path(shard)), only={tuple(k) for k in keys}, progress=False)


def make_executor(kind: str, folder: Path, partition: str | None = None, gpus_per_job: int | None = None,
                  time_min: int | None = None):
    """A submitit executor: ``local`` (processes on this machine) or ``slurm`` (a job array)."""
    try:
        import submitit
    except ImportError:
        raise GridError("--executor needs submitit, an optional extra. Fix: pip install -e \".[cluster]\"") from None
    if kind not in EXECUTORS:
        raise GridError(f"--executor must be one of {EXECUTORS}, got {kind!r}.")
    if kind == "local":
        executor = submitit.LocalExecutor(folder=folder)
        executor.update_parameters(timeout_min=time_min or 24 * 60)
        return executor
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    except RuntimeError as err:  # submitit: 'Could not detect "srun"'
        raise GridError(f"--executor slurm needs a SLURM cluster ({err}). Fix: run on a SLURM login node, or use "
                        "--executor local.") from None
    params = {"timeout_min": time_min or 60, "nodes": 1, "tasks_per_node": 1}
    if partition:
        params["slurm_partition"] = partition
    if gpus_per_job:
        params["gpus_per_node"] = int(gpus_per_job)
    executor.update_parameters(**params)
    return executor


def submit(grid: Grid, executor: str, jobs: int, partition: str | None = None, gpus_per_job: int | None = None,
           time_min: int | None = None, wait: bool = True, log=print) -> dict:
    """Folds earlier shards, deals the pending items into ``jobs`` jobs and submits them as one array.

    With ``wait`` (the default, and what ``--executor local`` needs) it waits for the jobs, reports the ones that
    failed, and folds their shards. Returns {jobs, items, added, failed, pending_left}."""
    if jobs < 1:
        raise GridError(f"--jobs must be a positive integer, got {jobs}.")
    folded = fold_shards(grid)
    chunks = plan(grid, jobs)
    if not chunks:
        log(f"[sea_minimal] grid '{grid.name}': nothing pending in {grid.results}" +
            (f" (folded {folded} records from earlier jobs)" if folded else ""))
        return {"jobs": 0, "items": 0, "added": folded, "failed": 0, "pending_left": 0}
    folder = shard_dir(grid)
    folder.mkdir(parents=True, exist_ok=True)
    ex = make_executor(executor, folder / "submitit", partition, gpus_per_job, time_min)
    shards = [str(folder / f"job-{k:03d}.jsonl") for k in range(len(chunks))]
    submitted = ex.map_array(run_shard, [grid] * len(chunks), shards, chunks)
    log(f"[sea_minimal] grid '{grid.name}': {sum(map(len, chunks))} items in {len(chunks)} {executor} jobs "
        f"({', '.join(j.job_id for j in submitted)}), shards in {folder}")
    if not wait:
        return {"jobs": len(chunks), "items": sum(map(len, chunks)), "added": folded, "failed": 0,
                "pending_left": None}
    failed = 0
    for job in submitted:
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - one failed job must not hide the others' records
            failed += 1
            log(f"[sea_minimal] job {job.job_id} failed: {str(err).strip().splitlines()[-1] if str(err) else err}")
    added = folded + fold_shards(grid)
    left = sum(map(len, plan(grid, 1)))
    log(f"[sea_minimal] folded {added} records into {grid.results}; {left} items left"
        + (f"; {failed} job(s) failed: rerun to complete" if failed else ""))
    return {"jobs": len(chunks), "items": sum(map(len, chunks)), "added": added, "failed": failed,
            "pending_left": left}

