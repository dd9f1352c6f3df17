"""What SEA.run returns and records, beyond the update rules: the pick of an iterate, early stopping, the initial
logits, the compute of a reward with its own model, the shared-backbone switch and the result's fields.

Written against surviving mutants of ``sea_minimal/sampler.py`` (scripts/mutation_test.py, issue 16)."""

import math
import platform

import numpy as np
import pytest
import torch
import transformers

import sea_minimal
from conftest import DEVICE, tiny_lm
from sea_minimal import SEA, HFClassifierReward, Policy, SEAConfig, VocabReward
from sea_minimal.lm import encode_prompt, sample_tokens
from sea_minimal.sampler import MASK_VALUE, library_versions

PROMPT = [3, 1, 4, 1, 5]


pytestmark = pytest.mark.usefixtures("one_thread")


def run(policy, reward, **cfg):
    return SEA(policy, reward, SEAConfig(**{"num_chains": 3, "length": 5, "steps": 6, "seed": 0, **cfg})).run(
        [PROMPT], progress=False)[0]


def test_library_versions_name_each_library():
    assert library_versions() == {"sea_minimal": sea_minimal.__version__, "torch": torch.__version__,
                                  "transformers": transformers.__version__, "python": platform.python_version()}


def test_the_result_records_its_prompt_seed_device_times_and_chains(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, seed=4)
    assert res.prompt == PROMPT and res.seed == 4 and res.device == "cpu" and res.method == "sea-langevin"
    assert 0 < res.wall_time < 60
    times = np.array(res.trajectory["wall_time"])
    assert (times > 0).all() and (times < 60).all() and (np.diff(times[:, 0]) >= 0).all()
    assert [c["source"] for c in res.candidates] == ["chain 0", "chain 1", "chain 2"]
    assert res.iterations == 6 and len(res.trajectory["energy"]) == 6


@pytest.mark.parametrize("recipe", ["langevin", "reference", "dlp"])
def test_a_prompt_given_as_a_tensor_is_recorded_as_a_list_of_ints(tiny_policy, tiny_reward, recipe):
    """Records are JSON: a tensor of ids (a valid prompt) must be stored as Python ints."""
    cfg = SEAConfig(recipe=recipe, num_chains=2, length=3, steps=2, seed=0)
    res = SEA(tiny_policy, tiny_reward, cfg).run([torch.tensor(PROMPT)], progress=False)[0]
    assert res.prompt == PROMPT and all(type(t) is int for t in res.prompt)


@pytest.mark.parametrize("select", ["best", "last"])
def test_select_returns_the_best_or_the_last_iterate_of_each_chain(tiny_policy, tiny_reward, select):
    res = run(tiny_policy, tiny_reward, num_chains=8, steps=12, step_size=3.0, noise_scale=2.0, alpha=3.0,
              select=select)
    rewards = np.array(res.trajectory["reward_hard"])  # [steps, chains]
    want = rewards.max(0) if select == "best" else rewards[-1]
    assert np.allclose(res.rewards, want, atol=1e-5)
    assert (rewards.max(0) > rewards[-1] + 1e-6).any()  # the test has power: some chain's best is not its last


def test_reference_recipe_stops_patience_iterations_after_its_last_improvement(tiny_policy, tiny_reward):
    res = run(tiny_policy, tiny_reward, recipe="reference", num_chains=2, steps=60, patience=4, lr=0.3)
    best = np.maximum.accumulate(np.array(res.trajectory["reward_hard"]), 0)  # each chain's best so far
    improved = [0] + [it for it in range(1, len(best)) if (best[it] > best[it - 1]).any()]  # any chain improved
    assert res.iterations == improved[-1] + 4 + 1 < 60
    assert len(improved) > 1  # it improved after iteration 0, so patience counts from a later iteration


def test_a_run_without_a_reward_scores_zero_per_chain(tiny_policy):
    res = run(tiny_policy, None, use_reward=False, num_chains=3, length=5)
    assert res.rewards == [0.0, 0.0, 0.0] and res.initial_rewards == [0.0, 0.0, 0.0]
    assert np.array(res.trajectory["reward_hard"]).shape == (6, 3)


def test_the_first_iteration_evaluates_the_initial_state_also_with_special_tokens_masked(tiny_policy, tiny_reward):
    tiny_policy.__dict__["special_ids"] = [9, 10]
    res = run(tiny_policy, tiny_reward)
    assert res.trajectory["kl_init"][0] == [0.0, 0.0, 0.0]


def test_mask_special_false_leaves_special_tokens_in_the_response_space(tiny_policy, tiny_reward):
    tiny_policy.__dict__["special_ids"] = [9, 10]
    assert (SEA(tiny_policy, tiny_reward, SEAConfig()).mask[[9, 10]] == MASK_VALUE).all()
    assert (SEA(tiny_policy, tiny_reward, SEAConfig(mask_special=False)).mask == 0).all()


def test_initial_logits_are_the_samples_logits_padded_with_seeded_noise_after_a_stop(tiny_policy, tiny_reward):
    """The released code's init: teacher-forced logits / init_temp of a pi_ref sample that stops at a special
    token, positions from the stop on replaced by N(0, 1) logits from the run's generator."""
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=DEVICE))
    stop = int(cache.next_logits.argsort(descending=True)[1])
    tiny_policy.__dict__["special_ids"] = [stop]
    cfg = SEAConfig(num_chains=16, length=8, seed=3, init_sample_temp=1.5)
    sea = SEA(tiny_policy, tiny_reward, cfg)
    z0 = sea._initial_logits(cache, torch.Generator(device=DEVICE).manual_seed(3))
    gen = torch.Generator(device=DEVICE).manual_seed(3)
    tokens, logits, stopped = sample_tokens(tiny_policy.model, cache, 16, 8, gen, temperature=1.5, stop_ids=[stop],
                                            banned_ids=[])
    pad = torch.randn((16, 8, 11), generator=gen, device=DEVICE)
    want = torch.where(stopped[..., None], pad, logits / cfg.init_temp)
    assert stopped.any() and torch.allclose(z0, want)
    # on SEA's response space (init_fixed_length): no stop, special tokens never sampled, unless mask_special=False
    kept = dict(num_chains=16, length=8, seed=3, init_fixed_length=True, init_keep_sample=True, init_sample_temp=2.0)
    fixed = SEA(tiny_policy, tiny_reward, SEAConfig(**kept))._initial_logits(
        cache, torch.Generator(device=DEVICE).manual_seed(3))
    assert not (fixed.argmax(-1) == stop).any()
    loose = SEA(tiny_policy, tiny_reward, SEAConfig(**kept, mask_special=False))._initial_logits(
        cache, torch.Generator(device=DEVICE).manual_seed(3))
    assert (loose.argmax(-1) == stop).any()


def test_a_reward_with_its_own_model_is_metered(tiny_policy, tiny_reward):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=0)
    classifier = HFClassifierReward(LlamaForSequenceClassification(config).to(DEVICE).eval(), suffix_ids=[2])
    cfg = dict(init="random", steps=3)
    own, vocab = run(tiny_policy, classifier, **cfg), run(tiny_policy, tiny_reward, **cfg)
    # the policy's share is the same (random init: C x (T - 1) per iteration plus the prompt); the classifier adds
    # its prompt and every scored response (T + 1 suffix tokens per chain and call)
    assert own.compute["forward_tokens"] > vocab.compute["forward_tokens"]
    assert own.compute["forward_tokens"] - vocab.compute["forward_tokens"] >= own.compute["reward_calls"] * 6


def test_the_shared_backbone_path_is_taken_only_for_a_head_on_the_policys_own_model(tiny_policy, tiny_reward):
    from sea_minimal.reward_model import BackboneReward, LinearHead

    hidden = tiny_policy.model.config.hidden_size
    head = LinearHead(weight=torch.ones(hidden), bias=torch.tensor(0.0), mean=torch.zeros(hidden),
                      std=torch.ones(hidden), pooling="mean")
    assert SEA(tiny_policy, BackboneReward(tiny_policy.model, head, suffix_ids=[10]), SEAConfig())._shares_backbone
    other = Policy(tiny_lm(seed=1), tokenizer=None, name="other")
    assert not SEA(tiny_policy, BackboneReward(other.model, head, suffix_ids=[10]), SEAConfig())._shares_backbone
    assert not SEA(tiny_policy, tiny_reward, SEAConfig())._shares_backbone
    no_suffix = BackboneReward(tiny_policy.model, head)
    del no_suffix.suffix_ids
    assert not SEA(tiny_policy, no_suffix, SEAConfig())._shares_backbone
    plain = type("NoHead", (), {"model": tiny_policy.model, "suffix_ids": [10], "vocab_size": 11,
                                "check_vocab": lambda self, n: None})()  # the policy's model, but no score_hidden
    assert not SEA(tiny_policy, plain, SEAConfig())._shares_backbone


@pytest.mark.parametrize("recipe,knob,settings", [
    ("langevin", "step_size", {"step_size": 1e38, "alpha": 1e38}),
    ("reference", "lr", {"reward_weight": math.inf}),
    ("dlp", "alpha", {"alpha": math.inf, "use_noise": False}),
])
def test_divergence_names_each_recipes_own_knob(tiny_policy, tiny_reward, recipe, knob, settings):
    with pytest.raises(FloatingPointError, match=rf"^SEA diverged at iteration 0: .* Fix: lower {knob} \(now "):
        run(tiny_policy, tiny_reward, recipe=recipe, **settings)
