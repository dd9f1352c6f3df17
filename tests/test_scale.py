"""The weight rule: alpha from the reward's spread spends the KL budget it promises."""

import math

import pytest
import torch

from sea_minimal.scale import BON64_KL, alpha_for_kl, args_weight, best_of_n_kl


def tilted_kl(reward: torch.Tensor, alpha: float) -> float:
    """KL(pi_alpha || pi_ref) for pi_ref uniform over the atoms and pi_alpha proportional to exp(alpha r)."""
    log_w = alpha * reward.double()
    log_z = torch.logsumexp(log_w, 0) - math.log(reward.numel())
    p = torch.softmax(log_w, 0)
    return float((p * (log_w - log_z)).sum())


@pytest.mark.parametrize("sigma", [0.05, 1.0, 40.0])
def test_alpha_spends_the_budget_on_a_gaussian_reward_whatever_its_scale(sigma):
    r = sigma * torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    alpha = alpha_for_kl(sigma)
    assert tilted_kl(r, alpha) == pytest.approx(BON64_KL, rel=0.05)
    assert alpha * sigma == pytest.approx(math.sqrt(2 * BON64_KL))  # scale-free: alpha * sigma is fixed
    assert args_weight(sigma) == alpha


def test_best_of_n_bound_and_bad_inputs():
    assert best_of_n_kl(1) == 0 and best_of_n_kl(64) == pytest.approx(3.1745, abs=1e-4)
    with pytest.raises(ValueError, match="reward_std"):
        alpha_for_kl(0.0)
    with pytest.raises(ValueError, match="kl"):
        alpha_for_kl(1.0, kl=0)


def test_reward_spread_scores_each_prompts_samples_with_every_reward(tiny_policy):
    """One set of pi_ref samples per prompt (seeded by its id), scored by each reward: a reward and its double have
    stds in ratio 2, a constant reward has std 0, and a rerun gives the same numbers."""
    from sea_minimal import VocabReward
    from sea_minimal.scale import reward_spread

    w = torch.linspace(-1.0, 1.0, tiny_policy.vocab_size)
    rewards = {"r": VocabReward(w), "2r": VocabReward(2 * w), "flat": VocabReward(torch.ones_like(w))}
    prompts = [(3, [1, 2, 3]), (7, [4, 5])]
    stds = reward_spread(tiny_policy, rewards, prompts, samples=8, length=4)
    assert all(len(v) == 2 for v in stds.values()) and all(s > 0 for s in stds["r"])
    assert stds["2r"] == pytest.approx([2 * s for s in stds["r"]]) and stds["flat"] == pytest.approx([0.0, 0.0])
    assert reward_spread(tiny_policy, {"r": rewards["r"]}, prompts, samples=8, length=4)["r"] == stds["r"]
