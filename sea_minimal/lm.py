"""Language-model plumbing shared by the sampler, the rewards and the baselines.

Shapes: C chains, P prompt tokens, T response tokens, V vocabulary, H hidden size.
Everything that leaves this module (logits, log-probabilities) is float32, whatever the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .models import cache_kwarg


@dataclass
class PromptCache:
    """The prompt encoded once: its per-layer keys/values (batch 1, detached) and the next-token logits.

    ``forward_response`` rebuilds a fresh cache object from these tensors for every call, so the stored
    tensors are never mutated and can be reused across iterations and chains.
    """

    layers: list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values [1, heads, P, head_dim]
    next_logits: torch.Tensor  # [V] float32: logits of the first response token given the prompt
    length: int  # P
    hidden: torch.Tensor | None = None  # [1, P, H] last hidden states (used by backbone rewards)

    def expanded(self, batch: int):
        """A fresh ``DynamicCache`` holding the prompt for ``batch`` rows (views, no copy)."""
        from transformers import DynamicCache

        data = [(k.expand(batch, *k.shape[1:]), v.expand(batch, *v.shape[1:])) for k, v in self.layers]
        return DynamicCache(data)


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


def forward_embeds(model: torch.nn.Module, prompt: PromptCache, embeds: torch.Tensor, hidden: bool = False):
    """Run response embeddings [C, T, H] after the cached prompt. Returns the model output.

    Positions continue after the prompt; the prompt's keys/values are shared (not recomputed, not copied).
    """
    batch, length = embeds.shape[:2]
    positions = torch.arange(prompt.length, prompt.length + length, device=embeds.device)[None].expand(batch, -1)
    return model(
        inputs_embeds=embeds,
        position_ids=positions,
        use_cache=True,
        output_hidden_states=hidden,
        **{cache_kwarg(model): prompt.expanded(batch)},
    )


def soft_embeddings(probs: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
    """Soft tokens [C, T, V] (float32) -> input embeddings [C, T, H] in the model's dtype: probs @ E."""
    return probs.to(embedding.dtype) @ embedding


def next_token_logits(model: torch.nn.Module, prompt: PromptCache, tokens: torch.Tensor) -> torch.Tensor:
    """Logits that score each of the T response positions, [C, T, V] float32.

    ``tokens`` are soft or one-hot tokens [C, T, V]. Position 0 is scored by the prompt's last logits,
    position t >= 1 by the model run on tokens 0..t-1, so only T-1 tokens are fed.
    """
    batch, length, _ = tokens.shape
    first = prompt.next_logits.expand(batch, 1, -1)
    if length == 1:
        return first
    embeds = soft_embeddings(tokens[:, :-1], model.get_input_embeddings().weight)
    rest = forward_embeds(model, prompt, embeds).logits.float()
    return torch.cat([first, rest], dim=1)


def sequence_logprob(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(y|x) summed over positions: sum_t sum_v y_tv log_softmax(logits_t)_v. [C, T, V] x2 -> [C]."""
    return (tokens * F.log_softmax(logits, dim=-1)).sum(dim=(-1, -2))


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


@torch.no_grad()
def sample_tokens(
    model: torch.nn.Module,
    prompt: PromptCache,
    num: int,
    length: int,
    generator: torch.Generator,
    temperature: float = 1.0,
    top_k: int = 0,
    banned_ids: list[int] | None = None,
    stop_ids: list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``num`` continuations of ``length`` tokens from the model, batched, with the prompt's KV cache.

    ``temperature=0`` means greedy. Uses ``generator`` only, so results are reproducible per seed.
    Returns:
        tokens [num, length] long, logits [num, length, V] float32 (the teacher-forced logits of the sampled
        sequence, untempered), and stopped [num, length] bool (True from the first stop token on).
    """
    from transformers import DynamicCache

    data = [(k.expand(num, *k.shape[1:]).contiguous(), v.expand(num, *v.shape[1:]).contiguous()) for k, v in prompt.layers]
    cache = DynamicCache(data)
    logits_t = prompt.next_logits.expand(num, -1)
    tokens, all_logits = [], []
    stopped = torch.zeros(num, dtype=torch.bool, device=logits_t.device)
    stopped_hist = []
    ban = torch.zeros(logits_t.shape[-1], device=logits_t.device)
    if banned_ids:
        ban[banned_ids] = float("-inf")
    for t in range(length):
        all_logits.append(logits_t)
        scores = logits_t + ban
        if temperature == 0:
            tok = scores.argmax(-1)
        else:
            scores = scores / temperature
            if top_k:
                kth = scores.topk(top_k, dim=-1).values[:, -1:]
                scores = scores.masked_fill(scores < kth, float("-inf"))
            tok = torch.multinomial(torch.softmax(scores, -1), 1, generator=generator).squeeze(-1)
        if stop_ids:
            stopped = stopped | torch.isin(tok, torch.tensor(stop_ids, device=tok.device))
        stopped_hist.append(stopped.clone())
        tokens.append(tok)
        if t + 1 < length:
            pos = torch.full((num, 1), prompt.length + t, device=tok.device)
            out = model(input_ids=tok[:, None], position_ids=pos, use_cache=True, **{cache_kwarg(model): cache})
            logits_t = out.logits[:, -1].float()
    return torch.stack(tokens, 1), torch.stack(all_logits, 1), torch.stack(stopped_hist, 1)
