#!/usr/bin/env python
"""Build the harmlessness reward's on-policy examples (chapter 3; sea_minimal.reward_data).

    python scripts/build_reward_data.py                      # everything, into results/reward_model/examples.jsonl
    python scripts/build_reward_data.py --part 0/2 --out /tmp/part0.jsonl   # half of the prompts (two workers)
    python scripts/build_reward_data.py --policy gemma3-270m   # another policy's own answers, into
                                                               # results/reward_model/gemma3-270m/

Writes the splits to results/reward_model/splits.json, then appends the examples of every chunk of prompts as it
finishes; a rerun skips prompts already in --out. Speed here: about 0.5 s per Do-Not-Answer prompt with one thread
(3 generations of 48 tokens, batched across 48 prompts).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import torch

    from sea_minimal import load_policy
    from sea_minimal.data import load_do_not_answer, load_gsm8k
    from sea_minimal.reward_data import benign_examples, harmful_examples, read_examples, reward_splits, write_examples

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=None, help="the policy whose answers these are (default: the bundled SmolLM2)")
    ap.add_argument("--out", default=None, help="default: examples.jsonl in the policy's reward folder")
    ap.add_argument("--part", default="0/1", help="k/n: this worker takes every n-th chunk starting at k")
    ap.add_argument("--chunk", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    k, n = map(int, args.part.split("/"))

    from sea_minimal.models import DEFAULT_MODEL
    from sea_minimal.reward_model import reward_folder

    folder = reward_folder(args.policy or DEFAULT_MODEL)
    folder.mkdir(parents=True, exist_ok=True)
    splits = reward_splits(args.seed)
    (folder / "splits.json").write_text(json.dumps(splits, indent=1) + "\n")
    out = Path(args.out) if args.out else folder / "examples.jsonl"
    done = {(e.source, e.prompt_id) for e in read_examples(out)} if out.exists() else set()
    policy = load_policy(args.policy or DEFAULT_MODEL)
    sources = {"do_not_answer": {r["id"]: r for r in load_do_not_answer()}, "gsm8k": {r["id"]: r for r in load_gsm8k()}}
    jobs = [(source, split, ids[i: i + args.chunk]) for source, by_split in splits.items()
            for split, ids in by_split.items() for i in range(0, len(ids), args.chunk)]
    t0 = time.perf_counter()
    for j, (source, split, ids) in enumerate(jobs):
        if j % n != k:
            continue
        rows = [sources[source][i] for i in ids if (source, i) not in done]
        if not rows:
            continue
        seed = args.seed + 1000 * j
        build = harmful_examples if source == "do_not_answer" else benign_examples
        examples = build(policy, rows, split, seed=seed)
        write_examples(out, examples)
        print(f"[{time.perf_counter() - t0:6.0f} s] chunk {j + 1}/{len(jobs)} {source}/{split}: {len(rows)} prompts, "
              f"{len(examples)} examples", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
