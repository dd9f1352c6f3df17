"""The book's execution-status page (book/execution.md) is written from the recorded notebook runs and is current."""

import importlib.util
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("execute_notebooks", ROOT / "scripts" / "execute_notebooks.py")
execute_notebooks = importlib.util.module_from_spec(spec)
spec.loader.exec_module(execute_notebooks)


def test_the_committed_status_page_is_written_from_the_committed_run_records():
    runs, names = execute_notebooks.load_runs(), execute_notebooks.chapters()
    assert execute_notebooks.STATUS_PAGE.read_text() == execute_notebooks.status_page(runs, names), (
        "book/execution.md is stale. Fix: python scripts/execute_notebooks.py --status-page")
    assert names and all((ROOT / "notebooks" / n).exists() for n in names)
    assert set(runs) <= {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}  # no record of a removed chapter


def test_a_run_is_recorded_and_shown_with_its_parameters_time_and_result(tmp_path):
    path = tmp_path / "runs.json"
    started = datetime(2026, 12, 2, 17, 5, 9, tzinfo=timezone.utc)
    execute_notebooks.record_run("01_ebm_view.ipynb", started, 42.04, {}, None, path=path)
    execute_notebooks.record_run("02_sea_walkthrough.ipynb", started, 300.0, {"steps": 5}, "boom", path=path)
    runs = execute_notebooks.load_runs(path)
    assert runs["01_ebm_view.ipynb"]["executed_utc"] == "2026-12-02T17:05:09+00:00"
    assert runs["01_ebm_view.ipynb"]["environment"]["cpus"] >= 1
    page = execute_notebooks.status_page(runs, ["01_ebm_view.ipynb", "02_sea_walkthrough.ipynb", "03_reward_model.ipynb"])
    rows = [line for line in page.splitlines() if line.startswith("| [")]
    assert "| 2026-12-02 17:05:09 | 42 s | book defaults | ok |" in rows[0]
    assert rows[0].startswith("| [SEA as an energy-based model: an exact toy world](../notebooks/01_ebm_view.ipynb)")
    assert "| 5.0 min | `steps=5` | failed: boom |" in rows[1]
    assert "| not recorded |" in rows[2]
    assert "2 of 3 chapters have a recorded run; together they took 5.7 min. *Not recorded*:" in page
