"""Per-response metrics: diversity, log-likelihood under pi_ref, length, and where an answer departs from the base.

* :func:`diversity`: prod_{n=2..4} (1 - rep_n), rep_n = 1 - #unique n-grams / #n-grams (SEA.md §4, the
  SimCTG/contrastive-decoding definition the paper uses for TruthfulQA), computed per response over its
  **whitespace-separated words** (pass a list of token ids instead of a string to measure over tokens).
  A response with fewer than n units has no n-grams and rep_n = 0 (nothing repeats).
* :func:`response_logprob`: log pi_ref(y | x), summed and per token (KV-cached prompt, one batched forward).
* :func:`response_length`: tokens and words.
* :func:`kl_from_base_per_position`: per-position KL between pi_ref's next-token distributions along the base
  answer and along a method's answer (SEAResult.kl_per_position is SEA's own, logit-space quantity).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .lm import encode_prompt, next_token_logits
from .models import Policy


def _units(response: str | Sequence) -> list:
    return response.split() if isinstance(response, str) else [int(t) for t in response]


def rep_n(response: str | Sequence, n: int) -> float:
    """Share of repeated n-grams: 1 - #unique n-grams / #n-grams (0 when the response has no n-gram)."""
    units = _units(response)
    grams = [tuple(units[i : i + n]) for i in range(len(units) - n + 1)]
    return 0.0 if not grams else 1.0 - len(set(grams)) / len(grams)


def diversity(response: str | Sequence, orders: Sequence[int] = (2, 3, 4)) -> float:
    """prod_n (1 - rep_n) over ``orders``: 1 = no repeated n-gram, 0 = all n-grams repeat (degenerate loops).

    A string is split on whitespace (words); a list of token ids is used as is (tokens).
    """
    out = 1.0
    for n in orders:
        out *= 1.0 - rep_n(response, n)
    return out


def response_length(text: str, token_ids: Sequence[int] | None = None) -> dict:
    """{"tokens": len(token_ids) (None when not given), "words": whitespace-separated words of ``text``}."""
    return {"tokens": None if token_ids is None else len(token_ids), "words": len(text.split())}


def _prompt_ids(policy: Policy, prompt) -> torch.Tensor:
    return policy.encode_prompt(prompt)


@torch.no_grad()
def response_logits(policy: Policy, prompt, ids: Sequence[int], cache=None) -> torch.Tensor:
    """pi_ref's logits [T, V] (float32) that score each position of the response ``ids`` given the prompt."""
    if cache is None:
        cache = encode_prompt(policy.model, _prompt_ids(policy, prompt))
    tokens = torch.as_tensor(list(ids), dtype=torch.long, device=policy.device)[None]
    return next_token_logits(policy.model, cache, tokens)[0]


@torch.no_grad()
def response_logprob(policy: Policy, prompt, ids: Sequence[int], cache=None) -> dict:
    """log pi_ref(y | x) of the response token ids: {"sum", "per_token", "tokens"} (nats).

    ``per_token`` = sum / T (the negative log-perplexity); an empty response has sum 0 and per_token NaN.
    ``prompt`` is what the method was given (a string through the chat template, or token ids); pass
    ``cache`` (an ``encode_prompt`` result) to reuse an encoded prompt.
    """
    ids = [int(t) for t in ids]
    if not ids:
        return {"sum": 0.0, "per_token": math.nan, "tokens": 0}
    logits = response_logits(policy, prompt, ids, cache)
    logp = F.log_softmax(logits, -1).gather(-1, torch.tensor(ids, device=logits.device)[:, None]).squeeze(-1)
    total = float(logp.sum())
    return {"sum": total, "per_token": total / len(ids), "tokens": len(ids)}


@torch.no_grad()
def kl_from_base_per_position(policy: Policy, prompt, base_ids: Sequence[int], new_ids: Sequence[int]) -> list[float]:
    """KL(pi_ref(. | x, base_<t) || pi_ref(. | x, new_<t)) for t = 0 .. min(len) - 1, nats.

    Both distributions come from the same reference model: they differ only through the prefix. So this measures
    *where the method's answer departs from the base answer* (and how much the context then changes the next-token
    distribution): 0 at position 0 (same prompt) and along any common prefix, positive from the position after
    the first differing token on. It is the discrete-method analogue of SEA's ``kl_per_position`` (which compares
    SEA's initial and final logits), used for the paper's "where does alignment act" plot.
    """
    n = min(len(base_ids), len(new_ids))
    if n == 0:
        return []
    cache = encode_prompt(policy.model, _prompt_ids(policy, prompt))
    base = F.log_softmax(response_logits(policy, prompt, list(base_ids)[:n], cache), -1)
    new = F.log_softmax(response_logits(policy, prompt, list(new_ids)[:n], cache), -1)
    kl = (base.exp() * (base - new)).sum(-1).clamp_min(0.0)
    return [float(v) for v in kl]
