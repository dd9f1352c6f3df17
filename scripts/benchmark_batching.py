"""Prompts per minute with prompts batched against one at a time, printed as ratios measured in ONE run: the
variants are interleaved (N=1, N=8, N=32, N=1, ...) and medians reported, so slow drift of the machine hits all alike.

* ``--method greedy``: greedy decoding (sea_minimal.lm.greedy_batch).
* ``--method sea``: SEA's langevin recipe, ``SEA.run(prompts, batch_size=N)`` (N x C chains in one batch), with the
  book's reward (harmlessness-v2, a head on the policy's backbone). Also printed per N: the time of one iteration
  against a bare forward+backward of the same batch (N x C rows of T soft tokens after the stacked prompts), and the
  peak memory against N x C x T x V float32 logits (the state Z; its softmax, gradient and noise are as large); on the
  CPU the peak of one batch is read in a fresh process per N (the resident set does not fall when memory is freed).
* ``--method args`` / ``--method cbs``: the baselines' many-prompt forms (``baselines.args_many`` / ``cbs_many``, one
  prompt at a time through ``args`` / ``cbs``) with the same reward; ``--top-k`` candidates per ARGS step, CBS with
  ``--beams`` beams of ``--successors`` successors and ``--chunk`` tokens per chunk.

The prompts have different lengths (8 to 64 tokens), so the batches carry left padding as in real use; every variant
runs the same prompts for the same number of tokens (no stop token), so the work per prompt is equal.

Usage:
    python scripts/benchmark_batching.py                      # greedy, bundled SmolLM2, CPU, float32
    python scripts/benchmark_batching.py --method sea --prompts 8 --sizes 1 4 8 --tokens 16 --steps 5
    python scripts/benchmark_batching.py --method sea --device cuda --prompts 64 --sizes 1 8 32 --tokens 50
    python scripts/benchmark_batching.py --method args --prompts 8 --sizes 1 8 --tokens 16 --top-k 10
    python scripts/benchmark_batching.py --method cbs --prompts 8 --sizes 1 8 --tokens 16 --beams 2 --chunk 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from sea_minimal import SEA, SEAConfig, load_policy
from sea_minimal.lm import decode, encode_prompt, greedy_batch, next_token_logits, stack_prompts


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def prompts_of(count: int, vocab: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.linspace(8, 64, count).round().long().tolist()
    return [torch.randint(100, vocab, (n,), generator=g) for n in lengths]


def interleaved(sizes, rounds: int, prompts: int, run_one) -> tuple[dict, dict]:
    """Times ``run_one(n)`` (seconds for all ``prompts`` prompts in batches of n) for every batch size in ``sizes``,
    interleaved over ``rounds`` rounds so that slow drift of the machine hits all alike: (seconds per size, prompts
    per minute per size from the medians)."""
    times = {n: [] for n in sizes}
    for _ in range(rounds):
        for n in sizes:
            times[n].append(run_one(n))
    return times, {n: 60 * prompts / statistics.median(t) for n, t in times.items()}


def print_rates(header: str, per_minute: dict, digits: int = 2) -> None:
    """The header, then per batch size its prompts per minute and its ratio to the smallest size."""
    base = per_minute[min(per_minute)]
    print(header)
    for n, rate in per_minute.items():
        print(f"  N = {n:3d}: {rate:8.{digits}f} prompts per minute   ratio to N = {min(per_minute)}: {rate / base:5.2f}x")


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


def run_sea(policy, reward, prompts, batch: int, config: SEAConfig, device: str) -> tuple[float, list]:
    """Seconds for SEA on every prompt, ``batch`` prompts at a time, and the results."""
    sync(device)
    start = time.perf_counter()
    results = SEA(policy, reward, config).run([p.tolist() for p in prompts], progress=False, batch_size=batch)
    sync(device)
    return time.perf_counter() - start, results


def run_baseline(policy, reward, prompts, batch: int, method: str, params: dict, device: str) -> float:
    """Seconds for ARGS or CBS on every prompt, ``batch`` prompts at a time (1: the one-prompt function)."""
    from sea_minimal.baselines import BASELINES, BATCHED

    sync(device)
    start = time.perf_counter()
    for i in range(0, len(prompts), batch):
        part = [p.tolist() for p in prompts[i : i + batch]]
        if batch == 1:
            BASELINES[method](policy, reward, part[0], 0, initial=False, **params)
        else:
            BATCHED[method](policy, reward, part, [0] * len(part), initial=False, **params)
    sync(device)
    return time.perf_counter() - start


def main_baseline(args) -> None:
    from sea_minimal.runner import make_reward

    policy = load_policy(device=args.device)
    reward = make_reward(args.reward, policy)
    prompts = prompts_of(args.prompts, policy.vocab_size)
    if args.method == "args":
        params = {"top_k": args.top_k, "length": args.tokens, "fixed_length": True}
    else:
        params = {"beam_width": args.beams, "successors": args.successors, "chunk_length": args.chunk,
                  "length": args.tokens, "fixed_length": True}
    run_baseline(policy, reward, prompts[:2], 2, args.method, {**params, "length": 2}, args.device)  # warm-up
    times, per_minute = interleaved(args.sizes, args.rounds, args.prompts, lambda n: run_baseline(
        policy, reward, prompts, n, args.method, params, args.device))
    print_rates(f"{args.method} {params}, device {args.device}, torch threads {torch.get_num_threads()}, "
                f"{args.prompts} prompts of 8-64 tokens, reward {args.reward}, median of {args.rounds} interleaved rounds",
                per_minute)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "params": params, "seconds": times, "prompts_per_minute": per_minute},
                      fh, indent=1)


def per_iteration(results, batch: int) -> float:
    """Median seconds of one iteration of a batch, from the trajectories' clocks (time since the batch started)."""
    gaps = []
    for first in range(0, len(results), batch):
        clock = [row[0] for row in results[first].trajectory["wall_time"]]
        gaps += [b - a for a, b in zip(clock, clock[1:])]
    return statistics.median(gaps)


def bare_forward_backward(policy, prompts, batch: int, chains: int, tokens: int, device: str, repeats: int = 3) -> float:
    """Median seconds of one forward+backward of ``batch`` x ``chains`` rows of soft tokens after the stacked prompts:
    the least one SEA iteration has to do."""
    cache = stack_prompts([encode_prompt(policy.model, p.to(device)) for p in prompts[:batch]])
    z = torch.randn(batch * chains, tokens, policy.vocab_size, device=device, requires_grad=True)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        next_token_logits(policy.model, cache, torch.softmax(z, -1)).logsumexp(-1).sum().backward()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def fresh_process_peak(args, n: int) -> float:
    """Peak memory (MiB above the level after loading the models) of ONE batch of n prompts, in a new process: on
    the CPU the meter reads the resident set, which an earlier, larger run in the same process leaves high."""
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "peak.json"
        subprocess.run([sys.executable, __file__, "--method", "sea", "--peak-only", "--prompts", str(n), "--sizes",
                        str(n), "--tokens", str(args.tokens), "--steps", str(args.steps), "--chains", str(args.chains),
                        "--reward", args.reward, "--threads", str(args.threads or 1), "--json", str(out)], check=True,
                       capture_output=True)
        return json.loads(out.read_text())["peak_memory_mib"]


def peak_only(args) -> None:
    from sea_minimal.runner import make_reward

    policy = load_policy(device=args.device)
    reward = make_reward(args.reward, policy)
    config = SEAConfig.paper(length=args.tokens, steps=args.steps, num_chains=args.chains, alpha=0.568, step_size=10.0,
                             noise_scale=0.0224, init_keep_sample=True, track_soft_reward=False)
    _, results = run_sea(policy, reward, prompts_of(args.prompts, policy.vocab_size), args.prompts, config, args.device)
    Path(args.json).write_text(json.dumps({"peak_memory_mib": max(r.compute["peak_memory_mib"] for r in results)}))


def main_sea(args) -> None:
    from sea_minimal.runner import make_reward

    policy = load_policy(device=args.device)
    reward = make_reward(args.reward, policy)
    prompts = prompts_of(args.prompts, policy.vocab_size)
    config = SEAConfig.paper(length=args.tokens, steps=args.steps, num_chains=args.chains, alpha=0.568, step_size=10.0,
                             noise_scale=0.0224, init_keep_sample=True, track_soft_reward=False)
    run_sea(policy, reward, prompts[:1], 1, SEAConfig.paper(length=2, steps=2, num_chains=1), args.device)  # warm-up
    times, iteration, memory = {n: [] for n in args.sizes}, {n: [] for n in args.sizes}, {}
    for _ in range(args.rounds):
        for n in args.sizes:
            seconds, results = run_sea(policy, reward, prompts, n, config, args.device)
            times[n].append(seconds)
            iteration[n].append(per_iteration(results, n))
            memory[n] = max(r.compute["peak_memory_mib"] for r in results)
    bare = {n: bare_forward_backward(policy, prompts, n, args.chains, args.tokens, args.device) for n in args.sizes}
    if not args.device.startswith("cuda"):  # memory the process has freed is reused, so only a fresh one shows a peak
        memory = {n: fresh_process_peak(args, n) for n in args.sizes}
    per_minute = {n: 60 * args.prompts / statistics.median(t) for n, t in times.items()}
    logits_mib = {n: n * args.chains * args.tokens * policy.vocab_size * 4 / 2**20 for n in args.sizes}
    base = per_minute[min(args.sizes)]
    print(f"SEA langevin, device {args.device}, torch threads {torch.get_num_threads()}, {args.prompts} prompts of "
          f"8-64 tokens, C = {args.chains} chains, T = {args.tokens} tokens, {args.steps} iterations, reward "
          f"{args.reward}, median of {args.rounds} interleaved rounds")
    for n in args.sizes:
        it = statistics.median(iteration[n])
        print(f"  N = {n:3d}: {per_minute[n]:8.2f} prompts per minute   ratio to N = {min(args.sizes)}: "
              f"{per_minute[n] / base:5.2f}x   iteration {it:.3f} s = {it / bare[n]:4.2f}x a bare forward+backward "
              f"({bare[n]:.3f} s)   peak memory {memory[n]:8.1f} MiB = {memory[n] / logits_mib[n]:5.1f}x "
              f"N x C x T x V float32 ({logits_mib[n]:.1f} MiB)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "seconds": times, "prompts_per_minute": per_minute,
                       "iteration_s": iteration, "bare_forward_backward_s": bare, "peak_memory_mib": memory,
                       "logits_mib": logits_mib}, fh, indent=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prompts", type=int, default=32, help="prompts per timed run (a multiple of every N)")
    parser.add_argument("--tokens", type=int, default=16, help="response tokens per prompt")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="batch sizes N (1 = one at a time)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every variant")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", help="also write the raw timings here")
    parser.add_argument("--method", choices=("greedy", "sea", "args", "cbs"), default="greedy")
    parser.add_argument("--steps", type=int, default=5, help="SEA iterations (--method sea)")
    parser.add_argument("--chains", type=int, default=4, help="SEA chains C per prompt (--method sea)")
    parser.add_argument("--reward", default="harmlessness-v2", help="the reward (--method sea, args, cbs)")
    parser.add_argument("--top-k", type=int, default=10, help="ARGS candidates per step (--method args)")
    parser.add_argument("--beams", type=int, default=2, help="CBS beam width (--method cbs)")
    parser.add_argument("--successors", type=int, default=4, help="CBS successors per beam (--method cbs)")
    parser.add_argument("--chunk", type=int, default=8, help="CBS chunk length (--method cbs)")
    parser.add_argument("--peak-only", action="store_true", help=argparse.SUPPRESS)  # one batch's peak, for the CPU
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method == "sea":
        if any(args.prompts % n for n in args.sizes):
            parser.error(f"--prompts {args.prompts} must be a multiple of every size in --sizes {args.sizes}")
        peak_only(args) if args.peak_only else main_sea(args)
        return
    if args.method in ("args", "cbs"):
        main_baseline(args)
        return
    policy = load_policy(device=args.device)
    prompts = prompts_of(args.prompts, policy.vocab_size)
    with torch.no_grad():
        run(policy.model, prompts[:2], 2, 2, args.device)  # warm-up
        times, per_minute = interleaved(args.sizes, args.rounds, args.prompts,
                                        lambda n: run(policy.model, prompts, n, args.tokens, args.device))
    print_rates(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.prompts} prompts of 8-64 "
                f"tokens, {args.tokens} response tokens each, median of {args.rounds} interleaved rounds", per_minute, 1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "seconds": times, "prompts_per_minute": per_minute}, fh, indent=1)


if __name__ == "__main__":
    main()
