"""Discrete baselines with SEA's reward and result type: greedy ("SFT"), sampling, Best-of-N, ARGS, CBS.

Every function has the registry signature ``method(policy, reward, prompt, seed, **params) -> SEAResult``
(see :mod:`sea_minimal.methods`) and fills the same :class:`~sea_minimal.sampler.SEAResult` as SEA, so the
runner, the metrics and the plots treat all methods alike.

Common conventions
------------------
* ``length`` (default 50, as SEA's fixed span) caps the response. Generation stops at the first special
  token (``policy.special_ids``: end-of-turn, chat markers, EOS), like an ordinary ``generate``; the stop
  token is not part of the response. Special tokens are banned at the first position, so no response is
  empty (``min_new_tokens=1``).
* ``fixed_length=True`` puts a method on SEA's response space instead: no stop, exactly ``length`` tokens, special
  tokens banned at every position (next-token distributions renormalised over the allowed tokens). The chapter on
  the exact optimum uses it, so that every method's answers live where pi* does.
* Rewards are computed on the one-hot response tokens through ``reward.for_prompt(prompt_ids)`` (the same
  scorer SEA uses for its hard reward). Responses of different lengths are scored in groups of equal length.
* ``compute`` comes from a :class:`~sea_minimal.compute.ComputeMeter` that watches the policy model and the
  reward model (if the reward has one) and counts one reward call per response scored.
* ``initial_texts`` / ``initial_rewards`` hold the base policy's greedy answer (decoded outside the meter, so
  it does not count as the method's compute); pass ``initial=False`` to skip it. ``greedy`` is its own initial.
* Randomness comes only from a ``torch.Generator`` seeded with ``seed``: same seed, same output.
* Many-prompt forms (``BATCHED``: ``greedy_many``, ``best_of_n_many``, ``args_many``, ``cbs_many``, the runner's
  ``batch_prompts``) take ``(policy, reward, prompts, seeds, **params)`` and return one result per prompt. The
  policy's decoding runs for all prompts in one left-padded batch (attention mask, per-row positions), each prompt
  with its own generator; the reward's scoring and the ``initial`` answer stay per prompt. Each result equals that
  prompt's own run up to floating-point rounding of the batched forward, with the same record shape and the compute
  counts its own run has (``tests/test_batching.py``).

Defaults follow the authors' baseline code (SEA.md §4): BoN at temperature 1.0 with top-k 50; ARGS with
score = log pi(v) + 1.0 r over the top-50 next tokens, greedy; CBS with beam width 1, 4 successors per
beam and 32-token chunks.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .compute import Compute, ComputeMeter
from .lm import (PromptCache, Samples, decode, encode_prompt, greedy_batch as _greedy_batch, sample_many,  # noqa: F401
                 stack_prompts, step_logits)  # (PromptCache, Samples: re-exported)
from .models import Policy
from .rewards import Reward, one_hot
from .sampler import SEAResult, library_versions

DEFAULT_LENGTH = 50
SCORE_BUDGET = 2**25  # one-hot elements per reward call (128 MiB in float32)


# ---------------------------------------------------------------------------------------------- helpers
class _Context:
    """Per-prompt state shared by the baselines: prompt ids and cache, scorer, meter, generator."""

    def __init__(self, policy: Policy, reward: Reward, prompt, seed: int, meter: ComputeMeter,
                 fixed_length: bool = False, encode: bool = True):
        if reward is None:
            raise ValueError("The baselines need a reward. Fix: pass a Reward (e.g. sea_minimal.demo_reward(policy)).")
        reward.check_vocab(policy.vocab_size)
        self.policy, self.meter = policy, meter
        self.prompt_ids = policy.encode_prompt(prompt)
        # encode=False: the caller decoded already (greedy_many) and needs only the scorer; no prompt forward
        self.cache = encode_prompt(policy.model, self.prompt_ids) if encode else None
        self.scorer = reward.for_prompt(self.prompt_ids)
        self.generator = torch.Generator(device=policy.device).manual_seed(int(seed))
        # fixed_length: SEA's response space (exactly ``length`` tokens, special tokens banned everywhere)
        self.stop_ids = [] if fixed_length else list(policy.special_ids)
        self.banned_ids = list(policy.special_ids) if fixed_length else []

    @torch.no_grad()
    def score(self, responses: list[list[int]]) -> list[float]:
        """Hard reward of each response (token id lists), batched over responses of equal length."""
        out = [0.0] * len(responses)
        groups: dict[int, list[int]] = {}
        for i, ids in enumerate(responses):
            groups.setdefault(len(ids), []).append(i)
        for length, idx in groups.items():
            if length == 0:
                raise ValueError("Cannot score an empty response.")
            # one-hot inputs are [rows, T, V] float32: bound a batch to ~SCORE_BUDGET elements
            rows = max(1, SCORE_BUDGET // (length * self.policy.vocab_size))
            for start in range(0, len(idx), rows):
                part = idx[start : start + rows]
                ids = torch.tensor([responses[i] for i in part], dtype=torch.long, device=self.policy.device)
                self.meter.count_reward(len(part))
                values = self.scorer(one_hot(ids, self.policy.vocab_size))
                for i, v in zip(part, values.tolist()):
                    out[i] = float(v)
        return out


def _check_length(length: int) -> int:
    if not isinstance(length, int) or length < 1:
        raise ValueError(f"length must be a positive integer, got {length!r}")
    return length


def _greedy_ids(ctx: _Context, length: int) -> list[int]:
    samples = decode(ctx.policy.model, ctx.cache, 1, length, None, temperature=0.0, stop_ids=ctx.stop_ids,
                     banned_ids=ctx.banned_ids)
    return samples.ids(0)


def _run(name: str, policy: Policy, reward: Reward, prompt, seed: int, config: dict, body, initial: bool = True,
         encode: bool = True):
    """Run ``body(ctx) -> (candidates, selected, extra)`` under a ComputeMeter and build the SEAResult
    (``encode=False``: the context gets no prompt cache, for a body that decoded elsewhere)."""
    start = time.perf_counter()
    reward_model = getattr(reward, "model", None)
    config = _record_config(config)
    with ComputeMeter(policy.model, reward_model, device=policy.device) as meter:
        ctx = _Context(policy, reward, prompt, seed, meter, fixed_length=bool(config.get("fixed_length")),
                       encode=encode)
        candidates, selected, extra = body(ctx)
    return _result(name, ctx, prompt, seed, config, (candidates, selected, extra), meter.compute.to_dict(),
                   time.perf_counter() - start, initial)


def _record_config(config: dict) -> dict:
    if config.get("fixed_length") is False:
        return {k: v for k, v in config.items() if k != "fixed_length"}  # the default: records as before
    return config


def _result(name: str, ctx: _Context, prompt, seed: int, config: dict, outcome, compute: dict, wall: float,
            initial: bool) -> SEAResult:
    """The SEAResult of one prompt's run from ``outcome = (candidates, selected, extra)``; the base policy's greedy
    answer (``initial``) is decoded here, outside the meter: reporting, not the method's compute."""
    candidates, selected, extra = outcome
    policy = ctx.policy
    if extra.get("initial") is not None:
        init_ids, init_reward = extra["initial"]
    elif initial:
        with ComputeMeter() as scratch:
            ctx.meter = scratch
            init_ids = _greedy_ids(ctx, config["length"])
            init_reward = ctx.score([init_ids])[0]
    else:
        init_ids, init_reward = None, None
    for cand in candidates:
        cand["text"] = policy.decode(cand["token_ids"])
    return SEAResult(
        prompt=prompt if isinstance(prompt, str) else [int(t) for t in prompt],
        text=candidates[selected]["text"], selected=selected, candidates=candidates,
        texts=[c["text"] for c in candidates], rewards=[c["reward"] for c in candidates],
        initial_texts=[] if init_ids is None else [policy.decode(init_ids)],
        initial_rewards=[] if init_reward is None else [init_reward],
        trajectory=extra.get("trajectory", {}), kl_per_position=[], config={"method": name, **config},
        seed=int(seed), device=str(policy.device), versions=library_versions(), wall_time=wall,
        iterations=extra.get("iterations", 1), method=name, compute=compute,
    )


class _Share:
    """One prompt's part of a many-prompt run (:func:`args_many`, :func:`cbs_many`): its context, and the compute its
    own run would count. What only this prompt does (encoding its prompt, building its scorer, scoring) runs under
    ``metered()``; the batch's shared policy forwards are added by ``add`` (the positions its own run would put
    through the policy, and its share of their time)."""

    def __init__(self, policy: Policy, reward: Reward, prompt, seed: int, fixed_length: bool):
        self.models = (policy.model, getattr(reward, "model", None))
        self.device = policy.device
        self.compute = Compute()
        with self.metered() as meter:
            self.ctx = _Context(policy, reward, prompt, seed, meter, fixed_length=fixed_length)

    @contextmanager
    def metered(self):
        with ComputeMeter(*self.models, device=self.device) as meter:
            if hasattr(self, "ctx"):
                self.ctx.meter = meter
            yield meter
        part, own = meter.compute, self.compute
        own.forward_tokens += part.forward_tokens
        own.backward_tokens += part.backward_tokens
        own.reward_calls += part.reward_calls
        own.wall_time += part.wall_time
        own.peak_memory_mib = max(own.peak_memory_mib, part.peak_memory_mib)

    def add(self, forward_tokens: int, seconds: float) -> None:
        self.compute.forward_tokens += int(forward_tokens)
        self.compute.wall_time += seconds

    def result(self, name: str, prompt, seed: int, config: dict, outcome, initial: bool) -> SEAResult:
        return _result(name, self.ctx, prompt, seed, _record_config(config), outcome, self.compute.to_dict(),
                       self.compute.wall_time, initial)


def _shares(policy: Policy, reward: Reward, prompts: list, seeds: list[int], fixed_length: bool) -> list[_Share]:
    if not prompts:
        raise ValueError("A many-prompt run needs at least one prompt.")
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: pass one seed per prompt.")
    return [_Share(policy, reward, p, s, fixed_length) for p, s in zip(prompts, seeds)]


def _candidate(source: str, ids: list[int], reward: float) -> dict:
    return {"source": source, "text": "", "token_ids": [int(i) for i in ids], "reward": float(reward)}


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # first maximum on ties


# ---------------------------------------------------------------------------------------------- methods
def greedy(policy: Policy, reward: Reward, prompt, seed: int = 0, length: int = DEFAULT_LENGTH,
           fixed_length: bool = False) -> SEAResult:
    """The base policy's greedy answer (the "SFT" row of the paper's tables)."""
    _check_length(length)

    def body(ctx):
        ids = _greedy_ids(ctx, length)
        r = ctx.score([ids])[0]
        return [_candidate("greedy", ids, r)], 0, {"initial": (ids, r)}

    return _run("greedy", policy, reward, prompt, seed, {"length": length, "fixed_length": fixed_length}, body)


def greedy_many(policy: Policy, reward: Reward, prompts: list, seeds: list[int], length: int = DEFAULT_LENGTH,
                fixed_length: bool = False) -> list[SEAResult]:
    """:func:`greedy` for several prompts, decoded in one left-padded batch (:func:`sea_minimal.lm.greedy_batch`).

    Each result has the shape and the compute of the one-prompt run: its reward call is metered per prompt as
    there, and the positions the one-prompt run would have put through the policy (its P prompt tokens and
    ``emitted - 1`` decoding steps) are added; its wall time is its share of the batch's decoding plus its own
    scoring. Texts equal :func:`greedy`'s up to floating-point near-ties (the runner uses this with
    ``--batch-prompts``).
    """
    _check_length(length)
    start = time.perf_counter()
    stop_ids = [] if fixed_length else list(policy.special_ids)
    banned = list(policy.special_ids) if fixed_length else []
    encoded = [policy.encode_prompt(p) for p in prompts]
    batch = _greedy_batch(policy.model, encoded, length, stop_ids, banned_ids=banned)
    share = (time.perf_counter() - start) / len(prompts)
    out = []
    for prompt, seed, prompt_ids, ids, emitted in zip(prompts, seeds, encoded, batch.ids, batch.emitted):
        def body(ctx, ids=ids):
            r = ctx.score([ids])[0]
            return [_candidate("greedy", ids, r)], 0, {"initial": (ids, r)}

        res = _run("greedy", policy, reward, prompt, seed, {"length": length, "fixed_length": fixed_length}, body,
                   encode=False)
        res.compute["forward_tokens"] += prompt_ids.numel() + int(emitted) - 1
        res.compute["wall_time"] += share
        res.wall_time += share
        out.append(res)
    return out


def sampled(policy: Policy, reward: Reward, prompt, seed: int = 0, length: int = DEFAULT_LENGTH,
            temperature: float = 1.0, top_k: int = 50, initial: bool = True, fixed_length: bool = False) -> SEAResult:
    """One sample of the base policy (temperature 1.0, top-k 50 by default)."""
    _check_length(length)

    def body(ctx):
        s = decode(policy.model, ctx.cache, 1, length, ctx.generator, temperature, top_k, ctx.stop_ids,
                   banned_ids=ctx.banned_ids)
        ids = s.ids(0)
        return [_candidate("sample 0", ids, ctx.score([ids])[0])], 0, {}

    config = {"length": length, "temperature": temperature, "top_k": top_k, "fixed_length": fixed_length}
    return _run("sampled", policy, reward, prompt, seed, config, body, initial)


def best_of_n(policy: Policy, reward: Reward, prompt, seed: int = 0, n: int = 16, temperature: float = 1.0,
              top_k: int = 50, length: int = DEFAULT_LENGTH, batch_size: int = 16, initial: bool = True,
              fixed_length: bool = False) -> SEAResult:
    """Best-of-N: N samples of the base policy (batched, ``batch_size`` rows at a time), keep the max reward.

    ``top_k=0`` and ``fixed_length=True`` draw exact samples of pi_ref on SEA's response space. Each candidate
    also carries ``logp_ref_per_token`` (log pi_ref per response token, nats), so that Best-of-N for every smaller
    N can be judged from the same record (``analysis.best_of_first``)."""
    _check_length(length)
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")

    def body(ctx):
        samples = [decode(policy.model, ctx.cache, min(batch_size, n - start), length, ctx.generator, temperature,
                          top_k, ctx.stop_ids, banned_ids=ctx.banned_ids) for start in range(0, n, batch_size)]
        return _bon_candidates(ctx, samples)

    config = {"n": n, "temperature": temperature, "top_k": top_k, "length": length, "batch_size": batch_size,
              "fixed_length": fixed_length}
    return _run("best_of_n", policy, reward, prompt, seed, config, body, initial)


def _bon_candidates(ctx, samples: list[Samples]):
    """Best-of-N's candidates from its sample batches: each response, its reward, log pi_ref per token."""
    responses, logps = [], []
    for s in samples:
        responses += [s.ids(i) for i in range(s.tokens.shape[0])]
        logps += [float(s.logp[i]) / max(1, int(s.lengths[i])) if int(s.lengths[i]) else float("nan")
                  for i in range(s.tokens.shape[0])]
    rewards = ctx.score(responses)
    cands = [_candidate(f"sample {i}", ids, r) for i, (ids, r) in enumerate(zip(responses, rewards))]
    for cand, lp in zip(cands, logps):
        cand["logp_ref_per_token"] = lp
    return cands, _argmax(rewards), {}


def best_of_n_many(policy: Policy, reward: Reward, prompts: list, seeds: list[int], n: int = 16,
                   temperature: float = 1.0, top_k: int = 50, length: int = DEFAULT_LENGTH, batch_size: int = 16,
                   initial: bool = True, fixed_length: bool = False) -> list[SEAResult]:
    """:func:`best_of_n` for several prompts: each batch of ``batch_size`` samples is drawn for all prompts at once
    (:func:`sea_minimal.lm.sample_many`, each prompt from its own generator), so the samples equal the one-prompt
    runs' up to floating-point rounding. Each result has the one-prompt run's shape and compute: the positions its
    own run puts through the policy (its P prompt tokens and each batch's decoding steps) are added to its scoring's;
    its wall time is its share of the batch's decoding plus its own scoring (the runner's ``batch_prompts``)."""
    _check_length(length)
    if n < 1 or batch_size < 1:
        raise ValueError(f"n and batch_size must be >= 1, got n={n}, batch_size={batch_size}")
    start = time.perf_counter()
    stop_ids = [] if fixed_length else list(policy.special_ids)
    banned = list(policy.special_ids) if fixed_length else []
    encoded = [policy.encode_prompt(p) for p in prompts]
    caches = [encode_prompt(policy.model, ids) for ids in encoded]
    generators = [torch.Generator(device=policy.device).manual_seed(int(s)) for s in seeds]
    samples, positions = [[] for _ in prompts], [ids.numel() for ids in encoded]
    for first in range(0, n, batch_size):
        rows = min(batch_size, n - first)
        for i, (s, steps) in enumerate(sample_many(policy.model, caches, rows, length, generators, temperature, top_k,
                                                   stop_ids, banned_ids=banned)):
            samples[i].append(s)
            positions[i] += rows * (steps - 1)  # decode runs every step's token but the last
    share = (time.perf_counter() - start) / len(prompts)
    config = {"n": n, "temperature": temperature, "top_k": top_k, "length": length, "batch_size": batch_size,
              "fixed_length": fixed_length}
    out = []
    for prompt, seed, cache, own, extra in zip(prompts, seeds, caches, samples, positions):
        def body(ctx, cache=cache, own=own):
            ctx.cache = cache  # the initial greedy answer (outside the meter) decodes from it
            return _bon_candidates(ctx, own)

        res = _run("best_of_n", policy, reward, prompt, seed, config, body, initial, encode=False)
        res.compute["forward_tokens"] += extra
        res.compute["wall_time"] += share
        res.wall_time += share
        out.append(res)
    return out


def _check_args(length: int, top_k: int) -> None:
    _check_length(length)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")


@dataclass
class _ArgsState:
    """One prompt's ARGS decode so far: the response ``ids``, their reward ``current`` (None: not scored yet) and the
    trajectory (per step the chosen token's log-prob, reward and score)."""

    ids: list[int] = field(default_factory=list)
    current: float | None = None
    traj: dict = field(default_factory=lambda: {"logp": [], "reward": [], "score": []})


def _args_step(ctx: _Context, state: _ArgsState, logits: torch.Tensor, t: int, w: float, top_k: int,
               length: int) -> int | None:
    """ARGS's rule at response position ``t`` for one prompt, from its next-token logits [V]: score the top-k
    extensions (through ``ctx.score``), pick the best, update ``state``. Returns the chosen token when the decode
    goes on (its logits are needed next), None when the response has ended (a stop token, or ``length`` tokens)."""
    stop = set(ctx.stop_ids)
    if ctx.banned_ids:  # SEA's response space: the next-token distribution renormalised over allowed tokens
        logits = logits.float().clone()
        logits[list(ctx.banned_ids)] = float("-inf")
    logp = torch.log_softmax(logits.float(), -1)
    if t == 0 and stop:
        logp = logp.clone()
        logp[list(stop)] = float("-inf")
    top = logp.topk(min(top_k, logp.shape[-1]))
    cand, ids = top.indices.tolist(), state.ids
    grow = [i for i, v in enumerate(cand) if v not in stop]
    rewards = [0.0] * len(cand)
    scored = ctx.score([ids + [cand[i]] for i in grow]) if grow else []
    for i, r in zip(grow, scored):
        rewards[i] = r
    if len(grow) < len(cand):  # a stop token: the response would end as it is
        if state.current is None and ids:
            state.current = ctx.score([ids])[0]
        for i, v in enumerate(cand):
            if v in stop:  # at t = 0 stop tokens are banned (their log-prob is -inf anyway)
                rewards[i] = state.current if ids else float("-inf")
    scores = [float(lp) + w * r for lp, r in zip(top.values.tolist(), rewards)]
    best = _argmax(scores)
    state.traj["logp"].append([float(top.values[best])])
    state.traj["reward"].append([rewards[best]])
    state.traj["score"].append([scores[best]])
    if cand[best] in stop:
        return None
    ids.append(cand[best])
    state.current = rewards[best]
    return None if t + 1 == length else cand[best]


def _args_outcome(state: _ArgsState):
    return [_candidate("args", state.ids, state.current)], 0, {"trajectory": state.traj,
                                                              "iterations": len(state.traj["score"])}


def args(policy: Policy, reward: Reward, prompt, seed: int = 0, w: float = 1.0, top_k: int = 50,
         length: int = DEFAULT_LENGTH, initial: bool = True, fixed_length: bool = False) -> SEAResult:
    """ARGS (Khanov et al. 2024), greedy: at each position pick, among the top-k next tokens v of pi_ref,
    the one maximising log pi_ref(v | x, y_<t) + w r(x, y_<t v).

    The k partial responses ``y_<t v`` are scored as one batch (one-hot tokens). A stop token among the top-k
    is scored with the reward of ``y_<t`` (the response it would end); choosing it ends the response.
    ``trajectory`` records per step the chosen token's log-prob and reward. With ``w = 0`` this is greedy
    decoding (ties aside).
    """
    _check_args(length, top_k)

    @torch.no_grad()
    def body(ctx):
        from transformers import DynamicCache

        cache = DynamicCache([(k.contiguous(), v.contiguous()) for k, v in ctx.cache.layers])
        state, logits = _ArgsState(), ctx.cache.next_logits
        for t in range(length):
            tok = _args_step(ctx, state, logits, t, w, top_k, length)
            if tok is None:
                break
            logits = step_logits(policy.model, cache, torch.tensor([tok], device=policy.device),
                                 ctx.cache.length + t)[0]
        return _args_outcome(state)

    config = {"w": w, "top_k": top_k, "length": length, "fixed_length": fixed_length}
    return _run("args", policy, reward, prompt, seed, config, body, initial)


class _Rows:
    """Prompts decoded one token per row per step in one batch: the left-padded cache [B, heads, P + t, head_dim],
    its attention mask [B, P + t] and each row's next position [B, 1]. ``keep(rows)`` drops the other rows (a prompt
    whose response has ended leaves the batch)."""

    def __init__(self, caches: list[PromptCache]):
        from transformers import DynamicCache

        stacked = stack_prompts(caches)
        device = stacked.next_logits.device
        self.cache = DynamicCache([(k.contiguous(), v.contiguous()) for k, v in stacked.layers])
        self.mask = (stacked.key_mask if stacked.key_mask is not None
                     else torch.ones(1, stacked.length, dtype=torch.long, device=device))
        self.position = torch.tensor([[c.length] for c in caches], dtype=torch.long, device=device)

    def keep(self, rows: list[int]) -> None:
        from transformers import DynamicCache

        if rows == list(range(self.mask.shape[0])):
            return
        idx = torch.tensor(rows, dtype=torch.long, device=self.mask.device)
        self.cache = DynamicCache([(layer.keys[idx], layer.values[idx]) for layer in self.cache.layers])
        self.mask, self.position = self.mask[idx], self.position[idx]

    def step(self, model: torch.nn.Module, tokens: list[int]) -> torch.Tensor:
        """Run one token per row [B]; returns the next-token logits [B, V] float32."""
        tok = torch.tensor(tokens, dtype=torch.long, device=self.mask.device)
        self.mask = torch.cat([self.mask, torch.ones_like(self.mask[:, :1])], 1)
        logits = step_logits(model, self.cache, tok, self.position, self.mask)
        self.position = self.position + 1
        return logits


def args_many(policy: Policy, reward: Reward, prompts: list, seeds: list[int], w: float = 1.0, top_k: int = 50,
              length: int = DEFAULT_LENGTH, initial: bool = True, fixed_length: bool = False) -> list[SEAResult]:
    """:func:`args` for several prompts decoded together: at each step one policy forward runs every live prompt's
    chosen token [B] over the left-padded prompt caches (attention mask, per-row positions); each prompt's top-k,
    scoring (its own scorer, its k extensions) and choice are :func:`args`'s own rule (``_args_step``); a prompt
    whose response has ended leaves the batch. Each prompt is encoded on its own and scored on its own, so each
    result equals its one-prompt run up to floating-point rounding of the batched forward (a near-tie between two
    scores can flip), with that run's compute: its encoding and scoring metered, plus one position per decoding
    step its own run takes; its wall time is its own work plus an equal share of each batched step.
    Not batched: the prompts' encoding, the reward calls and the initial greedy answers (one prompt at a time)."""
    _check_args(length, top_k)
    shares = _shares(policy, reward, prompts, seeds, fixed_length)
    states = [_ArgsState() for _ in shares]
    with torch.no_grad():
        rows = _Rows([sh.ctx.cache for sh in shares])
        live = list(range(len(shares)))  # batch row -> prompt
        logits = torch.stack([sh.ctx.cache.next_logits for sh in shares])
        for t in range(length):
            chosen = []
            for row, i in enumerate(live):
                with shares[i].metered():
                    chosen.append(_args_step(shares[i].ctx, states[i], logits[row], t, w, top_k, length))
            going = [row for row, tok in enumerate(chosen) if tok is not None]
            if not going:
                break
            rows.keep(going)
            live = [live[row] for row in going]
            start = time.perf_counter()
            logits = rows.step(policy.model, [chosen[row] for row in going])
            seconds = (time.perf_counter() - start) / len(live)
            for i in live:
                shares[i].add(1, seconds)
    config = {"w": w, "top_k": top_k, "length": length, "fixed_length": fixed_length}
    return [sh.result("args", p, s, config, _args_outcome(st), initial)
            for sh, p, s, st in zip(shares, prompts, seeds, states)]


def _check_cbs(length: int, beam_width: int, successors: int, chunk_length: int) -> None:
    _check_length(length)
    if beam_width < 1 or successors < 1 or chunk_length < 1:
        raise ValueError("beam_width, successors and chunk_length must be >= 1")


@dataclass
class _Beam:
    """A partial response of CBS: its ids, reward (None before the first chunk), whether it has finished (stop
    token or full length), and the cache to continue it from (None once finished)."""

    ids: list[int]
    reward: float | None
    finished: bool
    cache: PromptCache | None


def _cbs_chunk(beams: list[_Beam], chunk_length: int, length: int) -> tuple[int, bool]:
    """The next chunk's steps and whether its caches are kept (a later chunk follows). Every unfinished beam has
    run every step of every chunk so far, so all have the same length."""
    done = len(next(b for b in beams if not b.finished).ids)
    steps = min(chunk_length, length - done)
    return steps, done + steps < length


def _cbs_successors(beam: _Beam, samples: Samples, length: int) -> list[_Beam]:
    """The successors of ``beam`` from its chunk of samples (their rewards still to be scored)."""
    out = []
    for i in range(samples.tokens.shape[0]):
        ext = beam.ids + samples.ids(i)
        finished = bool(samples.stopped[i]) or len(ext) >= length
        out.append(_Beam(ext, None, finished, None if finished else samples.continue_from(i)))
    return out


def _cbs_select(ctx: _Context, beams: list[_Beam], grown: list[_Beam], beam_width: int, traj: dict) -> list[_Beam]:
    """CBS's selection for one prompt: score the new successors (``ctx.score``), keep the ``beam_width`` best of them
    and of the finished beams (finished beams first on ties, then in order), record the best reward."""
    for beam, r in zip(grown, ctx.score([b.ids for b in grown])):
        beam.reward = r
    pool = [b for b in beams if b.finished] + grown
    order = sorted(range(len(pool)), key=lambda i: -pool[i].reward)  # stable: earlier first on ties
    kept = [pool[i] for i in order[:beam_width]]
    traj["best_reward"].append([kept[0].reward])
    return kept


def _cbs_outcome(beams: list[_Beam], traj: dict, rounds: int):
    cands = [_candidate(f"beam {i}", b.ids, b.reward) for i, b in enumerate(beams)]
    return cands, 0, {"trajectory": traj, "iterations": rounds}


def cbs(policy: Policy, reward: Reward, prompt, seed: int = 0, beam_width: int = 1, successors: int = 4,
        chunk_length: int = 32, length: int = DEFAULT_LENGTH, temperature: float = 1.0, top_k: int = 50,
        initial: bool = True, fixed_length: bool = False) -> SEAResult:
    """Chunk-level beam search (Zhou et al. 2024, "weak-to-strong search"): from each of ``beam_width`` beams
    sample ``successors`` continuations of ``chunk_length`` tokens, keep the ``beam_width`` partial responses
    with the highest reward, repeat until ``length`` tokens (or every kept beam has stopped).

    A finished beam (stop token or full length) competes unchanged in later rounds. ``candidates`` are the
    final beams (best first); ``trajectory["best_reward"]`` is the best kept reward after each chunk.
    With one chunk (``chunk_length >= length``) and ``beam_width=1`` this is Best-of-``successors``.
    """
    _check_cbs(length, beam_width, successors, chunk_length)

    def body(ctx):
        beams, traj, rounds = [_Beam([], None, False, ctx.cache)], {"best_reward": []}, 0
        while not all(b.finished for b in beams):
            rounds += 1
            steps, more = _cbs_chunk(beams, chunk_length, length)
            grown = []
            for beam in (b for b in beams if not b.finished):
                s = decode(policy.model, beam.cache, successors, steps, ctx.generator, temperature, top_k,
                           ctx.stop_ids, ban_stop_first=not beam.ids, keep_cache=more, banned_ids=ctx.banned_ids)
                grown += _cbs_successors(beam, s, length)
            beams = _cbs_select(ctx, beams, grown, beam_width, traj)
        return _cbs_outcome(beams, traj, rounds)

    config = {"beam_width": beam_width, "successors": successors, "chunk_length": chunk_length, "length": length,
              "temperature": temperature, "top_k": top_k, "fixed_length": fixed_length}
    return _run("cbs", policy, reward, prompt, seed, config, body, initial)


def cbs_many(policy: Policy, reward: Reward, prompts: list, seeds: list[int], beam_width: int = 1, successors: int = 4,
             chunk_length: int = 32, length: int = DEFAULT_LENGTH, temperature: float = 1.0, top_k: int = 50,
             initial: bool = True, fixed_length: bool = False) -> list[SEAResult]:
    """:func:`cbs` for several prompts, chunk by chunk together. A prompt's generator draws its beams' chunks one
    beam after another (as its own run does), so the b-th live beam of every prompt is sampled in one batched decode
    (:func:`sea_minimal.lm.sample_many`: ``successors`` rows per prompt, each prompt's beam cache left-padded, each
    prompt from its own generator); a round takes as many batched decodes as the most live beams any prompt has
    (``beam_width`` at most). Scoring and beam selection are :func:`cbs`'s own (``_cbs_select``), per prompt; a prompt
    whose beams have all finished leaves. Samples equal the one-prompt runs' up to floating-point rounding of the
    batched forward (a draw on a boundary between two tokens can flip), and each result has its own run's compute:
    its encoding and scoring metered, plus the positions its own decodes run; its wall time is its own work plus an
    equal share of each batched decode. Not batched: beams of one prompt (its generator orders them), the prompts'
    encoding, the reward calls and the initial greedy answers."""
    _check_cbs(length, beam_width, successors, chunk_length)
    shares = _shares(policy, reward, prompts, seeds, fixed_length)
    beams = [[_Beam([], None, False, sh.ctx.cache)] for sh in shares]
    trajs, rounds = [{"best_reward": []} for _ in shares], [0] * len(shares)
    running = list(range(len(shares)))
    while running:
        steps, more = _cbs_chunk(beams[running[0]], chunk_length, length)  # the same for every running prompt
        live = {i: [b for b in beams[i] if not b.finished] for i in running}
        grown = {i: [] for i in running}
        for b in range(max(len(v) for v in live.values())):
            batch = [i for i in running if b < len(live[i])]
            start = time.perf_counter()
            out = sample_many(policy.model, [live[i][b].cache for i in batch], successors, steps,
                              [shares[i].ctx.generator for i in batch], temperature, top_k,
                              shares[batch[0]].ctx.stop_ids, ban_stop_first=rounds[batch[0]] == 0,
                              banned_ids=shares[batch[0]].ctx.banned_ids, keep_cache=more)
            seconds = (time.perf_counter() - start) / len(batch)
            for i, (s, run) in zip(batch, out):
                ran = run if more and not bool(s.stopped.all()) else run - 1  # decode's forwards (see decode)
                shares[i].add(successors * ran, seconds)
                grown[i] += _cbs_successors(live[i][b], s, length)
        for i in running:
            rounds[i] += 1
            with shares[i].metered():
                beams[i] = _cbs_select(shares[i].ctx, beams[i], grown[i], beam_width, trajs[i])
        running = [i for i in running if not all(b.finished for b in beams[i])]
    config = {"beam_width": beam_width, "successors": successors, "chunk_length": chunk_length, "length": length,
              "temperature": temperature, "top_k": top_k, "fixed_length": fixed_length}
    return [sh.result("cbs", p, s, config, _cbs_outcome(bm, tr, r), initial)
            for sh, p, s, bm, tr, r in zip(shares, prompts, seeds, beams, trajs, rounds)]


BASELINES = {"greedy": greedy, "sampled": sampled, "best_of_n": best_of_n, "args": args, "cbs": cbs}
#: Methods with a many-prompt form ``fn(policy, reward, prompts, seeds, **params) -> [SEAResult]`` (the runner's
#: ``batch_prompts``); the others run one prompt at a time.
BATCHED = {"greedy": greedy_many, "best_of_n": best_of_n_many, "args": args_many, "cbs": cbs_many}
