"""Prompts per minute of greedy decoding with prompts batched (sea_minimal.lm.greedy_batch) against one at a time,
printed as ratios measured in ONE run: the variants are interleaved (N=1, N=8, N=32, N=1, ...) and medians reported,
so slow drift of the machine hits all alike.

The prompts have different lengths (8 to 64 tokens), so the batches carry left padding as in real use; every variant
decodes the same prompts for the same number of tokens (no stop token), so the work per prompt is equal.

Usage:
    python scripts/benchmark_batching.py                      # bundled SmolLM2, CPU, float32
    python scripts/benchmark_batching.py --device cuda --prompts 64 --tokens 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sea_minimal import load_policy
from sea_minimal.lm import decode, encode_prompt, greedy_batch


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prompts_of(count: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(8, 64, count).round().long().tolist()
    return [torch.randint(100, vocab, (n,), generator=g) for n in lengths]


def run(model, prompts, batch: int, tokens: int, device: str) -> float:
    """Seconds to decode every prompt greedily for ``tokens`` tokens, ``batch`` prompts at a time."""
    sync(device)
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        part = [p.to(device) for p in prompts[i : i + batch]]
        if batch == 1:
            decode(model, encode_prompt(model, part[0]), 1, tokens, None, temperature=0.0)
        else:
            greedy_batch(model, part, tokens)
    sync(device)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per timed run (a multiple of every N)")
    parser.add_argument("--tokens", type=int, default=16, help="response tokens per prompt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes N (1 = one at a time)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="also write the raw timings here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    policy = load_policy(device=args.device)
    prompts = prompts_of(args.prompts, policy.vocab_size)
    with torch.no_grad():
        run(policy.model, prompts[:2], 2, 2, args.device)  # warm-up
        times = {n: [] for n in args.sizes}
        for _ in range(args.rounds):
            for n in args.sizes:
                times[n].append(run(policy.model, prompts, n, args.tokens, args.device))
    per_minute = {n: 60 * args.prompts / statistics.median(t) for n, t in times.items()}
    base = per_minute[min(args.sizes)]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.prompts} prompts of 8-64 tokens, "
          f"{args.tokens} response tokens each, median of {args.rounds} interleaved rounds")
    for n, rate in per_minute.items():
        print(f"  N = {n:3d}: {rate:8.1f} prompts per minute   ratio to N = {min(args.sizes)}: {rate / base:5.2f}x")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "seconds": times, "prompts_per_minute": per_minute}, fh, indent=1)


if __name__ == "__main__":
    main()
