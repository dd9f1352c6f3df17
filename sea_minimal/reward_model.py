"""A harmlessness reward model on the policy's own backbone, and loading of Hugging Face reward models.

No reward model on the offline package index shares SmolLM2's tokenizer, so the reward is built on the policy
itself: the frozen causal LM reads the prompt and the response, its final-layer hidden states over the response
positions are pooled into one vector, and a linear head maps that vector to a scalar. The head is trained with a
Bradley-Terry loss on HH-RLHF harmless-base preference pairs (chosen vs rejected answer to the same dialogue).

Because the response enters as embeddings ``tokens @ E`` (soft or one-hot tokens [C, T, V]), the reward is
differentiable in the soft tokens and SEA can backpropagate through it. Training features and SEA-time scores go
through the same function (:func:`response_hidden` then :func:`pool_hidden`), so a head trained on cached features
scores one-hot responses identically (tested to 1e-4).

Layout of one scored sequence: ``[prompt (KV cache)] [response tokens 0..n-1] [suffix, e.g. <|im_end|>]``.
Poolings over the final-layer states h of that sequence:

* ``mean``: average of h over the n response positions;
* ``last``: h at the last position (the end-of-turn token when a suffix is appended), like classifier reward models;
* ``mean_eot``: average over the response positions and the suffix positions.

AdvBench prompts are never used for training; the training data is HH-RLHF only.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .lm import PromptCache, forward_embeds, soft_embeddings
from .data import dataset_path
from .judges import contains_refusal
from .models import Policy
from .rewards import HFClassifierReward, Reward, Scorer, VocabMismatchError

ASSETS = Path(__file__).resolve().parent / "assets"
HEAD_FILE = ASSETS / "harmlessness_head.safetensors"
HEAD_META_FILE = ASSETS / "harmlessness_head.json"
#: The harmlessness-v2 head of chapter 3, trained by scripts/train_reward.py on on-policy Do-Not-Answer refusals
#: vs compliance, fluent vs broken text, a benign control and HH-RLHF. The HH-only head keeps its own file
#: (``sea_minimal/assets/harmlessness_v2_head.safetensors`` in the installed package).
#:
#: :meta hide-value:
V2_HEAD_FILE = ASSETS / "harmlessness_v2_head.safetensors"
REPORT_DIR = Path(__file__).resolve().parent.parent / "results" / "reward_model"  # in a source checkout


def policy_slug(policy_name: str) -> str:
    """A policy name as a file-name part ("org/model" -> "org--model")."""
    return str(policy_name).replace("/", "--")


def v2_head_file(policy_name: str) -> Path:
    """Where the harmlessness-v2 head trained on ``policy_name``'s backbone lives: ``V2_HEAD_FILE`` for the bundled
    SmolLM2, ``assets/harmlessness_v2_<policy>.safetensors`` for another policy (``scripts/train_reward.py --policy``)."""
    from .models import DEFAULT_MODEL

    return V2_HEAD_FILE if policy_name == DEFAULT_MODEL else ASSETS / f"harmlessness_v2_{policy_slug(policy_name)}.safetensors"


def reward_folder(policy_name: str) -> Path:
    """The reward data, features and reports of ``policy_name``: ``results/reward_model`` for the bundled SmolLM2,
    ``results/reward_model/<policy>/`` for another policy."""
    from .models import DEFAULT_MODEL

    return REPORT_DIR if policy_name == DEFAULT_MODEL else REPORT_DIR / policy_slug(policy_name)
DEFAULT_FEATURES = REPORT_DIR / "hh_harmless_features.safetensors"
POOLINGS = ("mean", "last", "mean_eot")

def is_refusal(text: str) -> bool:
    """The paper's refusal-substring test (sea_minimal.judges), with typographic apostrophes normalised. Used here
    only to label responses for the score-distribution illustration, never for training."""
    return contains_refusal(text.replace("\u2019", "'"))


# ----------------------------------------------------------------------------------------------------------------
# Data: HH-RLHF harmless-base pairs
# ----------------------------------------------------------------------------------------------------------------

def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder holding the HH-RLHF file (``data_dir``, else ``$SEA_DATA_DIR``); see sea_minimal.data."""
    return dataset_path("hh_rlhf", data_dir).parents[1]


_TURN = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_dialogue(text: str) -> list[dict]:
    """``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` -> chat messages ``[{"role": "user"|"assistant", "content"}]``."""
    parts = _TURN.split(text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages


def load_hh_pairs(data_dir: str | os.PathLike | None = None, limit: int | None = None) -> list[dict]:
    """HH-RLHF harmless-base test pairs as ``{"index", "context", "chosen", "rejected"}``.

    ``context`` is the shared dialogue (chat messages ending with the last human turn); chosen and rejected are
    the two last assistant turns. Pairs whose dialogues differ before the last turn, or whose answers are empty or
    identical, are dropped (their ``index`` in the file is kept so that subsets stay aligned with the file).
    """
    import gzip

    path = dataset_path("hh_rlhf", data_dir)
    pairs = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for index, line in enumerate(fh):
            if limit is not None and len(pairs) >= limit:
                break
            row = json.loads(line)
            chosen, rejected = parse_dialogue(row["chosen"]), parse_dialogue(row["rejected"])
            if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
                continue
            if chosen[:-1] != rejected[:-1] or not chosen[:-1] or chosen[-2]["role"] != "user":
                continue
            a, b = chosen[-1]["content"], rejected[-1]["content"]
            if not a or not b or a == b:
                continue
            pairs.append({"index": index, "context": chosen[:-1], "chosen": a, "rejected": b})
    return pairs


# ----------------------------------------------------------------------------------------------------------------
# Tokenisation with truncation
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureSettings:
    """Everything that determines a feature vector; recorded in cached feature files and in the head's metadata."""

    model_name: str = "smollm2-135m-instruct"
    max_prompt_tokens: int = 128  # earlier turns are dropped (then the last human turn is cut) to fit
    max_response_tokens: int = 64  # answers are cut to their first tokens
    append_eot: bool = True  # the end-of-turn token follows the response as a hard token
    dtype: str = "float32"

    def key(self) -> str:
        return hashlib.sha1(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


def context_prompt_ids(policy: Policy, context: list[dict] | str, max_prompt_tokens: int = 128) -> torch.Tensor:
    """Chat messages (or one user string) -> prompt ids through the policy's chat template, assistant turn opened (a
    model without one: the turns in ``policy.plain_template``'s Q/A format).

    Whole earlier turns are dropped from the front until the prompt fits ``max_prompt_tokens``; if the last human
    turn alone is too long, its text is cut to its last tokens. A string goes through ``policy.encode_prompt``, the
    same path SEA uses for its prompts.
    """
    if isinstance(context, str):
        return policy.encode_prompt(context)
    tok = policy.tokenizer
    messages = list(context)
    encode = policy.encode_messages

    ids = encode(messages)
    while ids.numel() > max_prompt_tokens and len(messages) > 1:
        messages = messages[1:]
        while messages and messages[0]["role"] != "user":
            messages = messages[1:]
        ids = encode(messages)
    if ids.numel() > max_prompt_tokens:
        overflow = ids.numel() - max_prompt_tokens
        content = tok(messages[-1]["content"], add_special_tokens=False)["input_ids"]
        cut = tok.decode(content[overflow + 2:])
        ids = encode(messages[:-1] + [{"role": "user", "content": cut}])[-max_prompt_tokens:]
    return ids


def response_token_ids(policy: Policy, text: str, max_tokens: int) -> torch.Tensor:
    """Answer text -> its first ``max_tokens`` token ids (no special tokens)."""
    ids = policy.tokenizer(text.strip(), add_special_tokens=False)["input_ids"][:max_tokens]
    if not ids:
        ids = policy.tokenizer(" ", add_special_tokens=False)["input_ids"][:1]
    return torch.tensor(ids, dtype=torch.long, device=policy.device)


# ----------------------------------------------------------------------------------------------------------------
# The shared forward: response embeddings -> final-layer states -> pooled features
# ----------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def encode_prompt_states(model: torch.nn.Module, prompt_ids: torch.Tensor) -> PromptCache:
    """Like :func:`sea_minimal.lm.encode_prompt` but through the backbone only: the prompt's KV cache without
    the [P, V] logits (a reward needs none). ``next_logits`` is left empty."""
    from transformers import DynamicCache

    from .models import cache_kwarg

    if prompt_ids.dim() != 1 or prompt_ids.numel() == 0:
        raise ValueError(f"prompt_ids must be a non-empty 1-D tensor of token ids, got shape {tuple(prompt_ids.shape)}")
    base = _backbone(model)
    cache = DynamicCache()
    base(input_ids=prompt_ids[None], use_cache=True, **{cache_kwarg(base): cache})
    layers = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
    return PromptCache(layers=layers, next_logits=torch.empty(0, device=prompt_ids.device), length=prompt_ids.numel())


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer without its LM head (its last hidden state equals ``hidden_states[-1]`` of the full model);
    skipping the head saves the [T, V] logits that a reward does not need."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, torch.nn.Module) and base is not model else model


def assemble_embeds(embeds: torch.Tensor, lengths: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
    """Place ``suffix`` [s, H] right after the first ``lengths[c]`` response embeddings of each row of ``embeds``
    [C, T, H]; positions after it are zero padding (never seen by earlier positions: attention is causal).
    Returns [C, T + s, H], differentiable in ``embeds``."""
    batch, length, hidden = embeds.shape
    s = suffix.shape[0]
    if s == 0:
        return embeds
    j = torch.arange(length + s, device=embeds.device)[None]
    k = j - lengths[:, None]  # index into the suffix
    is_resp = (j < lengths[:, None])[..., None]
    is_suf = ((k >= 0) & (k < s))[..., None]
    padded = torch.cat([embeds, embeds.new_zeros(batch, s, hidden)], dim=1)
    suf = suffix[k.clamp(0, s - 1)]  # [C, T + s, H]
    return torch.where(is_resp, padded, torch.where(is_suf, suf, torch.zeros_like(suf)))


def response_hidden(model: torch.nn.Module, prompt: PromptCache, embeds: torch.Tensor, lengths: torch.Tensor,
                    suffix_ids: Sequence[int] = ()) -> torch.Tensor:
    """Final-layer states [C, T + s, H] (float32) of the response embeddings [C, T, H] (+ hard suffix) after the
    cached prompt. Row c holds ``lengths[c]`` response tokens, then the suffix, then padding."""
    embedding = model.get_input_embeddings().weight
    suffix = embedding[torch.tensor(list(suffix_ids), dtype=torch.long, device=embedding.device)]
    x = assemble_embeds(embeds.to(embedding.dtype), lengths, suffix)
    out = forward_embeds(_backbone(model), prompt, x)
    return out.last_hidden_state.float()


def pool_hidden(hidden: torch.Tensor, lengths: torch.Tensor | None = None, n_suffix: int = 0) -> dict[str, torch.Tensor]:
    """Pool final-layer states [C, T + s, H] into {"mean", "last", "mean_eot"} features, each [C, H].

    ``lengths`` [C]: response tokens per row (default: all T); ``n_suffix``: hard tokens after each response.
    """
    batch, total, _ = hidden.shape
    if lengths is None:
        lengths = torch.full((batch,), total - n_suffix, dtype=torch.long, device=hidden.device)
    j = torch.arange(total, device=hidden.device)[None]
    resp = (j < lengths[:, None]).to(hidden.dtype)[..., None]
    with_suf = (j < (lengths + n_suffix)[:, None]).to(hidden.dtype)[..., None]
    mean = (hidden * resp).sum(1) / lengths[:, None].to(hidden.dtype)
    mean_eot = (hidden * with_suf).sum(1) / (lengths + n_suffix)[:, None].to(hidden.dtype)
    last = hidden[torch.arange(batch, device=hidden.device), lengths + n_suffix - 1]
    return {"mean": mean, "last": last, "mean_eot": mean_eot}


def select_pooling(pools: dict[str, torch.Tensor], pooling: str) -> torch.Tensor:
    """The head's input from :func:`pool_hidden`'s dict: one pooling, or several joined by ``+`` (concatenated)."""
    names = pooling.split("+")
    unknown = [n for n in names if n not in POOLINGS]
    if unknown:
        raise ValueError(f"Unknown pooling {unknown[0]!r} in {pooling!r}; choose from {POOLINGS}, joined by '+'.")
    return torch.cat([pools[n] for n in names], -1)


@torch.no_grad()
def response_features(policy: Policy, prompt: str | list[dict] | torch.Tensor, responses: Sequence,
                      settings: FeatureSettings | None = None,
                      suffix_ids: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Pooled features of several responses to one prompt, batched: {pooling: [N, H] float32, "length": [N]}.

    ``prompt``: a user string, chat messages (truncated to ``settings.max_prompt_tokens``) or prompt ids;
    ``responses``: answer strings or id sequences (cut to ``settings.max_response_tokens``); ``suffix_ids``:
    hard tokens after each response (default: the end-of-turn token when ``settings.append_eot``).
    """
    settings = settings or FeatureSettings()
    if isinstance(prompt, torch.Tensor):
        prompt_ids = prompt.to(policy.device)
    else:
        prompt_ids = context_prompt_ids(policy, prompt, settings.max_prompt_tokens)
    ids = [response_token_ids(policy, r, settings.max_response_tokens) if isinstance(r, str)
           else torch.as_tensor(r, dtype=torch.long, device=policy.device)[: settings.max_response_tokens]
           for r in responses]
    lengths = torch.tensor([len(i) for i in ids], device=policy.device)
    padded = torch.nn.utils.rnn.pad_sequence(ids, batch_first=True)  # pad id 0, overwritten by zero embeddings
    embedding = policy.embedding_matrix
    embeds = F.embedding(padded, embedding)  # == one_hot(ids) @ E, without the [N, T, V] one-hot
    suffix_ids = _suffix_ids(policy, settings) if suffix_ids is None else [int(i) for i in suffix_ids]
    cache = encode_prompt_states(policy.model, prompt_ids)
    hidden = response_hidden(policy.model, cache, embeds, lengths, suffix_ids)
    feats = pool_hidden(hidden, lengths, len(suffix_ids))
    feats["length"] = lengths
    return feats


def _suffix_ids(policy: Policy, settings: FeatureSettings) -> list[int]:
    if not settings.append_eot:
        return []
    if policy.end_of_turn_id is None:
        raise ValueError("append_eot=True needs a policy with an end-of-turn token (a tokenizer).")
    return [int(policy.end_of_turn_id)]


# ----------------------------------------------------------------------------------------------------------------
# Cached pair features
# ----------------------------------------------------------------------------------------------------------------

FEATURE_POOLINGS = ("mean", "last")  # stored; mean_eot is derived from them and the lengths


def derive_pooling(feats: dict[str, torch.Tensor], side: str, pooling: str, n_suffix: int = 1) -> torch.Tensor:
    """Features [N, H] of ``side`` ("chosen"/"rejected") for ``pooling`` from a stored feature dict."""
    if pooling in FEATURE_POOLINGS:
        return feats[f"{side}_{pooling}"].float()
    if pooling == "mean_eot":
        n = feats[f"{side}_length"].float()[:, None]
        return (n * feats[f"{side}_mean"].float() + n_suffix * feats[f"{side}_last"].float()) / (n + n_suffix)
    raise ValueError(f"Unknown pooling {pooling!r}; choose from {POOLINGS}")


def _save_features(path: Path, rows: dict[str, list], settings: FeatureSettings, complete: bool, extra: dict) -> None:
    from safetensors.torch import save_file

    tensors = {}
    for key, values in rows.items():
        t = torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
        tensors[key] = t.to(torch.float16) if t.is_floating_point() else t.to(torch.int32)
    meta = {"settings": json.dumps(asdict(settings)), "settings_key": settings.key(), "complete": str(complete),
            "n_pairs": str(len(rows["index"])), **{k: str(v) for k, v in extra.items()}}
    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=meta)
    tmp.replace(path)


def load_features(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """A feature file -> (tensors, metadata with ``settings`` decoded)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["settings"] = json.loads(meta["settings"])
    return tensors, meta


def extract_pair_features(policy: Policy, pairs: list[dict], settings: FeatureSettings | None = None,
                          cache_file: str | os.PathLike | None = None, save_every: int = 50,
                          progress: bool = True) -> dict[str, torch.Tensor]:
    """Features of chosen and rejected answers for every pair, ``{"{side}_{pooling}": [N, H], "index", ...}``.

    With ``cache_file`` the result is saved as float16 safetensors (settings in the metadata) every ``save_every``
    pairs; a later call with the same settings resumes from it (or returns it at once when complete). The two
    answers of a pair share one prompt encoding and run as one batch of two.
    """
    from tqdm.auto import tqdm

    settings = settings or FeatureSettings()
    keys = ["index"] + [f"{s}_{p}" for s in ("chosen", "rejected") for p in FEATURE_POOLINGS] + \
        ["chosen_length", "rejected_length", "chosen_refusal", "rejected_refusal", "prompt_length"]
    rows: dict[str, list] = {k: [] for k in keys}
    path = Path(cache_file) if cache_file else None
    if path is not None and path.exists():
        tensors, meta = load_features(path)
        if meta.get("settings_key") == settings.key():
            done = tensors["index"].tolist()
            wanted = [p["index"] for p in pairs]
            if done == wanted[: len(done)]:
                if len(done) == len(wanted):
                    return tensors
                for k in keys:
                    rows[k] = list(tensors[k].float().unbind(0)) if tensors[k].dim() > 1 else tensors[k].tolist()
    start = len(rows["index"])
    t0 = time.perf_counter()
    for n, pair in enumerate(tqdm(pairs[start:], desc="features", disable=not progress, initial=start,
                                  total=len(pairs)), start=start + 1):
        prompt_ids = context_prompt_ids(policy, pair["context"], settings.max_prompt_tokens)
        feats = response_features(policy, prompt_ids, [pair["chosen"], pair["rejected"]], settings)
        rows["index"].append(pair["index"])
        rows["prompt_length"].append(prompt_ids.numel())
        for i, side in enumerate(("chosen", "rejected")):
            for p in FEATURE_POOLINGS:
                rows[f"{side}_{p}"].append(feats[p][i].cpu())
            rows[f"{side}_length"].append(int(feats["length"][i]))
            rows[f"{side}_refusal"].append(int(is_refusal(pair[side])))
        if path is not None and (n % save_every == 0 or n == len(pairs)):
            seconds = time.perf_counter() - t0
            _save_features(path, rows, settings, complete=n == len(pairs),
                           extra={"seconds_this_run": f"{seconds:.1f}", "pairs_this_run": n - start,
                                  "device": str(policy.device)})
    out = {}
    for k, v in rows.items():
        if not v:
            continue
        out[k] = torch.stack(v).to(torch.float16).float() if isinstance(v[0], torch.Tensor) else torch.tensor(v)
    return out


# ----------------------------------------------------------------------------------------------------------------
# The head and its training
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class LinearHead:
    """score(f) = ((f - mean) / std) . weight + bias, on pooled features f [C, H]."""

    weight: torch.Tensor  # [H]
    bias: torch.Tensor  # [] (a constant: it cancels in every pairwise comparison; set so training scores average 0)
    mean: torch.Tensor  # [H] feature standardisation
    std: torch.Tensor  # [H]
    pooling: str = "mean"

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        dev = features.device
        z = (features.float() - self.mean.to(dev)) / self.std.to(dev)
        return z @ self.weight.to(dev) + self.bias.to(dev)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weight": self.weight, "bias": self.bias.reshape(1), "mean": self.mean, "std": self.std}


def train_bradley_terry(features_chosen: torch.Tensor, features_rejected: torch.Tensor, l2: float = 1e-2,
                        epochs: int = 200, seed: int = 0, pooling: str = "mean") -> LinearHead:
    """Fit a linear Bradley-Terry head: minimise mean softplus(-(s_chosen - s_rejected)) + l2 ||w||^2.

    Features are standardised with the mean/std of all training answers; full-batch L-BFGS (``epochs`` = maximum
    iterations) from w = 0, in float64, so the fit is deterministic (``seed`` only fixes torch's global RNG).
    """
    torch.manual_seed(seed)
    fc, fr = features_chosen.double(), features_rejected.double()
    both = torch.cat([fc, fr])
    mean, std = both.mean(0), both.std(0).clamp_min(1e-6)
    diff = (fc - fr) / std
    w = torch.zeros(diff.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], lr=1, max_iter=epochs, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.softplus(-(diff @ w)).mean() + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w = w.detach()
    bias = -(((both - mean) / std) @ w).mean()
    return LinearHead(weight=w.float(), bias=bias.float(), mean=mean.float(), std=std.float(), pooling=pooling)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def pairwise_accuracy(head: LinearHead, features_chosen: torch.Tensor, features_rejected: torch.Tensor) -> dict:
    """Share of pairs with score(chosen) > score(rejected) (ties count half), with a 95% Wilson interval."""
    margin = head(features_chosen) - head(features_rejected)
    wins = (margin > 0).float().sum().item() + 0.5 * (margin == 0).float().sum().item()
    n = margin.numel()
    lo, hi = wilson_interval(wins, n)
    return {"accuracy": wins / n, "ci_low": lo, "ci_high": hi, "n": n,
            "log_loss": F.softplus(-margin).mean().item()}


def split_indices(n: int, validation_fraction: float = 0.3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed seeded split of ``range(n)`` into (train, validation) indices."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * validation_fraction))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


def choose_l2(features_chosen: torch.Tensor, features_rejected: torch.Tensor, grid: Sequence[float],
              folds: int = 5, seed: int = 0, epochs: int = 200) -> tuple[float, list[dict]]:
    """k-fold cross-validation on the TRAINING pairs only; picks the l2 with the lowest mean held-out BT log-loss.

    Returns (best l2, one row per l2 with its cross-validated accuracy and log-loss).
    """
    n = features_chosen.shape[0]
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    chunks = perm.chunk(folds)
    table = []
    for l2 in grid:
        accs, losses = [], []
        for k in range(folds):
            val = chunks[k]
            tr = torch.cat([c for i, c in enumerate(chunks) if i != k])
            head = train_bradley_terry(features_chosen[tr], features_rejected[tr], l2=l2, epochs=epochs, seed=seed)
            res = pairwise_accuracy(head, features_chosen[val], features_rejected[val])
            accs.append(res["accuracy"] * len(val))
            losses.append(res["log_loss"] * len(val))
        table.append({"l2": l2, "cv_accuracy": sum(accs) / n, "cv_log_loss": sum(losses) / n})
    best = min(table, key=lambda r: r["cv_log_loss"])["l2"]
    return best, table


def fit_and_evaluate(feats: dict[str, torch.Tensor], pooling: str, train_idx: torch.Tensor, val_idx: torch.Tensor,
                     l2_grid: Sequence[float], folds: int = 5, seed: int = 0, n_suffix: int = 1) -> dict:
    """Choose l2 by CV on the train split, refit on all of it, evaluate once on the held-out split."""
    fc, fr = derive_pooling(feats, "chosen", pooling, n_suffix), derive_pooling(feats, "rejected", pooling, n_suffix)
    l2, cv = choose_l2(fc[train_idx], fr[train_idx], l2_grid, folds=folds, seed=seed)
    head = train_bradley_terry(fc[train_idx], fr[train_idx], l2=l2, seed=seed, pooling=pooling)
    train = pairwise_accuracy(head, fc[train_idx], fr[train_idx])
    held = pairwise_accuracy(head, fc[val_idx], fr[val_idx])
    return {"pooling": pooling, "l2": l2, "cv": cv, "head": head, "train": train, "heldout": held,
            "cv_accuracy": min(cv, key=lambda r: r["cv_log_loss"])["cv_accuracy"]}


def compare_poolings(feats: dict[str, torch.Tensor], train_idx, val_idx, l2_grid, poolings=POOLINGS, folds: int = 5,
                     seed: int = 0, n_suffix: int = 1) -> list[dict]:
    """:func:`fit_and_evaluate` for each pooling (the choice among them should use ``cv_accuracy``, a train-split
    number; the held-out numbers are reported beside it)."""
    return [fit_and_evaluate(feats, p, train_idx, val_idx, l2_grid, folds, seed, n_suffix) for p in poolings]


# ----------------------------------------------------------------------------------------------------------------
# The reward
# ----------------------------------------------------------------------------------------------------------------

class BackboneReward(Reward):
    """r(x, y) = head(pool(final-layer states of the frozen policy backbone over the response)).

    Pass the policy's own model object: the reward then shares its weights (no second copy in memory). The
    response enters as ``tokens @ E`` followed by ``suffix_ids`` as hard tokens, after the prompt's KV cache,
    so the score is differentiable in soft tokens [C, T, V].
    """

    def __init__(self, model: torch.nn.Module | Policy, head: LinearHead, suffix_ids: Sequence[int] = (),
                 settings: FeatureSettings | None = None, metadata: dict | None = None):
        self.model = model.model if isinstance(model, Policy) else model
        self.head = head
        self.suffix_ids = [int(i) for i in suffix_ids]
        self.settings = settings
        self.metadata = metadata or {}
        hidden = self.model.get_input_embeddings().weight.shape[1]
        expected = head.mean.shape[0] // len(head.pooling.split("+"))
        if expected != hidden:
            raise ValueError(f"The head expects {expected}-dimensional states but the model's hidden size "
                             f"is {hidden}. Fix: use the backbone the head was trained on, or train one for this "
                             "policy (scripts/train_reward.py --policy NAME, README \"A reward for another policy\").")
        self.vocab_size = self.model.get_input_embeddings().weight.shape[0]

    def score_hidden(self, hidden: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The head alone on final-layer states [C, T + s, H] laid out as [response (T), suffix (s)] -> [C].

        Lets a caller that already ran the backbone on ``[response, suffix]`` after the prompt (e.g. for
        log pi_ref) reuse those states instead of a second forward.
        """
        return self.head(select_pooling(pool_hidden(hidden.float(), lengths, len(self.suffix_ids)), self.head.pooling))

    def for_prompt(self, prompt_ids: torch.Tensor) -> Scorer:
        prompt = encode_prompt_states(self.model, prompt_ids)
        embedding = self.model.get_input_embeddings().weight

        def score(tokens: torch.Tensor) -> torch.Tensor:
            embeds = soft_embeddings(tokens, embedding)
            lengths = torch.full((tokens.shape[0],), tokens.shape[1], dtype=torch.long, device=tokens.device)
            hidden = response_hidden(self.model, prompt, embeds, lengths, self.suffix_ids)
            return self.score_hidden(hidden, lengths)

        return score


def save_head(head: LinearHead, path: str | os.PathLike, metadata: dict) -> None:
    """Write the head (safetensors, float32) and, beside it, its metadata as JSON (same stem, ``.json``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"pooling": head.pooling, **metadata}
    save_file({k: v.float().contiguous() for k, v in head.tensors().items()}, str(path),
              metadata={"pooling": head.pooling, "settings": json.dumps(metadata.get("settings", {}))})
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")


def load_head(path: str | os.PathLike = HEAD_FILE) -> tuple[LinearHead, dict]:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No reward head at '{path}'. Fix: run notebooks/03_reward_model.ipynb to train one.")
    t = load_file(str(path))
    meta = json.loads(path.with_suffix(".json").read_text()) if path.with_suffix(".json").exists() else {}
    if "w1" in t:  # a one-hidden-layer head (sea_minimal.reward_training.MLPHead)
        from .reward_training import MLPHead

        head = MLPHead(w1=t["w1"], b1=t["b1"], w2=t["w2"], b2=t["b2"].reshape(()), mean=t["mean"], std=t["std"],
                       pooling=meta.get("pooling", "mean_eot"))
    else:
        head = LinearHead(weight=t["weight"], bias=t["bias"].reshape(()), mean=t["mean"], std=t["std"],
                          pooling=meta.get("pooling", "mean"))
    return head, meta


def load_harmlessness_reward(policy: Policy, path: str | os.PathLike = HEAD_FILE) -> BackboneReward:
    """The committed harmlessness head (trained on HH-RLHF harmless-base) on ``policy``'s own backbone.

    The head was trained on the bundled SmolLM2-135M-Instruct; on another backbone it is meaningless (a hidden
    size mismatch raises, a same-size different model only warns).
    """
    head, meta = load_head(path)
    settings = FeatureSettings(**meta["settings"]) if "settings" in meta else FeatureSettings()
    if settings.model_name != policy.name:
        warnings.warn(f"The harmlessness head was trained on '{settings.model_name}' but the policy is "
                      f"'{policy.name}'; its scores are only meaningful on the backbone it was trained on.")
    return BackboneReward(policy.model, head, suffix_ids=_suffix_ids(policy, settings), settings=settings,
                          metadata=meta)


# ----------------------------------------------------------------------------------------------------------------
# Reward models from the Hugging Face hub (the paper's setup), with an explicit vocabulary check
# ----------------------------------------------------------------------------------------------------------------

def check_reward_vocab(reward_rows: int, policy_rows: int, reward_tokenizer=None, policy_tokenizer=None,
                       max_extra_rows: int = 1) -> int:
    """How many trailing embedding rows the reward model has beyond the policy's (0 or more), or raise.

    Accepted: the reward model's embedding has the policy's rows plus at most ``max_extra_rows`` trailing rows
    (GRM-Llama3.2-3B: 128257 = 128256 + 1 padding row), and, when both tokenizers are given, every token of the
    policy's vocabulary has the same id in the reward model's tokenizer. Anything else raises VocabMismatchError.
    """
    extra = reward_rows - policy_rows
    if extra < 0 or extra > max_extra_rows:
        raise VocabMismatchError(
            f"The reward model's embedding has {reward_rows} rows but the policy's has {policy_rows}: SEA feeds the "
            f"policy's soft tokens to the reward, so the first must be the second plus at most {max_extra_rows} "
            "trailing padding row(s). Fix: use a reward model of the policy's tokenizer family (or pass "
            "max_extra_rows=k if you know the k extra trailing rows are unused padding)."
        )
    if reward_tokenizer is not None and policy_tokenizer is not None:
        pv, rv = policy_tokenizer.get_vocab(), reward_tokenizer.get_vocab()
        bad = [t for t, i in pv.items() if i < policy_rows and rv.get(t) != i]
        if bad:
            raise VocabMismatchError(
                f"The reward model ({reward_rows} rows) and the policy ({policy_rows} rows) map {len(bad)} tokens to "
                f"different ids (e.g. {bad[:3]}). Fix: use a reward model with the policy's tokenizer."
            )
    return extra


def load_hf_reward(name_or_path, policy: Policy, device: str | None = None, dtype: torch.dtype | None = None,
                   max_extra_rows: int = 1) -> HFClassifierReward:
    """A Hugging Face sequence-classification reward model (e.g. ``Ray2333/GRM-Llama3.2-3B-rewardmodel-ft`` with a
    Llama-3.2 policy) as a differentiable :class:`~sea_minimal.rewards.HFClassifierReward`, after an explicit
    vocabulary check.

    ``name_or_path``: a hub id, a local folder or an already loaded model. Trailing extra embedding rows (GRM's one
    padding row) are dropped explicitly via ``extra_rows``; the policy's end-of-turn token is appended as a hard
    suffix so the score is read where the classifier was trained to read it.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from .models import _from_pretrained, quiet_progress_bars, resolve_model_path

    device = device or str(policy.device)
    reward_tokenizer = None
    if isinstance(name_or_path, torch.nn.Module):
        model = name_or_path
    else:
        path = resolve_model_path(name_or_path)
        with quiet_progress_bars():
            model = _from_pretrained(AutoModelForSequenceClassification, path, dtype=dtype or policy.dtype)
            try:
                reward_tokenizer = AutoTokenizer.from_pretrained(path)
            except (OSError, ValueError, TypeError):
                reward_tokenizer = None
    model = model.to(device=device, dtype=dtype or policy.dtype)
    rows = model.get_input_embeddings().weight.shape[0]
    extra = check_reward_vocab(rows, policy.vocab_size, reward_tokenizer, policy.tokenizer, max_extra_rows)
    compared = "tokenizers compared" if reward_tokenizer is not None and policy.tokenizer is not None else \
        "tokenizers not compared (one is missing)"
    if extra:
        print(f"[sea_minimal] reward model has {rows} embedding rows, the policy {policy.vocab_size}: dropping the "
              f"{extra} trailing row(s) (extra_rows={extra}; {compared}).")
    if model.config.pad_token_id is None:  # batched scoring of embeddings reads the last position anyway
        model.config.pad_token_id = policy.end_of_turn_id if policy.end_of_turn_id is not None else 0
    suffix = [] if policy.end_of_turn_id is None else [int(policy.end_of_turn_id)]
    return HFClassifierReward(model, suffix_ids=suffix, extra_rows=extra)
