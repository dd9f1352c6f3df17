"""Every notebook runs top to bottom at its smoke parameters; deterministic outputs match the committed ones.

Convention for ``notebooks/*.ipynb``:

* one code cell tagged ``parameters`` with plain literal assignments (papermill injects overrides after it);
* notebook metadata ``"smoke_parameters": {...}``: small values that make the notebook run in a minute or two
  on 2 CPU cores;
* cells whose output is deterministic and does not depend on the parameters carry the tag ``nbval-check-output``
  (a tag, not nbval's ``# NBVAL_CHECK_OUTPUT`` comment, so that the book's readers never see the marker); nbval
  compares them with the committed outputs. Every other cell only has to run without an error.

How: papermill ``prepare_only=True`` injects the smoke parameters into a copy that keeps the committed outputs
(nothing is executed), then ``pytest --nbval-lax`` executes every cell of that copy in a fresh kernel of this
interpreter and compares the marked cells. One nbval run therefore proves both that the notebook runs at smoke
scale and that its checked outputs are reproducible.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MAX_NOTEBOOK_BYTES = 2_000_000
CELL_TIMEOUT_S = 600  # per cell, at smoke scale
NOTEBOOK_TIMEOUT_S = 1200  # whole nbval run of one notebook

nbformat = pytest.importorskip("nbformat")

pytestmark = pytest.mark.notebooks


# One parameter per notebook; if notebooks/ is empty the per-notebook tests skip with a clear reason (and
# test_notebooks_exist fails: the book has two chapters).
NOTEBOOK_PARAMS = [pytest.param(p, id=p.stem) for p in NOTEBOOKS] or [
    pytest.param(None, id="no-notebooks", marks=pytest.mark.skip(reason=f"no notebooks in {NOTEBOOK_DIR}"))
]


def _read(path: Path):
    return nbformat.read(path, as_version=4)


def _parameters_cell(nb):
    for cell in nb.cells:
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return cell
    return None


def _skipped(cell) -> bool:
    """nbval's own rule: the tag ``nbval-skip`` or any comment line that reads ``# NBVAL_SKIP``."""
    comments = [line.strip().lstrip("#").strip() for line in cell.source.splitlines() if line.strip().startswith("#")]
    return "nbval-skip" in cell.metadata.get("tags", []) or "NBVAL_SKIP" in comments


def test_notebooks_exist():
    assert len(NOTEBOOKS) >= 2, f"expected at least 2 notebooks in {NOTEBOOK_DIR}, found {[p.name for p in NOTEBOOKS]}"


@pytest.mark.parametrize("path", NOTEBOOK_PARAMS)
def test_notebook_is_clean_and_small(path):
    """Guard on what is committed: size, no papermill bookkeeping, the agreed parameters convention."""
    size = path.stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, f"{path.name} is {size / 1e6:.2f} MB (limit 2 MB): shrink figures or outputs"
    nb = _read(path)
    assert "papermill" not in nb.metadata, f"{path.name}: notebook metadata.papermill left; run `make book`"
    for i, cell in enumerate(nb.cells):
        for key in ("papermill", "execution", "ExecuteTime"):
            assert key not in cell.metadata, f"{path.name} cell {i}: metadata.{key} (timestamps) left"
        assert "injected-parameters" not in cell.metadata.get("tags", []), (
            f"{path.name} cell {i}: papermill's injected-parameters cell is committed; rerun at default parameters"
        )
        if cell.cell_type == "code" and cell.outputs:
            assert cell.execution_count is not None, (
                f"{path.name} cell {i} has outputs but no execution count (nbstripout without --keep-count?): "
                "nbval would not compare it"
            )
        if cell.cell_type == "code":
            markers = [line for line in cell.source.splitlines() if line.strip().startswith("# NBVAL_")]
            assert not markers, (f"{path.name} cell {i}: {markers[0].strip()} would show on the page; use the tag "
                                 f"{markers[0].strip()[2:].lower().replace('_', '-')} instead")
    assert _parameters_cell(nb) is not None, f"{path.name}: no code cell tagged 'parameters'"
    smoke = nb.metadata.get("smoke_parameters")
    assert isinstance(smoke, dict), f"{path.name}: notebook metadata needs a dict 'smoke_parameters'"


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory):
    """One results folder for every notebook's smoke-scale grids in this test session (chapter 9 reads what
    chapters 4-7 ran; each notebook still runs whatever it finds missing)."""
    return tmp_path_factory.mktemp("smoke_results")


@pytest.mark.parametrize("path", NOTEBOOK_PARAMS)
def test_notebook_runs_at_smoke_scale(path, tmp_path, smoke_results):
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("nbval")

    nb = _read(path)
    smoke = dict(nb.metadata.get("smoke_parameters", {}))
    declared = set(papermill.inspect_notebook(str(path)))
    unknown = set(smoke) - declared
    assert not unknown, f"{path.name}: smoke_parameters {sorted(unknown)} are not in the 'parameters' cell"
    skipped = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and _skipped(c)]
    assert not skipped, f"{path.name}: cells {skipped} are marked NBVAL_SKIP; every cell must run at smoke scale"

    # Same layout as the repository (tmp/notebooks/X.ipynb) so that paths relative to the notebook still resolve
    # inside the scratch folder; nbval starts the kernel in the notebook's folder.
    copy = tmp_path / "notebooks" / path.name
    copy.parent.mkdir()
    papermill.execute_notebook(
        str(path), str(copy), parameters=smoke or None, prepare_only=True, kernel_name="python3", progress_bar=False
    )
    prepared = _read(copy)
    n_code = sum(c.cell_type == "code" for c in prepared.cells)
    kept = sum(len(c.outputs) for c in prepared.cells if c.cell_type == "code")
    committed = sum(len(c.outputs) for c in nb.cells if c.cell_type == "code")
    assert kept == committed, "papermill prepare_only dropped committed outputs"

    cmd = [
        sys.executable, "-m", "pytest", "--nbval-lax", "--nbval-current-env",
        f"--nbval-cell-timeout={CELL_TIMEOUT_S}", "-p", "no:cacheprovider", "-o", "addopts=",
        f"--rootdir={tmp_path}", "--color=no", "-q", str(copy),
    ]
    env = dict(os.environ, PYTHONHASHSEED="0", SEA_SMOKE_RESULTS=str(smoke_results))
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=NOTEBOOK_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{path.name}: nbval did not finish within {NOTEBOOK_TIMEOUT_S} s at smoke parameters {smoke}\n"
                    f"{(exc.stdout or b'')[-4000:]!r}")
    report = proc.stdout[-8000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, (
        f"{path.name} failed under nbval at smoke parameters {json.dumps(smoke)} (exit {proc.returncode}):\n{report}"
    )
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == n_code, (
        f"{path.name}: expected all {n_code} code cells to pass under nbval, got:\n{report}"
    )


# Experiment chapters whose prose rests on numbers: each checks those numbers with explicit asserts (issue 16).
INVARIANT_NOTEBOOKS = ["03_reward_model", "04_main_results", "05_ablations", "06_convergence_and_cost",
                       "07_deep_alignment", "08c_reasoning", "09_reproduction_report"]
MIN_INVARIANT_ASSERTS = 3


@pytest.mark.parametrize("stem", INVARIANT_NOTEBOOKS + ["08b_exact_optimum"])
def test_experiment_notebooks_check_their_invariants(stem):
    """At every scale (smoke included) the notebook asserts what its prose claims, not only that it ran: a code
    cell tagged ``invariants`` with at least ``MIN_INVARIANT_ASSERTS`` ``assert`` lines; 08b_exact_optimum
    asserts in its own cells."""
    path = NOTEBOOK_DIR / f"{stem}.ipynb"
    assert path.exists(), f"{path.name} is missing"
    code = [c for c in _read(path).cells if c.cell_type == "code"]

    def asserts(cell):
        return sum(line.lstrip().startswith("assert ") for line in cell.source.splitlines())

    if stem not in INVARIANT_NOTEBOOKS:
        assert any(asserts(c) for c in code), f"{path.name}: no cell has an assert"
        return
    tagged = [c for c in code if "invariants" in c.metadata.get("tags", [])]
    assert tagged, f"{path.name}: no code cell tagged 'invariants'"
    n = max(asserts(c) for c in tagged)
    assert n >= MIN_INVARIANT_ASSERTS, (
        f"{path.name}: the 'invariants' cell has {n} assert lines, expected at least {MIN_INVARIANT_ASSERTS}"
    )
