#!/usr/bin/env python
"""Compute the HH-RLHF harmless-base pair features for the backbone reward head (chapter 3).

    python scripts/reward_features.py --device cuda --out results/reward_model/hh_harmless_features.safetensors
    python scripts/reward_features.py --device cpu --limit 300 --out /tmp/features_300.safetensors

For every pair (chosen vs rejected answer to the same dialogue) the frozen SmolLM2 backbone reads the shared
dialogue through the chat template and each answer (first 64 tokens, then <|im_end|>); the mean-pooled and the
last-position final-layer states are saved as float16 safetensors with the settings in the file's metadata.
The file is rewritten every --save-every pairs and a rerun with the same settings resumes where it stopped.
Data: --data-dir or $SEA_DATA_DIR (a folder holding hh_rlhf/harmless-base_test.jsonl.gz).

Speed seen here: 0.8 s per pair on a CPU shared with other jobs with --threads 1 (all 2,303 pairs in 30 min);
with 2 OpenMP threads on the same busy machine it was 5-10x slower (threads spinning at barriers), so use
--threads 1 on a shared CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_OUT = ROOT / "results" / "reward_model" / "hh_harmless_features.safetensors"


def main(argv=None) -> int:
    import torch

    from sea_minimal import load_policy
    from sea_minimal.reward_model import FeatureSettings, extract_pair_features, load_features, load_hh_pairs

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--out", default=None, help="feature file (safetensors); resumed if it exists (default: "
                    "hh_harmless_features.safetensors in the model's reward folder)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N usable pairs (file order)")
    ap.add_argument("--data-dir", default=None, help="folder with hh_rlhf/ (default: $SEA_DATA_DIR)")
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="backbone dtype (float32 everywhere by default, so CPU and GPU features agree)")
    ap.add_argument("--max-prompt-tokens", type=int, default=FeatureSettings.max_prompt_tokens)
    ap.add_argument("--max-response-tokens", type=int, default=FeatureSettings.max_response_tokens)
    ap.add_argument("--no-eot", action="store_true", help="do not append the end-of-turn token")
    ap.add_argument("--save-every", type=int, default=25)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    settings = FeatureSettings(model_name=args.model, max_prompt_tokens=args.max_prompt_tokens,
                               max_response_tokens=args.max_response_tokens, append_eot=not args.no_eot,
                               dtype=args.dtype)
    from sea_minimal.reward_model import reward_folder

    pairs = load_hh_pairs(args.data_dir, limit=args.limit)
    policy = load_policy(args.model, device=args.device, dtype=getattr(torch, args.dtype))
    out = Path(args.out) if args.out else reward_folder(args.model) / DEFAULT_OUT.name
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(pairs)} pairs -> {out} on {args.device} ({settings})", flush=True)
    t0 = time.perf_counter()
    extract_pair_features(policy, pairs, settings, cache_file=out, save_every=args.save_every)
    _, meta = load_features(out)
    seconds = time.perf_counter() - t0
    print(f"done: {meta['n_pairs']} pairs, complete={meta['complete']}, {seconds:.0f} s this run "
          f"({seconds / max(1, int(meta['pairs_this_run'])):.2f} s per pair), {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
