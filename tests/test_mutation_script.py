"""scripts/mutation_test.py's bookkeeping of mutmut's verdicts (the mutation run itself is not part of CI)."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def script(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_test", ROOT / "scripts" / "mutation_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "MUTANTS", tmp_path)
    return module


def write_meta(folder: Path, codes: dict) -> Path:
    meta = folder / "lm.py.meta"
    meta.write_text(json.dumps({"exit_code_by_key": codes}))
    return meta


def test_forget_survivors_resets_survivors_and_timeouts_only_or_just_the_named_ones(script, tmp_path):
    codes = {"a": 0, "b": 1, "c": -24, "d": 0, "e": None}
    meta = write_meta(tmp_path, codes)
    assert script.forget_survivors(["lm"], only={"d"}) == 1
    assert json.loads(meta.read_text())["exit_code_by_key"] == {**codes, "d": None}
    write_meta(tmp_path, codes)
    assert script.forget_survivors(["lm"]) == 3
    assert json.loads(meta.read_text())["exit_code_by_key"] == {"a": None, "b": 1, "c": None, "d": None, "e": None}


def test_a_survivor_is_triaged_by_name_then_function_then_rule(script):
    triage = {"mutants": {"m.f__mutmut_1": "by name"}, "functions": {"m.f": "by function"},
              "rules": [{"added": "device=None", "reason": "by rule"}, {"dropped": "seed", "reason": "dropped"}]}
    assert script.triage_of("m.f__mutmut_1", "", triage) == "by name"
    assert script.triage_of("m.f__mutmut_2", "", triage) == "by function"
    assert script.triage_of("m.g__mutmut_1", "-x(device=d)\n+x(device=None)", triage) == "by rule"
    assert script.triage_of("m.g__mutmut_2", "-f(seed=1)\n+f()", triage) == "dropped"
    assert script.triage_of("m.g__mutmut_3", "-f(seed=1)\n+f(seed=2)", triage) == "untriaged"


def test_retriage_rewrites_each_survivors_reason_and_the_table_from_triage_yaml(script, tmp_path, monkeypatch):
    monkeypatch.setattr(script, "OUT", tmp_path)
    (tmp_path / "triage.yaml").write_text("mutants:\n  m.f__mutmut_1: now equivalent\nfunctions: {}\nrules: []\n")
    block = "### `{name}` (survived)\n\nTriage: untriaged\n\n```diff\n-x = 1\n+x = 2\n```\n"
    report = tmp_path / "survivors.md"
    report.write_text("# Surviving mutants\n\n## Survivors by reason\n\n| survivors | reason |\n|---|---|\n"
                      "| 2 | untriaged |\n\n" + block.format(name="m.f__mutmut_1") + "\n" + block.format(name="m.g__mutmut_2"))
    counts = script.retriage_report(report)
    text = report.read_text()
    assert counts == {"now equivalent": 1, "untriaged": 1}
    assert "| 1 | now equivalent |\n| 1 | untriaged |\n" in text and "| 2 | untriaged |" not in text
    assert text.count("Triage: now equivalent") == 1 and text.count("```diff\n-x = 1\n+x = 2\n```") == 2
    report.write_text("nothing here")
    with pytest.raises(SystemExit, match="lists no survivors"):
        script.retriage_report(report)
