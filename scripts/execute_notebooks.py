#!/usr/bin/env python
"""Execute the book's notebooks in place with papermill, then clean them for committing.

    python scripts/execute_notebooks.py                        # every notebooks/*.ipynb, default parameters
    python scripts/execute_notebooks.py --notebook 02          # only notebooks whose name contains "02"
    python scripts/execute_notebooks.py -p steps=50 -p model_name=HuggingFaceTB/SmolLM2-360M-Instruct
    python scripts/execute_notebooks.py --smoke                # each notebook's metadata["smoke_parameters"]

Each notebook runs in the Jupyter kernel ``python3`` of *this* interpreter's environment (``make venv`` registers
it in ``.venv``), with ``notebooks/`` as the working directory and a per-cell timeout. Afterwards the papermill
bookkeeping is removed (notebook ``metadata.papermill``, per-cell ``metadata.papermill`` and
``metadata.execution`` timestamps, widget outputs and widget state) while outputs and execution counts are kept,
so that ``nbval`` can still compare the cells tagged ``nbval-check-output`` against the committed outputs.

A run with ``--parameters`` leaves papermill's ``injected-parameters`` cell in the notebook (that is the record of
what was run); a later run at default parameters removes it again.

Each in-place run is also recorded in ``results/notebook_runs.json`` (when, how long, with which parameters, the
result, the machine and the library versions), from which the book's execution-status page ``book/execution.md``
is written (``--status-page`` rewrites only the page).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"
RUNS = ROOT / "results" / "notebook_runs.json"
STATUS_PAGE = ROOT / "book" / "execution.md"

# Make this environment's kernelspecs win over user-level ones (~/.local/share/jupyter/kernels/python3 could
# point at another interpreter). Must happen before jupyter_client is imported.
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    p for p in (str(Path(sys.prefix) / "share" / "jupyter"), os.environ.get("JUPYTER_PATH", "")) if p
)


def parse_value(text: str):
    """Turn the right-hand side of ``key=value`` into a Python literal when it is one, else keep the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    return text


def parse_parameters(pairs: list[str]) -> dict:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SystemExit(f"--parameters expects key=value with a Python identifier as key, got {pair!r}")
        params[key.strip()] = parse_value(value)
    return params


def select_notebooks(filters: list[str]) -> list[Path]:
    notebooks = sorted(p for p in NOTEBOOKS.glob("*.ipynb") if not p.name.startswith("."))
    if filters:
        notebooks = [p for p in notebooks if any(f in p.name for f in filters)]
    return notebooks


def check_kernel() -> None:
    """Fail early, with a fix, if kernel ``python3`` would not run this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        raise SystemExit(f"No Jupyter kernel '{KERNEL}'. Fix: {sys.executable} -m ipykernel install --sys-prefix "
                         f"--name {KERNEL}")
    exe = spec.argv[0]
    # jupyter_client replaces a bare "python" with sys.executable.
    if exe not in ("python", "python3") and Path(exe).resolve() != Path(sys.executable).resolve():
        raise SystemExit(f"Kernel '{KERNEL}' ({spec.resource_dir}) runs {exe}, not {sys.executable}. Fix: "
                         f"{sys.executable} -m ipykernel install --sys-prefix --name {KERNEL}")


def drop_injected_cells(path: Path) -> None:
    """Remove a stale ``injected-parameters`` cell left by an earlier run with --parameters."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    kept = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    if len(kept) != len(nb.cells):
        nb.cells = kept
        nbformat.write(nb, path)


WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def clean(path: Path) -> None:
    """Strip papermill metadata and execution timestamps; keep outputs, execution counts, tags and ids.

    Widget outputs (tqdm.auto progress bars when ipywidgets is installed) are dropped with the notebook's widget
    state: they carry a random model id per run, so every rerun would change the committed notebook, and a
    static page cannot show a live widget anyway.
    """
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("papermill", None)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        for key in ("papermill", "execution", "ExecuteTime"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    nbformat.write(nb, path)


# ---------------------------------------------------------------------------------------------- run records
def load_runs(path: Path = RUNS) -> dict:
    """{notebook file name: its last in-place run}, empty when nothing is recorded yet."""
    return json.loads(path.read_text()) if path.exists() else {}


def environment() -> dict:
    """The machine and the versions a run used (the kernel runs this interpreter: check_kernel)."""
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "cpus": os.cpu_count(), "gpu": gpu}


def record_run(name: str, started: datetime, seconds: float, params: dict, error: str | None,
               path: Path = RUNS) -> None:
    runs = load_runs(path)
    runs[name] = {"executed_utc": started.isoformat(timespec="seconds"), "seconds": round(seconds, 1),
                  "parameters": params, "result": "ok" if error is None else f"failed: {error}",
                  "environment": environment()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(sorted(runs.items())), indent=1) + "\n")


def chapters() -> list[str]:
    """The notebook file names of the book's table of contents, in order."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    entries = [c for part in toc.get("parts", [toc]) for c in part.get("chapters", [])]
    return [Path(c["file"]).name + ".ipynb" for c in entries if c["file"].startswith("notebooks/")]


def title(name: str) -> str:
    """A chapter notebook's title: the text of its first level-1 heading."""
    import nbformat

    for cell in nbformat.read(NOTEBOOKS / name, as_version=4).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return name


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def status_page(runs: dict, names: list[str]) -> str:
    """The Markdown of book/execution.md: one row per chapter notebook, from its recorded run."""
    lines = ["# Execution status", "",
             "Every chapter is a notebook that `scripts/execute_notebooks.py` (what `make book` runs) executes in place "
             "with papermill and that is committed with its outputs; the book only renders them. This page lists each "
             "chapter's last in-place run, from `results/notebook_runs.json`, which that script writes: when it ran, "
             "how long it took, with which parameters (*book defaults* are the values of the notebook's `parameters` "
             "cell), whether it finished, and on what. The experiment chapters read recorded runs from `results/`; "
             "the time here is the notebook's own, not that of the grids behind it.", "",
             "| chapter | executed (UTC) | run time | parameters | result | machine and versions |",
             "|---|---|---|---|---|---|"]
    for name in names:
        link = f"[{title(name)}](../notebooks/{name})"
        run = runs.get(name)
        if run is None:
            lines.append(f"| {link} | not recorded | | | | |")
            continue
        params = ", ".join(f"`{k}={v!r}`" for k, v in run["parameters"].items()) or "book defaults"
        env = run["environment"]
        machine = (f"{env['cpus']} CPUs" + (f", {env['gpu']}" if env.get("gpu") else ", no GPU")
                   + f"; Python {env['python']}, torch {env['torch']}, transformers {env['transformers']}")
        when = run["executed_utc"].replace("T", " ").replace("+00:00", "")
        lines.append(f"| {link} | {when} | {_duration(run['seconds'])} | {params} | {run['result']} | {machine} |")
    recorded = [n for n in names if n in runs]
    total = sum(runs[n]["seconds"] for n in recorded)
    lines += ["", f"{len(recorded)} of {len(names)} chapters have a recorded run; together they took "
              f"{_duration(total)}." if recorded else f"No chapter has a recorded run yet ({len(names)} chapters)."]
    if len(recorded) < len(names):
        lines[-1] += (" *Not recorded*: the committed outputs come from a run made before this script kept records; "
                      "the next `make book` records it.")
    return "\n".join(lines) + "\n"


def write_status_page(runs_path: Path = RUNS, page: Path = STATUS_PAGE) -> None:
    page.write_text(status_page(load_runs(runs_path), chapters()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--notebook", "-n", action="append", default=[], metavar="TEXT",
                    help="only notebooks whose file name contains TEXT (repeatable)")
    ap.add_argument("--parameters", "-p", action="append", default=[], metavar="KEY=VALUE",
                    help="override a parameter of the notebook's 'parameters' cell (repeatable)")
    ap.add_argument("--smoke", action="store_true",
                    help="use each notebook's metadata['smoke_parameters'] (then --parameters on top)")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds (default 3600)")
    ap.add_argument("--output-dir", type=Path, default=None,
                    help="write executed copies here instead of overwriting the notebooks in place")
    ap.add_argument("--status-page", action="store_true",
                    help=f"only rewrite {STATUS_PAGE.relative_to(ROOT)} from {RUNS.relative_to(ROOT)}")
    args = ap.parse_args(argv)
    if args.status_page:
        write_status_page()
        return 0

    import nbformat
    import papermill as pm

    check_kernel()
    overrides = parse_parameters(args.parameters)
    notebooks = select_notebooks(args.notebook)
    if not notebooks:
        print(f"No notebooks in {NOTEBOOKS} match {args.notebook or '*'}; nothing to do.", file=sys.stderr)
        return 0 if not args.notebook else 1

    failures = []
    for nb_path in notebooks:
        params = {}
        if args.smoke:
            params.update(nbformat.read(nb_path, as_version=4).metadata.get("smoke_parameters", {}))
        params.update(overrides)
        if args.output_dir:
            args.output_dir.mkdir(parents=True, exist_ok=True)
            out_path = args.output_dir / nb_path.name
        else:
            out_path = nb_path
            if not params:
                drop_injected_cells(nb_path)
        print(f"==> {nb_path.relative_to(ROOT)}  parameters={params or 'defaults'}", flush=True)
        start, started, error = time.perf_counter(), datetime.now(timezone.utc), None
        try:
            pm.execute_notebook(
                str(nb_path), str(out_path), parameters=params or None, kernel_name=KERNEL,
                cwd=str(nb_path.parent), execution_timeout=args.timeout, progress_bar=False,
                request_save_on_cell_execute=True,
            )
        except Exception as exc:  # papermill saves the notebook with the error before raising
            failures.append(nb_path.name)
            error = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            print(f"FAILED {nb_path.name} after {time.perf_counter() - start:.0f} s:\n{exc}", file=sys.stderr)
        finally:
            if out_path.exists():
                clean(out_path)
        seconds = time.perf_counter() - start
        if not args.output_dir:  # an in-place run is what the book shows: record it
            record_run(nb_path.name, started, seconds, params, error)
            write_status_page()
        print(f"    {nb_path.name}: {seconds:.0f} s", flush=True)

    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
