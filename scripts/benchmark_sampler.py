"""Speed checks of the SEA sampler, printed as ratios measured in ONE run (machines here are noisy).

(a) per-iteration time of the ``langevin`` recipe / a bare forward+backward of the same batch
    (C chains x T-1 soft tokens after the cached prompt, gradient to the inputs only). Target <= 1.3.
(b) per-iteration time at a 256-token prompt / at a 32-token prompt. Target <= 1.3: the prompt's KV cache
    is reused, so a longer prompt only adds attention over more cached keys.
Also prints the ``reference`` recipe's per-iteration time and, on CUDA, peak memory.

Usage:
    python scripts/benchmark_sampler.py                       # bundled SmolLM2, CPU, float32
    python scripts/benchmark_sampler.py --device cuda --random-weights   # SmolLM2-135M shape, random weights
Timings interleave the variants (A B A B ...) and report medians, so slow drift of the machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sea_minimal import SEA, Policy, SEAConfig, VocabReward, load_policy
from sea_minimal.lm import encode_prompt, forward_embeds, soft_embeddings

# SmolLM2-135M-Instruct's architecture, for timing on a machine that cannot get the weights.
SMOLLM2_135M = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                    rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)


def build_policy(args) -> Policy:
    if not args.random_weights:
        return load_policy(device=args.device, dtype=getattr(torch, args.dtype) if args.dtype else None)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if args.device == "cuda" else torch.float32)
    model = LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M)).to(device=args.device, dtype=dtype)
    return Policy(model, tokenizer=None, name="smollm2-135m-shape (random weights)")


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def prompt_of(length: int) -> list[int]:
    return [(17 * i + 5) % 40000 + 100 for i in range(length)]  # ordinary (non-special) token ids


def sea_iteration_times(policy, reward, prompt, config) -> list[float]:
    """Seconds per iteration of SEA (differences of the recorded wall times; the first iteration dropped)."""
    res = SEA(policy, reward, config).run([prompt], progress=False)[0]
    t = [row[0] for row in res.trajectory["wall_time"]]
    return [b - a for a, b in zip(t[:-1], t[1:])][1:]


def bare_forward_backward_times(policy, prompt, chains, length, repeats) -> list[float]:
    cache = encode_prompt(policy.model, torch.tensor(prompt, device=policy.device))
    times = []
    for _ in range(repeats + 1):
        probs = torch.softmax(torch.randn(chains, length - 1, policy.vocab_size, device=policy.device), -1)
        probs.requires_grad_(True)
        sync(policy.device)
        start = time.perf_counter()
        logits = forward_embeds(policy.model, cache, soft_embeddings(probs, policy.embedding_matrix)).logits
        logits.float().sum().backward()
        sync(policy.device)
        times.append(time.perf_counter() - start)
    return times[1:]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="model dtype (default: float32 on cpu, bfloat16 on cuda)")
    parser.add_argument("--random-weights", action="store_true", help="SmolLM2-135M shape with random weights")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--length", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="SEA iterations per timed run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every variant")
    parser.add_argument("--json", help="also write the raw timings here")
    args = parser.parse_args()

    policy = build_policy(args)
    reward = VocabReward(torch.linspace(-1, 1, policy.vocab_size, device=policy.device))
    base = SEAConfig(num_chains=args.chains, length=args.length, steps=args.steps, init="random")
    short, long = prompt_of(32), prompt_of(256)
    if torch.device(args.device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    raw = {"bare_fwd_bwd": [], "langevin_p32": [], "langevin_p256": [], "reference_p32": []}
    for _ in range(args.rounds):
        raw["bare_fwd_bwd"] += bare_forward_backward_times(policy, short, args.chains, args.length, args.steps - 2)
        raw["langevin_p32"] += sea_iteration_times(policy, reward, short, base)
        raw["langevin_p256"] += sea_iteration_times(policy, reward, long, base)
        raw["reference_p32"] += sea_iteration_times(policy, reward, short, base.replace(recipe="reference"))
    med = {k: statistics.median(v) for k, v in raw.items()}

    print(f"\nmodel: {policy.name}, dtype {policy.dtype}, device {args.device}"
          f"{' (' + torch.cuda.get_device_name() + ')' if args.device == 'cuda' else ''}, "
          f"C={args.chains}, T={args.length}, {args.rounds} rounds x {args.steps} iterations, torch {torch.__version__}")
    for k, v in med.items():
        print(f"  median {k:<15} {1000 * v:9.1f} ms/iteration  (n={len(raw[k])})")
    ratio_a = med["langevin_p32"] / med["bare_fwd_bwd"]
    ratio_b = med["langevin_p256"] / med["langevin_p32"]
    print(f"(a) langevin iteration / bare forward+backward      = {ratio_a:.3f}   (target <= 1.3)")
    print(f"(b) langevin iteration, 256-token / 32-token prompt = {ratio_b:.3f}   (target <= 1.3)")
    print(f"    reference iteration / langevin iteration         = {med['reference_p32'] / med['langevin_p32']:.3f}")
    if torch.device(args.device).type == "cuda":
        print(f"    peak GPU memory: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "median_s": med, "raw_s": raw, "ratio_a": ratio_a, "ratio_b": ratio_b}, fh)


if __name__ == "__main__":
    main()
