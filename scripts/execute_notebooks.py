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
so that ``nbval`` can still compare the cells marked ``# NBVAL_CHECK_OUTPUT`` against the committed outputs.

A run with ``--parameters`` leaves papermill's ``injected-parameters`` cell in the notebook (that is the record of
what was run); a later run at default parameters removes it again.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
KERNEL = "python3"

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
    args = ap.parse_args(argv)

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
        start = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb_path), str(out_path), parameters=params or None, kernel_name=KERNEL,
                cwd=str(nb_path.parent), execution_timeout=args.timeout, progress_bar=False,
                request_save_on_cell_execute=True,
            )
        except Exception as exc:  # papermill saves the notebook with the error before raising
            failures.append(nb_path.name)
            print(f"FAILED {nb_path.name} after {time.perf_counter() - start:.0f} s:\n{exc}", file=sys.stderr)
        finally:
            if out_path.exists():
                clean(out_path)
        print(f"    {nb_path.name}: {time.perf_counter() - start:.0f} s", flush=True)

    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
