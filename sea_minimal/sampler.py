"""SEA: optimise a response as continuous per-position logits Z [C, T, V].

Three recipes share everything but the update (``SEAConfig.recipe``):

* ``langevin`` (the paper): tokens are the straight-through relaxation of Z (forward one-hot argmax,
  backward softmax(Z / tau)); U = -(log pi_ref(y|x) + alpha r(x, y)); the gradient of log pi_ref flows
  through the reference model; Z <- Z - eta grad U + sqrt(2 eta) noise_scale xi.
* ``reference`` (the authors' released code): Adam on Z minimising
  -w_r r(softmax(Z~ / t_r)) + w_f mean_t sum_v softmax(Z~_t)_v (-log p_ref(v | y_<t)) with p_ref detached and
  computed on the argmax of Z~ inside the reference model's top-k, Z~ = Z + transient noise; decoding inside
  the top-k; best iterate per chain by hard reward; optional rewrite by the base model.
* ``dlp``: the state is a hard response y; the one-hot gradient of the same U proposes a change at every position
  at once (discrete Langevin proposal), and a Metropolis-Hastings test accepts or rejects it, so the chain's
  stationary distribution is exactly pi* ∝ exp(-U) on the response space.

The prompt is encoded once per prompt (its KV cache serves every iteration and chain), the C chains run
as one batch, and Z, noise, softmax and log-probabilities are float32 whatever the model's dtype.
"""

from __future__ import annotations

import math
import platform
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .compute import ComputeMeter
from .config import SEAConfig
from .lm import (PromptCache, encode_prompt, forward_embeds, greedy_batch, next_token_logits, relax, sample_tokens,
                 sequence_logprob, soft_embeddings, stack_prompts, topk_decode)
from .models import Policy
from .rewards import Reward, one_hot

MASK_VALUE = -1e10  # logit given to forbidden tokens (as in the released code)

REWRITE_INSTRUCTION = (
    "Rewrite the response below to fix repetitive language and finish any unfinished sentence, "
    "keeping its intent. Reply with the rewritten response only.\n\nRequest: {prompt}\n\nResponse: {response}"
)
# The released mode A rewrite (REVISE_PROMPT_NoQ) shows the model the response only, not the request. Its exact
# wording is not available offline; this follows its description ("rewrite to fix repetitive language and fill in
# unfinished sentences, keeping the intent").
REWRITE_INSTRUCTION_NO_QUESTION = (
    "Please rewrite the following text to fix repetitive language and fill in unfinished sentences, "
    "keeping its intent.\n\nText: {response}"
)

TRAJECTORY_KEYS = ("energy", "logp_ref", "reward_soft", "reward_hard", "kl_init", "noise", "accept", "wall_time")


def library_versions() -> dict:
    import transformers

    from . import __version__

    return {"sea_minimal": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


@dataclass
class SEAResult:
    """What one prompt's run produced.

    ``trajectory[key]`` is a list over iterations of a list over chains, for the keys in TRAJECTORY_KEYS:
    energy (the quantity minimised: U for ``langevin``, the loss for ``reference``), logp_ref (log pi_ref of the
    hard tokens that were fed forward, nats), reward_soft / reward_hard (reward of the relaxed / decoded
    response), kl_init (mean over positions of KL(softmax(Z_0) || softmax(Z)), nats), noise (the noise std used;
    for ``dlp`` the share of positions its proposal changed), accept (``dlp``: 1 if the MH step accepted the move,
    else 0; NaN for the other recipes), wall_time (seconds since the start of the prompt). For ``dlp`` the
    quantities are those of the state after the iteration's accept/reject step, and log pi_ref is always on the
    response space (see ``SEA._energy_terms``).
    """

    prompt: str | list[int]
    text: str  # the selected response
    selected: int  # index into ``candidates``
    candidates: list[dict]  # {"source", "text", "token_ids", "reward"}: C chains (+ C rewrites)
    texts: list[str]  # final text of each chain (its last or best iterate, per ``select``)
    rewards: list[float]  # hard reward of each chain's final text
    initial_texts: list[str]
    initial_rewards: list[float]
    trajectory: dict[str, list[list[float]]]
    kl_per_position: list[list[float]]  # [C][T] KL(softmax(Z_0) || softmax(Z_final)) per position, nats
    config: dict
    seed: int
    device: str
    versions: dict
    wall_time: float
    iterations: int  # iterations actually run (patience may stop early)
    method: str = "sea"  # "sea-langevin", "sea-reference", or a baseline's name
    compute: dict = field(default_factory=dict)  # see sea_minimal.compute.Compute

    def to_dict(self) -> dict:
        return asdict(self)

    def trajectory_frame(self):
        """Trajectories as a tidy pandas DataFrame with columns iteration, chain, and one per quantity."""
        import pandas as pd

        rows = []
        for it in range(len(self.trajectory["energy"])):
            for c in range(len(self.trajectory["energy"][it])):
                rows.append({"iteration": it, "chain": c, **{k: self.trajectory[k][it][c] for k in self.trajectory}})
        return pd.DataFrame(rows)


class Draws:
    """The random draws of a batch of prompts: the rows are split evenly over the prompts, and each prompt's rows come
    from its own generator, in the order its one-prompt run draws them, so a batched run draws exactly what the
    prompts' separate runs draw. One generator draws the whole shape, as a bare ``torch.Generator`` would."""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = list(generators)

    @classmethod
    def of(cls, generator: "torch.Generator | Draws") -> "Draws":
        return generator if isinstance(generator, Draws) else cls([generator])

    def _each(self, draw, shape):
        shape, n = tuple(shape), len(self.generators)
        if n == 1:
            return draw(shape, self.generators[0])
        if shape[0] % n:
            raise ValueError(f"{shape[0]} rows cannot be split evenly over {n} prompts")
        return torch.cat([draw((shape[0] // n, *shape[1:]), g) for g in self.generators])

    def randn(self, shape, device=None, dtype=None) -> torch.Tensor:
        return self._each(lambda sh, g: torch.randn(sh, generator=g, device=device, dtype=dtype), shape)

    def rand(self, shape, device=None) -> torch.Tensor:
        return self._each(lambda sh, g: torch.rand(sh, generator=g, device=device), shape)

    def categorical(self, probs: torch.Tensor) -> torch.Tensor:
        """One draw per position from probs [rows, T, V] -> ids [rows, T] (each prompt's block from its generator)."""
        n = len(self.generators)
        if probs.shape[0] % n:
            raise ValueError(f"{probs.shape[0]} rows cannot be split evenly over {n} prompts")
        return torch.cat([torch.multinomial(b.reshape(-1, b.shape[-1]), 1, generator=g).view(b.shape[:-1])
                          for b, g in zip(probs.split(probs.shape[0] // n), self.generators)])


def langevin_step(z: torch.Tensor, grad: torch.Tensor, step_size: float, noise_scale: float,
                  generator: torch.Generator | Draws) -> torch.Tensor:
    """One unadjusted Langevin step: z - eta grad + sqrt(2 eta) s xi, xi ~ Normal(0, I) (s = noise_scale)."""
    noise = Draws.of(generator).randn(z.shape, device=z.device, dtype=z.dtype)
    return z - step_size * grad + math.sqrt(2.0 * step_size) * noise_scale * noise


def kl_per_position(logp_from: torch.Tensor, z_to: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(z_to)) at each position, p = exp(logp_from): [C, T, V] x2 -> [C, T], nats.

    Takes the initial distribution as log-probabilities so that it is normalised once per prompt, not per iteration.
    """
    return (logp_from.exp() * (logp_from - F.log_softmax(z_to, -1))).sum(-1)


class BatchScorer:
    """The reward of a batch of prompts: rows [B * C, T, V] (B prompts) are split evenly over the prompts and each block is
    scored by its own prompt's scorer (a reward's prompt cache is per prompt), the scores concatenated in batch
    order [B * C]."""

    def __init__(self, scorers: list):
        self.scorers = list(scorers)
        self.mask = getattr(self.scorers[0], "mask", None)
        if all(getattr(s, "parts", None) is not None for s in self.scorers):  # the contrast reward's two terms
            self.parts = self._parts

    @classmethod
    def of(cls, scorers: list):
        """One prompt's scorer as it is (or None without a reward); several as one BatchScorer."""
        return scorers[0] if len(scorers) == 1 or scorers[0] is None else cls(scorers)

    def _blocks(self, tokens: torch.Tensor):
        n = len(self.scorers)
        if tokens.shape[0] % n:
            raise ValueError(f"{tokens.shape[0]} rows cannot be split evenly over {n} prompts")
        return zip(self.scorers, tokens.split(tokens.shape[0] // n))

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.cat([score(block) for score, block in self._blocks(tokens)])

    def _parts(self, tokens: torch.Tensor):
        pieces = [score.parts(block) for score, block in self._blocks(tokens)]
        return tuple(torch.cat(part) for part in zip(*pieces))


class Ledger:
    """Splits a batch's metered work between its prompts: the forward / backward tokens, reward calls and seconds
    spent inside ``charge(prompts)`` go to those prompts in equal parts. Each prompt of a batch runs C chains of T
    tokens, so the parts are what each prompt's own run counts."""

    COUNTS = ("forward_tokens", "backward_tokens", "reward_calls")

    def __init__(self, meter: ComputeMeter, prompts: int):
        self.meter = meter
        self._shares = [{**dict.fromkeys(self.COUNTS, 0.0), "wall_time": 0.0} for _ in range(prompts)]

    @contextmanager
    def charge(self, prompts: list[int]):
        before = [getattr(self.meter.compute, k) for k in self.COUNTS]
        t0 = time.perf_counter()
        try:
            yield
        finally:
            seconds = (time.perf_counter() - t0) / len(prompts)
            for k, was in zip(self.COUNTS, before):
                part = (getattr(self.meter.compute, k) - was) / len(prompts)
                for i in prompts:
                    self._shares[i][k] += part
            for i in prompts:
                self._shares[i]["wall_time"] += seconds

    @property
    def shares(self) -> list[dict]:
        """Each prompt's forward_tokens, backward_tokens and reward_calls (whole numbers) and wall_time (s)."""
        return [{k: (round(v) if k in self.COUNTS else v) for k, v in share.items()} for share in self._shares]


@dataclass
class _PromptRun:
    """One prompt's part of a batch: its inputs, Z_0, and what its chains have reached so far."""

    prompt: object
    seed: int
    generator: torch.Generator
    cache: PromptCache
    scorer: object
    z0: torch.Tensor  # [C, T, V]
    logp0: torch.Tensor  # [C, T, V] log softmax(Z_0 + mask)
    init_ids: torch.Tensor  # [C, T]
    init_rewards: torch.Tensor  # [C]
    traj: dict
    best_ids: torch.Tensor  # [C, T]
    best_reward: torch.Tensor  # [C]
    last_improvement: int = 0
    last_ids: torch.Tensor | None = None
    last_rewards: torch.Tensor | None = None
    kl_final: torch.Tensor | None = None  # [C, T] of the last evaluated state
    iterations: int = 0

    @torch.no_grad()
    def record(self, it: int, stats: dict, kl: torch.Tensor, elapsed: float) -> None:
        """Iteration ``it``'s stats of this prompt's C rows: the best iterate per chain, the trajectory."""
        improved = stats["reward_hard"] > self.best_reward
        self.best_reward = torch.where(improved, stats["reward_hard"], self.best_reward)
        self.best_ids[improved] = stats["ids"][improved]
        self.last_improvement = it if improved.any() else self.last_improvement
        self.last_ids, self.last_rewards, self.kl_final, self.iterations = stats["ids"], stats["reward_hard"], kl, it + 1
        stats = {**stats, "wall_time": torch.full_like(self.best_reward, elapsed)}
        for k in TRAJECTORY_KEYS:
            self.traj[k].append([float(v) for v in stats[k]])


def _keep_rows(z: torch.Tensor, logp0: torch.Tensor, state: dict, rows: torch.Tensor, lr: float):
    """The batch without the rows of prompts that stopped: Z, log softmax(Z_0) and the recipe's state at ``rows``
    (Adam's moments included, so the remaining prompts step exactly as before)."""
    new_z = z.detach()[rows].clone().requires_grad_(True)
    kept = {}
    for key, value in state.items():
        if isinstance(value, torch.optim.Adam):
            kept[key] = torch.optim.Adam([new_z], lr=lr)
            old = value.state.get(z, {})
            if old:
                kept[key].state[new_z] = {n: (t[rows].clone() if torch.is_tensor(t) and t.dim() else t)
                                          for n, t in old.items()}
        elif torch.is_tensor(value):
            kept[key] = value[rows]
        elif isinstance(value, dict):
            kept[key] = {n: t[rows] for n, t in value.items()}
        else:
            kept[key] = value
    return new_z, logp0[rows], kept


class SEA:
    """The sampler. ``SEA(policy, reward, config).run(prompts)`` returns one :class:`SEAResult` per prompt."""

    def __init__(self, policy: Policy, reward: Reward | None, config: SEAConfig = SEAConfig()):
        if reward is not None:
            reward.check_vocab(policy.vocab_size)
        elif config.use_reward:
            raise ValueError("use_reward=True needs a reward. Fix: pass a Reward, or set use_reward=False.")
        self.policy, self.reward, self.config = policy, reward, config
        # A reward head on the policy's own backbone (sea_minimal.reward_model.BackboneReward) lets one forward
        # serve both log pi_ref and the reward in the langevin recipe.
        self._shares_backbone = (getattr(reward, "model", None) is policy.model and hasattr(reward, "score_hidden")
                                 and hasattr(reward, "suffix_ids"))
        self.mask = torch.zeros(policy.vocab_size, device=policy.device)
        if config.mask_special and policy.special_ids:
            self.mask[policy.special_ids] = MASK_VALUE

    # ------------------------------------------------------------------ public API
    def run(self, prompts, progress: bool = True, batch_size: int = 1, seeds: list[int] | None = None
            ) -> list[SEAResult]:
        """Run SEA on each prompt of ``prompts`` (strings, or lists of token ids for tokenizer-free models).

        ``batch_size`` prompts run together, as one batch of ``batch_size`` x C chains: prompts of different
        lengths are encoded one by one and left-padded into one cache (``lm.stack_prompts``: attention masks, each
        row's positions continuing after its own prompt), every prompt's random draws come from its own generator
        (:class:`Draws`) and a prompt that stops early (the reference recipe's patience) leaves the batch. So each
        result equals the one-prompt run's, up to floating-point rounding in the batched matrix products (a near-tie
        between two tokens can flip). The rewards are scored per prompt, on that prompt's rows; a reward head on the
        policy's own backbone is read from the batched forward. ``seeds``: one per prompt (default: the config's).
        """
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise ValueError("No prompts given. Fix: pass a list with at least one prompt.")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}. Fix: pass 1 for one prompt at a time.")
        seeds = [self.config.seed] * len(prompts) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts. Fix: pass one seed per prompt.")
        bar = tqdm(total=len(prompts) * self.config.steps, desc="SEA", disable=not progress, leave=False)
        try:
            out = []
            for first in range(0, len(prompts), int(batch_size)):
                out += self._run_batch(prompts[first: first + int(batch_size)], seeds[first: first + int(batch_size)],
                                       bar)
            return out
        finally:
            bar.close()

    # ------------------------------------------------------------------ internals
    def _score(self, scorer, tokens: torch.Tensor) -> torch.Tensor:
        if scorer is None:
            return torch.zeros(tokens.shape[0], device=tokens.device)
        self._meter.count_reward(tokens.shape[0])
        return scorer(tokens)

    def _initial_logits(self, prompt: PromptCache, generator: torch.Generator) -> torch.Tensor:
        cfg, V = self.config, self.policy.vocab_size
        shape = (cfg.num_chains, cfg.length, V)
        if cfg.init == "random":
            return torch.randn(shape, generator=generator, device=self.policy.device)
        if cfg.init_fixed_length:  # exact pi_ref samples on the response space (no stop, special tokens banned)
            stops, banned = [], (self.policy.special_ids if cfg.mask_special else [])
        else:  # the released code: stop at a special token, pad the rest with random logits (below)
            stops, banned = self.policy.special_ids, []
        tokens, logits, stopped = sample_tokens(self.policy.model, prompt, cfg.num_chains, cfg.length, generator,
                                                temperature=cfg.init_sample_temp, stop_ids=stops, banned_ids=banned)
        z0 = logits / cfg.init_temp
        if cfg.init_keep_sample:  # lift each sampled token just above the best logit, so argmax(Z_0) = the sample
            top = z0.max(-1, keepdim=True).values
            z0 = z0.scatter(-1, tokens[..., None], top + cfg.init_margin)
        # Positions from a sample's stop token on are padded with random logits, as in the released code.
        pad = torch.randn(shape, generator=generator, device=logits.device)
        return torch.where(stopped[..., None], pad, z0)

    def _check_finite(self, it: int, *tensors: torch.Tensor) -> None:
        if not all(torch.isfinite(t).all() for t in tensors):
            knob = {"langevin": f"step_size (now {self.config.step_size})", "reference": f"lr (now {self.config.lr})",
                    "dlp": f"alpha (now {self.config.alpha})"}[self.config.recipe]
            raise FloatingPointError(
                f"SEA diverged at iteration {it}: the logits or the energy became NaN/inf. "
                f"Fix: lower {knob}, or alpha / the reward weights."
            )

    def _run_batch(self, prompts, seeds, bar) -> list[SEAResult]:
        reward_model = getattr(self.reward, "model", None)
        with ComputeMeter(self.policy.model, reward_model, device=self.policy.device) as self._meter:
            self._ledger = Ledger(self._meter, len(prompts))
            results = self._optimise(prompts, seeds, bar)
        if len(prompts) == 1:  # the meter watched this prompt alone
            results[0].compute = self._meter.compute.to_dict()
            return results
        for result, share in zip(results, self._ledger.shares):
            result.compute = {**share, "peak_memory_mib": self._meter.compute.peak_memory_mib}
            result.wall_time = share["wall_time"]
        return results

    def _start_prompt(self, prompt, seed: int) -> "_PromptRun":
        """The per-prompt work before the iterations: encoding, the reward's prompt cache, Z_0 and its rewards."""
        policy, C = self.policy, self.config.num_chains
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        prompt_ids = policy.encode_prompt(prompt)
        cache = encode_prompt(policy.model, prompt_ids)
        scorer = self.reward.for_prompt(prompt_ids) if self.reward is not None else None
        z0 = self._initial_logits(cache, generator)
        with torch.no_grad():
            logp0 = F.log_softmax(z0 + self.mask, -1)
            init_ids = logp0.argmax(-1)
            init_rewards = self._score(scorer, one_hot(init_ids, policy.vocab_size))
        return _PromptRun(prompt=prompt, seed=seed, generator=generator, cache=cache, scorer=scorer, z0=z0,
                          logp0=logp0, init_ids=init_ids, init_rewards=init_rewards,
                          traj={k: [] for k in TRAJECTORY_KEYS}, best_ids=init_ids.clone(),
                          best_reward=torch.full((C,), -math.inf, device=policy.device))

    def _optimise(self, prompts, seeds, bar) -> list[SEAResult]:
        cfg, C = self.config, self.config.num_chains
        start = time.perf_counter()
        runs = []
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            with self._ledger.charge([i]):
                runs.append(self._start_prompt(prompt, seed))

        active = list(range(len(runs)))  # the prompts still iterating, in batch order (C rows each)
        z = torch.cat([r.z0 for r in runs]).clone().requires_grad_(True)
        logp0 = torch.cat([r.logp0 for r in runs])
        cache, scorer, draws = self._batch_parts(runs, active)
        step = {"langevin": self._langevin_iteration, "reference": self._reference_iteration,
                "dlp": self._dlp_iteration}[cfg.recipe]
        state = {"optimizer": torch.optim.Adam([z], lr=cfg.lr)} if cfg.recipe == "reference" else {}
        for it in range(cfg.steps):
            with self._ledger.charge(active):
                # KL of the state the iteration's stats describe: before its update, like its reward, except for
                # dlp, whose stats are of the state its accept / reject step kept
                with torch.no_grad():
                    kl_now = kl_per_position(logp0, z.detach() + self.mask) if cfg.recipe != "dlp" else None
                z, stats = step(it, z, cache, scorer, draws, state)
                with torch.no_grad():
                    if kl_now is None:
                        kl_now = kl_per_position(logp0, z.detach() + self.mask)
                    stats["kl_init"] = kl_now.mean(-1)
            elapsed = time.perf_counter() - start
            stopped = []
            for j, i in enumerate(active):
                rows = slice(j * C, (j + 1) * C)
                runs[i].record(it, {k: v[rows] for k, v in stats.items()}, kl_now[rows], elapsed)
                bar.update(1)
                if cfg.recipe == "reference" and it - runs[i].last_improvement >= cfg.patience:
                    stopped.append(j)
            bar.set_postfix(reward=f"{stats['reward_hard'].max().item():.3f}")
            if stopped:
                bar.update((cfg.steps - it - 1) * len(stopped))
                keep = [j for j in range(len(active)) if j not in stopped]
                if not keep:
                    break
                rows = torch.cat([torch.arange(j * C, (j + 1) * C, device=z.device) for j in keep])
                z, logp0, state = _keep_rows(z, logp0, state, rows, cfg.lr)
                active = [active[j] for j in keep]
                cache, scorer, draws = self._batch_parts(runs, active)

        results = []
        for i, run in enumerate(runs):
            with self._ledger.charge([i]):
                results.append(self._finish(run, start))
        return results

    def _batch_parts(self, runs, active):
        """The batched cache, reward and random draws of the ``active`` prompts (a lone prompt's own cache and
        scorer as they are)."""
        live = [runs[i] for i in active]
        return (stack_prompts([r.cache for r in live]), BatchScorer.of([r.scorer for r in live]),
                Draws([r.generator for r in live]))

    def _finish(self, run: "_PromptRun", start: float) -> SEAResult:
        """One prompt's result from its chains: the candidates (and rewrites), the selected text, the record."""
        cfg, policy = self.config, self.policy
        with torch.no_grad():
            final_ids, final_rewards = ((run.best_ids, run.best_reward) if cfg.select == "best"
                                        else (run.last_ids, run.last_rewards))
        candidates = [
            {"source": f"chain {c}", "token_ids": final_ids[c].tolist(), "text": policy.decode(final_ids[c]),
             "reward": float(final_rewards[c])}
            for c in range(cfg.num_chains)
        ]
        if cfg.rewrite:
            candidates += self._rewrite(run.prompt, candidates, run.scorer, run.generator)
        selected = max(range(len(candidates)), key=lambda i: candidates[i]["reward"])
        prompt = run.prompt
        return SEAResult(
            prompt=prompt if isinstance(prompt, str) else [int(t) for t in prompt],
            text=candidates[selected]["text"], selected=selected, candidates=candidates,
            texts=[c["text"] for c in candidates[: cfg.num_chains]], rewards=final_rewards.tolist(),
            initial_texts=[policy.decode(ids) for ids in run.init_ids], initial_rewards=run.init_rewards.tolist(),
            trajectory=run.traj, kl_per_position=run.kl_final.tolist(), config=replace(cfg, seed=run.seed).to_dict(),
            seed=run.seed, device=str(policy.device), versions=library_versions(),
            wall_time=time.perf_counter() - start, iterations=run.iterations, method=f"sea-{cfg.recipe}",
        )

    def _energy_terms(self, cache: PromptCache, scorer, tokens: torch.Tensor):
        """U = -log pi_ref(y|x) - alpha r(x, y) of tokens [C, T, V] (one-hot or straight-through), with its parts.

        log pi_ref is on the response space (next-token distributions renormalised over the allowed tokens, the
        ones the sampler can emit). A term switched off (``use_reference`` / ``use_reward``) is still computed for
        the trajectory, without a graph. Returns (energy [C], logp [C], reward [C]).
        """
        cfg, model = self.config, self.policy.model
        parts = getattr(scorer, "parts", None)  # the contrast reward: its log pi_ref(y|x) is the energy's own
        if (parts is not None and cfg.use_reference and cfg.use_reward and getattr(scorer, "mask", None) is not None
                and torch.equal(scorer.mask, self.mask) and getattr(self.reward, "model", None) is model):
            self._meter.count_reward(tokens.shape[0])
            lp_steered, logp = parts(tokens)
            reward = lp_steered - logp
        elif self._shares_backbone and cfg.use_reference and cfg.use_reward:
            logp, reward = self._joint_logp_and_reward(cache, tokens)
        else:
            if cfg.use_reference:
                logp = sequence_logprob(next_token_logits(model, cache, tokens), tokens, self.mask)
            else:
                with torch.no_grad():  # tracked for the trajectory, kept out of the energy
                    logp = sequence_logprob(next_token_logits(model, cache, tokens.detach()), tokens.detach(), self.mask)
            reward = self._score(scorer, tokens) if cfg.use_reward else self._score(scorer, tokens.detach()).detach()
        energy = torch.zeros_like(reward)
        if cfg.use_reference:
            energy = energy - logp
        if cfg.use_reward:
            energy = energy - cfg.alpha * reward
        return energy, logp, reward

    def _langevin_iteration(self, it, z, cache, scorer, generator, state):
        cfg = self.config
        tokens, soft = relax(z + self.mask, cfg.st_tau)  # forward: one-hot argmax; backward: softmax(Z / tau)
        ids = soft.detach().argmax(-1)
        energy, logp, reward = self._energy_terms(cache, scorer, tokens)
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), z)
        else:
            grad = torch.zeros_like(z)
        noise = cfg.noise_scale if cfg.use_noise else 0.0
        with torch.no_grad():
            new_z = langevin_step(z.detach(), grad, cfg.step_size, noise, generator)
            self._check_finite(it, new_z, energy)
            reward_soft = self._score(scorer, soft) if cfg.track_soft_reward else torch.full_like(reward, float("nan"))
        stats = {"energy": energy.detach(), "logp_ref": logp.detach(), "reward_hard": reward.detach(),
                 "reward_soft": reward_soft.detach(), "ids": ids,
                 "noise": torch.full_like(reward, math.sqrt(2 * cfg.step_size) * noise),
                 "accept": torch.full_like(reward, float("nan"))}
        return new_z.requires_grad_(True), stats

    # ------------------------------------------------------------------ the MH-corrected recipe
    def _dlp_evaluate(self, cache: PromptCache, scorer, ids: torch.Tensor) -> dict:
        """Energy, its parts and the one-hot gradient g = dU / d onehot(y) [C, T, V] at hard responses ids [C, T]."""
        tokens = one_hot(ids, self.policy.vocab_size).requires_grad_(True)
        energy, logp, reward = self._energy_terms(cache, scorer, tokens)
        if energy.requires_grad:
            (grad,) = torch.autograd.grad(energy.sum(), tokens)
        else:
            grad = torch.zeros_like(tokens)
        return {"ids": ids, "energy": energy.detach(), "logp": logp.detach(), "reward": reward.detach(),
                "grad": grad.detach()}

    def _dlp_proposal(self, grad: torch.Tensor, ids: torch.Tensor, frozen: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probabilities [C, T, V] of the discrete Langevin proposal from ids [C, T] (positions independent).

        q(y'_t = v | y) ∝ exp(-(g_tv - g_t,y_t) / 2 - ||e_v - e_y_t||^2 / (2 dlp_step)); the squared distance of two
        different one-hot vectors is 2, so a change costs 1 / dlp_step. Forbidden tokens are never proposed.
        Positions where ``frozen`` [C, T] is True keep their token with probability 1 (outside the block).
        """
        current = grad.gather(-1, ids[..., None])
        stay = one_hot(ids, grad.shape[-1])
        logits = -0.5 * (grad - current) - (1.0 - stay) / self.config.dlp_step + self.mask
        if frozen is not None:
            logits = torch.where(frozen[..., None], torch.where(stay.bool(), 0.0, MASK_VALUE), logits)
        return F.log_softmax(logits, -1)

    def _dlp_block(self, shape, generator: torch.Generator, device) -> torch.Tensor | None:
        """The positions outside this iteration's block, [C, T] bool (None: every position may change)."""
        C, T = shape
        k = self.config.dlp_block
        if not k or k >= T:
            return None
        order = Draws.of(generator).rand((C, T), device=device).argsort(-1)
        return torch.ones((C, T), dtype=torch.bool, device=device).scatter(-1, order[:, :k], False)

    def _dlp_iteration(self, it, z, cache, scorer, generator, state):
        cfg, draws = self.config, Draws.of(generator)
        if "current" not in state:  # the chain starts at argmax(Z_0): the pi_ref samples with init_keep_sample
            state["current"] = self._dlp_evaluate(cache, scorer, (z.detach() + self.mask).argmax(-1))
            state["z0"] = z.detach()
        cur = state["current"]
        frozen = self._dlp_block(cur["ids"].shape, draws, cur["ids"].device)
        log_q = self._dlp_proposal(cur["grad"], cur["ids"], frozen)
        C = log_q.shape[0]
        if cfg.use_noise:
            proposal = draws.categorical(log_q.exp())
        else:
            proposal = log_q.argmax(-1)
        new = self._dlp_evaluate(cache, scorer, proposal)
        moved = (proposal != cur["ids"]).float().mean(-1)  # share of positions the proposal changes
        if not cfg.use_noise:
            accept = new["energy"] < cur["energy"]
        elif cfg.mh_correction:
            log_q_back = self._dlp_proposal(new["grad"], proposal, frozen)
            forward = log_q.gather(-1, proposal[..., None]).squeeze(-1).sum(-1)
            backward = log_q_back.gather(-1, cur["ids"][..., None]).squeeze(-1).sum(-1)
            log_ratio = cur["energy"] - new["energy"] + backward - forward
            u = draws.rand((C,), device=log_ratio.device)
            accept = torch.log(u) < log_ratio
        else:
            accept = torch.ones(C, dtype=torch.bool, device=proposal.device)
        self._check_finite(it, new["energy"])
        state["current"] = cur = {k: torch.where(accept.view(-1, *([1] * (new[k].dim() - 1))), new[k], cur[k])
                                  for k in new}
        with torch.no_grad():  # Z for the trajectory's KL: Z_0, with each changed token lifted above its row's max
            z0 = state["z0"]
            lifted = z0.scatter(-1, cur["ids"][..., None], z0.max(-1, keepdim=True).values + cfg.init_margin)
            moved_from_start = cur["ids"] != (z0 + self.mask).argmax(-1)
            z_state = torch.where(moved_from_start[..., None], lifted, z0)
        stats = {"energy": cur["energy"], "logp_ref": cur["logp"], "reward_hard": cur["reward"],
                 "reward_soft": torch.full_like(cur["energy"], float("nan")), "ids": cur["ids"],
                 "noise": moved, "accept": accept.float()}
        return z_state.requires_grad_(True), stats

    def _joint_logp_and_reward(self, cache: PromptCache, tokens: torch.Tensor):
        """log pi_ref(y|x) and r(x, y) from ONE forward, for a reward head on the policy's own backbone.

        The model runs on [y_0 .. y_{T-1}, suffix] after the cached prompt: its logits at positions 0..T-2 score
        y_1..y_{T-1} (attention is causal, so the later tokens do not change them) and its final-layer states
        feed the reward head, exactly as the reward's own forward would.
        """
        model, T = self.policy.model, tokens.shape[1]
        embedding = self.policy.embedding_matrix
        suffix = embedding[torch.tensor(self.reward.suffix_ids, dtype=torch.long, device=embedding.device)]
        embeds = soft_embeddings(tokens, embedding)
        embeds = torch.cat([embeds, suffix.expand(tokens.shape[0], -1, -1)], dim=1)
        out = forward_embeds(model, cache, embeds, hidden=True)
        logits = torch.cat([cache.first_logits(tokens.shape[0])[:, None], out.logits[:, : T - 1].float()], dim=1)
        self._meter.count_reward(tokens.shape[0])
        return sequence_logprob(logits, tokens, self.mask), self.reward.score_hidden(out.hidden_states[-1])

    def _reference_iteration(self, it, z, cache, scorer, generator, state):
        cfg, V = self.config, self.policy.vocab_size
        std = cfg.noise_std(it)
        noise = std * Draws.of(generator).randn(z.shape, device=z.device)
        z_noisy = z + self.mask + noise
        with torch.no_grad():  # p_ref is only a target: no graph through the reference model
            inputs = (z_noisy + state.get("topk_mask", 0.0)).argmax(-1)
            ref_logits = next_token_logits(self.policy.model, cache, one_hot(inputs, V))
            ref_logp = F.log_softmax(ref_logits, -1)
            logp = ref_logp.gather(-1, inputs[..., None]).squeeze(-1).sum(-1)
            allowed = torch.zeros_like(ref_logits, dtype=torch.bool).scatter_(-1, ref_logits.topk(min(cfg.topk, V), -1).indices, True)
            topk_mask = torch.where(allowed, 0.0, MASK_VALUE) + self.mask
        fluency = (torch.softmax(z_noisy, -1) * -ref_logp).sum(-1).mean(-1)  # [C]
        reward_soft = self._score(scorer, torch.softmax(z_noisy / cfg.reward_temp, -1))
        loss = torch.zeros_like(fluency)
        if cfg.use_reward:
            loss = loss - cfg.reward_weight * reward_soft
        if cfg.use_reference:
            loss = loss + cfg.fluency_weight * fluency
            state["topk_mask"] = topk_mask
        with torch.no_grad():
            if cfg.decode_topk == "prefix":  # the released decode_with_model_topk, with or without the reference term
                ids = topk_decode(self.policy.model, cache, z.detach() + self.mask, cfg.topk, self.mask)
            else:
                ids = (z.detach() + self.mask + (topk_mask if cfg.use_reference else 0.0)).argmax(-1)
            reward_hard = self._score(scorer, one_hot(ids, V))
        optimizer = state["optimizer"]
        optimizer.zero_grad(set_to_none=True)
        self._check_finite(it, loss.detach())
        if loss.requires_grad:
            loss.sum().backward()
            try:
                optimizer.step()
            except RuntimeError as err:  # Adam refuses a learning rate that overflows float32
                raise FloatingPointError(f"SEA diverged at iteration {it} ({err}). Fix: lower lr (now {cfg.lr}).") from None
        self._check_finite(it, z.detach())
        stats = {"energy": loss.detach(), "logp_ref": logp, "reward_hard": reward_hard,
                 "reward_soft": reward_soft.detach(), "ids": ids, "noise": torch.full_like(logp, std),
                 "accept": torch.full_like(logp, float("nan"))}
        return z, stats

    @torch.no_grad()
    def _rewrite(self, prompt, candidates, scorer, generator) -> list[dict]:
        """The released code's post-step: the base model greedily rewrites each chain's text.

        The chains' rewrites are decoded together in one left-padded batch (``greedy_batch``: the tokens of
        one-at-a-time greedy decoding up to floating-point near-ties), since one-token steps cost about the same
        for one row as for four.
        """
        policy = self.policy
        if policy.tokenizer is None or not isinstance(prompt, str) or not candidates:
            return []
        cfg = self.config
        template = REWRITE_INSTRUCTION_NO_QUESTION if cfg.rewrite_prompt == "no-question" else REWRITE_INSTRUCTION
        requests = [policy.encode_prompt(template.format(prompt=prompt, response=c["text"])) for c in candidates]
        pad = policy.tokenizer.pad_token_id if policy.tokenizer.pad_token_id is not None else 0
        batch = greedy_batch(policy.model, requests, cfg.rewrite_tokens or cfg.length, stop_ids=policy.special_ids,
                             pad_id=pad)
        out = []
        for cand, ids, stopped in zip(candidates, batch.ids, batch.stopped):
            if not ids:  # an empty rewrite cannot be scored: keep nothing for this chain
                continue
            keep = torch.tensor(ids, dtype=torch.long, device=policy.device)
            reward = self._score(scorer, one_hot(keep[None], policy.vocab_size))[0]
            out.append({"source": f"rewrite of {cand['source']}", "token_ids": ids, "text": policy.decode(keep),
                        "reward": float(reward), "cut": not stopped})
        return out

def align(prompts, policy: Policy | None = None, reward: Reward | None = None, progress: bool = True,
          **config) -> list[SEAResult]:
    """Convenience wrapper: SEA with the bundled policy and the demo reward unless given."""
    from .models import load_policy
    from .rewards import demo_reward

    policy = policy or load_policy()
    reward = reward if reward is not None else demo_reward(policy)
    return SEA(policy, reward, SEAConfig(**config)).run(prompts, progress=progress)
