"""Command line: ``python -m sea_minimal align "prompt"``, ``python -m sea_minimal run grid.yaml``,
``python -m sea_minimal merge target.jsonl part.jsonl`` (folds parallel workers' results files together) and
``python -m sea_minimal data fetch`` (downloads the data sets, checked by sha256: sea_minimal/data_fetch.py).

Runs SEA with the bundled defaults (SmolLM2-135M-Instruct, the demo vocabulary reward) and prints the
initial and final texts; ``--json FILE`` writes the full result (texts, trajectories, config, versions).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields

from .config import SEAConfig


def _parser() -> argparse.ArgumentParser:
    from .data import FILES

    parser = argparse.ArgumentParser(prog="python -m sea_minimal",
                                     description="SEA: inference-time alignment in continuous space (sea_minimal).")
    sub = parser.add_subparsers(dest="command", required=True)
    align = sub.add_parser("align", help="align one or more prompts with SEA",
                           description="Run SEA on the given prompts and print the text before and after.")
    align.add_argument("prompts", nargs="+", help="user prompt(s); each goes through the model's chat template")
    align.add_argument("--model", default="smollm2-135m-instruct",
                       help="bundled name, local folder or Hugging Face id (default: %(default)s)")
    align.add_argument("--system-prompt", default=None,
                       help="system message for the chat template (default: the template's own; '' for none, as in the paper)")
    align.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    align.add_argument("--recipe", choices=["paper", "released"], default="paper",
                       help="paper = Langevin on the energy; released = the authors' code (Adam, top-k, rewrite)")
    align.add_argument("--chains", type=int, default=4, help="number of chains C (default: %(default)s)")
    align.add_argument("--length", type=int, default=32, help="response tokens T (default: %(default)s)")
    align.add_argument("--steps", type=int, default=30, help="iterations (default: %(default)s)")
    align.add_argument("--seed", type=int, default=0)
    align.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="any other SEAConfig field, e.g. --set alpha=100 --set use_noise=false")
    align.add_argument("--json", metavar="FILE", help="write the full result(s) as JSON to FILE")
    align.add_argument("--quiet", action="store_true", help="no progress bar")
    run = sub.add_parser("run", help="run an experiment grid (YAML) into a resumable JSONL results file",
                         description="Run every (method, prompt, seed) of a grid that is not yet in its results file; "
                                     "safe to interrupt and rerun (see sea_minimal/runner.py for the grid format).")
    run.add_argument("grid", help="grid file, e.g. grids/smoke.yaml")
    run.add_argument("--results", metavar="FILE", help="results file (default: the grid's `results:`)")
    run.add_argument("--limit", type=int, help="run at most this many pending items now")
    run.add_argument("--only", metavar="PATTERN", action="append",
                     help="run only the methods whose label matches this pattern: * and ? are wildcards, brackets "
                          "are literal, e.g. 'sea-langevin*' or 'bon[n=16]@*' (repeatable)")
    run.add_argument("--dry-run", action="store_true", help="only count the items done and pending")
    run.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is much faster on a "
                                                 "CPU shared with other jobs)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.add_argument("--batch-prompts", type=int, metavar="N",
                     help="run up to N prompts together in methods that have a batched form (greedy, best_of_n, "
                          "args, cbs, sea); the records are those of one prompt at a time, up to floating-point "
                          "rounding (default: the grid's "
                          "`batch_prompts:`, else 1)")
    cluster = run.add_argument_group("jobs (submitit, the optional extra `pip install -e \".[cluster]\"`)",
                                     "Deal the pending items into K jobs that write shards, folded into the results "
                                     "file when they end (sea_minimal/cluster.py).")
    cluster.add_argument("--executor", choices=["local", "slurm"],
                         help="local: K processes on this machine; slurm: a SLURM job array")
    cluster.add_argument("--jobs", type=int, default=1, metavar="K", help="number of jobs (default: %(default)s)")
    cluster.add_argument("--partition", help="SLURM partition")
    cluster.add_argument("--gpus-per-job", type=int, metavar="G", help="GPUs per SLURM job")
    cluster.add_argument("--time", type=int, metavar="MINUTES", help="time limit per job (SLURM default: 60)")
    cluster.add_argument("--no-wait", action="store_true",
                         help="submit and return (SLURM); the next `run` folds the shards of finished jobs")
    merge = sub.add_parser("merge", help="fold results files of parallel workers into one",
                           description="Append to TARGET every record of the PARTS that TARGET lacks (same label, "
                                       "config hash, prompt id and seed); merging twice adds nothing.")
    merge.add_argument("target", help="the results file to complete, e.g. results/advbench_ablations.jsonl")
    merge.add_argument("parts", nargs="+", help="results files written with `run --results`")
    data = sub.add_parser("data", help="download the data sets into a data directory",
                          description="Manage the data directory that sea_minimal.data reads.")
    data_sub = data.add_subparsers(dest="action", required=True)
    fetch = data_sub.add_parser("fetch", help="download every data set from its public source, checked by sha256",
                                description="Download each data set from its public source (pinned to a commit or "
                                            "tag), check its pinned sha256 and write the layout the loaders read; "
                                            "files already there with the right hash are skipped, so rerunning is "
                                            "safe (see sea_minimal/data_fetch.py for the sources).")
    fetch.add_argument("--dir", metavar="DIR", help="data directory (default: $SEA_DATA_DIR, else ../shared/data "
                                                    "beside the repository)")
    fetch.add_argument("--only", metavar="NAME", nargs="+", action="extend",
                       help=f"only these data sets (default: all of {', '.join(FILES)})")
    fetch.add_argument("--best-effort", action="store_true",
                       help="report the files that could not be fetched, but exit with status 0")
    fetch.add_argument("--force", action="store_true",
                       help="replace a file that is there with another sha256 (default: refuse and say so)")
    return parser


def _run_grid(args) -> int:
    from .models import ModelLoadError
    from .rewards import VocabMismatchError
    from .runner import (GridError, load_grid, load_prompts, pending_items, read_records, record_key, run_grid,
                         select_methods)

    try:
        grid = select_methods(load_grid(args.grid, results=args.results), args.only)
        if args.dry_run:
            prompts = load_prompts(grid.dataset, grid.data_dir)
            done = {record_key(r) for r in read_records(grid.results)}
            from .cluster import shard_dir  # jobs' shards not folded yet

            shards = {record_key(r) for p in sorted(shard_dir(grid).glob("job-*.jsonl")) for r in read_records(p)}
            shards -= done
            left = pending_items(grid, prompts, done | shards)
            total = len(prompts) * len(grid.methods) * len(grid.seeds)
            print(f"grid '{grid.name}': {total} items, {total - len(left)} done, {len(left)} pending -> {grid.results}"
                  + (f" ({len(shards)} of the done in job shards not folded yet: the next `run` folds them)"
                     if shards else ""))
            for m in grid.methods:
                print(f"  {m.label:24s} {m.method:10s} {m.config_hash} {m.params}")
            return 0
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        if args.batch_prompts is not None:
            if args.batch_prompts < 1:
                raise GridError(f"--batch-prompts must be a positive integer, got {args.batch_prompts}.")
            grid.batch_prompts = args.batch_prompts
        if args.executor:
            from .cluster import submit

            if args.limit is not None:
                raise GridError("--limit does not combine with --executor: the jobs share all pending items.")
            if args.threads:
                grid.threads = args.threads  # the jobs are new processes: they set their own threads
            summary = submit(grid, args.executor, args.jobs, partition=args.partition, gpus_per_job=args.gpus_per_job,
                             time_min=args.time, wait=not args.no_wait)
            return 1 if summary["failed"] else 0
        run_grid(grid, progress=not args.quiet, limit=args.limit)
    except (GridError, ModelLoadError, VocabMismatchError, FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def _parse_overrides(pairs: list[str]) -> dict:
    known = {f.name: f.type for f in fields(SEAConfig)}
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with FIELD one of {sorted(known)}")
        out[key] = json.loads(value.lower()) if value.lower() in ("true", "false") else _number_or_text(value)
    return out


def _number_or_text(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return _run_grid(args)
    if args.command == "data":
        from .data_fetch import fetch

        return fetch(args.dir, args.only, force=args.force, best_effort=args.best_effort)
    if args.command == "merge":
        from .runner import merge_results

        try:
            added = merge_results(args.target, *args.parts)
        except (FileNotFoundError, RuntimeError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"added {added} records to {args.target}")
        return 0
    from .models import ModelLoadError, load_policy
    from .rewards import demo_reward
    from .sampler import SEA

    factory = SEAConfig.paper if args.recipe == "paper" else SEAConfig.released_code
    try:
        config = factory(num_chains=args.chains, length=args.length, steps=args.steps, seed=args.seed,
                         **_parse_overrides(args.set))
        policy = load_policy(args.model, device=args.device, system_prompt=args.system_prompt)
    except (ValueError, ModelLoadError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    results = SEA(policy, demo_reward(policy), config).run(args.prompts, progress=not args.quiet)
    for res in results:
        print(f"\n=== {res.prompt}")
        best_init = max(range(len(res.initial_rewards)), key=res.initial_rewards.__getitem__)
        print(f"--- before (reward {res.initial_rewards[best_init]:.3f}): {res.initial_texts[best_init]}")
        print(f"--- after  (reward {res.candidates[res.selected]['reward']:.3f}, {res.candidates[res.selected]['source']}):"
              f" {res.text}")
        print(f"({res.iterations} iterations, {res.wall_time:.1f} s on {res.device})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump([r.to_dict() for r in results], fh, indent=1)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # the reader closed the pipe (`... --dry-run | head`): nothing went wrong in the run
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes stdout
        sys.exit(141)  # the shell's status for a writer ended by SIGPIPE
