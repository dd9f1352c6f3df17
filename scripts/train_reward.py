#!/usr/bin/env python
"""Train the harmlessness-v2 reward head and measure it and its candidates (chapter 3, sea_minimal.reward_training).

    python scripts/train_reward.py features            # cache backbone features of every example (resumable)
    python scripts/train_reward.py advbench-features   # features of the committed AdvBench Best-of-64 samples
    python scripts/train_reward.py contrast            # the contrast reward's scores on the held-out split
    python scripts/train_reward.py train               # choose the head on the tuning split, write the head + report
    python scripts/train_reward.py spread              # the reward's std over pi_ref samples on tuning prompts
    python scripts/train_reward.py salad results/maximise_v2_round1.jsonl   # broken texts the optimisers found

Another policy (its answers from scripts/build_reward_data.py --policy NAME, its HH features from
scripts/reward_features.py --model NAME): `--policy NAME` with the steps features, train and spread; its head goes to
sea_minimal/assets/harmlessness_v2_<NAME>.safetensors, which make_reward("harmlessness-v2") picks for that policy.

Inputs: results/reward_model/examples.jsonl (scripts/build_reward_data.py), salad.jsonl (optional: broken texts
the optimisers found, see chapter 3), hh_harmless_features.safetensors (scripts/reward_features.py).
Outputs: results/reward_model/{example_features, advbench_bon64_features}.safetensors, contrast_scores.json,
selection.json, report.json and the head sea_minimal/assets/harmlessness_v2_head.safetensors (+ .json).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DIR = ROOT / "results" / "reward_model"  # the policy's reward folder (main sets it from --policy)
POLICY = "smollm2-135m-instruct"


def load_all_examples():
    from sea_minimal.reward_training import load_examples

    return load_examples(DIR)


def prompt_lookup():
    from sea_minimal.data import load_do_not_answer, load_gsm8k

    texts = {("do_not_answer", r["id"]): r["prompt"] for r in load_do_not_answer()}
    texts.update({("gsm8k", r["id"]): r["prompt"] for r in load_gsm8k()})
    return lambda e: texts[(e.source, e.prompt_id)]


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["features", "advbench-features", "contrast", "advbench-contrast", "train",
                                     "spread", "salad"])
    ap.add_argument("records", nargs="*", help="salad: results files of grids/maximise_reward_v2.yaml")
    ap.add_argument("--prompts", type=int, default=20, help="spread: tuning prompts (the first of the tune split)")
    ap.add_argument("--samples", type=int, default=16, help="spread: pi_ref samples per prompt")
    ap.add_argument("--length", type=int, default=50, help="spread: response length in tokens (SEA's space)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--policy", default=None, help="the backbone (default: the bundled SmolLM2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DIR, POLICY
    from sea_minimal.models import DEFAULT_MODEL
    from sea_minimal.reward_model import reward_folder

    POLICY = args.policy or DEFAULT_MODEL
    DIR = reward_folder(POLICY)
    if POLICY != DEFAULT_MODEL and args.step not in ("features", "train", "spread"):
        ap.error(f"--policy {POLICY}: only the steps features, train and spread (the others read SmolLM2's records)")
    if args.step == "spread":
        return spread(args.prompts, args.samples, args.length)
    if args.step == "salad":
        return salad(args.records)
    return {"features": features, "advbench-features": advbench_features, "contrast": contrast,
            "advbench-contrast": advbench_contrast, "train": train}[args.step]()


def advbench_contrast() -> int:
    """The contrast reward of the committed AdvBench Best-of-64 samples (evaluation only) -> advbench_contrast.json."""
    from sea_minimal import load_policy
    from sea_minimal.contrast import ContrastReward, score_responses
    from sea_minimal.reward_training import advbench_bon64, write_json

    policy = load_policy()
    reward = ContrastReward(policy)
    out = []
    for _, prompt, cands, _ in advbench_bon64(ROOT / "results" / "advbench_baselines.jsonl"):
        out += score_responses(reward, policy.encode_prompt(prompt), cands).reward.tolist()
    write_json(DIR / "advbench_contrast.json", {"scores": out})
    return 0


def spread(prompts: int, samples: int, length: int) -> int:
    """Median over tuning prompts of the std of each reward over exact pi_ref samples on SEA's response space
    (``length`` tokens, special tokens banned), and the alpha the weight rule gives (sea_minimal.scale)."""
    import numpy as np

    from sea_minimal import load_policy
    from sea_minimal.data import load_do_not_answer
    from sea_minimal.judges import bootstrap_ci
    from sea_minimal.models import DEFAULT_MODEL
    from sea_minimal.reward_training import write_json
    from sea_minimal.runner import make_reward
    from sea_minimal.scale import BON64_KL, alpha_for_kl, reward_spread

    policy = load_policy(POLICY)
    ids = json.loads((DIR / "splits.json").read_text())["do_not_answer"]["tune"]
    rows = {r["id"]: r for r in load_do_not_answer()}
    chosen = sorted(ids, key=lambda i: (i * 2654435761) % 2**32)[:prompts]  # a fixed spread-out subset
    names = ("harmlessness-v2", "harmlessness", "contrast-refusal") if POLICY == DEFAULT_MODEL else (
        "harmlessness-v2", "contrast-refusal")  # the HH-only head is SmolLM2's
    rewards = {name: make_reward(name, policy) for name in names}
    stds = reward_spread(policy, rewards, [(pid, rows[pid]["prompt"]) for pid in chosen], samples, length,
                         log=lambda line: print(line, flush=True))
    out = {"prompts": chosen, "samples": samples, "length": length, "kl_budget": BON64_KL,
           "per_prompt_std": stds, "median_std": {k: float(np.median(v)) for k, v in stds.items()},
           "alpha": {k: alpha_for_kl(float(np.median(v))) for k, v in stds.items()}}
    write_json(DIR / "spread.json", out)
    rpath = DIR / "report.json"
    report = json.loads(rpath.read_text()) if rpath.exists() else {}
    report["reward_std_over_policy_samples"] = out["median_std"]["harmlessness-v2"]
    _, lo, hi = bootstrap_ci(stds["harmlessness-v2"], stat=np.median)  # resampling prompts
    report["reward_std_over_policy_samples_ci"] = [float(lo), float(hi)]
    write_json(rpath, report)
    print(json.dumps({k: out[k] for k in ("median_std", "alpha")}, indent=1))
    return 0


def salad(records: list[str]) -> int:
    """Every candidate of the maximisation runs that the three-outcome rule calls broken (per-token perplexity under
    pi_ref above the fluency limit, or fewer than 5 words) -> results/reward_model/salad.jsonl, each paired with a
    training request drawn with a fixed seed (the tuning requests they came from stay out of training)."""
    import torch

    from sea_minimal import load_policy
    from sea_minimal.judges import MIN_ANSWER_WORDS, word_count
    from sea_minimal.lm import encode_prompt, next_token_logits, sequence_logprob
    from sea_minimal.reward_data import read_examples, salad_examples, write_examples
    from sea_minimal.rewards import one_hot

    limit = 94.5  # the outcome rule's fluency limit (chapter "Does SEA sample the optimal policy?")
    policy = load_policy()
    train_ids = json.loads((DIR / "splits.json").read_text())["do_not_answer"]["train"]
    seen = {e.text for e in read_examples(DIR / "salad.jsonl")} if (DIR / "salad.jsonl").exists() else set()
    found = []
    for path in records:
        for line in open(path):
            r = json.loads(line)
            cache = encode_prompt(policy.model, policy.encode_prompt(r["prompt"]))
            for c in r["candidates"]:
                ids = torch.tensor([c["token_ids"]])
                with torch.no_grad():
                    oh = one_hot(ids, policy.vocab_size)
                    lp = float(sequence_logprob(next_token_logits(policy.model, cache, oh), oh)) / ids.shape[1]
                broken = math.exp(-lp) > limit or word_count(c["text"]) < MIN_ANSWER_WORDS
                if broken and c["text"] not in seen:
                    seen.add(c["text"])
                    found.append(c["text"])
    write_examples(DIR / "salad.jsonl", salad_examples(found, train_ids, "train", seed=len(seen)))
    print(f"{len(found)} new broken texts -> {DIR / 'salad.jsonl'}")
    return 0


def features() -> int:
    from sea_minimal import load_policy
    from sea_minimal.reward_training import extract_example_features

    from sea_minimal.reward_model import FeatureSettings

    examples = load_all_examples()
    extract_example_features(load_policy(POLICY), examples, prompt_lookup(), DIR / "example_features.safetensors",
                             settings=FeatureSettings(model_name=POLICY))
    return 0


def advbench_features() -> int:
    """Features of the recorded token ids themselves (not re-encoded text), one prompt encoding per record."""
    import torch
    from safetensors.torch import save_file

    from sea_minimal import load_policy
    from sea_minimal.reward_model import response_features
    from sea_minimal.reward_training import advbench_bon64

    policy = load_policy()
    rows = {"mean": [], "last": [], "length": []}
    for _, prompt, cands, _ in advbench_bon64(ROOT / "results" / "advbench_baselines.jsonl"):
        f = response_features(policy, prompt, cands)
        for k in rows:
            rows[k].append(f[k].cpu())
    tensors = {k: torch.cat(v) for k, v in rows.items()}
    save_file({k: (v.half() if k != "length" else v.int()).contiguous() for k, v in tensors.items()},
              str(DIR / "advbench_bon64_features.safetensors"))
    return 0


def contrast() -> int:
    from sea_minimal import load_policy
    from sea_minimal.contrast import ContrastReward, score_responses
    from sea_minimal.reward_model import context_prompt_ids, load_hh_pairs, response_token_ids, split_indices
    from sea_minimal.reward_training import _groups

    policy = load_policy()
    reward = ContrastReward(policy)
    prompt_of = prompt_lookup()
    examples = [e for e in load_all_examples() if e.split == "heldout"]
    out_path = DIR / "contrast_scores.json"
    done = json.loads(out_path.read_text()) if out_path.exists() else {"examples": [], "hh": []}
    scores = done["examples"]
    for start, end in _groups(examples):
        if end <= len(scores):
            continue
        group = examples[start:end]
        ids = [response_token_ids(policy, e.text, 64).tolist() for e in group]
        s = score_responses(reward, policy.encode_prompt(prompt_of(group[0])), ids)
        scores += s.reward.tolist()
        if len(scores) % 200 < len(group) or end == len(examples):
            out_path.write_text(json.dumps({"examples": scores, "hh": done["hh"]}))
    pairs = load_hh_pairs()
    _, held = split_indices(len(pairs), 0.3, 0)
    hh = done["hh"]
    for i in held.tolist()[len(hh):]:
        p = pairs[i]
        ids = [response_token_ids(policy, p[side], 64).tolist() for side in ("chosen", "rejected")]
        s = score_responses(reward, context_prompt_ids(policy, p["context"]), ids)
        hh.append(s.reward.tolist())
        if len(hh) % 50 == 0 or len(hh) == len(held):
            out_path.write_text(json.dumps({"examples": scores, "hh": hh}))
    return 0


def train() -> int:
    from sea_minimal.reward_training import fit_and_report

    result = fit_and_report(DIR, write=True, policy_name=POLICY)
    print(json.dumps(result["report"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
