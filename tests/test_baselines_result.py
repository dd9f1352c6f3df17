"""What every baseline returns: the result's fields, SEA's response space on request, a reward model's forwards in
the compute, and the batched greedy's compute and time. Written against surviving mutants of
``sea_minimal/baselines.py`` (scripts/mutation_test.py, issue 16)."""

import time

import pytest
import torch

from conftest import DEVICE
from sea_minimal import HFClassifierReward
from sea_minimal.baselines import args, best_of_n, cbs, greedy, greedy_many, sampled

PROMPT = [1, 4, 2, 7, 3]
METHODS = {"greedy": (greedy, {}), "sampled": (sampled, {}), "best_of_n": (best_of_n, {"n": 3}),
           "args": (args, {"top_k": 3}), "cbs": (cbs, {"chunk_length": 2})}


@pytest.fixture
def classifier():
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=0)
    return HFClassifierReward(LlamaForSequenceClassification(config).to(DEVICE).eval(), suffix_ids=[2])


@pytest.mark.parametrize("name", list(METHODS))
def test_result_fields(tiny_policy, tiny_reward, name):
    fn, kw = METHODS[name]
    res = fn(tiny_policy, tiny_reward, PROMPT, seed=2, length=5, **kw)
    assert res.prompt == PROMPT and res.seed == 2 and res.device == "cpu" and res.method == name
    assert res.kl_per_position == [] and 0 < res.wall_time < 60
    assert res.texts == [c["text"] for c in res.candidates[: len(res.texts)]]
    assert res.rewards == [c["reward"] for c in res.candidates[: len(res.rewards)]] and len(res.rewards) >= 1
    assert all({"source", "text", "token_ids", "reward"} <= set(c) <= {"source", "text", "token_ids", "reward",
                                                                       "logp_ref_per_token"} for c in res.candidates)
    assert all(c["text"] == tiny_policy.decode(c["token_ids"]) for c in res.candidates)
    if name == "best_of_n":
        assert [c["source"] for c in res.candidates] == ["sample 0", "sample 1", "sample 2"]
        assert res.trajectory == {}
    if name == "greedy":
        assert res.initial_texts == [res.text] and res.initial_rewards == [res.candidates[0]["reward"]]


@pytest.mark.parametrize("name", list(METHODS))
def test_fixed_length_puts_every_baseline_on_seas_response_space(tiny_policy, tiny_reward, name):
    """No stop token, special tokens banned everywhere, exactly `length` tokens."""
    fn, kw = METHODS[name]
    favourite = greedy(tiny_policy, tiny_reward, PROMPT, length=8).candidates[0]["token_ids"]
    special = sorted(set(favourite[1:4]))  # tokens the policy emits here: banned, they must not appear
    tiny_policy.__dict__["special_ids"] = special
    res = fn(tiny_policy, tiny_reward, PROMPT, seed=0, length=8, fixed_length=True, **kw)
    for cand in res.candidates:
        assert len(cand["token_ids"]) == 8 and not set(cand["token_ids"]) & set(special), (name, cand)
    assert res.config["fixed_length"] is True


@pytest.mark.parametrize("name", list(METHODS))
def test_a_reward_models_own_forwards_are_in_the_compute(tiny_policy, tiny_reward, classifier, name):
    fn, kw = METHODS[name]
    own = fn(tiny_policy, classifier, PROMPT, seed=0, length=5, fixed_length=True, **kw)
    vocab = fn(tiny_policy, tiny_reward, PROMPT, seed=0, length=5, fixed_length=True, **kw)
    assert own.compute["forward_tokens"] > vocab.compute["forward_tokens"], name


def test_length_one_is_accepted_and_best_of_n_bounds(tiny_policy, tiny_reward):
    assert len(greedy(tiny_policy, tiny_reward, PROMPT, length=1).candidates[0]["token_ids"]) == 1
    assert len(best_of_n(tiny_policy, tiny_reward, PROMPT, n=3, batch_size=1, length=3).candidates) == 3
    for bad in ({"n": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError):
            best_of_n(tiny_policy, tiny_reward, PROMPT, length=3, **bad)


def test_batched_greedy_has_each_prompts_compute_and_a_share_of_the_time(tiny_policy, tiny_reward, classifier):
    prompts = [PROMPT, [2, 2], [5, 1, 6, 1, 7, 1, 8]]
    for reward in (tiny_reward, classifier):
        start = time.perf_counter()
        many = greedy_many(tiny_policy, reward, prompts, [0, 0, 0], length=6)
        elapsed = time.perf_counter() - start
        ones = [greedy(tiny_policy, reward, p, length=6) for p in prompts]
        for m, o in zip(many, ones):
            assert m.candidates[0]["token_ids"] == o.candidates[0]["token_ids"]
            assert m.compute["forward_tokens"] == o.compute["forward_tokens"]
            assert m.compute["reward_calls"] == o.compute["reward_calls"]
            assert m.wall_time > 0 and m.compute["wall_time"] > 0
        assert sum(m.wall_time for m in many) <= elapsed
    tiny_policy.__dict__["special_ids"] = [ones[0].candidates[0]["token_ids"][1]]
    fixed = greedy_many(tiny_policy, tiny_reward, prompts, [0, 0, 0], length=6, fixed_length=True)
    assert all(len(r.candidates[0]["token_ids"]) == 6 for r in fixed)
    assert all(tiny_policy.special_ids[0] not in r.candidates[0]["token_ids"] for r in fixed)


@pytest.mark.parametrize("name", list(METHODS))
def test_a_prompt_given_as_a_tensor_is_recorded_as_a_list_of_ints(tiny_policy, tiny_reward, name):
    """Records are JSON: a tensor of ids (a valid prompt) must be stored as Python ints."""
    import json

    fn, kw = METHODS[name]
    res = fn(tiny_policy, tiny_reward, torch.tensor(PROMPT), seed=0, length=3, **kw)
    assert res.prompt == PROMPT and all(type(t) is int for t in res.prompt)
    json.dumps(res.prompt)
