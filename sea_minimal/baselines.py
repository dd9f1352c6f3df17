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

Defaults follow the authors' baseline code (SEA.md §4): BoN at temperature 1.0 with top-k 50; ARGS with
score = log pi(v) + 1.0 r over the top-50 next tokens, greedy; CBS with beam width 1, 4 successors per
beam and 32-token chunks.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .compute import ComputeMeter
from .lm import PromptCache, Samples, decode, encode_prompt, greedy_batch as _greedy_batch, sample_many, step_logits  # noqa: F401 (PromptCache, Samples: re-exported)
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
    if config.get("fixed_length") is False:
        config = {k: v for k, v in config.items() if k != "fixed_length"}  # the default: records as before
    with ComputeMeter(policy.model, reward_model, device=policy.device) as meter:
        ctx = _Context(policy, reward, prompt, seed, meter, fixed_length=bool(config.get("fixed_length")),
                       encode=encode)
        candidates, selected, extra = body(ctx)
    compute = meter.compute.to_dict()
    wall = time.perf_counter() - start
    if extra.get("initial") is not None:
        init_ids, init_reward = extra["initial"]
    elif initial:  # the base policy's greedy answer, outside the meter: reporting, not the method's compute
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


def args(policy: Policy, reward: Reward, prompt, seed: int = 0, w: float = 1.0, top_k: int = 50,
         length: int = DEFAULT_LENGTH, initial: bool = True, fixed_length: bool = False) -> SEAResult:
    """ARGS (Khanov et al. 2024), greedy: at each position pick, among the top-k next tokens v of pi_ref,
    the one maximising log pi_ref(v | x, y_<t) + w r(x, y_<t v).

    The k partial responses ``y_<t v`` are scored as one batch (one-hot tokens). A stop token among the top-k
    is scored with the reward of ``y_<t`` (the response it would end); choosing it ends the response.
    ``trajectory`` records per step the chosen token's log-prob and reward. With ``w = 0`` this is greedy
    decoding (ties aside).
    """
    _check_length(length)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")

    @torch.no_grad()
    def body(ctx):
        from transformers import DynamicCache

        model, stop = policy.model, set(ctx.stop_ids)
        cache = DynamicCache([(k.contiguous(), v.contiguous()) for k, v in ctx.cache.layers])
        logits = ctx.cache.next_logits
        ids: list[int] = []
        current = None  # reward of ids
        traj = {"logp": [], "reward": [], "score": []}
        banned = list(ctx.banned_ids)
        for t in range(length):
            if banned:  # SEA's response space: the next-token distribution renormalised over allowed tokens
                logits = logits.float().clone()
                logits[banned] = float("-inf")
            logp = torch.log_softmax(logits.float(), -1)
            if t == 0 and stop:
                logp = logp.clone()
                logp[list(stop)] = float("-inf")
            top = logp.topk(min(top_k, logp.shape[-1]))
            cand = top.indices.tolist()
            grow = [i for i, v in enumerate(cand) if v not in stop]
            rewards = [0.0] * len(cand)
            scored = ctx.score([ids + [cand[i]] for i in grow]) if grow else []
            for i, r in zip(grow, scored):
                rewards[i] = r
            if len(grow) < len(cand):  # a stop token: the response would end as it is
                if current is None and ids:
                    current = ctx.score([ids])[0]
                for i, v in enumerate(cand):
                    if v in stop:  # at t = 0 stop tokens are banned (their log-prob is -inf anyway)
                        rewards[i] = current if ids else float("-inf")
            scores = [float(lp) + w * r for lp, r in zip(top.values.tolist(), rewards)]
            best = _argmax(scores)
            traj["logp"].append([float(top.values[best])])
            traj["reward"].append([rewards[best]])
            traj["score"].append([scores[best]])
            if cand[best] in stop:
                break
            ids.append(cand[best])
            current = rewards[best]
            if t + 1 == length:
                break
            chosen = torch.tensor([cand[best]], device=policy.device)
            logits = step_logits(model, cache, chosen, ctx.cache.length + t)[0]
        return [_candidate("args", ids, current)], 0, {"trajectory": traj, "iterations": len(traj["score"])}

    config = {"w": w, "top_k": top_k, "length": length, "fixed_length": fixed_length}
    return _run("args", policy, reward, prompt, seed, config, body, initial)


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
    _check_length(length)
    if beam_width < 1 or successors < 1 or chunk_length < 1:
        raise ValueError("beam_width, successors and chunk_length must be >= 1")

    def body(ctx):
        # a beam: (token ids, reward, finished, cache to continue from)
        beams = [([], None, False, ctx.cache)]
        traj = {"best_reward": []}
        rounds = 0
        while not all(b[2] for b in beams):
            rounds += 1
            pool = [b for b in beams if b[2]]
            new_ids, new_meta = [], []
            for ids, _, done, cache in beams:
                if done:
                    continue
                steps = min(chunk_length, length - len(ids))
                more = len(ids) + steps < length
                s = decode(policy.model, cache, successors, steps, ctx.generator, temperature, top_k, ctx.stop_ids,
                           ban_stop_first=not ids, keep_cache=more, banned_ids=ctx.banned_ids)
                for i in range(successors):
                    ext = ids + s.ids(i)
                    finished = bool(s.stopped[i]) or len(ext) >= length
                    new_ids.append(ext)
                    new_meta.append((finished, None if finished else s.continue_from(i)))
            rewards = ctx.score(new_ids)
            pool += [(ids, r, fin, cache) for ids, r, (fin, cache) in zip(new_ids, rewards, new_meta)]
            order = sorted(range(len(pool)), key=lambda i: -pool[i][1])  # stable: earlier first on ties
            beams = [pool[i] for i in order[:beam_width]]
            traj["best_reward"].append([beams[0][1]])
        cands = [_candidate(f"beam {i}", ids, r) for i, (ids, r, _, _) in enumerate(beams)]
        return cands, 0, {"trajectory": traj, "iterations": rounds}

    config = {"beam_width": beam_width, "successors": successors, "chunk_length": chunk_length, "length": length,
              "temperature": temperature, "top_k": top_k, "fixed_length": fixed_length}
    return _run("cbs", policy, reward, prompt, seed, config, body, initial)


BASELINES = {"greedy": greedy, "sampled": sampled, "best_of_n": best_of_n, "args": args, "cbs": cbs}
#: Methods with a many-prompt form ``fn(policy, reward, prompts, seeds, **params) -> [SEAResult]`` (the runner's
#: ``batch_prompts``); the others run one prompt at a time.
BATCHED = {"greedy": greedy_many, "best_of_n": best_of_n_many}
