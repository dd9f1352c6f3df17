"""Scale-free weights: the sampler's alpha and the ARGS weight from the reward's measured spread.

A reward's units are arbitrary (the released code's alpha = 500 was set for the GRM reward's scale), so the book
sets them from a KL budget instead. Tilting pi_ref by exp(alpha r) with a reward that is roughly Gaussian over pi_ref's
samples, ``r ~ Normal(mu, sigma_r^2)``, gives the tilted distribution ``Normal(mu + alpha sigma_r^2, sigma_r^2)`` and

    ``KL(pi_alpha || pi_ref) = alpha^2 sigma_r^2 / 2``,

so a budget of ``kl`` nats is spent at alpha = sqrt(2 kl) / sigma_r. The default budget is Best-of-64's KL bound,
log 64 - 63/64 = 3.17 nats (Beirami et al. 2024), so SEA at that alpha and Best-of-64 may move equally far from pi_ref.
sigma_r is measured on tuning prompts (the median over prompts of the reward's standard deviation over pi_ref samples;
``results/reward_model/report.json`` key ``reward_std_over_policy_samples``), never on evaluation prompts.

ARGS scores each next token by log pi_ref(v | y_<t) + w_ARGS r(y_<t v): the same tilt pi_ref exp(alpha r) taken token by
token, so the rule gives it the same weight, w_ARGS = alpha.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

#: Best-of-n's KL bound log n - (n - 1) / n at n = 64, in nats.
BON64_KL = math.log(64) - 63 / 64


def best_of_n_kl(n: int) -> float:
    """The KL bound of Best-of-n to pi_ref: log n - (n - 1) / n (nats)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def alpha_for_kl(reward_std: float, kl: float = BON64_KL) -> float:
    """alpha = sqrt(2 kl) / sigma_r: the tilt exp(alpha r) of a Gaussian reward with std sigma_r = ``reward_std`` spends ``kl``
    nats. Energies use U = -log pi_ref - alpha r, so this alpha is in nats per reward unit."""
    if not (reward_std > 0 and math.isfinite(reward_std)):
        raise ValueError(f"reward_std must be a positive finite number, got {reward_std}. Fix: measure it over "
                         "pi_ref samples of tuning prompts (scripts/train_reward.py spread).")
    if not kl > 0:
        raise ValueError(f"kl must be > 0 nats, got {kl}")
    return math.sqrt(2 * kl) / reward_std


def args_weight(reward_std: float, kl: float = BON64_KL) -> float:
    """The ARGS weight w_ARGS of the same rule (w_ARGS = alpha, see the module docstring)."""
    return alpha_for_kl(reward_std, kl)


def reward_spread(policy, rewards: dict, prompts: Sequence[tuple[int, str]], samples: int = 16, length: int = 50,
                  log: Callable[[str], None] | None = None) -> dict[str, list[float]]:
    """Each reward's standard deviation over ``samples`` exact pi_ref samples of ``length`` tokens on SEA's response
    space (special tokens banned), per prompt of ``prompts`` ((id, text) pairs): {reward name: [std per prompt]}.
    A prompt's samples are drawn once, with a generator seeded by its id, and scored by every reward."""
    import torch

    from .lm import encode_prompt, sample_response_space
    from .rewards import one_hot

    stds = {name: [] for name in rewards}
    for n, (pid, text) in enumerate(prompts):
        prompt_ids = policy.encode_prompt(text)
        tokens, _ = sample_response_space(policy.model, encode_prompt(policy.model, prompt_ids), samples, length,
                                          torch.Generator().manual_seed(int(pid)), banned_ids=policy.special_ids)
        for name, reward in rewards.items():
            with torch.no_grad():
                stds[name].append(float(reward.for_prompt(prompt_ids)(one_hot(tokens, policy.vocab_size)).std()))
        if log:
            log(f"{n + 1}/{len(prompts)} prompt {pid}: " + ", ".join(f"{k} {v[-1]:.3f}" for k, v in stds.items()))
    return stds


#: The method params that are in reward units (an energy's alpha, the ARGS weight, the released recipe's reward
#: weight). Each multiplies a reward, so moving a grid to a reward with another spread divides them by the ratio
#: of the spreads.
REWARD_SCALED_PARAMS = ("alpha", "w", "reward_weight")


def recorded_spread(policy_name: str, reward_name: str) -> float | None:
    """The median std of ``reward_name`` over ``policy_name``'s own pi_ref samples, as ``scripts/train_reward.py
    spread --policy`` recorded it (``<reward folder>/spread.json``), or None if it was never measured."""
    import json

    from .reward_model import reward_folder

    path = reward_folder(policy_name) / "spread.json"
    if not path.exists():
        return None
    value = json.loads(path.read_text()).get("median_std", {}).get(reward_name)
    return None if value is None else float(value)


def transfer_weights(params: dict, factor: float) -> dict:
    """``params`` with every reward-unit weight (``REWARD_SCALED_PARAMS``) multiplied by ``factor`` and rounded to
    3 significant digits (as the grids write them); other params unchanged."""
    return {k: float(f"{v * factor:.3g}") if k in REWARD_SCALED_PARAMS and isinstance(v, (int, float)) else v
            for k, v in params.items()}

