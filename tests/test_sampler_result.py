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
from conftest import DEVICE, tiny_lm, tiny_text_tokenizer
from sea_minimal import SEA, HFClassifierReward, Policy, Reward, SEAConfig, VocabReward
from sea_minimal.lm import encode_prompt, next_token_logits, sample_tokens, sequence_logprob
from sea_minimal.rewards import one_hot
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


def test_a_text_prompt_is_recorded_as_text_and_every_chain_is_rewritten_and_scored(tiny_reward):
    """The released recipe's rewrite step on a policy with a (real, in-memory) tokenizer: the text prompt is recorded
    as given, each chain gets a rewrite scored by the run's reward on its own tokens, and the pick is the argmax
    over chains and rewrites."""
    policy = Policy(tiny_lm(), tokenizer=tiny_text_tokenizer(), name="tiny-text")
    cfg = SEAConfig.released_code(num_chains=2, length=4, steps=2, seed=0, rewrite_tokens=3)
    res = SEA(policy, tiny_reward, cfg).run(["a b c d"], progress=False)[0]
    assert res.prompt == "a b c d"
    rewrites = res.candidates[2:]
    assert [c["source"] for c in rewrites] == ["rewrite of chain 0", "rewrite of chain 1"]
    scorer = tiny_reward.for_prompt(policy.encode_prompt("a b c d"))
    for c in rewrites:
        ids = torch.tensor([c["token_ids"]], device=DEVICE)
        assert c["reward"] == pytest.approx(float(scorer(one_hot(ids, 11))[0]), abs=1e-5)
        assert c["text"] == policy.decode(c["token_ids"])
    assert any(abs(c["reward"]) > 0.1 for c in rewrites)  # the test has power: a zero reward would show
    assert res.selected == int(np.argmax([c["reward"] for c in res.candidates]))


def test_a_switched_off_term_is_still_tracked_on_the_response_space(tiny_policy, tiny_reward):
    """Without the reference term, log pi_ref is still recorded, renormalised over the allowed tokens as with it;
    without the reward term, the reward is still recorded. Iteration 0 evaluates the same initial state in all
    three runs."""
    tiny_policy.__dict__["special_ids"] = [9, 10]
    full = run(tiny_policy, tiny_reward)
    no_ref = run(tiny_policy, tiny_reward, use_reference=False)
    no_reward = run(tiny_policy, tiny_reward, use_reward=False)
    assert np.allclose(no_ref.trajectory["logp_ref"][0], full.trajectory["logp_ref"][0], atol=1e-5)
    assert np.allclose(no_reward.trajectory["reward_hard"][0], full.trajectory["reward_hard"][0], atol=1e-5)
    assert np.abs(full.trajectory["reward_hard"][0]).max() > 0.1  # the test has power: zeros would show
    cache = encode_prompt(tiny_policy.model, torch.tensor(PROMPT, device=DEVICE))
    ids = torch.tensor([c["token_ids"] for c in run(tiny_policy, tiny_reward, steps=1).candidates], device=DEVICE)
    unmasked = sequence_logprob(next_token_logits(tiny_policy.model, cache, one_hot(ids, 11)), one_hot(ids, 11))
    assert not np.allclose(full.trajectory["logp_ref"][0], unmasked.tolist(), atol=1e-3)  # the mask matters here


class OverflowingReward(Reward):
    """A reward that overflows to +inf whatever the response, with a zero (finite) gradient."""

    vocab_size = 11

    def for_prompt(self, prompt_ids):
        return lambda tokens: tokens.sum((-1, -2)) * 0.0 + math.inf


@pytest.mark.parametrize("recipe", ["langevin", "reference"])
def test_a_non_finite_energy_is_refused_even_when_its_gradient_is_finite(tiny_policy, recipe):
    """The energy (langevin) or loss (reference) itself is checked, not only the logits its gradient moves."""
    with pytest.raises(FloatingPointError, match=r"^SEA diverged at iteration 0: "):
        run(tiny_policy, OverflowingReward(), recipe=recipe)


@pytest.mark.parametrize("recipe", ["langevin", "reference"])
def test_an_update_that_overflows_z_is_refused_at_its_own_iteration(tiny_policy, tiny_reward, recipe, monkeypatch):
    """Z is checked right after the update that made it non-finite (not one iteration later, and also at the last
    iteration, after which nothing would look at it): langevin noise that overflows Z at iteration 0; a
    reference Adam step whose update overflows Z at iteration 1 (simulated: the step multiplies Z by inf)."""
    if recipe == "langevin":
        settings = {"noise_scale": 2e39}  # sqrt(2 eta) noise_scale = 2.8e38 fits float32, times |xi| > 1.2 does not
    else:
        settings = {"init": "random"}
        step, calls = torch.optim.Adam.step, []

        def overflowing_step(self, *args, **kwargs):
            out = step(self, *args, **kwargs)
            calls.append(1)
            if len(calls) == 2:
                with torch.no_grad():
                    self.param_groups[0]["params"][0].mul_(math.inf)
            return out

        monkeypatch.setattr(torch.optim.Adam, "step", overflowing_step)
    at = 0 if recipe == "langevin" else 1
    for steps in (at + 1, at + 3):  # the update at the last iteration, and one with iterations after it
        with pytest.raises(FloatingPointError, match=rf"^SEA diverged at iteration {at}: "):
            if recipe == "reference":
                calls.clear()
            run(tiny_policy, tiny_reward, recipe=recipe, steps=steps, **settings)


@pytest.mark.parametrize("recipe", ["langevin", "reference", "dlp"])
def test_the_kl_to_the_initial_state_is_taken_over_the_allowed_tokens(tiny_policy, tiny_reward, recipe):
    """kl_init compares two distributions on the response space: the masked tokens (here 9 and 10, the ids a
    tokenizer's special tokens would have) carry no probability in either, so the KL stays of the order of log V
    instead of the ~1e10 a sign slip on the mask would give."""
    tiny_policy.__dict__["special_ids"] = [9, 10]
    kl = np.asarray(run(tiny_policy, tiny_reward, recipe=recipe).trajectory["kl_init"])
    assert np.isfinite(kl).all() and 0 < kl.max() < 20, kl.max()
