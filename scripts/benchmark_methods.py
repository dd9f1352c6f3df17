#!/usr/bin/env python
"""Wall time and peak memory of every method on the same prompts, each run in a fresh process.

    python scripts/benchmark_methods.py                          # book scale, 2 prompts, writes results/cost_benchmark.json
    python scripts/benchmark_methods.py --scale smoke --out /tmp/cost.json
    python scripts/benchmark_methods.py --round 2 --prompts 5    # round 2, writes results/cost_benchmark_v2.json

Methods and their settings are those of the book's grids. Round 1 (the default): ``baselines`` and ``sea`` (see
sea_minimal.experiments) plus Best-of-N with N = 128 and 256 (not at smoke scale), so that one Best-of-N setting
spends about as many model tokens as SEA. Round 2: ``baselines_v2`` and ``sea_v2`` (50 tokens, harmlessness-v2, each
SEA recipe at every iteration budget), with the grid's Best-of-256 run as Best-of-N for N = 4, 16, 64 and 256
(the grid reads those from one run of 256 samples; memory grows with N, so each is measured on its own). The grids'
round-2 records carry a peak memory too, but each is measured in a process that ran other methods before, whose
memory the allocator keeps; this script's fresh processes are what a memory comparison needs.

Why one process per (method, prompt): on a CPU, PyTorch's allocator keeps memory it once used, so a method measured
after another inherits its peak. Each worker loads the policy and the reward, runs one forward pass over the prompt (the weights are memory-mapped
and only count once touched), records its resident memory, runs one
method on one prompt, and reports the peak resident memory above that level (``resource.getrusage`` high-water mark
on CPU; the CUDA allocator's peak on GPU), the wall time of the method call alone and the token counts. The order is
interleaved (for each prompt, every method), so slow phases of a shared machine hit all methods alike. Results are
written after every worker (an interrupted run keeps what it measured; a rerun skips what is there).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORKER = r"""
import json, resource, sys, time
import torch
spec = json.loads(sys.argv[1])
if spec.get("threads"):
    torch.set_num_threads(int(spec["threads"]))
from sea_minimal.methods import get_method
from sea_minimal.runner import make_policy, make_reward, load_prompts
policy = make_policy(spec["policy"], spec["device"])
reward = make_reward(spec["reward"], policy)
prompt = [r for r in load_prompts(spec["dataset"], spec["data_dir"]) if r["id"] == spec["prompt_id"]][0]["prompt"]
cuda = policy.device.type == "cuda"
with torch.no_grad():  # touch every weight once (safetensors are memory-mapped) and warm up the kernels
    policy.model(input_ids=policy.encode_prompt(prompt)[None])
if cuda:
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
else:
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (the load's high-water mark)
start = time.perf_counter()
res = get_method(spec["method"])(policy, reward, prompt, 0, **spec["params"])
if cuda:
    torch.cuda.synchronize()
wall = time.perf_counter() - start
peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else \
    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
print("RESULT " + json.dumps({"wall_s": wall, "peak_mib_above_loaded": max(0.0, peak), "device": str(policy.device),
                              "reward": res.candidates[res.selected]["reward"], **res.compute}))
"""


GRIDS = {1: ("baselines", "sea"), 2: ("baselines_v2", "sea_v2")}  # round -> the grids whose methods are measured


def method_specs(scale: str, round_: int = 1, **overrides) -> list[dict]:
    """Each method of the round's grids as {label, method, params}: Best-of-N once per N (see the module docstring)."""
    from sea_minimal import experiments
    from sea_minimal.analysis import BEST_OF_SIZES  # round 2: the rows chapter 4 reads from the first N of 256 samples

    specs = []
    for name in GRIDS[round_]:
        grid = experiments.experiment_grid(name, scale, **overrides)
        specs += [{"label": m.label, "method": m.method, "params": m.params} for m in grid.methods]
    bon = next(s for s in specs if s["method"] == "best_of_n")
    if round_ == 2:  # the grid's one Best-of-256 run stands for N = 4 ... 256
        at, top = specs.index(bon), bon["params"]["n"]  # 256 at book scale, capped at smoke scale
        specs[at:at + 1] = [{"label": f"bon[n={n}]", "method": "best_of_n", "params": {**bon["params"], "n": n}}
                            for n in BEST_OF_SIZES if n <= top]
    for n in (128, 256) if scale != "smoke" and round_ == 1 else ():
        specs.append({"label": f"bon[n={n}]", "method": "best_of_n", "params": {**bon["params"], "n": n}})
    return specs


def main(argv=None) -> int:
    from sea_minimal import experiments

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="book", choices=experiments.SCALES)
    ap.add_argument("--round", type=int, default=1, choices=sorted(GRIDS), dest="round_",
                    help="1: the first grids (32 tokens); 2: the round-2 grids (50 tokens, harmlessness-v2)")
    ap.add_argument("--prompts", type=int, default=2, help="first N prompts of the evaluation subset")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker")
    ap.add_argument("--device", default=None)
    ap.add_argument("--policy", default=None, help="policy (default: the grids')")
    ap.add_argument("--reward", default=None, help="reward (default: the grids')")
    ap.add_argument("--data-dir", default=None, help="folder holding advbench/ (default: $SEA_DATA_DIR)")
    ap.add_argument("--only", action="append", help="labels to run (default: all)")
    ap.add_argument("--out", default=None,
                    help="JSON file (default: results/cost_benchmark.json, round 2: results/cost_benchmark_v2.json)")
    args = ap.parse_args(argv)

    overrides = {"policy": args.policy, "reward": args.reward, "data_dir": args.data_dir}
    grid = experiments.experiment_grid(GRIDS[args.round_][1], args.scale, **overrides)
    ids = [row["id"] for row in experiments.load_prompts(grid.dataset, grid.data_dir)][: args.prompts]
    specs = method_specs(args.scale, args.round_, **overrides)
    unknown = sorted(set(args.only or ()) - {s["label"] for s in specs})
    if unknown:
        raise SystemExit(f"--only {', '.join(unknown)}: no such method in round {args.round_}; choose from "
                         + ", ".join(s["label"] for s in specs))
    specs = [s for s in specs if not args.only or s["label"] in args.only]
    if args.out is None:
        args.out = str(ROOT / "results" / ("cost_benchmark.json" if args.round_ == 1 else "cost_benchmark_v2.json"))
    out = Path(args.out)
    data = json.loads(out.read_text()) if out.exists() else {"runs": []}
    done = {(r["label"], r["prompt_id"], json.dumps(r["params"], sort_keys=True)) for r in data["runs"]}
    data.update({"scale": args.scale, "round": args.round_, "policy": grid.policy, "reward": grid.reward,
                 "threads": args.threads,
                 "note": "one fresh process per (method, prompt); peak memory above the loaded model"})
    for pid in ids:
        for spec in specs:
            key = (spec["label"], pid, json.dumps(spec["params"], sort_keys=True))
            if key in done:
                continue
            payload = {**spec, "prompt_id": pid, "policy": grid.policy, "reward": grid.reward, "device": args.device,
                       "dataset": grid.dataset, "data_dir": grid.data_dir, "threads": args.threads}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", WORKER, json.dumps(payload)], capture_output=True, text=True,
                                  cwd=ROOT, env={**os.environ, "TQDM_DISABLE": "1"})
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-3000:], file=sys.stderr)
                raise SystemExit(f"worker failed for {spec['label']} on prompt {pid} (exit {proc.returncode})")
            rec = {"label": spec["label"], "method": spec["method"], "params": spec["params"], "prompt_id": pid,
                   "process_s": time.perf_counter() - t0, **json.loads(line[0][len("RESULT "):])}
            data["runs"].append(rec)
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = out.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1) + "\n")
            os.replace(tmp, out)  # atomic: an interrupted run keeps every finished worker
            print(f"{spec['label']:22s} prompt {pid:4d}  {rec['wall_s']:7.1f} s  "
                  f"{rec['peak_mib_above_loaded']:7.1f} MiB  {rec['forward_tokens'] + rec['backward_tokens']:8d} tokens",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
