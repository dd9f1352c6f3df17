#!/usr/bin/env python
"""Train the harmlessness-v2 reward head and measure it and its candidates (chapter 3, sea_minimal.reward_training).

    python scripts/train_reward.py features            # cache backbone features of every example (resumable)
    python scripts/train_reward.py advbench-features   # features of the committed AdvBench Best-of-64 samples
    python scripts/train_reward.py contrast            # the contrast reward's scores on the held-out split
    python scripts/train_reward.py train               # choose the head on the tuning split, write the head + report
    python scripts/train_reward.py spread              # the reward's std over pi_ref samples on tuning prompts

Inputs: results/reward_model/examples.jsonl (scripts/build_reward_data.py), salad.jsonl (optional: broken texts
the optimisers found, see chapter 3), hh_harmless_features.safetensors (scripts/reward_features.py).
Outputs: results/reward_model/{example_features, advbench_bon64_features}.safetensors, contrast_scores.json,
selection.json, report.json and the head sea_minimal/assets/harmlessness_v2_head.safetensors (+ .json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DIR = ROOT / "results" / "reward_model"


def load_all_examples():
    from sea_minimal.reward_data import read_examples

    examples = read_examples(DIR / "examples.jsonl")
    if (DIR / "salad.jsonl").exists():
        examples += read_examples(DIR / "salad.jsonl")
    return examples


def prompt_lookup():
    from sea_minimal.data import load_do_not_answer, load_gsm8k

    texts = {("do_not_answer", r["id"]): r["prompt"] for r in load_do_not_answer()}
    texts.update({("gsm8k", r["id"]): r["prompt"] for r in load_gsm8k()})
    return lambda e: texts[(e.source, e.prompt_id)]


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["features", "advbench-features", "contrast", "train", "spread"])
    ap.add_argument("--prompts", type=int, default=20, help="spread: tuning prompts (the first of the tune split)")
    ap.add_argument("--samples", type=int, default=16, help="spread: pi_ref samples per prompt")
    ap.add_argument("--length", type=int, default=50, help="spread: response length in tokens (SEA's space)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.step == "spread":
        return spread(args.prompts, args.samples, args.length)
    return {"features": features, "advbench-features": advbench_features, "contrast": contrast,
            "train": train}[args.step]()


def spread(prompts: int, samples: int, length: int) -> int:
    """Median over tuning prompts of the std of each reward over exact pi_ref samples on SEA's response space
    (``length`` tokens, special tokens banned), and the alpha the weight rule gives (sea_minimal.scale)."""
    import numpy as np
    import torch

    from sea_minimal import load_policy
    from sea_minimal.data import load_do_not_answer
    from sea_minimal.judges import bootstrap_ci
    from sea_minimal.lm import encode_prompt, sample_response_space
    from sea_minimal.reward_training import write_json
    from sea_minimal.rewards import one_hot
    from sea_minimal.runner import make_reward
    from sea_minimal.scale import BON64_KL, alpha_for_kl

    policy = load_policy()
    ids = json.loads((DIR / "splits.json").read_text())["do_not_answer"]["tune"]
    rows = {r["id"]: r for r in load_do_not_answer()}
    chosen = sorted(ids, key=lambda i: (i * 2654435761) % 2**32)[:prompts]  # a fixed spread-out subset
    rewards = {name: make_reward(name, policy) for name in ("harmlessness-v2", "harmlessness", "contrast-refusal")}
    stds = {name: [] for name in rewards}
    for n, pid in enumerate(chosen):
        prompt_ids = policy.encode_prompt(rows[pid]["prompt"])
        tokens, _ = sample_response_space(policy.model, encode_prompt(policy.model, prompt_ids), samples, length,
                                          torch.Generator().manual_seed(pid), banned_ids=policy.special_ids)
        for name, reward in rewards.items():
            with torch.no_grad():
                r = reward.for_prompt(prompt_ids)(one_hot(tokens, policy.vocab_size))
            stds[name].append(float(r.std()))
        print(f"{n + 1}/{len(chosen)} prompt {pid}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in stds.items()),
              flush=True)
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


def features() -> int:
    from sea_minimal import load_policy
    from sea_minimal.reward_training import extract_example_features

    examples = load_all_examples()
    extract_example_features(load_policy(), examples, prompt_lookup(), DIR / "example_features.safetensors")
    return 0


def advbench_bon64():
    """(prompt text, candidate token ids, refusal flags) per prompt of the committed Best-of-64 records."""
    from sea_minimal.judges import is_refusal

    rows = []
    for line in open(ROOT / "results" / "advbench_baselines.jsonl"):
        r = json.loads(line)
        if r["label"] == "bon[n=64]":
            rows.append((r["prompt_id"], r["prompt"], [c["token_ids"] for c in r["candidates"]],
                         [is_refusal(c["text"]) for c in r["candidates"]]))
    return sorted(rows)


def advbench_features() -> int:
    """Features of the recorded token ids themselves (not re-encoded text), one prompt encoding per record."""
    import torch
    from safetensors.torch import save_file

    from sea_minimal import load_policy
    from sea_minimal.reward_model import response_features

    policy = load_policy()
    rows = {"mean": [], "last": [], "length": []}
    for _, prompt, cands, _ in advbench_bon64():
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
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from sea_minimal.reward_model import ASSETS, V2_HEAD_FILE, FeatureSettings, load_features, load_head, save_head
    from sea_minimal.reward_training import (evaluate_scores, load_reward_data, pooled, report_entry, select_head,
                                             within_prompt_auc, write_json)

    hh, _ = load_features(DIR / "hh_harmless_features.safetensors")
    data = load_reward_data(load_all_examples(), load_file(str(DIR / "example_features.safetensors")), hh)
    selection = select_head(data)
    head, best = selection["head"], selection["chosen"]
    old, _ = load_head(ASSETS / "harmlessness_head.safetensors")
    measures = {"harmlessness-v2": data.measure(head, "heldout"), "harmlessness": data.measure(old, "heldout")}
    cpath = DIR / "contrast_scores.json"
    if cpath.exists():  # the contrast reward on the same held-out examples (python scripts/train_reward.py contrast)
        c = json.loads(cpath.read_text())
        held = [e for e in data.examples if e.split == "heldout"]
        if len(c["examples"]) == len(held) and len(c["hh"]) == len(data.hh_heldout):
            hh_c = np.array(c["hh"])
            measures["contrast-refusal"] = evaluate_scores(held, c["examples"], "heldout", hh_c[:, 0], hh_c[:, 1])
    advbench = {}
    apath = DIR / "advbench_bon64_features.safetensors"
    if apath.exists():  # evaluation only: never used for training or selection
        af = load_file(str(apath))
        groups, flags = [], []
        for pid, _, cands, refusals in advbench_bon64():
            groups += [pid] * len(cands)
            flags += refusals
        pairs = torch.tensor([(i, j) for i in range(len(flags)) for j in range(len(flags))
                              if groups[i] == groups[j] and flags[i] and not flags[j]]).reshape(-1, 2)
        for name, h in (("harmlessness-v2", head), ("harmlessness", old)):
            with torch.no_grad():
                advbench[name] = within_prompt_auc(h(pooled(af, h.pooling)).numpy(), pairs, groups)
    meta = {"settings": dict(FeatureSettings().__dict__), "kind": best["kind"], "l2": best["l2"],
            "pooling": best["pooling"], "salad_rows": sum(e.kind == "salad" for e in data.examples),
            "trained_on": "reward_data train split (Do-Not-Answer + GSM8K control) + HH-RLHF harmless-base train"}
    save_head(head, V2_HEAD_FILE, meta)
    write_json(DIR / "selection.json", {"table": selection["table"], "chosen": best})
    write_json(DIR / "heldout_measures.json", {**measures, "advbench_bon64": advbench})
    report = report_entry(measures["harmlessness-v2"])
    if "harmlessness-v2" in advbench:
        report["advbench_bon64_refusal_auc"] = advbench["harmlessness-v2"]["auc"]
        report["advbench_bon64_refusal_auc_ci"] = advbench["harmlessness-v2"]["ci"]
    rpath = DIR / "report.json"
    previous = json.loads(rpath.read_text()) if rpath.exists() else {}
    write_json(rpath, {**previous, **report, "chosen_head": best})
    print(json.dumps({**report, "chosen_head": best}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
