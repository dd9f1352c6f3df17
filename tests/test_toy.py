"""Tests of the exact toy world (sea_minimal.toy): exact quantities, Best-of-N maths, SEA on the toy."""

import math

import numpy as np
import pytest
import torch

from sea_minimal import SEA
from sea_minimal.lm import encode_prompt, next_token_logits, sequence_logprob
from sea_minimal.rewards import one_hot
from sea_minimal.toy import (
    best_of_chains, best_of_n_contains_best, best_of_n_distribution, best_of_n_frontier, best_of_n_probs,
    empirical_distribution, enumerate_responses, exact_log_pi_ref, exact_optimal_policy, expected_reward, kl,
    make_toy_world, plugin_kl, response_index, reward_kl_frontier, sample_best_of_n, sea_samples,
    simulate_best_of_n, toy_sea_config, total_variation,
)


@pytest.fixture(scope="module")
def world():
    torch.set_num_threads(1)  # tiny matmuls: one thread is much faster than two on a shared CPU
    return make_toy_world()


def test_enumeration_is_base_v_and_index_round_trips():
    ys = enumerate_responses(3, 4)
    assert ys.shape == (81, 4)
    assert ys[5].tolist() == [0, 0, 1, 2]  # 5 = 0*27 + 0*9 + 1*3 + 2
    assert torch.equal(response_index(ys, 3), torch.arange(81))
    assert len({tuple(r) for r in ys.tolist()}) == 81


def test_exact_pi_ref_sums_to_one_and_equals_kv_cached_soft_forward(world):
    log_p = exact_log_pi_ref(world)
    assert log_p.dtype == torch.float64 and log_p.shape == (6 ** 4,)
    assert abs(float(log_p.exp().sum()) - 1.0) < 1e-9
    assert torch.allclose(log_p, world.log_pi_ref)
    # The sampler's path: prompt KV cache + one-hot inputs through inputs_embeds, float32.
    model, V = world.policy.model, world.vocab_size
    cache = encode_prompt(model, torch.tensor(world.prompt))
    tokens = one_hot(world.responses, V)
    with torch.no_grad():
        cached = sequence_logprob(next_token_logits(model, cache, tokens), tokens).double()
    assert (cached - log_p).abs().max() < 1e-4


def test_exact_pi_ref_is_the_product_of_stepwise_conditionals(world):
    model, prompt = world.policy.model, world.prompt
    gen = torch.Generator().manual_seed(1)
    for i in torch.randint(world.num_responses, (12,), generator=gen).tolist():
        y = world.responses[i].tolist()
        total = 0.0
        for t in range(world.length):  # a separate forward per step, prefix only
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + y[:t]])).logits[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[y[t]])
        assert abs(total - float(world.log_pi_ref[i])) < 1e-4


def test_reward_is_the_vocab_reward_and_best_is_rare(world):
    scorer = world.reward.for_prompt(torch.tensor(world.prompt))
    hard = scorer(one_hot(world.responses, world.vocab_size)).double()
    assert (hard - world.rewards).abs().max() < 1e-5
    assert world.best_index == int(world.rewards.argmax())
    assert world.sigma < 1e-3  # the designed reward's best response is rare under pi_ref


def test_optimal_policy_limits_and_monotone_frontier(world):
    assert torch.allclose(exact_optimal_policy(world, 0.0), world.pi_ref, atol=1e-15, rtol=1e-9)
    frontier = reward_kl_frontier(world, np.linspace(0.0, 10.0, 21))
    assert frontier.kl.iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(np.diff(frontier.kl) > 0)
    assert np.all(np.diff(frontier.reward) > 0)
    assert frontier.reward.iloc[-1] < float(world.rewards.max())
    assert abs(float(exact_optimal_policy(world, 1.3).sum()) - 1) < 1e-12


def test_optimal_policy_maximises_the_regularised_objective(world):
    alpha = 2.0
    def objective(p):
        return expected_reward(p, world.rewards) - kl(p, world.pi_ref) / alpha
    p_star = exact_optimal_policy(world, alpha)
    best = objective(p_star)
    # The maximum equals (1/alpha) log Z.
    log_z = float(torch.logsumexp(world.log_pi_ref + alpha * world.rewards, 0))
    assert best == pytest.approx(log_z / alpha, abs=1e-9)
    others = [world.pi_ref, exact_optimal_policy(world, 1.5), exact_optimal_policy(world, 2.5),
              best_of_n_distribution(world, 8), 0.5 * p_star + 0.5 * world.pi_ref]
    for q in others:
        assert objective(q) < best


def test_best_of_n_formula_and_simulation_agree(world):
    gen = torch.Generator().manual_seed(0)
    trials = 20000
    # The toy's own sigma and a much larger one (another response as the target).
    targets = [world.best_index, int(world.pi_ref.argmax())]
    for target in targets:
        sigma = float(world.pi_ref[target])
        for n in (1, 8, 64):
            p = float(best_of_n_contains_best(sigma, n))
            rate = simulate_best_of_n(world, n, trials, gen, target=target)
            tol = 5 * math.sqrt(max(p * (1 - p), 1e-6) / trials)
            assert abs(rate - p) < tol, (sigma, n, rate, p)
    assert best_of_n_contains_best(0.5, 2) == pytest.approx(0.75)
    assert best_of_n_contains_best(1e-12, 10) == pytest.approx(1e-11, rel=1e-6)


def test_exact_best_of_n_matches_monte_carlo(world):
    gen = torch.Generator().manual_seed(2)
    trials = 20000
    for n in (4, 16):
        exact = best_of_n_distribution(world, n)
        assert abs(float(exact.sum()) - 1) < 1e-12
        picks = sample_best_of_n(world, n, trials, gen)
        mc_reward = world.rewards[picks]
        mean, se = float(mc_reward.mean()), float(mc_reward.std()) / math.sqrt(trials)
        assert abs(mean - expected_reward(exact, world.rewards)) < 5 * se
        # the top decile of the exact distribution by mass: frequencies within binomial error
        top = exact.argsort(descending=True)[:10]
        freq = torch.bincount(picks, minlength=world.num_responses).double()[top] / trials
        assert ((freq - exact[top]).abs() < 5 * (exact[top] * (1 - exact[top]) / trials).sqrt() + 1e-3).all()
    assert torch.allclose(best_of_n_distribution(world, 1), world.pi_ref)


def test_best_of_n_kl_tends_to_log_n_minus_one_plus_one_over_n_without_atoms():
    gen = torch.Generator().manual_seed(3)
    for size, tol in ((500, 1e-2), (200_000, 1e-4)):
        p = 1 + torch.rand(size, generator=gen, dtype=torch.float64)
        p /= p.sum()
        rewards = torch.randn(size, generator=gen, dtype=torch.float64)  # distinct: no ties
        for n in (1, 2, 7, 64):
            q = best_of_n_probs(p, rewards, n)
            bound = math.log(n) - (n - 1) / n
            assert kl(q, p) <= bound + 1e-12
            assert kl(q, p) == pytest.approx(bound, abs=tol)


def test_ties_lower_the_best_of_n_kl(world):
    frame = best_of_n_frontier(world, [2, 16, 64])
    assert np.all(frame.kl <= frame.kl_bound + 1e-12)
    assert np.all(np.diff(frame.reward) > 0)


def test_empirical_distribution_tv_and_plugin_kl(world):
    ids = torch.tensor([[0, 0, 0, 1], [0, 0, 0, 1], [5, 5, 5, 5], [0, 0, 0, 0]])
    emp = empirical_distribution(ids, 6)
    assert emp.shape == (1296,) and float(emp.sum()) == 1.0
    assert emp[1] == 0.5 and emp[1295] == 0.25 and emp[0] == 0.25
    assert total_variation(emp, emp) == 0.0
    delta = torch.zeros(1296, dtype=torch.float64)
    delta[7] = 1
    assert total_variation(emp, delta) == 1.0
    assert plugin_kl(ids, world) == pytest.approx(kl(emp, world.pi_ref), abs=1e-12)


def test_best_of_chains_picks_the_highest_reward_per_group():
    ids = torch.arange(12).view(6, 2)
    rewards = torch.tensor([0.1, 0.5, 0.3, 0.3, 0.9, 0.2], dtype=torch.float64)
    out = best_of_chains(ids, rewards, 3)
    assert out.tolist() == [ids[1].tolist(), ids[4].tolist()]
    assert torch.equal(best_of_chains(ids, rewards, 1), ids)


def test_reference_config_matches_the_effective_alpha(world):
    cfg = toy_sea_config(world, "reference", alpha=3.0, num_chains=8, steps=5)
    assert cfg.recipe == "reference" and cfg.select == "best"
    assert cfg.reward_weight * world.length / cfg.fluency_weight == pytest.approx(3.0)
    assert cfg.topk <= world.vocab_size
    assert cfg.patience > 10 ** 6  # no early stop: chains stay independent and runs nest
    lang = toy_sea_config(world, "langevin", alpha=3.0, num_chains=8, steps=5, step_size=0.5)
    assert lang.alpha == 3.0 and lang.step_size == 0.5 and lang.length == world.length


@pytest.mark.parametrize("recipe", ["langevin", "reference", "dlp"])
def test_sea_runs_on_the_toy_world(world, recipe):
    cfg = toy_sea_config(world, recipe, alpha=3.0, num_chains=16, steps=6, seed=0,
                         **({"step_size": 0.5} if recipe == "langevin" else {}))
    result = SEA(world.policy, world.reward, cfg).run(world.prompt, progress=False)[0]
    assert result.iterations == 6
    nan_by_design = {"accept"} if recipe != "dlp" else {"reward_soft"}
    for key, values in result.trajectory.items():
        assert len(values) == 6 and all(len(v) == 16 for v in values)
        assert np.isfinite(np.array(values)).all() or key in nan_by_design, key
    ids = torch.tensor([c["token_ids"] for c in result.candidates[:16]])
    assert ids.shape == (16, world.length) and int(ids.min()) >= 0 and int(ids.max()) < world.vocab_size
    # the sampler's hard reward is the world's exact reward of the decoded response
    assert np.allclose(result.rewards, world.rewards[world.index_of(ids)].numpy(), atol=1e-5)
    if recipe in ("langevin", "dlp"):
        # select="last": the final chain is the one fed forward at the last iteration, and the sampler's
        # KV-cached log pi_ref of it is the exact one
        exact = world.log_pi_ref[world.index_of(ids)].numpy()
        assert np.allclose(result.trajectory["logp_ref"][-1], exact, atol=1e-4)
        # sea_samples: a run with fewer steps is a prefix of a longer one (same seed)
        short = sea_samples(world, cfg, [3])[3]
        assert np.allclose(short["rewards"].numpy(), result.trajectory["reward_hard"][2], atol=1e-5)
    else:
        # select="best": the final chain is the best iterate so far; the 3-step run saw a prefix of this one
        short = sea_samples(world, cfg, [3])[3]
        best3 = np.max(np.array(result.trajectory["reward_hard"][:3]), axis=0)
        assert np.allclose(short["rewards"].numpy(), best3, atol=1e-5)
        assert short["iterations"] == 3
