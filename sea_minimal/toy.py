"""The exact toy world: a tiny language model whose every response can be enumerated.

A real ``transformers.LlamaForCausalLM`` (random, seeded, with a large ``initializer_range`` so that pi_ref is
peaked and structured) over a vocabulary of V tokens generates responses of exactly T tokens after a short
prompt of token ids. With V = 6 and T = 4 there are V^T = 1296 responses, so every quantity the method talks
about can be computed exactly:

* pi_ref(y | x) for every y (full forward passes, float64),
* the KL-regularised optimum pi*(y | x) = pi_ref(y | x) exp(alpha r(y)) / cal_Z(x) for any alpha,
* the exact distribution, expected reward and KL of Best-of-N,

and the SAME :class:`~sea_minimal.sampler.SEA` sampler that runs on SmolLM2 runs here (the model is wrapped in a
:class:`~sea_minimal.models.Policy` with ``tokenizer=None``; the prompt is a list of token ids). Its decoded samples
can then be compared with pi* directly, e.g. by the total-variation distance.

Conventions
-----------
* The V^T responses are listed by :func:`enumerate_responses` in lexicographic order: the response
  (y_0, ..., y_{T-1}) has index sum_t y_t V^(T-1-t) (a base-V number, first token most significant).
* Distributions over responses are float64 tensors of shape [V^T] that sum to 1; log-probabilities are in nats.
* The reward is a :class:`~sea_minimal.rewards.VocabReward` with ``reduce="sum"``: r(y) = sum_t w[y_t], in the
  units of w. Because it is a sum, all orderings of the same multiset of tokens have the same reward (ties, see
  :func:`best_of_n_probs`), and the best response is the top-weight token repeated T times.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .config import SEAConfig
from .models import Policy
from .rewards import VocabReward
from .sampler import SEA

__all__ = [
    "ToyWorld", "make_toy_world", "build_toy_model", "enumerate_responses", "response_index", "exact_log_pi_ref",
    "reward_levels", "exact_optimal_policy", "expected_reward", "kl", "total_variation", "entropy",
    "reward_kl_frontier", "best_of_n_contains_best", "simulate_best_of_n", "sample_pi_ref", "sample_best_of_n",
    "best_of_n_probs", "best_of_n_distribution", "best_of_n_frontier", "empirical_distribution", "plugin_kl",
    "sampling_tv_floor", "sample_stats", "sea_samples", "best_of_chains", "toy_sea_config",
]


# --------------------------------------------------------------------------------------------- the world
def enumerate_responses(vocab_size: int, length: int) -> torch.Tensor:
    """All V^T responses, LongTensor [V^T, T], row i = the base-V digits of i (first token most significant)."""
    if vocab_size < 1 or length < 1:
        raise ValueError(f"vocab_size and length must be >= 1, got {vocab_size}, {length}")
    if vocab_size ** length > 10_000_000:
        raise ValueError(f"V^T = {vocab_size}^{length} responses is too many to enumerate; keep it below 1e7.")
    index = torch.arange(vocab_size ** length)
    powers = vocab_size ** torch.arange(length - 1, -1, -1)
    return (index[:, None] // powers) % vocab_size


def response_index(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token ids [..., T] -> index of each response in :func:`enumerate_responses` order, LongTensor [...]."""
    token_ids = torch.as_tensor(token_ids, dtype=torch.long)
    length = token_ids.shape[-1]
    powers = vocab_size ** torch.arange(length - 1, -1, -1, device=token_ids.device)
    return (token_ids * powers).sum(-1)


def build_toy_model(vocab_size: int = 6, seed: int = 0, hidden_size: int = 32, num_layers: int = 2,
                    num_heads: int = 2, init_range: float = 0.3, max_positions: int = 64):
    """A tiny random ``LlamaForCausalLM`` (float32, eval mode), initialised from ``seed``.

    ``init_range`` is the std of the weight initialisation (transformers' default is 0.02, which would give an
    almost uniform next-token distribution); 0.3 gives a peaked, prompt- and position-dependent pi_ref.
    There are no special tokens (bos/eos/pad are None), so the sampler masks nothing.
    The global torch RNG is left untouched.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_positions, initializer_range=init_range, tie_word_embeddings=False,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float().eval()


@torch.no_grad()
def _full_forward_log_pi_ref(model: torch.nn.Module, prompt: list[int], responses: torch.Tensor,
                             batch_size: int = 4096) -> torch.Tensor:
    """log pi_ref(y | x) [V^T] float64 by full (non-cached) float64 forwards of [prompt, y] for every row of y."""
    model64 = copy.deepcopy(model).double()
    prompt_t = torch.as_tensor(prompt, dtype=torch.long)
    P, T = prompt_t.numel(), responses.shape[1]
    out = []
    for chunk in responses.split(batch_size):
        ids = torch.cat([prompt_t.expand(chunk.shape[0], -1), chunk], dim=1)  # [n, P + T]
        logp = torch.log_softmax(model64(input_ids=ids).logits.double(), dim=-1)  # [n, P + T, V]
        # the logits at position P - 1 + t score the response token t
        out.append(logp[:, P - 1:P - 1 + T].gather(-1, chunk[..., None]).squeeze(-1).sum(-1))
    return torch.cat(out)


def exact_log_pi_ref(world: "ToyWorld") -> torch.Tensor:
    """log pi_ref(y | x) for all V^T responses: float64 [V^T], nats, computed from scratch.

    Full forward passes (no KV cache) of prompt + response in float64 through a float64 copy of the model.
    pi_ref is the product of the model's step-wise conditionals, so it sums to 1 over all responses by
    construction; the function checks that (to 1e-9) instead of renormalising.
    """
    log_p = _full_forward_log_pi_ref(world.policy.model, world.prompt, world.responses)
    total = float(torch.logsumexp(log_p, 0).exp())
    if abs(total - 1.0) > 1e-9:
        raise AssertionError(f"exact pi_ref sums to {total!r}, not 1: the enumeration or the forward is wrong")
    return log_p


def reward_levels(rewards: torch.Tensor, decimals: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    """Group equal rewards. Returns (levels [K] ascending float64, level index of each response [V^T] long).

    Rewards are rounded to ``decimals`` first, so sums of the same weights in a different order (equal in
    exact arithmetic, possibly 1 ulp apart in floating point) count as the same level (a tie).
    """
    rounded = torch.round(rewards.double() * 10 ** decimals) / 10 ** decimals
    levels, inverse = torch.unique(rounded, sorted=True, return_inverse=True)
    return levels, inverse


@dataclass
class ToyWorld:
    """Everything about one toy prompt that does not depend on alpha.

    Attributes:
        policy: the tiny Llama wrapped as a :class:`~sea_minimal.models.Policy` (tokenizer None).
        prompt: the prompt, a list of token ids.
        reward: ``VocabReward(weights, reduce="sum")``: r(y) = sum_t weights[y_t].
        weights: per-token reward w, float64 [V].
        vocab_size, length: V and T.
        responses: LongTensor [V^T, T] (see :func:`enumerate_responses`).
        log_pi_ref: float64 [V^T], exact log pi_ref(y | x), nats.
        rewards: float64 [V^T], r(y).
        best_index: index of the (unique) highest-reward response.
        seed: the model's initialisation seed.
    """

    policy: Policy
    prompt: list[int]
    reward: VocabReward
    weights: torch.Tensor
    vocab_size: int
    length: int
    responses: torch.Tensor
    log_pi_ref: torch.Tensor
    rewards: torch.Tensor
    best_index: int
    seed: int
    info: dict = field(default_factory=dict)

    @property
    def num_responses(self) -> int:
        return self.responses.shape[0]

    @property
    def pi_ref(self) -> torch.Tensor:
        """Exact pi_ref, float64 [V^T]."""
        return self.log_pi_ref.exp()

    @property
    def sigma(self) -> float:
        """The probability pi_ref(best response) that one sample of pi_ref is the best response."""
        return float(self.log_pi_ref[self.best_index].exp())

    @property
    def best_response(self) -> list[int]:
        return self.responses[self.best_index].tolist()

    def index_of(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [..., T] -> response indices [...]."""
        return response_index(token_ids, self.vocab_size)


def _design_weights(log_pi_ref: torch.Tensor, responses: torch.Tensor, vocab_size: int, target_sigma: float,
                    other_max: float) -> tuple[torch.Tensor, int]:
    """The reward w [V] float64 and its top token v_best.

    v_best is the token whose all-v_best response has pi_ref closest (in log) to ``target_sigma``: the best response is
    rare under pi_ref. The other tokens get weights evenly spaced in [0, other_max], the more pi_ref-probable
    tokens (average marginal over positions) the lower ones, so the reward pulls against pi_ref everywhere.
    """
    p = log_pi_ref.exp()
    repeated = [int(response_index(torch.full((responses.shape[1],), k), vocab_size)) for k in range(vocab_size)]
    log_rep = log_pi_ref[repeated]
    top = int((log_rep - math.log(target_sigma)).abs().argmin())
    marginal = torch.stack([(p[:, None] * (responses == v)).sum(0).mean() for v in range(vocab_size)])
    others = [v for v in sorted(range(vocab_size), key=lambda v: -float(marginal[v])) if v != top]
    weights = torch.zeros(vocab_size, dtype=torch.float64)
    weights[top] = 1.0
    for rank, v in enumerate(others):  # most probable first -> weight 0
        weights[v] = other_max * rank / max(len(others) - 1, 1)
    return weights, top


def make_toy_world(vocab_size: int = 6, length: int = 4, seed: int = 0, prompt: tuple[int, ...] = (0, 1),
                   hidden_size: int = 32, num_layers: int = 2, num_heads: int = 2, init_range: float = 0.3,
                   target_sigma: float = 3e-4, other_max: float = 0.5,
                   weights: torch.Tensor | None = None) -> ToyWorld:
    """Build the toy world: model, prompt, reward and the exact alpha-independent quantities.

    Args:
        vocab_size, length: V and T (V^T responses are enumerated; keep V^T in the thousands).
        seed: initialisation seed of the model.
        prompt: token ids of the prompt.
        hidden_size, num_layers, num_heads, init_range: the tiny Llama (see :func:`build_toy_model`).
        target_sigma: the reward's best response is the all-v_best response whose pi_ref is closest (in log) to this.
            Only V candidates exist, so the realised ``world.sigma`` can be far from it (2.3e-5 at the defaults).
        other_max: the largest weight of the non-top tokens (the top token has weight 1).
        weights: give the reward weights [V] directly instead (then target_sigma / other_max are unused).

    Returns:
        A :class:`ToyWorld`. ``world.sigma`` is the realised pi_ref(best response).
    """
    model = build_toy_model(vocab_size, seed, hidden_size, num_layers, num_heads, init_range,
                            max_positions=max(64, len(prompt) + length + 1))
    policy = Policy(model, tokenizer=None, name="toy")
    responses = enumerate_responses(vocab_size, length)
    prompt = [int(t) for t in prompt]
    log_p = _full_forward_log_pi_ref(model, prompt, responses)
    total = float(torch.logsumexp(log_p, 0).exp())
    if abs(total - 1.0) > 1e-9:
        raise AssertionError(f"exact pi_ref sums to {total!r}, not 1")
    if weights is None:
        weights, _ = _design_weights(log_p, responses, vocab_size, target_sigma, other_max)
    weights = torch.as_tensor(weights, dtype=torch.float64)
    rewards = weights[responses].sum(-1)
    levels, inverse = reward_levels(rewards)
    top_level = inverse == len(levels) - 1
    if int(top_level.sum()) != 1:
        raise ValueError("The reward's maximum is not attained by a unique response; give weights with a unique "
                         "largest entry.")
    best = int(top_level.nonzero()[0, 0])
    return ToyWorld(policy=policy, prompt=prompt, reward=VocabReward(weights.float(), reduce="sum"),
                    weights=weights, vocab_size=vocab_size, length=length, responses=responses, log_pi_ref=log_p,
                    rewards=rewards, best_index=best, seed=seed,
                    info={"hidden_size": hidden_size, "num_layers": num_layers, "num_heads": num_heads,
                          "init_range": init_range, "target_sigma": target_sigma, "other_max": other_max})


# --------------------------------------------------------------------------------------------- exact maths
def exact_optimal_policy(world: ToyWorld, alpha: float) -> torch.Tensor:
    """pi*(y) = pi_ref(y) exp(alpha r(y)) / cal_Z over all V^T responses: float64 [V^T], sums to 1."""
    return torch.softmax(world.log_pi_ref + alpha * world.rewards, dim=0)


def expected_reward(p: torch.Tensor, r: torch.Tensor) -> float:
    """E_p[r] = sum_y p(y) r(y) for p, r [V^T]; in the reward's units."""
    return float((p.double() * r.double()).sum())


def kl(p: torch.Tensor, q: torch.Tensor) -> float:
    """KL(p || q) = sum_y p(y) log(p(y) / q(y)) in nats, for distributions p, q [V^T] (0 log 0 = 0).

    Infinite when p puts mass where q has none.
    """
    p, q = p.double(), q.double()
    support = p > 0
    if bool((q[support] <= 0).any()):
        return math.inf
    return float((p[support] * (p[support].log() - q[support].log())).sum())


def entropy(p: torch.Tensor) -> float:
    """Shannon entropy of p [V^T] in nats."""
    p = p.double()[p > 0]
    return float(-(p * p.log()).sum())


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """``TV(p, q) = (1/2) sum_y |p(y) - q(y)|`` in [0, 1], for distributions p, q [V^T]."""
    return 0.5 * float((p.double() - q.double()).abs().sum())


def reward_kl_frontier(world: ToyWorld, alphas) -> "pd.DataFrame":  # noqa: F821
    """The exact reward-KL frontier traced by pi*(alpha).

    Returns a DataFrame with one row per alpha: alpha, reward (E_{pi*}[r]), kl (KL(pi* || pi_ref), nats),
    p_best (pi*(best response)), entropy (of pi*, nats).
    """
    import pandas as pd

    rows = []
    for alpha in alphas:
        p = exact_optimal_policy(world, float(alpha))
        rows.append({"alpha": float(alpha), "reward": expected_reward(p, world.rewards), "kl": kl(p, world.pi_ref),
                     "p_best": float(p[world.best_index]), "entropy": entropy(p)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- Best-of-N
def best_of_n_contains_best(sigma, n):
    """P(at least one of n independent samples is the best response) = 1 - (1 - sigma)^n (array-friendly)."""
    sigma, n = np.asarray(sigma, dtype=float), np.asarray(n, dtype=float)
    return -np.expm1(n * np.log1p(-sigma))


def sample_pi_ref(world: ToyWorld, num: int, generator: torch.Generator) -> torch.Tensor:
    """``num`` independent response indices drawn from the exact pi_ref: LongTensor [num]."""
    return torch.multinomial(world.pi_ref, num, replacement=True, generator=generator)


def simulate_best_of_n(world: ToyWorld, n: int, trials: int, generator: torch.Generator,
                       target: int | None = None) -> float:
    """Empirical rate, over ``trials`` independent draws of n samples of pi_ref, that the n samples contain the
    best response (the event whose probability is :func:`best_of_n_contains_best` (sigma, n)).

    ``target`` (a response index) replaces the best response, to study other values of sigma = pi_ref(target).
    """
    target = world.best_index if target is None else int(target)
    hits = torch.zeros((), dtype=torch.long)
    for chunk in range(0, trials, max(1, 2_000_000 // n)):  # bounded memory for large n
        k = min(trials - chunk, max(1, 2_000_000 // n))
        draws = sample_pi_ref(world, k * n, generator).view(k, n)
        hits += (draws == target).any(dim=1).sum()
    return float(hits) / trials


def sample_best_of_n(world: ToyWorld, n: int, trials: int, generator: torch.Generator) -> torch.Tensor:
    """``trials`` Best-of-n picks (response indices [trials]): n samples of pi_ref, keep the highest reward.

    Ties (equal reward levels, see :func:`reward_levels`) go to the first sample drawn; since the samples are
    i.i.d. this is the same as a uniformly random choice among the tied samples.
    """
    _, level = reward_levels(world.rewards)
    draws = sample_pi_ref(world, trials * n, generator).view(trials, n)
    pick = level[draws].argmax(dim=1)  # first maximal entry
    return draws.gather(1, pick[:, None]).squeeze(1)


def best_of_n_probs(pi_ref: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Exact distribution of the Best-of-n response, float64 [V^T].

    Let the distinct reward values (levels, ascending) be l_1 < ... < l_K, m_k = pi_ref(r = l_k) and
    F_k = m_1 + ... + m_k the CDF of the reward under pi_ref. The highest reward among n i.i.d. samples is l_k
    with probability F_k^n - F_{k-1}^n. Ties inside a level are broken uniformly at random (equivalently: the
    first such sample drawn), so given the level the pick is distributed as pi_ref restricted to the level:

        p_BoN(y) = pi_ref(y) / m_k(y) * (F_k(y)^n - F_{k(y)-1}^n).

    KL(p_BoN || pi_ref) <= log n - (n - 1)/n, with equality only in the limit where every response has a
    vanishing share of pi_ref and there are no ties (Beirami et al., 2024); atoms and ties lower it.
    """
    pi_ref = pi_ref.double()
    _, level = reward_levels(rewards)
    mass = torch.zeros(int(level.max()) + 1, dtype=torch.float64).index_add_(0, level, pi_ref)
    cdf = mass.cumsum(0).clamp(max=1.0)
    cdf_below = torch.cat([torch.zeros(1, dtype=torch.float64), cdf[:-1]])
    p_level = cdf ** n - cdf_below ** n  # P(best level among n samples = k)
    safe = torch.where(mass > 0, mass, torch.ones_like(mass))
    p = pi_ref * (p_level / safe)[level]
    return p / p.sum()


def best_of_n_distribution(world: ToyWorld, n: int) -> torch.Tensor:
    """Exact Best-of-n distribution over the world's responses, float64 [V^T] (see :func:`best_of_n_probs`)."""
    return best_of_n_probs(world.pi_ref, world.rewards, n)


def best_of_n_frontier(world: ToyWorld, ns) -> "pd.DataFrame":  # noqa: F821
    """Exact Best-of-n statistics: n, reward (E[r]), kl (KL(BoN || pi_ref), nats), kl_bound (log n - (n-1)/n,
    the usual upper bound), p_best (probability that the pick is the best response)."""
    import pandas as pd

    rows = []
    for n in ns:
        p = best_of_n_distribution(world, int(n))
        rows.append({"n": int(n), "reward": expected_reward(p, world.rewards), "kl": kl(p, world.pi_ref),
                     "kl_bound": math.log(n) - (n - 1) / n, "p_best": float(p[world.best_index])})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- samples
def empirical_distribution(token_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Frequencies of the responses in ``token_ids`` [num, T]: float64 [V^T], index = base-V number of y."""
    token_ids = torch.as_tensor(token_ids, dtype=torch.long)
    counts = torch.bincount(response_index(token_ids, vocab_size), minlength=vocab_size ** token_ids.shape[-1])
    return counts.double() / counts.sum()


def plugin_kl(token_ids: torch.Tensor, world: ToyWorld) -> float:
    """Plug-in estimate of KL(q || pi_ref) from samples of q: mean_i [log p_emp(y_i) - log pi_ref(y_i)], nats.

    p_emp is the empirical distribution of the samples, so this equals KL(p_emp || pi_ref) exactly. It is
    biased upwards for small samples (the empirical entropy underestimates the true one), by roughly
    (support size - 1) / (2 * num) nats.
    """
    ids = world.index_of(token_ids)
    p_emp = empirical_distribution(token_ids, world.vocab_size)
    return float((p_emp[ids].log() - world.log_pi_ref[ids]).mean())


def sample_stats(world: ToyWorld, token_ids: torch.Tensor, target: torch.Tensor) -> dict:
    """Summary of samples [num, T] against a target distribution [V^T]: num, tv (TV(empirical, target)),
    reward (mean r), kl_plugin (:func:`plugin_kl`, nats), p_best (share of samples that are the best response)."""
    ids = world.index_of(token_ids)
    return {"num": int(ids.numel()),
            "tv": total_variation(empirical_distribution(token_ids, world.vocab_size), target),
            "reward": float(world.rewards[ids].mean()), "kl_plugin": plugin_kl(token_ids, world),
            "p_best": float((ids == world.best_index).double().mean())}


def sampling_tv_floor(p: torch.Tensor, num: int, repeats: int, generator: torch.Generator) -> float:
    """Mean TV(p, empirical distribution of ``num`` i.i.d. samples of p) over ``repeats`` draws.

    The TV that even a perfect sampler shows with ``num`` samples: compare sampler TVs against it.
    """
    out = []
    for _ in range(repeats):
        draws = torch.multinomial(p.double(), num, replacement=True, generator=generator)
        emp = torch.bincount(draws, minlength=p.numel()).double() / num
        out.append(total_variation(emp, p))
    return float(np.mean(out))


# --------------------------------------------------------------------------------------------- SEA on the toy
NO_EARLY_STOP = 10 ** 9  # a patience no run reaches


def toy_sea_config(world: ToyWorld, recipe: str, alpha: float, num_chains: int, steps: int, seed: int = 0,
                   **overrides) -> SEAConfig:
    """A :class:`~sea_minimal.config.SEAConfig` for the toy world.

    ``langevin``: the paper's recipe with the given alpha (the same alpha as the exact pi*).
    ``dlp``: the MH-corrected recipe (``SEAConfig.exact_mcmc``) with the given alpha, chains started at pi_ref samples.
    ``reference``: ``SEAConfig.released_code`` with the reward weight set so that its effective alpha matches:
    the released loss is -w_r r + w_f * mean_t(-log p_ref), i.e. alpha_eff = w_r T / w_f, so
    w_r = alpha w_f / T. Also: top-k clamped to V (the sampler would fail for k > V), early stopping off
    (``patience`` larger than any run: the released code's early stop looks at all chains of a prompt, which
    would couple the independent chains batched here, and would break the prefix property of
    :func:`sea_samples`), and no rewrite (the toy has no tokenizer; the sampler skips it anyway).
    """
    base = dict(num_chains=num_chains, length=world.length, steps=steps, seed=seed)
    if recipe == "langevin":
        cfg = SEAConfig.paper(alpha=alpha, **base)
    elif recipe == "reference":
        fluency_weight = overrides.pop("fluency_weight", 0.1)
        cfg = SEAConfig.released_code(
            reward_weight=alpha * fluency_weight / world.length, fluency_weight=fluency_weight,
            topk=min(overrides.pop("topk", 10), world.vocab_size), patience=NO_EARLY_STOP, rewrite=False, **base)
    elif recipe == "dlp":
        cfg = SEAConfig.exact_mcmc(alpha=alpha, init_keep_sample=True, track_soft_reward=False, **base)
    else:
        raise ValueError(f"recipe must be 'langevin', 'reference' or 'dlp', got {recipe!r}")
    return cfg.replace(**overrides)


def sea_samples(world: ToyWorld, config: SEAConfig, steps, progress: bool = False) -> dict:
    """Run SEA on the toy prompt once per value in ``steps`` and return the decoded chains.

    Each run is a fresh ``SEA(world.policy, world.reward, config.replace(steps=s)).run(world.prompt)`` with the
    same seed, so runs with fewer steps are prefixes of the longer ones (the same chains, observed earlier;
    the reference recipe's patience would break this if it stopped early, see :func:`toy_sea_config`).
    For ``select="last"``, ``steps=1`` returns the chains' starting points (argmax of the initial logits).

    Returns:
        A dict keyed by s in ``steps``; each value is a dict with ``token_ids`` (LongTensor [C, T]),
        ``rewards`` (float64 [C], the hard reward of each chain's final response), ``wall_time`` (seconds),
        ``iterations`` (iterations run) and ``cost_tokens`` (forward + backward tokens through pi_ref, all chains).
    """
    out = {}
    for s in steps:
        cfg = config.replace(steps=int(s))
        result = SEA(world.policy, world.reward, cfg).run(world.prompt, progress=progress)[0]
        chains = result.candidates[: cfg.num_chains]
        ids = torch.tensor([c["token_ids"] for c in chains], dtype=torch.long)
        out[int(s)] = {"token_ids": ids, "rewards": world.rewards[world.index_of(ids)],
                       "wall_time": result.wall_time, "iterations": result.iterations,
                       "cost_tokens": result.compute["forward_tokens"] + result.compute["backward_tokens"]}
    return out


def best_of_chains(token_ids: torch.Tensor, rewards: torch.Tensor, chains_per_run: int) -> torch.Tensor:
    """Best-of-chains selection: split M chains into M // C consecutive groups of C and keep each group's
    highest-reward chain (the first on ties). token_ids [M, T], rewards [M] -> LongTensor [M // C, T].

    The chains batched by the sampler are independent, so each group is an independent C-chain SEA run.
    """
    runs = token_ids.shape[0] // chains_per_run
    if runs == 0:
        raise ValueError(f"{token_ids.shape[0]} chains cannot form a run of {chains_per_run}")
    r = torch.round(rewards[: runs * chains_per_run].double() * 1e9).view(runs, chains_per_run)  # ties: see reward_levels
    pick = r.argmax(dim=1) + torch.arange(runs) * chains_per_run
    return token_ids[pick]
