"""Metrics on hand-computed examples and on a tiny random Llama (checked against a plain full forward)."""

import math

import pytest
import torch
import torch.nn.functional as F

from sea_minimal.metrics import diversity, kl_from_base_per_position, rep_n, response_length, response_logprob

PROMPT = [1, 4, 2, 7, 3]


def test_rep_n_and_diversity_by_hand():
    text = "a b a b a b"
    # bigrams ab ba ab ba ab: 2 unique of 5; trigrams aba bab aba bab: 2 of 4; 4-grams abab baba abab: 2 of 3
    assert rep_n(text, 2) == pytest.approx(1 - 2 / 5)
    assert rep_n(text, 3) == pytest.approx(1 - 2 / 4)
    assert rep_n(text, 4) == pytest.approx(1 - 2 / 3)
    assert diversity(text) == pytest.approx((2 / 5) * (2 / 4) * (2 / 3))
    assert diversity("the cat sat on the mat") == 1.0  # "the" repeats, but no n-gram with n >= 2 does
    assert diversity("hi") == 1.0  # no n-grams: nothing repeats
    assert diversity("  x  y\nx y x ") == pytest.approx(diversity("x y x y x"))  # whitespace split
    # over token ids: [5, 5, 5, 5] -> bigrams 1 of 3 unique, trigrams 1 of 2, 4-grams 1 of 1
    assert diversity([5, 5, 5, 5]) == pytest.approx((1 / 3) * (1 / 2) * 1.0)


def test_response_length():
    assert response_length("Sure, here it is.", [10, 11, 12, 13, 14]) == {"tokens": 5, "words": 4}
    assert response_length("", None) == {"tokens": None, "words": 0}


def full_logprobs(model, prompt, ids):
    """log pi(ids_t | prompt, ids_<t) from one uncached forward of prompt + ids: [T, V]."""
    seq = torch.tensor(prompt + ids)[None]
    logits = model(input_ids=seq).logits[0].float()
    return F.log_softmax(logits[len(prompt) - 1 : len(prompt) + len(ids) - 1], -1)


def test_response_logprob_matches_a_full_forward(tiny_policy):
    ids = [3, 9, 0, 5]
    with torch.no_grad():
        logp = full_logprobs(tiny_policy.model, PROMPT, ids)
    expected = float(sum(logp[t, ids[t]] for t in range(len(ids))))
    got = response_logprob(tiny_policy, PROMPT, ids)
    assert got["sum"] == pytest.approx(expected, abs=1e-4)
    assert got["per_token"] == pytest.approx(expected / 4, abs=1e-4) and got["tokens"] == 4
    empty = response_logprob(tiny_policy, PROMPT, [])
    assert empty["sum"] == 0.0 and math.isnan(empty["per_token"])


def test_kl_from_base_per_position(tiny_policy):
    base = [3, 9, 0, 5, 2]
    assert kl_from_base_per_position(tiny_policy, PROMPT, base, base) == pytest.approx([0.0] * 5, abs=1e-5)
    new = [3, 9, 4, 5]  # departs at position 2: positions 0..2 see the same prefix, position 3 does not
    kl = kl_from_base_per_position(tiny_policy, PROMPT, base, new)
    assert len(kl) == 4 and kl[:3] == pytest.approx([0.0] * 3, abs=1e-5) and kl[3] > 1e-3
    with torch.no_grad():
        p = full_logprobs(tiny_policy.model, PROMPT, base[:4])[3]
        q = full_logprobs(tiny_policy.model, PROMPT, new)[3]
    assert kl[3] == pytest.approx(float((p.exp() * (p - q)).sum()), abs=1e-4)
