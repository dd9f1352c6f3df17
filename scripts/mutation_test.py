"""Mutation testing of the modules that decide results (issue 16): mutmut on the fast suite.

    pip install -e ".[mutation]"
    python scripts/mutation_test.py                          # every module of pyproject [tool.mutmut] only_mutate
    python scripts/mutation_test.py --modules config judges  # some of them
    python scripts/mutation_test.py --report-only            # rewrite the report from mutmut's state in mutants/
    python scripts/mutation_test.py --recheck-survivors      # after adding tests: rerun the survivors only
    python scripts/mutation_test.py --recheck-survivors --untriaged-only   # ... only those with no triage reason

mutmut writes one small deliberate bug (a mutant) at a time into a copy of the package in ``mutants/`` and runs
the tests that reach the mutated function (the fast suite less the ``heavy`` statistical tests; see
pyproject.toml). A mutant is *killed* when a test fails, *survived* when all pass. The run is resumable: mutmut
keeps its verdicts in ``mutants/`` and a rerun checks only what is new or changed. ``mutants/`` is not committed,
so the verdicts are also kept in ``results/mutation/state/`` (mutmut's per-module ``.meta`` files: a verdict per
mutant and a hash per function) and put back into a fresh ``mutants/``: on a new checkout mutmut keeps every
verdict whose function is unchanged and reruns the rest.

Writes, beside each other in ``results/mutation/``:

* ``score.json``: per module the count of each verdict and the score, killed / (killed + survived + no tests +
  suspicious), timeouts counted as killed (the mutant hangs the code: a test would notice);
* ``survivors.md``: every survivor with its diff and its triage from ``triage.yaml`` (why it is equivalent or
  harmless, or that it is a gap still open): a reason per mutant name, else per function, else the first rule
  that matches the mutant's diff; "untriaged" where no one has looked yet.

Not part of CI: on 2 CPU cores it takes hours for all modules.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "results" / "mutation"
STATE = OUT / "state"
MUTANTS = ROOT / "mutants" / "sea_minimal"
KILLED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_KILLED = {"survived", "no tests", "suspicious"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}
LINE = re.compile(r"^\s+(sea_minimal\.(\w+)\.\S+): (.+)$")


def configured_modules() -> list[str]:
    """The module stems of pyproject's [tool.mutmut] only_mutate, e.g. ['sampler', 'lm', ...]."""
    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mutmut"]
    return [Path(p).stem for p in conf["only_mutate"]]


def mutmut(*args: str, capture: bool = False) -> str:
    """Runs ``python -m mutmut ARGS`` in the repository root; a clear error when mutmut is not installed."""
    try:
        import mutmut  # noqa: F401
    except ImportError:
        sys.exit("mutmut is not installed: run `pip install -e \".[mutation]\"` (mutmut 3.8.1), then rerun")
    cmd = [sys.executable, "-m", "mutmut", *args]
    # one torch thread per test process: with several processes on few cores, torch's spinning thread pools made
    # the suite 5x slower here
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    # the tests run inside mutants/, one folder deeper than usual: point them at the data as .ci/run does
    env.setdefault("SEA_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    done = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=capture, env=env)
    if done.returncode != 0:
        sys.exit(f"`{' '.join(cmd[2:])}` failed with exit status {done.returncode}"
                 + (f":\n{done.stdout[-2000:]}{done.stderr[-2000:]}" if capture else ""))
    return done.stdout if capture else ""


def verdicts() -> dict[str, tuple[str, str]]:
    """{mutant name: (module stem, verdict)} from ``mutmut results --all true``."""
    found = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
        m = LINE.match(line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3).strip())
    return found


def restore_state() -> int:
    """Copies the committed verdicts into a ``mutants/`` that lacks them; returns how many files it copied."""
    copied = 0
    for meta in sorted(STATE.glob("*.py.meta")):
        target = MUTANTS / meta.name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(meta, target)
            copied += 1
    return copied


def save_state(modules: list[str]) -> None:
    """Copies mutmut's verdicts of ``modules`` from ``mutants/`` into the repository (results/mutation/state/)."""
    STATE.mkdir(parents=True, exist_ok=True)
    for m in modules:
        meta = MUTANTS / f"{m}.py.meta"
        if meta.exists():
            shutil.copy2(meta, STATE / meta.name)


def forget_survivors(modules: list[str], only: set[str] | None = None) -> int:
    """Marks the survivors, the interrupted, the timed-out and the "no tests" mutants of ``modules`` as not checked,
    so the next run retests them (after new tests: mutmut itself only reruns mutants whose function changed).
    With ``only``, just the mutants named there. Returns how many."""
    reset = 0
    for m in modules:
        meta = MUTANTS / f"{m}.py.meta"
        if not meta.exists():
            continue
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            # survived, interrupted, no tests, timeouts (a busy machine can time a survivor out; see
            # mutmut.stats.status_by_exit_code)
            if code in (0, 2, 5, 33, 36, 24, -24, 152, 255) and (only is None or name in only):
                data["exit_code_by_key"][name] = None
                reset += 1
        meta.write_text(json.dumps(data, indent=4))
    return reset


def recheck_with(tests: list[str], modules: list[str], pattern: str = "") -> collections.Counter:
    """Retests the not-checked mutants of ``modules`` (whose name contains ``pattern``) against the named tests only,
    one pytest process per mutant in ``mutants/`` with mutmut's MUTANT_UNDER_TEST switch, and stores the verdict in
    mutmut's state: exit 1 (a test failed) is killed, 0 survived. Much faster than ``mutmut run`` when the tests
    that can kill a function's mutants are known (mutmut runs every test that reaches the function); a mutant these
    tests let through is a survivor, as mutmut would call it. Copies the current tests into ``mutants/`` first."""
    shutil.copytree(ROOT / "tests", ROOT / "mutants" / "tests", dirs_exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.setdefault("SEA_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    outcome = collections.Counter()
    for m in modules:
        meta = MUTANTS / f"{m}.py.meta"
        data = json.loads(meta.read_text())
        for name, code in data["exit_code_by_key"].items():
            if code is not None or pattern not in name:
                continue
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                                  cwd=ROOT / "mutants", env={**env, "MUTANT_UNDER_TEST": name}, capture_output=True)
            if done.returncode in (0, 1):
                data["exit_code_by_key"][name] = done.returncode
                outcome["killed" if done.returncode else "survived"] += 1
                meta.write_text(json.dumps(data, indent=4))
            else:
                outcome[f"pytest exit {done.returncode}"] += 1
    return outcome


def restore_unchecked(modules: list[str]) -> int:
    """Gives every mutant still not checked (a recheck stopped early) its verdict from the state committed at git's
    HEAD, so the score counts it as it was; returns how many."""
    restored = 0
    for m in modules:
        meta = MUTANTS / f"{m}.py.meta"
        saved = subprocess.run(["git", "show", f"HEAD:{(STATE / meta.name).relative_to(ROOT)}"], cwd=ROOT,
                               capture_output=True, text=True)
        if not meta.exists() or saved.returncode != 0:
            continue
        data, old = json.loads(meta.read_text()), json.loads(saved.stdout)["exit_code_by_key"]
        for name, code in data["exit_code_by_key"].items():
            if code is None and old.get(name) is not None:
                data["exit_code_by_key"][name] = old[name]
                restored += 1
        meta.write_text(json.dumps(data, indent=4))
    return restored


def score(found: dict[str, tuple[str, str]], modules: list[str]) -> dict:
    """Per module and in total: verdict counts and killed / tested (tested = killed + not killed)."""
    counts = {m: collections.Counter() for m in modules}
    for module, verdict in found.values():
        if module in counts:
            counts[module][verdict] += 1

    def summary(c: collections.Counter) -> dict:
        killed = sum(c[v] for v in KILLED)
        tested = killed + sum(c[v] for v in NOT_KILLED)
        return {"verdicts": dict(sorted(c.items())), "killed": killed, "tested": tested,
                "not_run": sum(c[v] for v in NOT_RUN), "score": round(killed / tested, 4) if tested else None}

    total = sum(counts.values(), collections.Counter())
    return {"modules": {m: summary(c) for m, c in counts.items()}, "total": summary(total)}


_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import find_mutant, get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({n: get_diff_for_mutant(n, path=find_mutant(n).path).strip() for n in names}))
"""


def diffs(names: list[str]) -> dict[str, str]:
    """{mutant name: its diff}, in one process (``mutmut show`` per name reloads everything: minutes)."""
    done = subprocess.run([sys.executable, "-c", _DIFFS], cwd=ROOT, input=json.dumps(names), text=True,
                          capture_output=True)
    if done.returncode != 0:
        sys.exit(f"reading the mutants' diffs failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def load_triage(path: Path) -> dict:
    """``{"mutants": {name: reason}, "functions": {function: reason}, "rules": [rule]}`` (all optional).

    A rule is ``{"added": regex, "reason": text}`` (a line the mutant adds matches) or ``{"dropped": regex,
    "reason": text}`` (a line the mutant removes matches and no line it adds does: an argument left out). A function
    is the mutant's name without its ``__mutmut_N`` number, e.g. ``sea_minimal.runner.x_tiny_random_policy``."""
    triage = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    return {"mutants": triage.get("mutants") or {}, "functions": triage.get("functions") or {},
            "rules": triage.get("rules") or []}


def _rule_matches(rule: dict, added: list[str], removed: list[str]) -> bool:
    if "added" in rule:
        return any(re.search(rule["added"], line) for line in added)
    return (any(re.search(rule["dropped"], line) for line in removed)
            and not any(re.search(rule["dropped"], line) for line in added))


def triage_of(name: str, diff: str, triage: dict) -> str:
    """The reason for one survivor: by name, else by function, else by the first rule its diff matches."""
    if name in triage["mutants"]:
        return triage["mutants"][name]
    function = name.rsplit("__mutmut_", 1)[0]
    if function in triage["functions"]:
        return triage["functions"][function]
    lines = diff.splitlines()
    added = [line[1:] for line in lines if line.startswith("+") and not line.startswith("+++")]
    removed = [line[1:] for line in lines if line.startswith("-") and not line.startswith("---")]
    for rule in triage["rules"]:
        if _rule_matches(rule, added, removed):
            return rule["reason"]
    return "untriaged"


def untriaged_survivors(modules: list[str]) -> set[str]:
    """The survivors of ``modules`` that ``triage.yaml`` gives no reason for (those a new test may kill; a triaged
    survivor is equivalent or harmless, so retesting it is wasted time)."""
    triage = load_triage(OUT / "triage.yaml")
    names = [name for name, (module, v) in verdicts().items() if module in modules and v in NOT_KILLED]
    diff_of = diffs(names)
    return {name for name in names if triage_of(name, diff_of[name], triage) == "untriaged"}


def write_report(modules: list[str]) -> dict:
    found = verdicts()
    result = score(found, modules)
    result["date"] = datetime.date.today().isoformat()
    result["mutmut"] = version("mutmut")
    result["tests"] = "fast suite less `heavy` (pyproject [tool.mutmut] pytest_add_cli_args_test_selection)"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "score.json").write_text(json.dumps(result, indent=1) + "\n")

    triage = load_triage(OUT / "triage.yaml")
    survivors = [(name, module, v) for name, (module, v) in sorted(found.items())
                 if module in modules and v in NOT_KILLED]
    diff_of = diffs([name for name, _, _ in survivors])
    entries = [(name, v, diff_of[name], triage_of(name, diff_of[name], triage)) for name, _, v in survivors]
    reasons = collections.Counter(reason for *_, reason in entries)
    lines = ["# Surviving mutants", "",
             f"mutmut {result['mutmut']}, {result['date']}; written by `scripts/mutation_test.py` from mutmut's "
             "state. Each survivor's reason comes from `triage.yaml` beside this file.", "",
             "| module | killed | tested | not run yet | score |", "|---|---|---|---|---|"]
    for m, s in [*result["modules"].items(), ("all", result["total"])]:
        lines.append(f"| {m} | {s['killed']} | {s['tested']} | {s['not_run']} | "
                     + (f"{s['score']:.1%}" if s["score"] is not None else "not run") + " |")
    lines += ["", "## Survivors by reason", "", "| survivors | reason |", "|---|---|"]
    lines += [f"| {n} | {reason} |" for reason, n in reasons.most_common()]
    for name, v, diff, reason in entries:
        lines += ["", f"### `{name}` ({v})", "", f"Triage: {reason}", "", "```diff", diff, "```"]
    (OUT / "survivors.md").write_text("\n".join(lines) + "\n")
    return result


SURVIVOR = re.compile(r"^### `(?P<name>[^`]+)` \((?P<verdict>[^)]+)\)\n\nTriage: (?P<reason>[^\n]*)\n\n```diff\n(?P<diff>.*?)\n```",
                      re.M | re.S)


def retriage_report(path: Path = OUT / "survivors.md") -> collections.Counter:
    """Re-apply triage.yaml to the survivors already listed in ``path`` (their diffs are in it), without mutmut:
    after triaging, the report's reasons and its table of reasons follow; verdicts and scores are unchanged (a
    survivor that a new test kills stays a survivor here until a recheck runs it). Returns the reason counts."""
    text, triage = path.read_text(), load_triage(OUT / "triage.yaml")
    entries = list(SURVIVOR.finditer(text))
    if not entries:
        raise SystemExit(f"{path} lists no survivors in the format write_report writes; rerun without --retriage")
    reasons = collections.Counter()

    def retriaged(m: re.Match) -> str:
        reason = triage_of(m["name"], m["diff"], triage)
        reasons[reason] += 1
        return m[0].replace(f"Triage: {m['reason']}\n", f"Triage: {reason}\n", 1)

    text = SURVIVOR.sub(retriaged, text)
    table = "\n".join(["| survivors | reason |", "|---|---|", *(f"| {n} | {r} |" for r, n in reasons.most_common())])
    text = re.sub(r"\| survivors \| reason \|\n\|---\|---\|\n(?:\|.*\|\n)*", table + "\n", text, count=1)
    path.write_text(text)
    return reasons


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    known = configured_modules()
    parser.add_argument("--modules", nargs="+", default=known, choices=known, help="module stems to mutate")
    parser.add_argument("--max-children", type=int, default=2, help="parallel test processes (default 2)")
    parser.add_argument("--report-only", action="store_true", help="only rewrite results/mutation/ from mutants/")
    parser.add_argument("--retriage", action="store_true",
                        help="only re-apply triage.yaml to the survivors listed in survivors.md (no mutmut, no mutants/)")
    parser.add_argument("--recheck-survivors", action="store_true",
                        help="retest the survivors of --modules (after adding tests), then report")
    parser.add_argument("--untriaged-only", action="store_true",
                        help="with --recheck-survivors: retest only the survivors triage.yaml gives no reason for")
    parser.add_argument("--with-tests", nargs="+", metavar="TEST",
                        help="recheck only against these pytest paths/node ids (see recheck_with); with --match")
    parser.add_argument("--match", default="", help="with --with-tests: only mutants whose name contains this")
    parser.add_argument("--restore-unchecked", action="store_true",
                        help="give mutants a stopped recheck left unchecked their committed verdict, then report")
    args = parser.parse_args(argv)
    if args.retriage:
        for reason, n in retriage_report().most_common():
            print(f"{n:5d}  {reason[:100]}")
        return
    if args.with_tests:
        if args.recheck_survivors:
            only = untriaged_survivors(args.modules) if args.untriaged_only else None
            print(f"retesting {forget_survivors(args.modules, only)} survivors")
        print(dict(recheck_with(args.with_tests, args.modules, args.match)))
    elif args.restore_unchecked:
        print(f"restored {restore_unchecked(known)} verdicts from {STATE.relative_to(ROOT)}/")
    elif not args.report_only:
        if restore_state():
            print(f"restored mutmut's verdicts from {STATE.relative_to(ROOT)}/ (kept where a function is unchanged)")
        if args.recheck_survivors:
            only = untriaged_survivors(args.modules) if args.untriaged_only else None
            print(f"retesting {forget_survivors(args.modules, only)} survivors")
        mutmut("run", "--max-children", str(args.max_children), *[f"sea_minimal.{m}.*" for m in args.modules])
    save_state(known)
    result = write_report(known)
    for m, s in [*result["modules"].items(), ("all", result["total"])]:
        print(f"{m:>10}: " + (f"{s['score']:.1%} of {s['tested']} killed" if s["score"] is not None else "not run"))
    print(f"wrote {OUT.relative_to(ROOT)}/score.json, survivors.md and state/")


if __name__ == "__main__":
    main()
