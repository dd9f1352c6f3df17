"""Exact-answer checking for GSM8K and MATH-500: the final answer of a free-text solution against the reference.

:func:`extract_answer` takes, in this order: the last ``\\boxed{...}`` (balanced braces), the text after the last
``####``, the last "the (final) answer is ...", and otherwise the last number in the text. :func:`normalize`
writes a LaTeX or plain answer in one canonical form (no ``$``, ``\\left``/``\\right``, ``\\text{}``, units of degrees,
``\\dfrac`` -> ``\\frac``, thousands separators dropped, a leading ``x =`` dropped, ...). :func:`is_correct` compares two
answers as numbers when both parse as one (integers, decimals, ``a/b``, ``\\frac{a}{b}``, percentages as written),
within 1e-6 relative, and otherwise as normalised strings. It is a strict checker: ``\\sqrt{2}/2`` and
``\\frac{\\sqrt{2}}{2}`` are equal only if they normalise to one string (no symbolic algebra), so it can count a right
answer as wrong, never a wrong answer as right by accident of format.
"""

from __future__ import annotations

import re
from fractions import Fraction

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_ANSWER_IS = re.compile(r"(?:final answer|the answer|answer)\s*(?:is\s*:?|:|=)\s*(.+)", re.IGNORECASE)
_UNIT = re.compile(r"(-?[\d./]+)[a-zA-Z]{2,}")  # "1,250 dollars", "12 apples": a number and a unit


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` in ``text`` (nested braces kept), or None."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    if not starts:
        return None
    depth, start = 1, starts[-1]
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start:i]
    return None  # unbalanced: the answer was cut off


def extract_answer(text: str) -> str | None:
    """The final answer a solution states (see the module docstring for the order), or None if it has none."""
    return locate_answer(text)[0]


def locate_answer(text: str) -> tuple[str | None, str | None]:
    """(answer, where it came from): "boxed", "####", "answer is", "last number" (the fallback: a solution that
    states no final answer, e.g. one cut off at the token cap, is read at its last number), or (None, None)."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip(), "boxed"
    if "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        if tail:
            return tail.splitlines()[0].strip(), "####"
    said = list(_ANSWER_IS.finditer(text))
    if said:
        tail = said[-1].group(1).strip().splitlines()[0]
        tail = re.split(r"(?<=[^\d])\.\s|\.$", tail)[0].strip()  # up to the end of the sentence (not "1.5")
        if tail:
            return tail, "answer is"
    numbers = _NUMBER.findall(text)
    return (numbers[-1], "last number") if numbers else (None, None)


def _strip_command(s: str, name: str) -> str:
    """``\\name{x}`` -> ``x`` for every occurrence (one level of braces)."""
    return re.sub(r"\\" + name + r"\s*\{([^{}]*)\}", r"\1", s)


def normalize(answer: str) -> str:
    """A canonical string form of an answer (LaTeX or plain), for exact comparison."""
    s = answer.strip()
    s = s.replace("$", "").replace("\\!", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    s = s.replace("\\left", "").replace("\\right", "").replace("\\displaystyle", "")
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    for name in ("text", "textbf", "mathrm", "mbox", "boxed"):
        s = _strip_command(s, name)
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s).replace("°", "").replace("degrees", "")
    s = s.replace("\\%", "%")
    s = re.sub(r"\\sqrt(\d+)", r"\\sqrt{\1}", s)  # \sqrt2 -> \sqrt{2}
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)  # \frac12 -> \frac{1}{2}
    s = re.sub(r"^[a-zA-Z]\s*=\s*", "", s)  # "x = 5" -> "5"
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)  # thousands separators: 1,000 -> 1000 (not "1,-2" or "3, 5")
    s = re.sub(r"\s+", "", s).rstrip(".")
    if s.startswith("{") and s.endswith("}") and s.count("{") == 1:
        s = s[1:-1]
    return s


def to_number(answer: str):
    """The value (an exact fraction, or a float for decimals) of an answer that is a single number (``12``, ``-3.5``,
    ``1,000``, ``3/4``, ``\\frac{3}{4}``, ``-\\frac{3}{4}``, ``50%`` read as 50, a leading ``$``, a trailing unit word
    as in ``12 apples``), else None."""
    s = normalize(answer).replace("%", "")
    unit = _UNIT.fullmatch(s) if "\\" not in answer else None
    if unit:
        s = unit.group(1)
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        num, den = int(m.group(2)), int(m.group(3))
        return None if den == 0 else (-1 if m.group(1) else 1) * Fraction(num, den)
    m = re.fullmatch(r"(-?\d+)/(-?\d+)", s)
    if m:
        return None if int(m.group(2)) == 0 else Fraction(int(m.group(1)), int(m.group(2)))
    if re.fullmatch(r"-?\d+", s):
        return Fraction(int(s))
    if re.fullmatch(r"-?\d*\.\d+|-?\d+\.", s):
        return float(s)
    return None


def is_correct(predicted: str | None, reference: str) -> bool:
    """Whether a predicted final answer equals the reference: as numbers when both are one, else as strings."""
    if predicted is None:
        return False
    a, b = to_number(predicted), to_number(reference)
    if a is not None and b is not None:
        return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b)))
    return normalize(predicted) == normalize(reference)


def check_solution(text: str, reference: str) -> dict:
    """{answer: the extracted final answer (or None), source: where it came from (see :func:`locate_answer`),
    correct: bool} for one model solution."""
    answer, source = locate_answer(text)
    return {"answer": answer, "source": source, "correct": is_correct(answer, reference)}


#: The paper's reasoning table (LLaMA-3.2-1B-Instruct, accuracy %, the first 200 problems of each set).
PAPER_REASONING = {"gsm8k": {"SFT": 32.0, "BoN-64": 57.0, "SEA": 58.0},
                   "math500": {"SFT": 27.5, "BoN-64": 16.0, "SEA": 32.0}}
#: The testable floor, in percent. A task is testable with a policy when the upper end of its greedy accuracy's 95 %
#: interval reaches this share; below it the policy is at the floor, and a reward-guided method has (almost) no right
#: answer to move towards. Fixed before the runs (SmolLM2-135M-Instruct's published GSM8K score is about 1 %).
TESTABLE_FLOOR = 10.0


def judge_answers(df, references: dict, length: int | None = None):
    """``df`` (runner records: ``prompt_id``, ``text``, ``length_tokens``) with ``answer`` (extracted), ``source``
    (:func:`locate_answer`), ``correct`` (against ``references[prompt_id]``, the rule fixed before the runs),
    ``correct_stated`` (correct *and* stated as a final answer, not read off the last number: the stricter reading)
    and ``cut`` (the answer ran to ``length`` tokens: its end is missing)."""
    out = df.copy()
    checked = [check_solution(t, references[int(i)]) for i, t in zip(out["prompt_id"], out["text"])]
    out["answer"] = [c["answer"] for c in checked]
    out["source"] = [c["source"] for c in checked]
    out["correct"] = [c["correct"] for c in checked]
    out["correct_stated"] = out["correct"] & ~out["source"].isin(["last number"]) & out["source"].notna()
    out["cut"] = (out["length_tokens"] >= length) if length else False
    return out
