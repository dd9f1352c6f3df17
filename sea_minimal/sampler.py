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
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .compute import ComputeMeter
from .config import SEAConfig
from .lm import (PromptCache, encode_prompt, forward_embeds, greedy_batch, next_token_logits, relax, sample_tokens,
                 sequence_logprob, soft_embeddings, topk_decode)
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


def langevin_step(z: torch.Tensor, grad: torch.Tensor, step_size: float, noise_scale: float,
                  generator: torch.Generator) -> torch.Tensor:
    """One unadjusted Langevin step: z - eta grad + sqrt(2 eta) noise_scale xi, xi ~ N(0, I)."""
    noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z - step_size * grad + math.sqrt(2.0 * step_size) * noise_scale * noise


def kl_per_position(logp_from: torch.Tensor, z_to: torch.Tensor) -> torch.Tensor:
    """KL(p || softmax(z_to)) at each position, p = exp(logp_from): [C, T, V] x2 -> [C, T], nats.

    Takes the initial distribution as log-probabilities so that it is normalised once per prompt, not per iteration.
    """
    return (logp_from.exp() * (logp_from - F.log_softmax(z_to, -1))).sum(-1)


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
    def run(self, prompts, progress: bool = True) -> list[SEAResult]:
        """Run SEA on each prompt of ``prompts`` (strings, or lists of token ids for tokenizer-free models)."""
        if isinstance(prompts, str) or (isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise ValueError("No prompts given. Fix: pass a list with at least one prompt.")
        bar = tqdm(total=len(prompts) * self.config.steps, desc="SEA", disable=not progress, leave=False)
        try:
            return [self._run_one(p, bar) for p in prompts]
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

    def _run_one(self, prompt, bar) -> SEAResult:
        reward_model = getattr(self.reward, "model", None)
        with ComputeMeter(self.policy.model, reward_model, device=self.policy.device) as self._meter:
            result = self._optimise(prompt, bar)
        result.compute = self._meter.compute.to_dict()
        return result

    def _optimise(self, prompt, bar) -> SEAResult:
        cfg, policy = self.config, self.policy
        device = policy.device
        start = time.perf_counter()
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
        prompt_ids = policy.encode_prompt(prompt)
        cache = encode_prompt(policy.model, prompt_ids)
        scorer = self.reward.for_prompt(prompt_ids) if self.reward is not None else None
        V = policy.vocab_size

        z0 = self._initial_logits(cache, generator)
        with torch.no_grad():
            logp0 = F.log_softmax(z0 + self.mask, -1)
            init_ids = logp0.argmax(-1)
            init_rewards = self._score(scorer, one_hot(init_ids, V))
        traj = {k: [] for k in TRAJECTORY_KEYS}
        best_ids, best_reward = init_ids.clone(), torch.full((cfg.num_chains,), -math.inf, device=device)
        last_improvement = 0

        z = z0.clone().requires_grad_(True)
        step = {"langevin": self._langevin_iteration, "reference": self._reference_iteration,
                "dlp": self._dlp_iteration}[cfg.recipe]
        state = {"optimizer": torch.optim.Adam([z], lr=cfg.lr)} if cfg.recipe == "reference" else {}
        it = -1
        for it in range(cfg.steps):
            # KL of the state the iteration's stats describe: before its update, like its reward, except for dlp,
            # whose stats are of the state its accept / reject step kept
            with torch.no_grad():
                kl_now = kl_per_position(logp0, z.detach() + self.mask) if cfg.recipe != "dlp" else None
            z, stats = step(it, z, cache, scorer, generator, state)
            with torch.no_grad():
                if kl_now is None:
                    kl_now = kl_per_position(logp0, z.detach() + self.mask)
                stats["kl_init"] = kl_now.mean(-1)
                improved = stats["reward_hard"] > best_reward
                best_reward = torch.where(improved, stats["reward_hard"], best_reward)
                best_ids[improved] = stats["ids"][improved]
                last_improvement = it if improved.any() else last_improvement
                last_ids, last_rewards = stats["ids"], stats["reward_hard"]
            stats["wall_time"] = torch.full((cfg.num_chains,), time.perf_counter() - start)
            for k in TRAJECTORY_KEYS:
                traj[k].append([float(v) for v in stats[k]])
            bar.update(1)
            bar.set_postfix(reward=f"{stats['reward_hard'].max().item():.3f}")
            if cfg.recipe == "reference" and it - last_improvement >= cfg.patience:
                bar.update(cfg.steps - it - 1)
                break

        with torch.no_grad():
            final_ids, final_rewards = (best_ids, best_reward) if cfg.select == "best" else (last_ids, last_rewards)
            kl_final = kl_now  # per position, of the last evaluated state (the one "last" selection returns)
        candidates = [
            {"source": f"chain {c}", "token_ids": final_ids[c].tolist(), "text": policy.decode(final_ids[c]),
             "reward": float(final_rewards[c])}
            for c in range(cfg.num_chains)
        ]
        if cfg.rewrite:
            candidates += self._rewrite(prompt, candidates, scorer, generator)
        selected = max(range(len(candidates)), key=lambda i: candidates[i]["reward"])
        return SEAResult(
            prompt=prompt if isinstance(prompt, str) else [int(t) for t in prompt],
            text=candidates[selected]["text"], selected=selected, candidates=candidates,
            texts=[c["text"] for c in candidates[: cfg.num_chains]], rewards=final_rewards.tolist(),
            initial_texts=[policy.decode(ids) for ids in init_ids], initial_rewards=init_rewards.tolist(),
            trajectory=traj, kl_per_position=kl_final.tolist(), config=cfg.to_dict(), seed=cfg.seed,
            device=str(device), versions=library_versions(), wall_time=time.perf_counter() - start,
            iterations=it + 1, method=f"sea-{cfg.recipe}",
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
        order = torch.rand((C, T), generator=generator, device=device).argsort(-1)
        return torch.ones((C, T), dtype=torch.bool, device=device).scatter(-1, order[:, :k], False)

    def _dlp_iteration(self, it, z, cache, scorer, generator, state):
        cfg = self.config
        if "current" not in state:  # the chain starts at argmax(Z_0): the pi_ref samples with init_keep_sample
            state["current"] = self._dlp_evaluate(cache, scorer, (z.detach() + self.mask).argmax(-1))
            state["z0"] = z.detach()
        cur = state["current"]
        frozen = self._dlp_block(cur["ids"].shape, generator, cur["ids"].device)
        log_q = self._dlp_proposal(cur["grad"], cur["ids"], frozen)
        C, T, V = log_q.shape
        if cfg.use_noise:
            proposal = torch.multinomial(log_q.exp().view(C * T, V), 1, generator=generator).view(C, T)
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
            u = torch.rand(C, generator=generator, device=log_ratio.device)
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
        logits = torch.cat([cache.next_logits.expand(tokens.shape[0], 1, -1), out.logits[:, : T - 1].float()], dim=1)
        self._meter.count_reward(tokens.shape[0])
        return sequence_logprob(logits, tokens, self.mask), self.reward.score_hidden(out.hidden_states[-1])

    def _reference_iteration(self, it, z, cache, scorer, generator, state):
        cfg, V = self.config, self.policy.vocab_size
        std = cfg.noise_std(it)
        noise = std * torch.randn(z.shape, generator=generator, device=z.device)
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
