"""The contrast reward, its exact optimum, and the MH-corrected recipe that targets it."""

import math

import numpy as np
import pytest
import torch

from conftest import DEVICE, tiny_lm
from sea_minimal import SEA, Policy, SEAConfig
from sea_minimal.contrast import (ContextError, ContrastReward, effective_sample_size, importance_weights,
                                  log_partition_estimate, pi_star, sample_optimum, score_responses)
from sea_minimal.lm import encode_prompt, sample_response_space
from sea_minimal.optimum_analysis import choose_by_distance, sample_frame, summary, wasserstein_1d
from sea_minimal.toy import (empirical_distribution, exact_optimal_policy, make_toy_world, sampling_tv_floor,
                             toy_sea_config, total_variation)

PROMPT = [3, 1, 4, 1, 5]
CONTEXT = [7, 2, 7]
BANNED = [9, 10]


@pytest.fixture
def policy():
    p = Policy(tiny_lm(), tokenizer=None, name="tiny")
    p.__dict__["special_ids"] = list(BANNED)
    return p


@pytest.fixture
def reward(policy):
    return ContrastReward(policy, prefix_ids=CONTEXT)


@torch.no_grad()
def full_forward_logprob(model, prompt, response, banned=BANNED) -> float:
    """log p(y | prompt) on the response space, by one uncached forward of [prompt, y] (independent code path)."""
    ids = torch.tensor([list(prompt) + list(response)], device=DEVICE)
    logits = model(input_ids=ids).logits[0].double()
    logits[:, banned] = -math.inf
    logp = torch.log_softmax(logits, -1)
    P = len(prompt)
    return float(sum(logp[P - 1 + t, tok] for t, tok in enumerate(response)))


def test_contrast_reward_is_the_difference_of_two_independent_loglikelihoods(policy, reward):
    scorer = reward.for_prompt(torch.tensor(PROMPT, device=DEVICE))
    responses = [[0, 1, 2, 3], [8, 8, 8, 8], [5, 0, 5, 0]]
    onehot = torch.nn.functional.one_hot(torch.tensor(responses, device=DEVICE), 11).float()
    got = scorer(onehot)
    for r, value in zip(responses, got.tolist()):
        want = full_forward_logprob(policy.model, CONTEXT + PROMPT, r) - full_forward_logprob(policy.model, PROMPT, r)
        assert value == pytest.approx(want, abs=1e-4)
    scores = score_responses(reward, torch.tensor(PROMPT, device=DEVICE), responses)
    assert scores.reward.tolist() == pytest.approx(got.tolist(), abs=1e-4)
    assert scores.log_pi_star(1.0).tolist() == pytest.approx(scores.log_pi_steered.tolist())


def test_contrast_reward_is_differentiable_in_soft_tokens(reward):
    scorer = reward.for_prompt(torch.tensor(PROMPT, device=DEVICE))
    soft = torch.softmax(torch.randn(2, 4, 11, generator=torch.Generator().manual_seed(0)), -1).requires_grad_(True)
    (grad,) = torch.autograd.grad(scorer(soft).sum(), soft)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_exact_sampler_samples_have_the_models_loglikelihoods(policy, reward):
    prompt = torch.tensor(PROMPT, device=DEVICE)
    tokens, logp = sample_optimum(reward, prompt, 12, 4, torch.Generator(device=DEVICE).manual_seed(0))
    assert tokens.shape == (12, 4) and not any(t in BANNED for t in tokens.flatten().tolist())
    for row, value in zip(tokens.tolist(), logp.tolist()):
        assert value == pytest.approx(full_forward_logprob(policy.model, CONTEXT + PROMPT, row), abs=1e-4)


def test_masked_ancestral_sampling_matches_the_exact_distribution(policy):
    """On 9^2 = 81 responses of length 2, sample frequencies converge to the masked product of conditionals."""
    cache = encode_prompt(policy.model, torch.tensor(PROMPT, device=DEVICE))
    tokens, _ = sample_response_space(policy.model, cache, 20000, 2, torch.Generator(device=DEVICE).manual_seed(1),
                                      banned_ids=BANNED, batch_size=20000)
    allowed = [v for v in range(11) if v not in BANNED]
    exact = torch.tensor([[math.exp(full_forward_logprob(policy.model, PROMPT, [a, b])) for b in range(11)]
                          for a in range(11)])
    assert float(exact.sum()) == pytest.approx(1.0, abs=1e-6)
    emp = torch.zeros(11, 11)
    for a, b in tokens.tolist():
        emp[a, b] += 1
    emp /= emp.sum()
    assert float(emp[BANNED].sum() + emp[:, BANNED].sum()) == 0
    floor = sampling_tv_floor(exact.flatten().double(), 20000, 5, torch.Generator().manual_seed(0))
    assert total_variation(emp.flatten(), exact.flatten()) < 2 * floor
    assert len(allowed) == 9


def test_at_alpha_one_the_energy_is_minus_log_pi_of_the_steered_prompt(policy, reward):
    for recipe in ("langevin", "dlp"):
        cfg = SEAConfig(recipe=recipe, alpha=1.0, num_chains=3, length=4, steps=4, seed=0, init_keep_sample=True,
                        track_soft_reward=False, step_size=0.5)
        res = SEA(policy, reward, cfg).run([PROMPT], progress=False)[0]
        assert res.iterations == 4
        # the last iteration's energy belongs to the chains "last" selection returns (dlp: after its MH step;
        # langevin: the state fed forward at that iteration)
        for c, cand in enumerate(res.candidates[:3]):
            want = -full_forward_logprob(policy.model, CONTEXT + PROMPT, cand["token_ids"])
            assert res.trajectory["energy"][-1][c] == pytest.approx(want, abs=1e-3), recipe


def test_pi_star_method_and_context_errors(policy, reward):
    res = pi_star(policy, reward, PROMPT, seed=0, n=6, length=3)
    assert len(res.candidates) == 6 and res.method == "pi_star" and all(len(c["token_ids"]) == 3 for c in res.candidates)
    with pytest.raises(TypeError, match="contrast reward"):
        from sea_minimal.rewards import VocabReward

        pi_star(policy, VocabReward(torch.zeros(11)), PROMPT, seed=0)
    with pytest.raises(ContextError, match="prefix_ids"):
        ContrastReward(policy)  # no tokenizer: a tokenizer-free model needs prefix_ids
    with pytest.raises(ContextError, match="empty"):
        ContrastReward(policy, prefix_ids=[])


def test_importance_sampling_helpers():
    from sea_minimal.contrast import OptimumScores

    scores = OptimumScores(torch.tensor([-3.0, -2.0, -1.0]), torch.tensor([-1.0, -2.0, -3.0]))  # r = 2, 0, -2
    w = importance_weights(scores, 1.0)
    assert w.tolist() == pytest.approx([1 / 3] * 3) and effective_sample_size(w) == pytest.approx(3.0)
    w2 = importance_weights(scores, 2.0)  # ∝ exp(r)
    assert w2.tolist() == pytest.approx((torch.softmax(torch.tensor([2.0, 0.0, -2.0]), 0)).tolist(), abs=1e-6)
    assert log_partition_estimate(scores, 1.0) == pytest.approx(0.0)


def test_chat_context_is_inserted_between_system_block_and_request(bundled_policy):
    reward = ContrastReward(bundled_policy)
    plain = bundled_policy.encode_prompt("Tell me about bread.")
    steered = reward.steered_ids(plain).tolist()
    text = bundled_policy.tokenizer.decode(steered)
    assert text.index("break into a corporate network") < text.index("Tell me about bread.")
    assert steered[: reward.insert_at] == plain.tolist()[: reward.insert_at]
    assert steered[-(len(plain) - reward.insert_at):] == plain.tolist()[reward.insert_at:]


# ------------------------------------------------------------------------------------ the MH recipe on the toy
@pytest.fixture(scope="module")
def world():
    return make_toy_world()


def chains_tv(world, config, alpha):
    res = SEA(world.policy, world.reward, config).run(world.prompt, progress=False)[0]
    ids = torch.tensor([c["token_ids"] for c in res.candidates[: config.num_chains]])
    return total_variation(empirical_distribution(ids, world.vocab_size), exact_optimal_policy(world, alpha)), res


@pytest.mark.heavy  # about a minute each: left out of mutation runs, kept in the suite
@pytest.mark.parametrize("block", [0, 1])
def test_mh_recipe_reaches_the_exact_optimum_on_an_enumerable_toy(world, block):
    """2000 independent chains after 150 MH steps: TV to pi* within 1.25x the finite-sample floor of 2000 exact
    draws, with proposals at every position (block 0) or at one random position (block 1). The unadjusted sampler
    (no MH test) with the same proposal stays far off: the check can fail."""
    alpha, chains = 5.0, 2000
    floor = sampling_tv_floor(exact_optimal_policy(world, alpha), chains, 20, torch.Generator().manual_seed(0))
    cfg = toy_sea_config(world, "dlp", alpha=alpha, num_chains=chains, steps=150, seed=0, dlp_step=2.0,
                         dlp_block=block)
    tv, res = chains_tv(world, cfg, alpha)
    assert tv < 1.25 * floor, (tv, floor)
    assert 0.05 < np.nanmean(res.trajectory["accept"]) < 0.95
    tv_unadjusted, _ = chains_tv(world, cfg.replace(mh_correction=False), alpha)
    assert tv_unadjusted > 2 * floor, (tv_unadjusted, floor)


@pytest.mark.parametrize("switch", ["use_reward", "use_reference", "use_noise", "init", "select", "mh_correction"])
def test_every_ablation_switch_works_for_the_mh_recipe(policy, switch):
    from sea_minimal.rewards import VocabReward

    linear = VocabReward(torch.linspace(-1.0, 1.0, 11, device=DEVICE), reduce="sum")
    base = dict(recipe="dlp", num_chains=4, length=5, steps=8, seed=0, alpha=2.0, dlp_step=1.0)
    run = lambda **kw: SEA(policy, linear, SEAConfig(**{**base, **kw})).run([PROMPT], progress=False)[0]
    full = run()
    if switch == "use_reward":
        res = run(use_reward=False)
        for U, lp in zip(res.trajectory["energy"], res.trajectory["logp_ref"]):
            assert U == pytest.approx([-v for v in lp], abs=1e-5)
    elif switch == "use_reference":
        res = run(use_reference=False)
        for U, r in zip(res.trajectory["energy"], res.trajectory["reward_hard"]):
            assert U == pytest.approx([-2.0 * v for v in r], abs=1e-5)
    elif switch == "use_noise":  # a deterministic descent: U never goes up, and a rerun with another seed agrees
        res = run(use_noise=False, init="random")
        energy = np.array(res.trajectory["energy"])
        assert (np.diff(energy, axis=0) <= 1e-5).all()
        assert res.texts == run(use_noise=False, init="random", seed=0).texts
    elif switch == "init":
        res = run(init="random")
        assert res.initial_texts != full.initial_texts
    elif switch == "select":
        res = run(select="best")
        for c in range(4):
            assert res.rewards[c] == pytest.approx(max(row[c] for row in res.trajectory["reward_hard"]))
    else:  # without the MH test every proposal is accepted
        res = run(mh_correction=False)
        assert all(v == 1.0 for row in res.trajectory["accept"] for v in row)
        assert np.nanmean(full.trajectory["accept"]) < 1.0


def test_langevin_steps_without_reward_and_noise_raise_log_pi_ref(policy):
    """The gradient through the reference model must act: fluency-only descent raises log pi_ref."""
    from sea_minimal.rewards import VocabReward

    flat = VocabReward(torch.zeros(11, device=DEVICE))
    res = SEA(policy, flat, SEAConfig(num_chains=4, length=5, steps=30, use_reward=False, use_noise=False,
                                      init="random", step_size=5.0)).run([PROMPT], progress=False)[0]
    lp = np.array(res.trajectory["logp_ref"])
    assert lp[-1].mean() > lp[0].mean() + 1.0


# ------------------------------------------------------------------------------------ analysis
def _record(method, label, cands, lp_ref, lp_star, prompt_id=0, params=None, compute=100):
    return {"method": method, "label": label, "prompt_id": prompt_id, "selected": 0, "params": params or {},
            "candidates": [{"token_ids": [1, 2, 3], "text": t, "reward": s - r} for t, r, s in zip(cands, lp_ref, lp_star)],
            "metrics": {"optimum_log_pi_ref": lp_ref, "optimum_log_pi_steered": lp_star},
            "compute": {"forward_tokens": compute, "backward_tokens": 0}}


def test_sample_frame_summary_and_tuning_rule():  # noqa: C901
    star = _record("pi_star", "pi-star", ["I'm sorry, I can't help with that today."] * 4 + ["Sure, here is how to do it now."] * 4,
                   [-10.0] * 8, [-5.0, -6.0, -7.0, -8.0] * 2)
    bon = _record("best_of_n", "bon", ["Sure, here is how to do it now.", "I'm sorry, I can't help with that today."],
                  [-4.0, -9.0], [-9.0, -5.0], compute=64)
    sea = _record("sea", "sea-dlp", ["a b c d e f", "I won't help you with that, sorry."], [-8.0, -9.0], [-6.0, -7.0],
                  params={"num_chains": 2})
    frame = sample_frame([star, bon, sea], perplexity_limit=1e9)
    labels = set(frame.label)
    assert {"pi*", "pi* held-out (4)", "pi* held-out (1)", "pi_ref", "BoN-4", "sea-dlp chains", "sea-dlp"} - {"BoN-4"} <= labels
    assert "BoN-4" not in labels  # only 2 samples: Best-of-N for N <= 2 only (N = 1 is the pi_ref row)
    table = summary(frame).set_index("label")
    assert table.loc["pi_ref", "samples"] == 2 and table.loc["pi_ref", "compute_tokens"] == pytest.approx(32.0)
    # a random half per prompt (seeded by its id) is the reference: together the halves hold the 4 refusals
    assert table.loc["pi*", "refused_%"] + table.loc["pi* held-out (4)", "refused_%"] == pytest.approx(100.0)
    order = np.random.default_rng(0).permutation(8)
    reference = [[-5.0, -6.0, -7.0, -8.0][i % 4] for i in order[:4]]
    assert table.loc["sea-dlp chains", "broken_%"] == pytest.approx(0.0)  # 6 words: not too short
    assert table.loc["sea-dlp chains", "w1"] == pytest.approx(wasserstein_1d([-6.0, -7.0], reference))
    # W1 between {-6, -7} and {-5, -6, -7, -8}: |F - G| integrates to 0.5
    assert wasserstein_1d([-6.0, -7.0], [-5.0, -6.0, -7.0, -8.0]) == pytest.approx(0.5)
    assert wasserstein_1d([0.0], [1.0]) == pytest.approx(1.0)
    choice = choose_by_distance(frame, ["sea-dlp chains", "pi_ref"])
    assert choice["label"] == "sea-dlp chains"


def test_verdict_rule_names_what_approximates_pi_star():
    import pandas as pd

    def table(w1_lang, w1_dlp, refused_lang):
        rows = {"pi*": dict(w1=np.nan, refused_lo=40.0, refused_hi=60.0),
                "pi* held-out (4)": dict(w1=1.0, refused_lo=30.0, refused_hi=70.0),
                "sea-langevin chains": dict(w1=w1_lang, refused_lo=refused_lang - 5, refused_hi=refused_lang + 5),
                "sea-dlp chains": dict(w1=w1_dlp, refused_lo=45.0, refused_hi=55.0)}
        return pd.DataFrame(rows).T

    from sea_minimal.optimum_analysis import verdict

    assert verdict(table(1.5, 5.0, 50.0))["verdict"] == "reproduced"
    assert verdict(table(1.5, 1.5, 10.0))["verdict"] == "partly"  # close by W1 but refuses far less: not pi*
    assert verdict(table(9.0, 1.2, 50.0))["verdict"] == "partly"
    assert verdict(table(9.0, 9.0, 50.0))["verdict"] == "not reproduced"


def test_the_energys_shared_contrast_forward_counts_one_reward_call_per_chain(policy, reward):
    """The langevin energy reads log pi_ref from the contrast reward's own forward: one reward call per chain
    (C, not T) per iteration, beside the initial score and the tracked soft reward, as the hand count of
    test_compute_accounting_matches_a_hand_count."""
    C, T, S = 3, 5, 4
    res = SEA(policy, reward, SEAConfig(num_chains=C, length=T, steps=S, seed=0)).run([PROMPT], progress=False)[0]
    assert res.compute["reward_calls"] == C + S * 2 * C
