"""Training and judging the harmlessness reward on on-policy examples (chapter 3).

Data: :mod:`sea_minimal.reward_data` (Do-Not-Answer answers, refusals and broken text; a benign GSM8K control) plus
the HH-RLHF harmless-base pairs of :mod:`sea_minimal.reward_model`. Features: the frozen backbone's pooled final-layer
states (:func:`extract_example_features`, the same function SEA-time scores go through). A head is trained with a
Bradley-Terry loss on four kinds of comparison (:func:`comparison_pairs`), each weighted equally:

* ``refusal``: for a harmful request, a refusal above the policy's compliant answer (same prompt);
* ``fluency``: any fluent answer (refusal or compliant) above broken text (same prompt);
* ``benign``: for a benign question, the policy's helpful answer above a refusal;
* ``hh``: HH-RLHF's chosen answer above the rejected one.

The measures (:func:`evaluate_scores`) are the issue's targets: the within-prompt AUCs of the first two comparisons
(with 95 % intervals from a bootstrap over prompts), HH pairwise accuracy and the share of benign questions on which
the refusal scores higher (Wilson intervals).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .models import Policy
from .reward_data import BROKEN_KINDS, Example
from .reward_model import FeatureSettings, response_features, wilson_interval

COMPARISONS = ("refusal", "fluency", "benign", "hh")


# ---------------------------------------------------------------------------------------------------- features
def _groups(examples: Sequence[Example]) -> list[tuple[int, int]]:
    """Runs [start, end) of consecutive examples that share one prompt."""
    runs, start = [], 0
    for i in range(1, len(examples) + 1):
        if i == len(examples) or (examples[i].source, examples[i].prompt_id) != (examples[start].source,
                                                                                  examples[start].prompt_id):
            runs.append((start, i))
            start = i
    return runs


def extract_example_features(policy: Policy, examples: Sequence[Example], prompt_of: Callable[[Example], str],
                             cache_file: str | Path | None = None, settings: FeatureSettings | None = None,
                             save_every: int = 25, progress: bool = True) -> dict[str, torch.Tensor]:
    """Pooled features of every example, {"mean", "last": [N, H] float32, "length": [N]}, in ``examples`` order.

    Consecutive examples of one prompt share one prompt encoding. With ``cache_file`` (safetensors, float16) the
    features of the first K examples are saved every ``save_every`` prompts and a rerun resumes after them.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    settings = settings or FeatureSettings()
    rows: dict[str, list[torch.Tensor]] = {"mean": [], "last": [], "length": []}
    path = Path(cache_file) if cache_file else None
    done = 0
    if path is not None and path.exists():
        cached = load_file(str(path))
        done = int(cached["length"].numel())
        if done > len(examples):
            raise ValueError(f"{path} holds features of {done} examples but only {len(examples)} were given. "
                             "Fix: delete the cache file (it belongs to another example list).")
        rows = {k: [cached[k].float() if k != "length" else cached[k]] for k in rows}

    def save():
        tensors = {k: torch.cat(v) for k, v in rows.items()}
        tensors = {k: (v.half() if k != "length" else v.int()).contiguous() for k, v in tensors.items()}
        tmp = path.with_name(path.name + ".partial")
        save_file(tensors, str(tmp), metadata={"settings_key": settings.key()})
        tmp.replace(path)

    runs = [r for r in _groups(examples) if r[1] > done]
    for n, (start, end) in enumerate(tqdm(runs, desc="features", disable=not progress), start=1):
        start = max(start, done)
        group = examples[start:end]
        feats = response_features(policy, prompt_of(group[0]), [e.text for e in group], settings)
        rows["mean"].append(feats["mean"].cpu())
        rows["last"].append(feats["last"].cpu())
        rows["length"].append(feats["length"].cpu().int())
        if path is not None and (n % save_every == 0 or n == len(runs)):
            save()
    out = {k: torch.cat(v) if v else torch.empty(0) for k, v in rows.items()}
    return {"mean": out["mean"].float(), "last": out["last"].float(), "length": out["length"].long()}


def pooled(feats: dict[str, torch.Tensor], pooling: str, n_suffix: int = 1) -> torch.Tensor:
    """Features [N, F] for ``pooling``: ``mean``, ``last``, ``mean_eot`` or several joined by ``+`` (concatenated)."""
    parts = []
    for name in pooling.split("+"):
        if name in ("mean", "last"):
            parts.append(feats[name].float())
        elif name == "mean_eot":
            n = feats["length"].float()[:, None]
            parts.append((n * feats["mean"].float() + n_suffix * feats["last"].float()) / (n + n_suffix))
        else:
            raise ValueError(f"Unknown pooling {name!r} in {pooling!r}; use mean, last, mean_eot, joined by '+'.")
    return torch.cat(parts, -1)


# ---------------------------------------------------------------------------------------------------- pairs
def comparison_pairs(examples: Sequence[Example], split: str) -> dict[str, torch.Tensor]:
    """Within-prompt comparisons of one split as (winner, loser) index pairs [M, 2] into ``examples``:
    ``refusal`` (refusal > compliant, harmful prompts), ``fluency`` (fluent > broken, harmful prompts) and
    ``benign`` (helpful > refusal, benign prompts)."""
    by_prompt: dict[tuple[str, int], list[int]] = {}
    for i, e in enumerate(examples):
        if e.split == split:
            by_prompt.setdefault((e.source, e.prompt_id), []).append(i)
    pairs: dict[str, list[tuple[int, int]]] = {"refusal": [], "fluency": [], "benign": []}
    for (source, _), idx in by_prompt.items():
        label = {i: examples[i].label for i in idx}
        if source == "do_not_answer":
            refusals = [i for i in idx if label[i] == "refusal"]
            compliant = [i for i in idx if label[i] == "compliant"]
            broken = [i for i in idx if label[i] == "broken"]
            pairs["refusal"] += [(a, b) for a in refusals for b in compliant]
            pairs["fluency"] += [(a, b) for a in refusals + compliant for b in broken]
        else:
            helpful = [i for i in idx if label[i] == "helpful"]
            refusals = [i for i in idx if label[i] == "refusal"]
            pairs["benign"] += [(a, b) for a in helpful for b in refusals]
    return {k: torch.tensor(v, dtype=torch.long).reshape(-1, 2) for k, v in pairs.items()}


# ---------------------------------------------------------------------------------------------------- heads
@dataclass
class MLPHead:
    """score(f) = w2 . gelu(W1 ((f - mean) / std) + b1) + b2 on pooled features f [C, F]; differentiable."""

    w1: torch.Tensor  # [F, hidden]
    b1: torch.Tensor  # [hidden]
    w2: torch.Tensor  # [hidden]
    b2: torch.Tensor  # []
    mean: torch.Tensor  # [F]
    std: torch.Tensor  # [F]
    pooling: str = "mean_eot"

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        dev = features.device
        z = (features.float() - self.mean.to(dev)) / self.std.to(dev)
        return F.gelu(z @ self.w1.to(dev) + self.b1.to(dev)) @ self.w2.to(dev) + self.b2.to(dev)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2.reshape(1), "mean": self.mean,
                "std": self.std}


def train_pairwise(features: torch.Tensor, pairs: dict[str, torch.Tensor], kind: str = "linear", l2: float = 1e-2,
                   hidden: int = 64, steps: int = 300, seed: int = 0, pooling: str = "mean_eot",
                   weights: dict[str, float] | None = None):
    """Fit a head with a Bradley-Terry loss, sum over comparison kinds of weight x mean softplus(-(s_win - s_lose)),
    plus ``l2`` times the squared norm of the weights.

    ``features`` [N, F] (rows named by ``pairs``' indices); ``kind``: ``linear`` (full-batch L-BFGS from 0, float64,
    deterministic; returns :class:`~sea_minimal.reward_model.LinearHead`) or ``mlp`` (Adam, ``steps`` full-batch
    steps from a seeded init; returns :class:`MLPHead`).
    """
    from .reward_model import LinearHead

    used = torch.unique(torch.cat([p.flatten() for p in pairs.values() if p.numel()]))
    x = features.double()
    mean, std = x[used].mean(0), x[used].std(0).clamp_min(1e-6)
    z = (x - mean) / std
    weights = weights or {k: 1.0 for k in pairs}
    live = {k: p for k, p in pairs.items() if p.numel()}
    if kind == "linear":
        w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], lr=1, max_iter=steps, tolerance_grad=1e-9, tolerance_change=1e-12,
                                history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            s = z @ w
            loss = sum(weights[k] * F.softplus(-(s[p[:, 0]] - s[p[:, 1]])).mean() for k, p in live.items())
            loss = loss + l2 * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        w = w.detach()
        bias = -(z[used] @ w).mean()
        return LinearHead(weight=w.float(), bias=bias.float(), mean=mean.float(), std=std.float(), pooling=pooling)
    if kind != "mlp":
        raise ValueError(f"kind must be 'linear' or 'mlp', got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    zf = z.float()
    w1 = (torch.randn(z.shape[1], hidden, generator=g) / math.sqrt(z.shape[1])).requires_grad_()
    b1 = torch.zeros(hidden, requires_grad=True)
    w2 = (torch.randn(hidden, generator=g) / math.sqrt(hidden)).requires_grad_()
    opt = torch.optim.Adam([w1, b1, w2], lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        s = F.gelu(zf @ w1 + b1) @ w2
        loss = sum(weights[k] * F.softplus(-(s[p[:, 0]] - s[p[:, 1]])).mean() for k, p in live.items())
        loss = loss + l2 * ((w1 * w1).sum() + (w2 * w2).sum())
        loss.backward()
        opt.step()
    with torch.no_grad():
        b2 = -(F.gelu(zf[used] @ w1 + b1) @ w2).mean()
    return MLPHead(w1=w1.detach(), b1=b1.detach(), w2=w2.detach(), b2=b2, mean=mean.float(), std=std.float(),
                   pooling=pooling)


# ---------------------------------------------------------------------------------------------------- measures
def within_prompt_auc(scores: Sequence[float], pairs: torch.Tensor, groups: Sequence, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """Share of (winner, loser) pairs [M, 2] with score(winner) > score(loser), ties half: the within-prompt AUC
    pooled over prompts, with a 95 % interval from resampling prompts (``groups[i]``: the prompt of example i)."""
    if pairs.numel() == 0:
        return {"auc": float("nan"), "ci": [float("nan"), float("nan")], "n_pairs": 0, "n_prompts": 0}
    s = np.asarray(scores, dtype=float)
    a, b = pairs[:, 0].numpy(), pairs[:, 1].numpy()
    win = (s[a] > s[b]) + 0.5 * (s[a] == s[b])
    keys = [groups[i] for i in a]
    names = sorted(set(keys), key=str)
    index = {k: j for j, k in enumerate(names)}
    g = np.array([index[k] for k in keys])
    wins, counts = np.bincount(g, win, len(names)), np.bincount(g, None, len(names))
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(names), size=(n_boot, len(names)))
    boot = wins[draw].sum(1) / counts[draw].sum(1)
    return {"auc": float(win.mean()), "ci": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "n_pairs": int(len(win)), "n_prompts": len(names)}


def share_with_ci(flags: Sequence[bool]) -> dict:
    """A proportion with its 95 % Wilson interval."""
    flags = list(map(bool, flags))
    k, n = sum(flags), len(flags)
    lo, hi = wilson_interval(k, n)
    return {"value": k / n if n else float("nan"), "ci": [lo, hi], "n": n}


def evaluate_scores(examples: Sequence[Example], scores: Sequence[float], split: str,
                    hh_chosen: Sequence[float] | None = None, hh_rejected: Sequence[float] | None = None) -> dict:
    """The issue's measures on one split from per-example scores (and HH pair scores, if given)."""
    pairs = comparison_pairs(examples, split)
    groups = [(e.source, e.prompt_id) for e in examples]
    out = {"refusal_auc": within_prompt_auc(scores, pairs["refusal"], groups),
           "fluency_auc": within_prompt_auc(scores, pairs["fluency"], groups)}
    s = np.asarray(scores, dtype=float)
    benign = pairs["benign"]
    # per benign question: does the refusal beat the helpful answer?
    out["benign_refusal_preference"] = share_with_ci([s[b] > s[a] for a, b in benign.tolist()])
    for kind in BROKEN_KINDS:  # which broken text is hardest
        sub = torch.tensor([p for p in pairs["fluency"].tolist() if examples[p[1]].kind == kind],
                           dtype=torch.long).reshape(-1, 2)
        if sub.numel():  # e.g. no salad outside the training split
            out[f"fluency_auc_{kind}"] = within_prompt_auc(scores, sub, groups)
    if hh_chosen is not None:
        c, r = np.asarray(hh_chosen, dtype=float), np.asarray(hh_rejected, dtype=float)
        out["hh_accuracy"] = share_with_ci((c > r) + 0 * (c == r))
    return out


def summary_score(measures: dict) -> float:
    """The selection score on the tuning split: the mean of refusal AUC, fluency AUC, HH accuracy and
    1 - benign refusal preference (each in [0, 1], higher is better)."""
    parts = [measures["refusal_auc"]["auc"], measures["fluency_auc"]["auc"],
             1 - measures["benign_refusal_preference"]["value"]]
    if "hh_accuracy" in measures:
        parts.append(measures["hh_accuracy"]["value"])
    return float(np.mean(parts))


def report_entry(measures: dict) -> dict:
    """The report.json keys of the reward issue from held-out measures (plus the AdvBench AUC, added by caller)."""
    out = {"heldout_refusal_auc": measures["refusal_auc"]["auc"],
           "heldout_refusal_auc_ci": measures["refusal_auc"]["ci"],
           "heldout_fluency_auc": measures["fluency_auc"]["auc"],
           "heldout_fluency_auc_ci": measures["fluency_auc"]["ci"],
           "benign_refusal_preference": measures["benign_refusal_preference"]["value"],
           "benign_refusal_preference_ci": measures["benign_refusal_preference"]["ci"]}
    if "hh_accuracy" in measures:
        out["hh_heldout_accuracy"] = measures["hh_accuracy"]["value"]
        out["hh_heldout_accuracy_ci"] = measures["hh_accuracy"]["ci"]
    return out


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


# ---------------------------------------------------------------------------------------------------- selection
#: The candidate heads compared on the tuning split, as (pooling, kind, l2, weight of the HH comparison). The HH
#: weights above 1 were added after the first selection: on the tuning split no head with equal weights reached
#: the HH target (at most 0.621).
CANDIDATES = tuple((pooling, kind, l2, 1.0) for pooling in ("mean_eot", "last", "mean_eot+last")
                   for kind, l2s in (("linear", (1e-3, 1e-2, 1e-1)), ("mlp", (1e-4, 1e-3))) for l2 in l2s) + \
    tuple((pooling, kind, l2, w) for w in (4.0, 16.0) for pooling in ("mean_eot", "mean_eot+last")
          for kind, l2 in (("linear", 1e-1), ("mlp", 1e-3)))
#: The targets of the reward issue (``heldout_*`` keys of report.json); the HH one is the first head's held-out
#: accuracy. A candidate that meets all of them on the tuning split is preferred (:func:`select_head`).
TARGETS = {"refusal_auc": (">=", 0.90), "fluency_auc": (">=", 0.95), "hh_accuracy": (">=", 0.656),
           "benign_refusal_preference": ("<=", 0.20)}


def meets_targets(row: dict) -> bool:
    """Does a selection-table row (tuning-split values) meet every :data:`TARGETS`?"""
    return all((row[k] >= v) if op == ">=" else (row[k] <= v) for k, (op, v) in TARGETS.items())


@dataclass
class RewardData:
    """Everything a head is trained and judged on: the examples with their features, and the HH pairs' features
    with their splits (``hh_fit`` / ``hh_tune`` inside HH's original training part, ``hh_heldout``)."""

    examples: list
    features: dict  # {"mean", "last", "length"} of the examples
    hh: dict  # the HH feature file's tensors
    hh_fit: torch.Tensor
    hh_tune: torch.Tensor
    hh_heldout: torch.Tensor

    def design(self, pooling: str) -> torch.Tensor:
        """Rows [examples, HH chosen, HH rejected] of the pooled features [N + 2M, F]."""
        from .reward_model import derive_pooling

        hh = [torch.cat([derive_pooling(self.hh, side, p) for p in pooling.split("+")], -1)
              for side in ("chosen", "rejected")]
        return torch.cat([pooled(self.features, pooling), *hh])

    def hh_pairs(self, idx: torch.Tensor) -> torch.Tensor:
        n, m = len(self.examples), self.hh["index"].numel()
        return torch.stack([n + idx, n + m + idx], 1)

    def measure(self, head, split: str) -> dict:
        """:func:`evaluate_scores` of ``head`` on ``split`` ("tune" or "heldout"), HH included."""
        idx = {"tune": self.hh_tune, "heldout": self.hh_heldout}[split]
        n, m = len(self.examples), self.hh["index"].numel()
        with torch.no_grad():
            s = head(self.design(head.pooling).float()).numpy()
        return evaluate_scores(self.examples, s[:n], split, s[n + idx.numpy()], s[n + m + idx.numpy()])

    def scores(self, head) -> np.ndarray:
        with torch.no_grad():
            return head(pooled(self.features, head.pooling)).numpy()


def load_reward_data(examples, features: dict, hh: dict, seed: int = 0) -> RewardData:
    """HH's original split (30 % held out, seed 0: chapter 3's first head was judged on the same 691 pairs); a fifth
    of its training part is the tuning part."""
    from .reward_model import split_indices

    if features["length"].numel() != len(examples):
        raise ValueError(f"The feature file holds {features['length'].numel()} rows for {len(examples)} examples. "
                         "Fix: run `python scripts/train_reward.py features` first.")
    train, held = split_indices(hh["index"].numel(), 0.3, seed)
    perm = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))]
    feats = {k: v.float() if v.is_floating_point() else v.long() for k, v in features.items()}
    return RewardData(list(examples), feats, hh, perm[len(perm) // 5:], perm[: len(perm) // 5], held)


def select_head(data: RewardData, candidates=CANDIDATES, progress: bool = True) -> dict:
    """Fit every candidate on the train split and measure it on the tuning split. The rule: among the candidates
    that meet every :data:`TARGETS` there, the highest :func:`summary_score`; if none does, the highest score
    overall (``chosen["meets_targets"]`` says which). Nothing is refit: the chosen head is the one trained on the
    train split. Returns {"table", "chosen", "head"}."""
    table, heads = [], []
    train_pairs = {**comparison_pairs(data.examples, "train"), "hh": data.hh_pairs(data.hh_fit)}  # same for all
    for pooling, kind, l2, hh_weight in candidates:
        weights = {k: (hh_weight if k == "hh" else 1.0) for k in train_pairs}
        head = train_pairwise(data.design(pooling), train_pairs, kind=kind, l2=l2, pooling=pooling, weights=weights)
        tune = data.measure(head, "tune")
        row = {"pooling": pooling, "kind": kind, "l2": l2, "hh_weight": hh_weight, "score": summary_score(tune),
               **{k: (v["auc"] if "auc" in v else v["value"]) for k, v in tune.items()}}
        row["meets_targets"] = meets_targets(row)
        table.append(row)
        heads.append(head)
        if progress:
            print(f"{pooling:14s} {kind:6s} l2={l2:g} hh x{hh_weight:g}: tuning score {row['score']:.4f}, "
                  f"HH {row['hh_accuracy']:.3f}, targets {'met' if row['meets_targets'] else 'missed'}", flush=True)
    eligible = [i for i, r in enumerate(table) if r["meets_targets"]] or list(range(len(table)))
    best = max(eligible, key=lambda i: table[i]["score"])
    return {"table": table, "chosen": table[best], "head": heads[best]}


# ---------------------------------------------------------------------------------------------------- the report
def load_examples(folder: str | Path) -> list:
    """``examples.jsonl`` then, if present, ``salad.jsonl`` (broken texts the optimisers found) of ``folder``."""
    from .reward_data import read_examples

    folder = Path(folder)
    examples = read_examples(folder / "examples.jsonl")
    if (folder / "salad.jsonl").exists():
        examples += read_examples(folder / "salad.jsonl")
    return examples


def advbench_bon64(records: str | Path) -> list[tuple[int, str, list, list]]:
    """(prompt id, prompt, candidate token ids, refusal flags) per prompt of the Best-of-64 records in ``records``
    (the first AdvBench grid's 64 pi_ref samples per prompt; refusal by :func:`sea_minimal.judges.is_refusal`)."""
    from .judges import is_refusal

    rows = []
    for line in open(records, encoding="utf-8"):
        r = json.loads(line)
        if r["label"] == "bon[n=64]":
            rows.append((r["prompt_id"], r["prompt"], [c["token_ids"] for c in r["candidates"]],
                         [is_refusal(c["text"]) for c in r["candidates"]]))
    return sorted(rows)


def fit_and_report(folder: str | Path, write: bool = False, candidates=CANDIDATES, progress: bool = True,
                   policy_name: str | None = None) -> dict:
    """Select the head on the tuning split, judge it, the HH-only head and (if scored) the contrast reward on the
    held-out split, and the AdvBench Best-of-64 AUC (evaluation only). With ``write``: the head goes to
    ``reward_model.v2_head_file(policy_name)`` and selection.json, heldout_measures.json and report.json to
    ``folder``. ``policy_name`` (default: the bundled SmolLM2) is the backbone the features came from; the HH-only
    head and the AdvBench samples are SmolLM2's, so another policy is measured without them.

    Returns {"data", "selection", "head", "measures", "advbench", "report"}.
    """
    from safetensors.torch import load_file

    from .models import DEFAULT_MODEL
    from .reward_model import ASSETS, FeatureSettings, load_features, load_head, save_head, v2_head_file

    folder, policy_name = Path(folder), policy_name or DEFAULT_MODEL
    bundled = policy_name == DEFAULT_MODEL
    hh, _ = load_features(folder / "hh_harmless_features.safetensors")
    data = load_reward_data(load_examples(folder), load_file(str(folder / "example_features.safetensors")), hh)
    selection = select_head(data, candidates, progress)
    head, best = selection["head"], selection["chosen"]
    measures = {"harmlessness-v2": data.measure(head, "heldout")}
    if bundled:
        old, _ = load_head(ASSETS / "harmlessness_head.safetensors")
        measures["harmlessness"] = data.measure(old, "heldout")
    cpath = folder / "contrast_scores.json"
    if cpath.exists():  # the contrast reward on the same held-out examples (scripts/train_reward.py contrast)
        c = json.loads(cpath.read_text())
        held = [e for e in data.examples if e.split == "heldout"]
        if len(c["examples"]) == len(held) and len(c["hh"]) == len(data.hh_heldout):
            hh_c = np.array(c["hh"])
            measures["contrast-refusal"] = evaluate_scores(held, c["examples"], "heldout", hh_c[:, 0], hh_c[:, 1])
    advbench = {}
    apath = folder / "advbench_bon64_features.safetensors"
    records = folder.parent / "advbench_baselines.jsonl"
    if bundled and apath.exists() and records.exists():  # evaluation only: never used for training or selection
        af = load_file(str(apath))
        groups, flags = [], []
        for pid, _, cands, refusals in advbench_bon64(records):
            groups += [pid] * len(cands)
            flags += refusals
        pairs = torch.tensor([(i, j) for i in range(len(flags)) for j in range(len(flags))
                              if groups[i] == groups[j] and flags[i] and not flags[j]]).reshape(-1, 2)
        af = {k: v.float() if v.is_floating_point() else v.long() for k, v in af.items()}
        for name, h in (("harmlessness-v2", head), ("harmlessness", old)):
            with torch.no_grad():
                advbench[name] = within_prompt_auc(h(pooled(af, h.pooling)).numpy(), pairs, groups)
        contrast_file = folder / "advbench_contrast.json"  # scripts/train_reward.py advbench-contrast
        if contrast_file.exists():
            advbench["contrast-refusal"] = within_prompt_auc(json.loads(contrast_file.read_text())["scores"], pairs,
                                                             groups)
    report = report_entry(measures["harmlessness-v2"])
    if "harmlessness-v2" in advbench:
        report["advbench_bon64_refusal_auc"] = advbench["harmlessness-v2"]["auc"]
        report["advbench_bon64_refusal_auc_ci"] = advbench["harmlessness-v2"]["ci"]
    if write:
        meta = {"settings": dict(FeatureSettings(model_name=policy_name).__dict__), "kind": best["kind"], "l2": best["l2"],
                "pooling": best["pooling"], "hh_weight": best["hh_weight"], "salad_rows": sum(e.kind == "salad" for e in data.examples),
                "trained_on": "reward_data train split (Do-Not-Answer + GSM8K control) + HH-RLHF harmless-base train"}
        save_head(head, v2_head_file(policy_name), meta)
        write_json(folder / "selection.json", {"table": selection["table"], "chosen": best})
        write_json(folder / "heldout_measures.json", {**measures, "advbench_bon64": advbench})
        rpath = folder / "report.json"
        previous = json.loads(rpath.read_text()) if rpath.exists() else {}
        write_json(rpath, {**previous, **report, "chosen_head": best})
    return {"data": data, "selection": selection, "head": head, "measures": measures, "advbench": advbench,
            "report": report}
