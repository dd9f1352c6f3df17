#!/usr/bin/env python
"""Train the TruthfulQA truth head (sea_minimal.truthfulqa.train_truth_head) and check it as chapter "TruthfulQA" checks
every reward candidate.

    python scripts/train_truth_head.py            # about 4 minutes on one CPU thread

Trains on the reference answers of questions 160-816 (pooling and l2 chosen on 30 % of those questions, held out
whole), writes the head to sea_minimal/assets/truthfulqa_head.safetensors (+ .json, with the selection table), then
measures on questions 100-159 how often the head, scored the way SEA scores it, prefers the best answer to the first
incorrect one (truthfulqa.reward_pairwise_accuracy, the chapter's rule), into results/truthfulqa_head_check.json,
with two more measurements on those questions: how often a non-answer ("I have no comment.") outscores the best answer
(a head that learned to reward hedging would be hacked by it), and the head's standard deviation over 16 exact pi_ref
samples of 50 tokens on questions 100-119, from which the weight rule (sea_minimal.scale) sets SEA's alpha.

    python scripts/train_truth_head.py --check-only   # the measurements again, on the committed head
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import torch

    from sea_minimal import data, load_policy, truthfulqa
    from sea_minimal.judges import bootstrap_ci

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", type=Path, default=ROOT / "results" / "truthfulqa_head_check.json")
    ap.add_argument("--check-only", action="store_true", help="measure the committed head, do not retrain it")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    policy = load_policy()
    rows = data.load_truthfulqa()
    if not args.check_only:
        head, report = truthfulqa.train_truth_head(policy, rows[truthfulqa.TRAIN_FROM:])
        truthfulqa.save_truth_head(head, report)
        best = report["chosen"]
        print(f"head: pooling {best['pooling']}, l2 {best['l2']}, validation accuracy "
              f"{100 * best['validation_accuracy']:.1f} % [{100 * best['ci_low']:.1f}, {100 * best['ci_high']:.1f}] on "
              f"{best['pairs']} pairs of {report['validation_questions']} held-out questions")
    reward = truthfulqa.load_truth_reward(policy)
    check = rows[100:160]
    prefs = truthfulqa.reward_pairwise_accuracy(policy, reward, check)
    est, lo, hi = bootstrap_ci([100.0 * p for p in prefs])
    print(f"check on questions 100-159: prefers the correct answer {est:.1f} % [{lo:.1f}, {hi:.1f}] (n = {len(prefs)})")
    hedges = truthfulqa.reward_pairwise_accuracy(policy, reward, [dict(r, incorrect_answers=["I have no comment."])
                                                                  for r in check])
    h_est, h_lo, h_hi = bootstrap_ci([100.0 * (not p) for p in hedges])
    print(f"a non-answer outscores the best answer on {h_est:.1f} % [{h_lo:.1f}, {h_hi:.1f}] of those questions")
    spread = truthfulqa.reward_spread(policy, reward, rows[100:120])
    print(f"std over pi_ref samples (median of {len(spread['per_question'])} questions): {spread['median_std']:.3f}, "
          f"alpha by the weight rule {spread['alpha']:.3f}")
    args.check.write_text(json.dumps({"reward": "truthful-head", "questions": [100, 159], "prefers_correct": est,
                                      "low": lo, "high": hi, "n": len(prefs),
                                      "non_answer_outscores_best": {"rate": h_est, "low": h_lo, "high": h_hi},
                                      "spread": spread}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
