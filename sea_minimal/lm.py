"""Language-model plumbing shared by the sampler, the rewards and the baselines.

Shapes: C chains, P prompt tokens, T response tokens, V vocabulary, H hidden size.
Everything that leaves this module (logits, log-probabilities) is float32, whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .models import cache_kwarg


@dataclass
class PromptCache:
    """The prompt encoded once: its per-layer keys/values (detached) and the next-token logits.

    One prompt (``encode_prompt``): keys/values [1, heads, P, head_dim], ``next_logits`` [V]. Several prompts
    (``stack_prompts``): B prompts left-padded to the longest, keys/values [B, heads, P, head_dim], ``next_logits``
    [B, V], ``key_mask`` [B, P] (1 at each prompt's own positions, 0 in its padding) and ``prompt_lengths`` [B];
    a batch of ``batch`` rows then holds ``batch / B`` consecutive rows per prompt, and each row's positions
    continue after its own prompt. ``forward_response`` rebuilds a fresh cache object from these tensors for every
    call, so the stored tensors are never mutated and can be reused across iterations and chains.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [B, heads, P, head_dim]
    next_logits: torch.Tensor  # [V] (one prompt) or [B, V], float32: logits of the first response token
    length: int  # P (the longest prompt's length when stacked)
    hidden: torch.Tensor | None = None  # [1, P, H] last hidden states (used by backbone rewards)
    key_mask: torch.Tensor | None = None  # [B, P] long, stacked prompts only (None: one prompt, no padding)
    prompt_lengths: torch.Tensor | None = None  # [B] long, stacked prompts only
    _repeated: dict = field(default_factory=dict, repr=False, compare=False)  # batch -> per-prompt-repeated layers

    @property
    def num_prompts(self) -> int:
        return 1 if self.key_mask is None else self.key_mask.shape[0]

    def _rows_per_prompt(self, batch: int) -> int:
        if batch % self.num_prompts:
            raise ValueError(f"A batch of {batch} rows cannot be split evenly over {self.num_prompts} prompts.")
        return batch // self.num_prompts

    def expanded(self, batch: int):
        """A fresh ``DynamicCache`` holding the prompt(s) for ``batch`` rows (views for one prompt; for stacked prompts
        each prompt's rows repeated once per batch size and reused: the cache's updates concatenate new tensors and
        never write into these)."""
        from transformers import DynamicCache

        if self.key_mask is None:
            return DynamicCache([(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in self.layers])
        if batch not in self._repeated:  # stacked prompts: copied once per batch size, not at every forward
            rows = self._rows_per_prompt(batch)
            self._repeated[batch] = [(k.repeat_interleave(rows, 0), v.repeat_interleave(rows, 0)) for k, v in self.layers]
        return DynamicCache(self._repeated[batch])

    def first_logits(self, batch: int) -> torch.Tensor:
        """The logits of the first response token for each of ``batch`` rows, [batch, V] float32."""
        if self.key_mask is None:
            return self.next_logits.expand(batch, -1)
        return self.next_logits.repeat_interleave(self._rows_per_prompt(batch), 0)

    def positions(self, batch: int, start: int, length: int) -> torch.Tensor:
        """Position ids [batch, length] of ``length`` response tokens from response position ``start`` on."""
        steps = torch.arange(start, start + length, device=self.next_logits.device)[None]
        if self.key_mask is None:
            return (self.length + steps).expand(batch, -1)
        own = self.prompt_lengths.repeat_interleave(self._rows_per_prompt(batch), 0)[:, None]
        return own + steps

    def attention(self, batch: int, response: int) -> torch.Tensor | None:
        """The attention mask [batch, P + response] over the prompt and ``response`` response positions (None for
        one prompt: nothing is padded, so the model's own causal mask is the whole story)."""
        if self.key_mask is None:
            return None
        prompt = self.key_mask.repeat_interleave(self._rows_per_prompt(batch), 0)
        return torch.cat([prompt, torch.ones(batch, response, dtype=prompt.dtype, device=prompt.device)], 1)


def stack_prompts(caches: list[PromptCache]) -> PromptCache:
    """Several prompts' caches as one batch: keys/values left-padded with zeros to the longest prompt, masked out
    of attention by ``key_mask``. One cache is returned as it is. Each prompt was encoded on its own, so its
    keys/values are exactly those of its one-prompt run; only the response's attention sees the padding (masked)."""
    if not caches:
        raise ValueError("stack_prompts needs at least one prompt cache.")
    if len(caches) == 1:
        return caches[0]
    width = max(c.length for c in caches)
    layers = []
    for depth in range(len(caches[0].layers)):
        keys = [F.pad(c.layers[depth][0], (0, 0, width - c.length, 0)) for c in caches]
        values = [F.pad(c.layers[depth][1], (0, 0, width - c.length, 0)) for c in caches]
        layers.append((torch.cat(keys), torch.cat(values)))
    device = caches[0].next_logits.device
    key_mask = torch.zeros(len(caches), width, dtype=torch.long, device=device)
    for i, c in enumerate(caches):
        key_mask[i, width - c.length:] = 1
    return PromptCache(layers=layers, next_logits=torch.stack([c.next_logits for c in caches]), length=width,
                       key_mask=key_mask,
                       prompt_lengths=torch.tensor([c.length for c in caches], dtype=torch.long, device=device))


@torch.no_grad()
def encode_prompt(model: torch.nn.Module, prompt_ids: torch.Tensor, keep_hidden: bool = False) -> PromptCache:
    """Run the prompt [P] through ``model`` once (no gradient) and keep its KV cache."""
    from transformers import DynamicCache

    if prompt_ids.dim() != 1 or prompt_ids.numel() == 0:
        raise ValueError(f"prompt_ids must be a non-empty 1-D tensor of token ids, got shape {tuple(prompt_ids.shape)}")
    cache = DynamicCache()
    out = model(input_ids=prompt_ids[None], use_cache=True, output_hidden_states=keep_hidden, **{cache_kwarg(model): cache})
    layers = [(layer.keys.detach(), layer.values.detach()) for layer in cache.layers]
    hidden = out.hidden_states[-1].detach() if keep_hidden else None
    return PromptCache(layers=layers, next_logits=out.logits[0, -1].float(), length=prompt_ids.numel(), hidden=hidden)


def embed_scale(model: torch.nn.Module) -> float:
    """The factor the model's embedding layer applies on lookup (1 for most models; sqrt(H) for Gemma, whose
    ``embed_tokens(ids)`` is ``E[ids] * sqrt(H)``). ``inputs_embeds`` bypasses that layer, so :func:`forward_embeds`
    applies it: rows of E fed there reach the model exactly as the same token ids would."""
    layer = model.get_input_embeddings()
    # the plain float when the layer keeps one: float() of its tensor buffer would sync a GPU at every forward
    scale = getattr(layer, "scalar_embed_scale", getattr(layer, "embed_scale", None))
    return 1.0 if scale is None else float(scale)


def forward_embeds(model: torch.nn.Module, prompt: PromptCache, embeds: torch.Tensor, hidden: bool = False):
    """Run response embeddings [C, T, H] after the cached prompt(s). Returns the model output.

    ``embeds`` are rows of the input embedding matrix E (or soft mixtures ``probs @ E``), unscaled: the model's
    own lookup scale (:func:`embed_scale`) is applied here. Positions continue after each row's prompt; the
    prompt's keys/values are shared (not recomputed).
    """
    batch, length = embeds.shape[:2]
    scale = embed_scale(model)
    if scale != 1.0:
        embeds = embeds * scale
    mask = prompt.attention(batch, length)
    return model(
        inputs_embeds=embeds,
        position_ids=prompt.positions(batch, 0, length),
        use_cache=True,
        output_hidden_states=hidden,
        **({} if mask is None else {"attention_mask": mask}),
        **{cache_kwarg(model): prompt.expanded(batch)},
    )


def soft_embeddings(probs: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Soft tokens [C, T, V] (float32) -> input embeddings [C, T, H] in the model's dtype: probs @ E."""
    return probs.to(embedding.dtype) @ embedding


def next_token_logits(model: torch.nn.Module, prompt: PromptCache, tokens: torch.Tensor) -> torch.Tensor:
    """Logits that score each of the T response positions, [C, T, V] float32.

    ``tokens`` are soft or one-hot tokens [C, T, V], or hard token ids [C, T] (long), which are embedded by
    lookup: the same numbers as their one-hot rows times E, without the [C, T, V] @ [V, H] product.
    Position 0 is scored by the prompt's last logits, position t >= 1 by the model run on tokens 0..t-1, so only
    T-1 tokens are fed.
    """
    batch, length = tokens.shape[:2]
    first = prompt.first_logits(batch)[:, None]
    if length == 1:
        return first
    embedding = model.get_input_embeddings().weight
    if tokens.dtype == torch.long:
        embeds = F.embedding(tokens[:, :-1], embedding)
    else:
        embeds = soft_embeddings(tokens[:, :-1], embedding)
    rest = forward_embeds(model, prompt, embeds).logits.float()
    return torch.cat([first, rest], dim=1)


def sequence_logprob(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """log pi(y|x) summed over positions: sum_t sum_v y_tv log_softmax(logits_t + mask)_v. [C, T, V] x2 -> [C].

    ``tokens`` may also be hard ids [C, T] (long): the log-probabilities are then gathered, not summed over V.
    ``mask`` [V] (0 for allowed tokens, a large negative number for forbidden ones) renormalises every next-token
    distribution over the allowed tokens: the log-likelihood on SEA's response space (exactly T tokens, no
    special token), under which :func:`sample_response_space` is exact ancestral sampling.
    """
    if mask is not None:
        logits = logits + mask
    logp = F.log_softmax(logits, dim=-1)
    if tokens.dtype == torch.long:
        return logp.gather(-1, tokens[..., None]).squeeze(-1).sum(-1)
    return (tokens * logp).sum(dim=(-1, -2))


def special_mask(vocab_size: int, banned_ids, device=None, value: float = -1e10) -> torch.Tensor:
    """The additive mask [V] float32 of SEA's response space: ``value`` at ``banned_ids``, 0 elsewhere."""
    mask = torch.zeros(vocab_size, device=device)
    if banned_ids:
        mask[list(banned_ids)] = value
    return mask


@torch.no_grad()
def sample_response_space(model: torch.nn.Module, prompt: PromptCache, num: int, length: int,
                          generator: torch.Generator | None, banned_ids=(), temperature: float = 1.0,
                          batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact ancestral samples of pi(. | x) on SEA's response space: exactly ``length`` tokens, none in ``banned_ids``.

    Each next-token distribution is renormalised over the allowed tokens (the ``mask`` of
    :func:`sequence_logprob`), so the samples follow p(y|x) = prod_t softmax(logits_t + mask)[y_t] exactly
    (at ``temperature`` 1). Returns tokens [num, length] long and their log-probabilities [num] float32 under
    that masked distribution at temperature 1 (nats). Rows are drawn ``batch_size`` at a time.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    vocab = prompt.next_logits.shape[-1]
    mask = special_mask(vocab, banned_ids, prompt.next_logits.device)
    all_tokens, all_logp = [], []
    for start in range(0, num, batch_size):
        rows = min(batch_size, num - start)
        s = decode(model, prompt, rows, length, generator, temperature=temperature, banned_ids=banned_ids,
                   return_logits=True)
        logp = F.log_softmax(s.logits + mask, -1).gather(-1, s.tokens[..., None]).squeeze(-1).sum(-1)
        all_tokens.append(s.tokens)
        all_logp.append(logp)
    return torch.cat(all_tokens), torch.cat(all_logp)


def relax(z: torch.Tensor, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through relaxation of logits z [..., V]; returns (tokens, soft).

    tokens: forward value one-hot(argmax z), backward the Jacobian of soft = softmax(z / tau).
    soft is returned too, so callers that also need the relaxed distribution compute the softmax once.
    """
    soft = torch.softmax(z / tau, dim=-1)
    hard = F.one_hot(soft.detach().argmax(-1), z.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach()), soft  # exactly one-hot in the forward pass (no rounding)


def straight_through(z: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """Forward: one-hot(argmax z). Backward: the Jacobian of softmax(z / tau)."""
    return relax(z, tau)[0]


@dataclass
class Samples:
    """``num`` decoded continuations of one cache.

    tokens: [num, steps] long (positions after a row's stop token are meaningless); lengths: [num] response
    length of each row (tokens before its first stop token); stopped: [num] bool (row hit a stop token);
    logp: [num] float32, log pi(y|x) of each row's response tokens under the untempered, unmasked logits (nats;
    what ``metrics.response_logprob`` computes); continue_from(i): a PromptCache that continues row i (only with
    ``keep_cache=True``).
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    stopped: torch.Tensor
    logp: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [num, steps_run, V] float32 scores of each position (return_logits=True)
    _layers: list | None = None  # per layer: keys, values [num, heads, L, head_dim] (keep_cache=True)
    _next_logits: torch.Tensor | None = None
    _length: int = 0

    def ids(self, i: int) -> list[int]:
        return self.tokens[i, : int(self.lengths[i])].tolist()

    def continue_from(self, i: int) -> PromptCache:
        if self._layers is None:
            raise RuntimeError("decode(..., keep_cache=True) is needed to continue a sample.")
        layers = [(keys[i : i + 1], values[i : i + 1]) for keys, values in self._layers]
        return PromptCache(layers=layers, next_logits=self._next_logits[i], length=self._length)


def step_logits(model: torch.nn.Module, cache, tok: torch.Tensor, position, attention_mask=None) -> torch.Tensor:
    """One decoding step: run tokens ``tok`` [C] at ``position`` (an int, or position ids [C, 1]) on top of
    ``cache`` (extended in place), with ``attention_mask`` [C, past + 1] where prompts are padded; returns the
    next-token logits [C, V] float32."""
    pos = position if torch.is_tensor(position) else torch.full((tok.shape[0], 1), position, device=tok.device)
    mask = {} if attention_mask is None else {"attention_mask": attention_mask}
    return model(input_ids=tok[:, None], position_ids=pos, use_cache=True, **mask,
                 **{cache_kwarg(model): cache}).logits[:, -1].float()


def _allowed_scores(logits: torch.Tensor, *masks: torch.Tensor | None) -> torch.Tensor:
    """``logits`` [C, V] as float32 with the tokens of every given bool mask [V] set to -inf (None: no mask)."""
    scores = logits.float()
    for mask in masks:
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
    return scores


def _sampling_probs(scores: torch.Tensor, temperature: float, top_k: int = 0) -> torch.Tensor:
    """softmax(scores / temperature) [C, V], over the ``top_k`` highest scores only when ``top_k`` > 0."""
    scores = scores / temperature
    if top_k:
        kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[:, -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    return torch.softmax(scores, -1)


def _token_masks(vocab: int, stop_ids, banned_ids, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks [V] of the stop tokens and of the banned tokens."""
    stop_mask = torch.zeros(vocab, dtype=torch.bool, device=device)
    if stop_ids:
        stop_mask[torch.as_tensor(list(stop_ids), dtype=torch.long, device=device)] = True
    banned = torch.zeros(vocab, dtype=torch.bool, device=device)
    if len(banned_ids):
        banned[torch.as_tensor(list(banned_ids), dtype=torch.long, device=device)] = True
    return stop_mask, banned


@torch.no_grad()
def decode(model: torch.nn.Module, prompt: PromptCache, num: int, steps: int, generator: torch.Generator | None,
           temperature: float = 1.0, top_k: int = 0, stop_ids: list[int] | None = None, ban_stop_first: bool = True,
           keep_cache: bool = False, return_logits: bool = False, banned_ids=()) -> Samples:
    """Batched sampling (``temperature > 0``, optional top-k) or greedy decoding (``temperature == 0``).

    The prompt's KV cache is reused for all ``num`` rows; decoding ends as soon as every row has hit a stop token.
    ``keep_cache`` returns the KV cache so that a row can be continued later (chunk-level beam search); the
    model runs one token per row per step, and with ``keep_cache`` the last sampled token is run too (its
    logits start the next chunk). ``return_logits`` keeps the untempered logits that scored each position
    (the teacher-forced logits of the sampled sequence). ``banned_ids`` are never emitted, at any position (SEA's
    fixed-length response space: pass them instead of ``stop_ids``). Randomness comes from ``generator`` only.
    """
    from transformers import DynamicCache

    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    device = prompt.next_logits.device
    data = [(k.expand(num, *k.shape[1:]).contiguous(), v.expand(num, *v.shape[1:]).contiguous()) for k, v in prompt.layers]
    cache = DynamicCache(data)
    logits = prompt.next_logits.expand(num, -1)
    vocab = logits.shape[-1]
    stop = torch.tensor(stop_ids or [], dtype=torch.long, device=device)
    stop_mask, banned = _token_masks(vocab, stop_ids, banned_ids, device)
    any_banned = bool(banned.any())
    stopped = torch.zeros(num, dtype=torch.bool, device=device)
    lengths = torch.zeros(num, dtype=torch.long, device=device)
    logp = torch.zeros(num, device=device)
    tokens, all_logits = [], []
    t = -1
    for t in range(steps):
        if return_logits:
            all_logits.append(logits.float())
        scores = _allowed_scores(logits, stop_mask if t == 0 and ban_stop_first and stop.numel() else None,
                                 banned if any_banned else None)
        if temperature == 0:
            tok = scores.argmax(-1)
        else:
            tok = torch.multinomial(_sampling_probs(scores, temperature, top_k), 1, generator=generator).squeeze(-1)
        stopped = stopped | stop_mask[tok]
        lengths = lengths + (~stopped).long()
        token_logp = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None]).squeeze(-1)
        logp = logp + torch.where(stopped, torch.zeros_like(token_logp), token_logp)
        tokens.append(tok)
        if bool(stopped.all()) or (t + 1 == steps and not keep_cache):
            break
        logits = step_logits(model, cache, tok, prompt.length + t)
    toks = torch.stack(tokens, 1) if tokens else torch.zeros(num, 0, dtype=torch.long, device=device)
    return Samples(tokens=toks, lengths=lengths, stopped=stopped, logp=logp,
                   logits=torch.stack(all_logits, 1) if return_logits and all_logits else None,
                   _layers=[(layer.keys, layer.values) for layer in cache.layers] if keep_cache else None,
                   _next_logits=logits if keep_cache else None, _length=prompt.length + t + 1)


@torch.no_grad()
def sample_many(model: torch.nn.Module, caches: list[PromptCache], num: int, steps: int,
                generators: list[torch.Generator | None], temperature: float = 1.0, top_k: int = 0,
                stop_ids: list[int] | None = None, ban_stop_first: bool = True, banned_ids=(),
                keep_cache: bool = False) -> list[tuple[Samples, int]]:
    """:func:`decode` for several prompts in one batch: ``num`` rows per prompt (prompts left-padded by
    :func:`stack_prompts`), each prompt's rows drawn with its own generator, and a prompt whose rows have all
    stopped draws no more (as its own run ends there). Returns per prompt its Samples and the number of steps its
    own run takes, so block i equals ``decode(model, caches[i], num, steps, generators[i], ...)`` up to
    floating-point rounding of the batched forward (a draw that lands on a boundary between two tokens can flip).
    ``temperature == 0`` decodes greedily (the generators are not used). ``keep_cache`` runs the last sampled
    tokens too, as :func:`decode` does, so that each row can be continued (``Samples.continue_from``: its own
    positions only, the left padding dropped); a prompt's own run then takes ``steps`` forwards unless all its
    rows stopped.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if len(generators) != len(caches):
        raise ValueError(f"{len(generators)} generators for {len(caches)} prompts: pass one generator per prompt.")
    prompt, prompts = stack_prompts(caches), len(caches)
    rows = prompts * num
    device = prompt.next_logits.device
    cache = prompt.expanded(rows)
    logits = prompt.first_logits(rows)
    vocab = logits.shape[-1]
    stop_mask, banned = _token_masks(vocab, stop_ids, banned_ids, device)
    any_stop, any_banned = bool(stop_mask.any()), bool(banned.any())
    stopped = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    logp = torch.zeros(rows, device=device)
    ended = [0] * prompts  # steps each prompt's own run takes (0: still running)
    tokens = []
    t = -1
    for t in range(steps):
        scores = _allowed_scores(logits, stop_mask if t == 0 and ban_stop_first and any_stop else None,
                                 banned if any_banned else None)
        if temperature == 0:
            tok = scores.argmax(-1)
        else:
            probs = _sampling_probs(scores, temperature, top_k)
            tok = torch.zeros(rows, dtype=torch.long, device=device)
            for i, generator in enumerate(generators):
                if not ended[i]:
                    block = slice(i * num, (i + 1) * num)
                    tok[block] = torch.multinomial(probs[block], 1, generator=generator).squeeze(-1)
        live = torch.tensor([not e for e in ended], device=device).repeat_interleave(num)
        stopped = stopped | (stop_mask[tok] & live)
        lengths = lengths + (~stopped).long()
        token_logp = torch.log_softmax(logits.float(), -1).gather(-1, tok[:, None]).squeeze(-1)
        logp = logp + torch.where(stopped, torch.zeros_like(token_logp), token_logp)
        tokens.append(tok)
        for i in range(prompts):
            if not ended[i] and bool(stopped[i * num: (i + 1) * num].all()):
                ended[i] = t + 1
        if all(ended) or (t + 1 == steps and not keep_cache):
            break
        logits = step_logits(model, cache, tok, prompt.positions(rows, t, 1), prompt.attention(rows, t + 1))
    toks = torch.stack(tokens, 1)
    out = []
    for i in range(prompts):
        run = ended[i] or toks.shape[1]
        block = slice(i * num, (i + 1) * num)
        s = Samples(tokens=toks[block, :run], lengths=lengths[block], stopped=stopped[block], logp=logp[block])
        if keep_cache:  # this prompt's rows without their left padding: a cache of its own, as decode keeps it
            pad = prompt.length - caches[i].length
            s._layers = [(layer.keys[block, :, pad:], layer.values[block, :, pad:]) for layer in cache.layers]
            s._next_logits, s._length = logits[block], caches[i].length + t + 1
        out.append((s, run))
    return out


@dataclass
class BatchGreedy:
    """Greedy responses of a batch of prompts: ``ids[i]`` row i's response (before its first stop token),
    ``emitted[i]`` the tokens it produced (its stop token included), ``stopped[i]`` whether it hit one."""

    ids: list[list[int]]
    emitted: list[int]
    stopped: list[bool]


@torch.no_grad()
def greedy_batch(model: torch.nn.Module, prompts: list[torch.Tensor], steps: int, stop_ids=None,
                 ban_stop_first: bool = True, banned_ids=(), pad_id: int = 0) -> BatchGreedy:
    """Greedy decoding of several prompts of different lengths (1-D id tensors) in one left-padded batch.

    Row i gives the tokens of ``decode(model, encode_prompt(model, prompts[i]), 1, steps, None, temperature=0,
    stop_ids=..., banned_ids=...)``: the padding is masked out of attention and each row's position ids count its
    own tokens from 0, so only floating-point rounding differs (a near-tie between two tokens can flip). Decoding
    ends when every row has stopped or after ``steps`` tokens. One-token steps are memory-bound, so a batch shares
    its weight reads; ``scripts/benchmark_batching.py`` measures the gain in prompts per minute.
    """
    from transformers import DynamicCache

    if not prompts or any(p.dim() != 1 or p.numel() == 0 for p in prompts):
        raise ValueError("prompts must be a non-empty list of non-empty 1-D tensors of token ids.")
    device, rows, width = prompts[0].device, len(prompts), max(p.numel() for p in prompts)
    ids = torch.full((rows, width), int(pad_id), dtype=torch.long, device=device)
    mask = torch.zeros(rows, width, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        ids[i, width - p.numel():], mask[i, width - p.numel():] = p, 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    kw = {cache_kwarg(model): cache}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **kw).logits[:, -1]
    stop_mask, banned = _token_masks(logits.shape[-1], stop_ids, banned_ids, device)
    next_pos = mask.sum(-1, keepdim=True)  # [B, 1]: the first response position of each row
    stopped = torch.zeros(rows, dtype=torch.bool, device=device)
    lengths = torch.zeros(rows, dtype=torch.long, device=device)
    emitted = torch.zeros(rows, dtype=torch.long, device=device)
    tokens = []
    for t in range(steps):
        first = stop_mask if t == 0 and ban_stop_first and bool(stop_mask.any()) else None
        tok = _allowed_scores(logits, first, banned if bool(banned.any()) else None).argmax(-1)
        emitted = emitted + (~stopped).long()
        stopped = stopped | stop_mask[tok]
        lengths = lengths + (~stopped).long()
        tokens.append(tok)
        if bool(stopped.all()) or t + 1 == steps:
            break
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype, device=device)], 1)
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=next_pos + t, use_cache=True,
                       **kw).logits[:, -1]
    toks = torch.stack(tokens, 1)
    return BatchGreedy(ids=[toks[i, : int(lengths[i])].tolist() for i in range(rows)], emitted=emitted.tolist(),
                       stopped=stopped.tolist())


@torch.no_grad()
def topk_decode(model: torch.nn.Module, prompt: PromptCache, z: torch.Tensor, k: int,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """The released code's ``decode_with_model_topk``: logits z [C, T, V] -> token ids [C, T], left to right.

    Token t is the argmax of z[:, t] among pi_ref's ``k`` most likely next tokens *given the decoded prefix*
    y_<t, so every decoded token is in pi_ref's top-k after its own prefix. ``mask`` [V] (0 or a large negative
    value, SEA's response space) is added to pi_ref's logits first, so a banned token is never in the top-k.
    Runs the model on one token per row per step (T - 1 steps after the cached prompt).
    """
    batch, length, vocab = z.shape
    cache = prompt.expanded(batch)
    logits = prompt.first_logits(batch).float()
    out = []
    for t in range(length):
        scores = logits + (mask if mask is not None else 0.0)
        top = scores.topk(min(k, vocab), -1).indices  # [C, k]
        tok = top.gather(-1, z[:, t].gather(-1, top).argmax(-1, keepdim=True)).squeeze(-1)
        out.append(tok)
        if t + 1 < length:
            logits = step_logits(model, cache, tok, prompt.positions(batch, t, 1), prompt.attention(batch, t + 1))
    return torch.stack(out, 1)


def sample_tokens(model: torch.nn.Module, prompt: PromptCache, num: int, length: int, generator: torch.Generator,
                  temperature: float = 1.0, top_k: int = 0, stop_ids: list[int] | None = None, banned_ids=()):
    """Fixed-length view of :func:`decode` (the call SEA's policy initialisation makes).

    Returns tokens [num, length] (0 after a row stops), logits [num, length, V] float32 (0 after decoding ended)
    and stopped [num, length] bool (True from a row's stop token on). With ``banned_ids`` (and no ``stop_ids``)
    every row runs the full length on the response space.
    """
    s = decode(model, prompt, num, length, generator, temperature=temperature, top_k=top_k, stop_ids=stop_ids,
               return_logits=True, banned_ids=banned_ids)
    run = s.tokens.shape[1]
    tokens = torch.zeros(num, length, dtype=torch.long, device=s.tokens.device)
    tokens[:, :run] = s.tokens
    logits = torch.zeros(num, length, s.logits.shape[-1], device=s.logits.device)
    logits[:, :run] = s.logits
    stopped = torch.arange(length, device=tokens.device)[None] >= s.lengths[:, None]
    return tokens.masked_fill(stopped, 0), logits, stopped
