"""The exact-answer checker for GSM8K and MATH-500 on hand-made solutions and on the data sets' own answers."""

import pytest

from sea_minimal.answers import (check_solution, extract_answer, is_correct, judge_answers, last_boxed, locate_answer,
                                 normalize, to_number)
from sea_minimal.data import data_dir


@pytest.mark.parametrize("text, expected", [
    ("So the total is 5 + 7 = 12.\n#### 12", "12"),
    ("We get $x = \\boxed{\\frac{14}{3}}$.", "\\frac{14}{3}"),
    ("First \\boxed{3}, then corrected: \\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)"),
    ("Therefore, the answer is 1,250 dollars.", "1,250 dollars"),
    ("The final answer is: 0.15.", "0.15"),
    ("She has 3 apples, buys 4 more and eats 2, so 5 remain", "5"),
    ("No number here.", None),
    ("Cut off: \\boxed{\\frac{1}{", None),  # an unbalanced box is not an answer; no number left after it either
])
def test_extract_answer(text, expected):
    if expected is None and "boxed" in text:
        assert last_boxed(text) is None
        assert extract_answer(text) == "1"  # falls back to the last number, and is then judged on it
    else:
        assert extract_answer(text) == expected


@pytest.mark.parametrize("predicted, reference", [
    ("1,000", "1000"), ("$18", "18"), ("18.0", "18"), ("\\dfrac{3}{4}", "\\frac{3}{4}"), ("0.75", "\\frac34"),
    ("3/4", "\\frac{3}{4}"), ("-\\frac{\\pi}{6}", "-\\frac{\\pi}{6}"), ("90^\\circ", "90"), ("90°", "90"),
    ("x = 5", "5"), ("\\text{Evelyn}", "Evelyn"), ("11\\sqrt2", "11\\sqrt{2}"), ("(3,\\frac{\\pi}{2})",
     "\\left( 3, \\frac{\\pi}{2} \\right)"), ("1,-2", "1, -2"), ("3, 5, 7", "3,5,7"), ("50\\%", "50"),
    ("\\boxed{6 - 5i}", "6-5i"), ("2220", "2,220"), ("1,250 dollars", "1250"), ("12 apples", "12"),
])
def test_equal_answers(predicted, reference):
    assert is_correct(predicted, reference)


@pytest.mark.parametrize("predicted, reference", [
    ("12", "13"), ("1000", "100"), ("\\frac{3}{4}", "\\frac{4}{3}"), ("-5", "5"), ("3, 5", "3, 5, 7"),
    ("\\pi", "2\\pi"), ("Evelyn", "Evelina"), (None, "5"), ("0.333", "\\frac{1}{3}"), ("1,2", "12"),
    ("2i", "2"), ("6-5i", "6"),
])
def test_different_answers(predicted, reference):
    assert not is_correct(predicted, reference)


def test_numbers_and_normal_forms():
    assert to_number("-\\frac{6}{8}") == to_number("-3/4") and float(to_number("-3/4")) == -0.75
    assert to_number("\\frac{1}{0}") is None and to_number("x^2") is None and to_number("1,000,000") == 10**6
    assert normalize("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert check_solution("Adding, 48 + 24 = 72.\n#### 72", "72") == {"answer": "72", "source": "####", "correct": True}
    assert check_solution("I think it is 71.", "72") == {"answer": "71", "source": "last number", "correct": False}
    assert locate_answer("So \\boxed{4}.") == ("4", "boxed") and locate_answer("none") == (None, None)


def test_judge_answers_marks_the_stricter_reading_and_cut_answers():
    import pandas as pd

    df = pd.DataFrame({"prompt_id": [0, 1, 2, 3], "length_tokens": [10, 40, 40, 12],
                       "text": ["#### 5", "... 3 + 2 = 5", "The answer is 6.", "no number"]})
    out = judge_answers(df, {0: "5", 1: "5", 2: "5", 3: "5"}, length=40)
    assert out["correct"].tolist() == [True, True, False, False]
    assert out["correct_stated"].tolist() == [True, False, False, False]  # prompt 1: only its last number
    assert out["cut"].tolist() == [False, True, True, False]
    assert out["source"].tolist()[:3] == ["####", "last number", "answer is"]


def test_the_references_check_against_themselves():
    """Every GSM8K reference solution is right by its own final answer; every MATH-500 reference solution's
    boxed answer equals the listed answer (the checker's format handling on real data)."""
    from sea_minimal.data import load_gsm8k, load_math500

    root = data_dir()
    if not (root / "gsm8k").exists() or not (root / "math").exists():
        from conftest import missing_prerequisite

        missing_prerequisite(f"GSM8K / MATH-500 not in {root} (run `python -m sea_minimal data fetch`)")
    gsm = load_gsm8k()
    assert all(check_solution(r["answer"], r["final_answer"])["correct"] for r in gsm)
    math = load_math500()
    agree = [check_solution(r["solution"], r["answer"])["correct"] for r in math]
    assert all(agree), [r["answer"] for r, ok in zip(math, agree) if not ok]
    # the checker is not trivially true: a neighbouring problem's answer is almost never right
    wrong = [is_correct(a["answer"], b["answer"]) for a, b in zip(math, math[1:])]
    assert sum(wrong) / len(wrong) < 0.1
