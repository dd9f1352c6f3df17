"""On-policy preference data for the harmlessness reward (chapter 3): splits, answers, refusals, broken text.

The reward must rank, for a harmful request, a refusal above the policy's compliant answer, and any fluent text
above broken text, while for a benign request a helpful answer stays above a refusal. The data below makes
exactly these comparisons from prompts that are in no evaluation set:

* Do-Not-Answer (939 harmful requests, :func:`sea_minimal.data.load_do_not_answer`), split by prompt into
  ``train`` / ``tune`` / ``heldout`` (:func:`split_prompts`, seeded; the rows of the contrast reward's context
  are left out, the four tuning prompts of ``grids/tune_exact_pi_star.yaml`` are put in ``tune``);
* GSM8K's last :data:`BENIGN_COUNT` test questions as the benign control (split the same way); TruthfulQA is
  used for evaluation only.

Kinds of answer (one example row each, its ``kind``), all text that a reward sees at SEA time:

* ``sample``: the policy's own answer (temperature 1, up to ``max_new_tokens``), labelled ``refusal`` or
  ``compliant`` by :func:`sea_minimal.judges.is_refusal`;
* ``prefill_refusal``: the policy's own continuation of a refusal opener from :data:`REFUSAL_PREFILLS`;
* ``written_refusal``: a refusal composed from :data:`REFUSAL_OPENERS`, :data:`REFUSAL_REASONS` and
  :data:`REFUSAL_OFFERS`;
* ``shuffled``: the tokens of a fluent answer (a sample or a refusal) in random order;
* ``repeated``: one short n-gram of a sample repeated to the sample's length;
* ``truncated``: the first 1-4 words of a sample (too short to be an answer);
* ``salad``: broken text an optimiser found when pushing on a reward (tuning prompts only);
* ``helpful``: the policy's own answer to a benign question.

Only prompt ids and answers are stored (``results/reward_model/examples.jsonl``); prompt texts are read from the
data folder, which is never copied into the repository.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import torch

from .judges import is_refusal
from .models import Policy

#: The three splits, by prompt (no prompt has answers in two splits).
SPLITS = ("train", "tune", "heldout")
#: The share of prompts that goes to each split.
SPLIT_FRACTIONS = {"train": 0.6, "tune": 0.2, "heldout": 0.2}
#: Do-Not-Answer rows quoted in the contrast reward's context (``contrast.REFUSAL_TURNS``), kept out of every split.
CONTEXT_ROWS = (578, 582, 126)
#: Do-Not-Answer rows already used for tuning (``grids/tune_exact_pi_star.yaml``), always in ``tune``.
TUNING_ROWS = (395, 779, 867, 914)
#: The size of the benign control, GSM8K's last ``BENIGN_COUNT`` test questions (ids 1319 - BENIGN_COUNT to 1318).
BENIGN_COUNT = 300
GSM8K_SIZE = 1319
FLUENT_KINDS = ("sample", "prefill_refusal", "written_refusal")
BROKEN_KINDS = ("shuffled", "repeated", "truncated", "salad")

#: Openers the policy continues to produce its own refusals (varied, so no one sentence marks a refusal).
REFUSAL_PREFILLS = (
    "I'm sorry, but I can't help with that.", "I can't help with this request, because",
    "I won't provide that, because", "Unfortunately, I cannot assist with that.",
    "As an AI, I must decline this request.", "I'm not able to help with that.", "No, I will not help with this.",
    "I must refuse this request.", "That's not something I can help with.", "I'd rather not answer that, since",
)
#: The written refusals' first sentences (:func:`written_refusal`).
REFUSAL_OPENERS = (
    "I'm sorry, but I can't help with that.", "I can't assist with this request.", "I won't help with that.",
    "Sorry, I cannot provide that.", "I'm not able to help with this.", "I must decline this request.",
    "That's not something I can help with.", "Unfortunately, I can't do that.", "I'd rather not help with this one.",
    "No, I can't provide that information.", "I have to say no to this request.", "I can't go along with this.",
)
#: The written refusals' reasons ("" = none).
REFUSAL_REASONS = (
    "It could cause real harm to people.", "It may be illegal and could hurt someone.", "Sharing this would be unsafe.",
    "This could be used to hurt others.", "It goes against my guidelines on safety.",
    "It would not be responsible of me.", "Requests like this can put people at risk.",
    "I don't produce content that is hurtful or dangerous.", "It could violate someone's privacy or safety.", "",
)
#: The written refusals' closing offers ("" = none).
REFUSAL_OFFERS = (
    "If you have another question, I'm happy to help.", "I can share general safety information instead.",
    "Is there something else I can do for you?",
    "If you're going through something difficult, please consider talking to someone you trust or a professional.",
    "I'd be glad to help with a related, safe topic.", "Let me know if I can help in another way.", "",
)


@dataclass(frozen=True)
class Example:
    """One answer to one prompt. ``label``: ``refusal`` / ``compliant`` / ``broken`` / ``helpful``."""

    source: str  # "do_not_answer" or "gsm8k"
    prompt_id: int
    split: str
    kind: str
    label: str
    text: str

    def to_dict(self) -> dict:
        return {"source": self.source, "prompt_id": self.prompt_id, "split": self.split, "kind": self.kind,
                "label": self.label, "text": self.text}


def split_prompts(ids: Sequence[int], seed: int = 0, fractions: dict[str, float] = SPLIT_FRACTIONS,
                  exclude: Iterable[int] = (), force: dict[str, Iterable[int]] | None = None) -> dict[str, list[int]]:
    """A seeded split of prompt ``ids`` into :data:`SPLITS` by ``fractions``; ``exclude`` ids are in none,
    ``force`` puts given ids in a given split first. Returns sorted id lists; every id lands in exactly one."""
    if abs(sum(fractions.values()) - 1) > 1e-9 or set(fractions) != set(SPLITS):
        raise ValueError(f"fractions must give {SPLITS} shares summing to 1, got {fractions}")
    excluded = set(exclude)
    forced = {s: [i for i in (force or {}).get(s, ()) if i in set(ids) and i not in excluded] for s in SPLITS}
    taken = {i for v in forced.values() for i in v}
    rest = [i for i in ids if i not in excluded and i not in taken]
    random.Random(seed).shuffle(rest)
    total = len(rest) + len(taken)
    out, start = {}, 0
    for s in SPLITS:
        want = round(total * fractions[s]) - len(forced[s]) if s != SPLITS[-1] else len(rest) - start
        want = max(0, want)
        out[s] = sorted(forced[s] + rest[start: start + want])
        start += want
    return out


def reward_splits(seed: int = 0) -> dict[str, dict[str, list[int]]]:
    """The committed splits: ``{"do_not_answer": {split: ids}, "gsm8k": {split: ids}}`` (see the module doc)."""
    from .data import load_do_not_answer

    harmful = [r["id"] for r in load_do_not_answer()]
    benign = list(range(GSM8K_SIZE - BENIGN_COUNT, GSM8K_SIZE))
    return {"do_not_answer": split_prompts(harmful, seed, exclude=CONTEXT_ROWS, force={"tune": TUNING_ROWS}),
            "gsm8k": split_prompts(benign, seed)}


def written_refusal(rng: random.Random) -> str:
    """One refusal composed from an opener, a reason and an offer (12 x 10 x 7 variants)."""
    parts = [rng.choice(REFUSAL_OPENERS), rng.choice(REFUSAL_REASONS), rng.choice(REFUSAL_OFFERS)]
    return " ".join(p for p in parts if p)


def broken_variants(policy: Policy, text: str, rng: random.Random) -> dict[str, str]:
    """Broken versions of a fluent answer: ``shuffled`` (its tokens permuted), ``repeated`` (one of its 1-3 token
    n-grams repeated to its length) and ``truncated`` (its first 1-4 words)."""
    ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) < 4:
        ids = ids * 4
    shuffled = list(ids)
    while len(set(shuffled)) > 1 and shuffled == ids:
        rng.shuffle(shuffled)
    n = rng.randint(1, 3)
    start = rng.randrange(0, len(ids) - n + 1)
    gram = ids[start: start + n]
    repeated = (gram * (len(ids) // n + 1))[: len(ids)]
    words = text.split()
    truncated = " ".join(words[: rng.randint(1, min(4, max(1, len(words))))])
    return {"shuffled": policy.decode(shuffled), "repeated": policy.decode(repeated), "truncated": truncated}


@torch.no_grad()
def generate(policy: Policy, prompts: Sequence[str], prefills: Sequence[str] | None = None, num: int = 1,
             max_new_tokens: int = 48, seed: int = 0, batch_size: int = 48, temperature: float = 1.0) -> list[list[str]]:
    """``num`` sampled answers per prompt (pure sampling at ``temperature``), batched across prompts with left
    padding (``transformers.generate``). Returns one list of ``num`` texts per prompt, each prefilled text
    starting with its prefill. Answers end at the end-of-turn token or after ``max_new_tokens``."""
    tok = policy.tokenizer
    prefills = list(prefills) if prefills is not None else [""] * len(prompts)
    rows = [(i, policy.encode_prompt(p, prefill=f).tolist()) for i, (p, f) in enumerate(zip(prompts, prefills))
            for _ in range(num)]
    rows.sort(key=lambda r: len(r[1]))  # similar lengths in a batch: less padding
    out: list[list[str]] = [[] for _ in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else policy.end_of_turn_id
    torch.manual_seed(seed)
    for start in range(0, len(rows), batch_size):
        batch = rows[start: start + batch_size]
        width = max(len(r[1]) for r in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for j, (_, r) in enumerate(batch):
            ids[j, width - len(r):] = torch.tensor(r)
            mask[j, width - len(r):] = 1
        gen = policy.model.generate(input_ids=ids.to(policy.device), attention_mask=mask.to(policy.device),
                                    do_sample=True, temperature=temperature, top_k=0, top_p=1.0,
                                    max_new_tokens=max_new_tokens, eos_token_id=policy.end_of_turn_id,
                                    pad_token_id=pad)
        for j, (i, _) in enumerate(batch):
            text = tok.decode(gen[j, width:], skip_special_tokens=True).strip()
            out[i].append((prefills[i] + " " + text).strip() if prefills[i] else text)
    return out


def harmful_examples(policy: Policy, rows: Sequence[dict], split: str, seed: int = 0, samples: int = 2,
                     max_new_tokens: int = 48, batch_size: int = 48) -> list[Example]:
    """All example kinds except ``salad`` for Do-Not-Answer ``rows`` (dicts with ``id`` and ``prompt``)."""
    rng = random.Random(seed)
    prompts = [r["prompt"] for r in rows]
    answers = generate(policy, prompts, num=samples, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)
    prefills = [rng.choice(REFUSAL_PREFILLS) for _ in rows]
    refusals = generate(policy, prompts, prefills, num=1, max_new_tokens=max_new_tokens, seed=seed + 1,
                        batch_size=batch_size)
    out = []
    for row, texts, own in zip(rows, answers, refusals):
        def add(kind, label, text):
            out.append(Example("do_not_answer", int(row["id"]), split, kind, label, text))

        for text in texts:
            add("sample", "refusal" if is_refusal(text) else "compliant", text)
        add("prefill_refusal", "refusal", own[0])
        written = written_refusal(rng)
        add("written_refusal", "refusal", written)
        broken = broken_variants(policy, texts[0], rng)
        for kind in ("repeated", "truncated", "shuffled"):
            add(kind, "broken", broken[kind])
        add("shuffled", "broken", broken_variants(policy, rng.choice([written, own[0]]), rng)["shuffled"])
    return out


def benign_examples(policy: Policy, rows: Sequence[dict], split: str, seed: int = 0, max_new_tokens: int = 48,
                    batch_size: int = 48) -> list[Example]:
    """For benign questions: the policy's own answer (``helpful``, or ``refusal`` if it declines) and a written
    refusal."""
    rng = random.Random(seed)
    answers = generate(policy, [r["prompt"] for r in rows], num=1, max_new_tokens=max_new_tokens, seed=seed,
                       batch_size=batch_size)
    out = []
    for row, (text,) in zip(rows, answers):
        out.append(Example("gsm8k", int(row["id"]), split, "sample", "refusal" if is_refusal(text) else "helpful", text))
        out.append(Example("gsm8k", int(row["id"]), split, "written_refusal", "refusal", written_refusal(rng)))
    return out


def salad_examples(texts: Sequence[str], prompt_ids: Sequence[int], split: str, seed: int = 0) -> list[Example]:
    """Broken texts an optimiser produced, each paired with a prompt drawn (seeded) from ``prompt_ids``."""
    rng = random.Random(seed)
    return [Example("do_not_answer", int(rng.choice(list(prompt_ids))), split, "salad", "broken", t) for t in texts]


def write_examples(path: str | Path, examples: Iterable[Example], append: bool = True) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")


def read_examples(path: str | Path) -> list[Example]:
    with open(path, encoding="utf-8") as fh:
        return [Example(**json.loads(line)) for line in fh if line.strip()]
