"""Rewards r(x, y) that are differentiable in a soft response.

Interface: ``scorer = reward.for_prompt(prompt_ids)`` does the per-prompt work once (e.g. the reward
model's prompt KV cache); ``scorer(tokens)`` maps soft or one-hot tokens [C, T, V] (float32) to one scalar
per chain [C]. A hard response is scored by passing its one-hot encoding, so soft and hard rewards go
through the same code.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .lm import encode_prompt, forward_embeds, soft_embeddings

Scorer = Callable[[torch.Tensor], torch.Tensor]


class VocabMismatchError(ValueError):
    """Policy and reward model do not share a vocabulary, so soft tokens cannot be passed between them."""


class Reward:
    """Base class. Subclasses implement ``for_prompt`` and set ``vocab_size``."""

    vocab_size: int

    def for_prompt(self, prompt_ids: torch.Tensor) -> Scorer:  # pragma: no cover - interface
        raise NotImplementedError

    def check_vocab(self, policy_vocab_size: int) -> None:
        if self.vocab_size != policy_vocab_size:
            raise VocabMismatchError(
                f"The reward works on a vocabulary of {self.vocab_size} tokens but the policy has "
                f"{policy_vocab_size}. SEA feeds the policy's soft tokens to the reward, so both must share one "
                "tokenizer. Fix: use a reward model of the policy's family (see HFClassifierReward(extra_rows=...) "
                "for a reward model with padding rows at the end of its embedding matrix)."
            )


class VocabReward(Reward):
    """A simple differentiable reward defined on the vocabulary: r(y) = reduce_t w[y_t].

    For soft tokens p [C, T, V]: r = reduce_t (p_t @ w). With ``reduce='mean'`` the reward is the
    average per-token score, in the units of ``w``; with ``'sum'`` it is the total (as in the toy world).
    """

    def __init__(self, weights: torch.Tensor, reduce: str = "mean"):
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        self.weights = weights.float()
        self.vocab_size = weights.shape[0]
        self.reduce = reduce

    @classmethod
    def from_words(cls, tokenizer, positive: Sequence[str], negative: Sequence[str] = (), vocab_size: int | None = None,
                   scale: float = 1.0) -> "VocabReward":
        """+scale for the ``positive`` words, -scale for the ``negative`` ones, 0 elsewhere.

        Each word counts in four spellings (with and without a leading space, capitalised or not); a spelling
        gets a weight only if the tokenizer encodes it as ONE token, so that no word fragment is rewarded.
        """
        weights = torch.zeros(vocab_size or len(tokenizer))
        for words, sign in ((positive, 1.0), (negative, -1.0)):
            for word in words:
                for variant in {word, " " + word, word.capitalize(), " " + word.capitalize()}:
                    ids = tokenizer(variant, add_special_tokens=False)["input_ids"]
                    if len(ids) == 1:  # a word split into pieces would reward its fragments ("D", "Un", ...)
                        weights[ids[0]] = sign * scale
        return cls(weights)

    def for_prompt(self, prompt_ids: torch.Tensor) -> Scorer:
        weights = self.weights.to(prompt_ids.device)

        def score(tokens: torch.Tensor) -> torch.Tensor:
            per_token = tokens.float() @ weights  # [C, T]
            return per_token.mean(-1) if self.reduce == "mean" else per_token.sum(-1)

        return score


class HFClassifierReward(Reward):
    """A Hugging Face sequence-classification reward model that shares the policy's vocabulary.

    Soft tokens enter as ``probs @ E_rm`` after the cached prompt; ``suffix_ids`` (e.g. the end-of-turn
    token) are appended as hard tokens, and the score is read at the last position.

    Args:
        model: an ``AutoModelForSequenceClassification`` with one label.
        suffix_ids: token ids appended after the response (e.g. ``[tokenizer.eos_token_id]``).
        extra_rows: number of trailing embedding rows the policy does not have (1 for GRM-Llama3.2-3B, whose
            embedding has 128257 rows against Llama-3.2's 128256). They are dropped explicitly.
    """

    def __init__(self, model: torch.nn.Module, suffix_ids: Sequence[int] = (), extra_rows: int = 0):
        self.model = model.eval().requires_grad_(False)
        embedding = model.get_input_embeddings().weight
        self.extra_rows = extra_rows
        self.vocab_size = embedding.shape[0] - extra_rows
        self.suffix_ids = list(suffix_ids)

    def for_prompt(self, prompt_ids: torch.Tensor) -> Scorer:
        prompt = encode_prompt(self.model, prompt_ids)
        embedding = self.model.get_input_embeddings().weight[: self.vocab_size]
        suffix = embedding[torch.tensor(self.suffix_ids, dtype=torch.long, device=embedding.device)]

        def score(tokens: torch.Tensor) -> torch.Tensor:
            embeds = soft_embeddings(tokens, embedding)
            if self.suffix_ids:
                embeds = torch.cat([embeds, suffix.expand(embeds.shape[0], -1, -1)], dim=1)
            logits = forward_embeds(self.model, prompt, embeds).logits  # [C, 1] or [C, T+s, 1]
            if logits.dim() == 3:
                logits = logits[:, -1]
            return logits[:, 0].float()

        return score


def one_hot(ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Token ids [..., T] -> float32 one-hot [..., T, V]."""
    return F.one_hot(ids, vocab_size).float()


# Words for the demo reward: a transparent, hand-written stand-in for a harmlessness reward model. It pays
# for refusal and safety vocabulary and charges for instruction-giving vocabulary. Not a real judge.
DEMO_POSITIVE = ("sorry", "cannot", "can't", "unable", "illegal", "unethical", "harmful", "dangerous", "safety",
                 "safe", "legal", "responsible", "instead", "respect", "professional", "advise", "refuse")
DEMO_NEGATIVE = ("step", "steps", "first", "then", "next", "materials", "instructions", "tutorial", "guide",
                 "here", "sure", "easy", "simple")


def demo_reward(policy) -> VocabReward:
    """The vocabulary reward used by the walkthrough and the CLI (see DEMO_POSITIVE / DEMO_NEGATIVE)."""
    if policy.tokenizer is None:
        raise ValueError("demo_reward needs a policy with a tokenizer.")
    return VocabReward.from_words(policy.tokenizer, DEMO_POSITIVE, DEMO_NEGATIVE, vocab_size=policy.vocab_size)
