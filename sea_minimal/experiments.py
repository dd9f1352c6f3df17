"""The book's experiments at three scales, built from the grid files in ``grids/``.

Each experiment is one YAML grid (``grids/advbench_*.yaml``) written at **book** scale: the 40 listed AdvBench
prompts, 32 response tokens, 30 SEA iterations, on this CPU. The same grid is rescaled for the other two scales:

* ``smoke``: the first 2 prompts, 8 tokens, 2 SEA iterations, Best-of-N capped at 8 samples; results go to
  ``$SEA_SMOKE_RESULTS`` (default: a folder in the system's temporary directory) unless given. For CI and nbval (seconds to minutes).
* ``book``: the grid file unchanged; results in ``results/`` (committed).
* ``paper``: all 520 AdvBench prompts (the tuning grid keeps its 5 held-out prompts: ``paper_prompts: listed``), 50 tokens, the released code's 200 iterations; results in
  ``results/paper/``. For a machine with a GPU.

A policy or reward other than the grid's changes every config hash, so its records never mix with ours, even in
the same results file. ``ensure_results`` runs what is missing (resumable, with a progress bar) and
``load_experiment`` returns exactly the records of one grid: its methods (label and config hash), prompts and seeds.
"""

from __future__ import annotations

import copy
import os
import sys
import tempfile
import warnings
from pathlib import Path

import yaml

from .analysis import BEST_OF_SIZES
from .runner import Grid, _variant_label, load_prompts, parse_grid, read_records, record_key, run_grid

REPO = Path(__file__).resolve().parent.parent
GRIDS_DIR = REPO / "grids"
SCALES = ("smoke", "book", "paper")
EXPERIMENTS = {  # experiment name -> grid file in grids/
    "baselines": "advbench_baselines.yaml",
    "sea": "advbench_sea.yaml",
    "ablations": "advbench_ablations.yaml",
    "prefill": "advbench_prefill.yaml",
    "convergence": "advbench_convergence.yaml",
    "tune": "tune_langevin.yaml",
    "exact": "exact_pi_star.yaml",
    "tune_exact": "tune_exact_pi_star.yaml",
    # round 2: harmlessness-v2, 50 tokens (issue "Experiments that can tell whether SEA works")
    "tune_v2": "tune_sea_v2.yaml",
    "baselines_v2": "advbench_v2_baselines.yaml",
    "sea_v2": "advbench_v2_sea.yaml",
    "ablations_v2": "advbench_v2_ablations.yaml",
    "prefill_v2": "advbench_v2_prefill.yaml",
    # the paper's reasoning table, greedy row (issue "The paper's other two tables")
    "gsm8k": "gsm8k_greedy.yaml",
    "math500": "math500_greedy.yaml",
    "truthfulqa": "truthfulqa.yaml",
    "truthfulqa_head": "truthfulqa_head.yaml",
}
COMPUTE_MODES = ("if-empty", "missing", "never")
SMOKE = {"prompts": 2, "length": 8, "steps": 2, "max_n": 8}
PAPER = {"length": 50, "steps": 200}


def scale_note(scale: str) -> str:
    """One line saying what a scale means, printed above every results table."""
    return {"smoke": f"smoke scale: {SMOKE['prompts']} prompts, {SMOKE['length']} tokens, {SMOKE['steps']} SEA "
                     "iterations (a test of the code, not a result)",
            "book": "book scale: the 40 listed AdvBench prompts, 32 tokens, 30 SEA iterations, 4 chains, on a CPU",
            "paper": f"paper scale: all 520 AdvBench prompts, {PAPER['length']} tokens, {PAPER['steps']} SEA "
                     "iterations, 4 chains"}[scale]


def grid_spec(experiment: str) -> dict:
    """The parsed YAML of an experiment's book-scale grid."""
    if experiment not in EXPERIMENTS:
        raise KeyError(f"Unknown experiment {experiment!r}. Known: {sorted(EXPERIMENTS)}")
    with open(GRIDS_DIR / EXPERIMENTS[experiment]) as fh:
        return yaml.safe_load(fh)


def _rescale_params(params: dict, scale: str, keep_steps: bool = False) -> dict:
    """``params`` at ``scale``; ``keep_steps`` leaves the iteration count as listed at paper scale (a grid whose
    variants are iteration budgets, e.g. the frontier's 10 / 30 / 100: ``paper_steps: listed``)."""
    params = dict(params)
    if scale == "smoke":
        if "steps" in params:
            params["steps"] = min(int(params["steps"]), SMOKE["steps"])
        if "n" in params:
            params["n"] = min(int(params["n"]), SMOKE["max_n"])
        if "length" in params:
            params["length"] = SMOKE["length"]
        if "recipe" in params:  # a SEA entry: the rewrite's cap (256 tokens) would dominate a smoke run
            params["rewrite_tokens"] = 0  # 0: the response length (no effect where the recipe does not rewrite)
    elif scale == "paper":
        if "steps" in params and not keep_steps:
            params["steps"] = PAPER["steps"]
        if "length" in params:
            params["length"] = PAPER["length"]
    return params


def scaled_spec(experiment: str, scale: str = "book", policy: str | None = None, reward: str | None = None,
                data_dir: str | None = None, results_dir: str | Path | None = None, device: str | None = None,
                threads: int | None = None, system_prompt: str | None = None, prompts: int | None = None) -> dict:
    """The experiment's grid dict at ``scale`` with optional policy / reward / data / results / device overrides.

    ``prompts``: keep only the first ``prompts`` of the grid's prompts at that scale (a smaller run of the same grid,
    e.g. a slower policy on a CPU). A grid whose reward-unit weights (alpha, the ARGS w, the released recipe's
    reward weight) were set for a measured spread (its ``reward_spread:``, the std of its reward over pi_ref samples)
    moves them to another policy's or reward's recorded spread (:func:`transfer_to_spread`)."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}: choose one of {SCALES}")
    if prompts is not None and (isinstance(prompts, bool) or not isinstance(prompts, int) or prompts < 1):
        raise ValueError(f"prompts={prompts!r}: pass a positive number of prompts, or None for the grid's own")
    spec = copy.deepcopy(grid_spec(experiment))
    if scale == "smoke":
        dataset = spec["dataset"]
        if "ids" in dataset:
            spec["dataset"] = {**dataset, "ids": list(dataset["ids"])[: SMOKE["prompts"]]}
        else:  # a `first: N` grid (the reasoning tasks)
            spec["dataset"] = {**dataset, "first": min(int(dataset.get("first", SMOKE["prompts"])), SMOKE["prompts"])}
        spec["length"] = SMOKE["length"]
    elif scale == "paper":
        if spec.get("paper_prompts", "all") == "all":  # the tuning grid keeps its 5 held-out prompts
            spec["dataset"] = {"name": spec["dataset"]["name"]}  # every prompt
        spec["length"] = int(spec.get("paper_length", PAPER["length"]))  # a worked solution needs more than 50
    keep = spec.get("paper_steps") == "listed"
    for entry in spec["methods"]:
        if entry.get("params"):
            entry["params"] = _rescale_params(entry["params"], scale, keep)
        if entry.get("variants"):  # labels keep the book-scale values (bon[n=64] stays bon[n=64] at smoke scale)
            entry["variants"] = [_rescale_params({"name": _variant_label(entry.get("name", entry["method"]), v), **v}
                                                 if "name" not in v else v, scale, keep) for v in entry["variants"]]
    if scale != "book" and spec.get("defaults"):
        spec["defaults"] = _rescale_params(spec["defaults"], scale, keep)
    if prompts is not None:
        dataset = spec["dataset"]
        if "ids" in dataset:
            spec["dataset"] = {**dataset, "ids": list(dataset["ids"])[:prompts]}
        elif "first" in dataset:
            spec["dataset"] = {**dataset, "first": min(int(dataset["first"]), prompts)}
        else:
            spec["dataset"] = {**dataset, "first": prompts}
    set_for = (spec.get("policy", "smollm2-135m-instruct"), spec.get("reward", "demo"))
    for key, value in (("policy", policy), ("reward", reward), ("data_dir", data_dir), ("device", device),
                       ("threads", threads), ("system_prompt", system_prompt)):
        if value is not None:
            spec[key] = value
    if (spec.get("policy", set_for[0]), spec.get("reward", set_for[1])) != set_for:
        transfer_to_spread(spec, set_for)
    name = Path(spec.get("results") or f"results/{spec['name']}.jsonl").name
    if results_dir is None:
        smoke_dir = os.environ.get("SEA_SMOKE_RESULTS") or Path(tempfile.gettempdir()) / "sea_minimal_smoke"
        results_dir = {"smoke": Path(smoke_dir), "book": REPO / "results",
                       "paper": REPO / "results" / "paper"}[scale]
    spec["results"] = str(Path(results_dir) / name)
    spec["name"] = f"{spec['name']}-{scale}" if scale != "book" else spec["name"]
    return spec


def transfer_to_spread(spec: dict, set_for: tuple[str, str]) -> None:
    """Move a grid's reward-unit weights, set for the spread ``spec["reward_spread"]`` of the reward ``set_for[1]``
    on the policy ``set_for[0]``, to the spread recorded for the grid's (new) policy and reward: each weight times
    old spread / new spread, so that weight x reward keeps its size (the weight rule of ``sea_minimal.scale``).
    Without a ``reward_spread:`` nothing changes; without a recorded spread for the new pair the weights stay as
    written and a warning says how to measure it. Changes ``spec`` in place."""
    from .scale import recorded_spread, transfer_weights

    if not spec.get("reward_spread"):
        return
    policy, reward = spec.get("policy", set_for[0]), spec.get("reward", set_for[1])
    sigma = recorded_spread(policy, reward)
    if sigma is None:
        warnings.warn(f"grid {spec.get('name')!r}: its weights (alpha, w, reward_weight) were set for {set_for[1]} on "
                      f"{set_for[0]} (spread {float(spec['reward_spread']):.3g}); no spread of {reward} on {policy} is "
                      "recorded, so they are used unchanged. Fix: python scripts/train_reward.py spread --policy "
                      f"{policy} (or give the weights in your own grid).", stacklevel=3)
        return
    factor = float(spec["reward_spread"]) / sigma
    for entry in spec["methods"]:
        if entry.get("params"):
            entry["params"] = transfer_weights(entry["params"], factor)
        if entry.get("variants"):
            entry["variants"] = [transfer_weights(v, factor) for v in entry["variants"]]
    spec["reward_spread"] = sigma


def experiment_grid(experiment: str, scale: str = "book", **overrides) -> Grid:
    """``scaled_spec`` parsed into a runnable ``Grid`` (see ``scaled_spec`` for the overrides)."""
    return parse_grid(scaled_spec(experiment, scale, **overrides))


def ablation_full_labels(experiment: str = "ablations_v2", main: str = "sea_v2") -> dict[str, str]:
    """``{recipe: label}``: the row of the ``main`` grid that each recipe's ablation variants in ``experiment`` are
    measured against (the full method). An ablation grid keeps the iteration budget of one of the main grid's rows,
    whose label is ``<recipe>[its=<steps>]`` (e.g. ``sea-langevin[its=30]``); a recipe whose budget the main grid
    does not run is refused by name."""
    labels = {v.get("name") for m in grid_spec(main)["methods"] for v in m.get("variants") or [{}]}
    out = {}
    for entry in grid_spec(experiment)["methods"]:
        recipe, steps = entry["name"], entry["params"]["steps"]
        label = f"{recipe}[its={steps}]"
        if label not in labels:
            raise ValueError(f"grid {experiment!r}: {recipe} runs {steps} iterations, but grid {main!r} has no row "
                             f"{label!r} to compare its variants with; give the ablations a budget {main!r} runs")
        out[recipe] = label
    return out


def prefill_unattacked_labels(experiment: str = "prefill_v2", main: tuple[str, ...] = ("baselines_v2", "sea_v2"),
                              best_of_sizes: tuple[int, ...] = BEST_OF_SIZES) -> dict[str, str]:
    """``{label: method}``: for each method attacked in the prefilling grid ``experiment`` (labels ``<method>@<k>w``),
    the label of its unattacked answer in the ``main`` grids, the mapping ``analysis.prefill_frame`` takes. That is
    the method's own label where the main grids have it (greedy, round 1's rows) or, for SEA, the row
    ``<recipe>[its=<steps>]`` at the attacked run's budget. A Best-of-N row ``bon[n=N]`` may be read from the first N
    samples of a larger Best-of-M run (the records as ``analysis.with_best_of_first`` expands them, for N in
    ``best_of_sizes``). A method without such a run in the main grids is refused by name: its unattacked row would be
    missing from the attack's table."""
    labels = set()
    for name in main:
        for m in experiment_grid(name).methods:
            labels.add(m.label)
            if m.method == "best_of_n" and "[" not in m.label:
                labels.update(f"{m.label}[n={n}]" for n in best_of_sizes if n <= m.params["n"])
    out = {}
    for m in experiment_grid(experiment).methods:
        method = m.label.rpartition("@")[0]
        steps = m.params.get("steps")
        label = method if method in labels or steps is None else f"{method}[its={steps}]"
        if label not in labels:
            raise ValueError(f"grid {experiment!r}: {method} has no unattacked run {label!r} in the grids {list(main)}; "
                             "attack a method at a budget those grids run")
        out[label] = method
    return out


def benchmark_command(scale: str, out: str | Path, *, round_: int = 1, prompts: int = 2, only: tuple[str, ...] = (),
                      device: str | None = None, policy: str | None = None, reward: str | None = None,
                      data_dir: str | Path | None = None) -> list[str]:
    """The argument list that runs ``scripts/benchmark_methods.py`` (each method in a fresh process) for grid round
    ``round_`` at ``scale`` on the first ``prompts`` prompts, writing ``out``; ``only`` restricts it to those method
    labels, and ``device`` / ``policy`` / ``reward`` / ``data_dir`` are passed on when given."""
    cmd = [sys.executable, str(REPO / "scripts" / "benchmark_methods.py"), "--round", str(round_), "--scale", scale,
           "--prompts", str(prompts), "--out", str(out)]
    for flag, value in (("--device", device), ("--policy", policy), ("--reward", reward), ("--data-dir", data_dir)):
        cmd += [flag, str(value)] if value else []
    return cmd + [arg for label in only for arg in ("--only", label)]


def expected_keys(grid: Grid) -> set:
    """The (label, config_hash, prompt_id, seed) keys a complete run of ``grid`` has."""
    prompts = load_prompts(grid.dataset, grid.data_dir)
    return {(m.label, m.config_hash, row["id"], s) for row in prompts for m in grid.methods for s in grid.seeds}


def coverage(grid: Grid) -> dict:
    """{"done", "expected", "missing", "by_label": {label: done}} of ``grid`` in its results file."""
    expected = expected_keys(grid)
    done = {record_key(r) for r in read_records(grid.results)} & expected
    by_label = {m.label: sum(1 for k in done if k[0] == m.label) for m in grid.methods}
    return {"done": len(done), "expected": len(expected), "missing": len(expected - done), "by_label": by_label}


def ensure_results(grid: Grid, compute: str = "if-empty", progress: bool = True) -> dict:
    """Run the grid's missing items according to ``compute`` and return its coverage.

    ``"if-empty"`` runs the grid only when none of its items is recorded yet (a new policy, reward or scale), so
    that re-executing the book from committed, partly complete results stays fast; ``"missing"`` runs every
    missing item (resumable: interrupt and rerun at will); ``"never"`` only reads.
    """
    if compute not in COMPUTE_MODES:
        raise ValueError(f"compute={compute!r}: choose one of {COMPUTE_MODES}")
    cov = coverage(grid)
    if cov["missing"] and (compute == "missing" or (compute == "if-empty" and cov["done"] == 0)):
        run_grid(grid, progress=progress)
        cov = coverage(grid)
    return cov


def load_experiment(grid: Grid):
    """The records of exactly this grid (methods by label and config hash, its prompts and seeds) as the tidy
    DataFrame of ``runner.load_results``, with the grid's method order in ``label_order`` (attrs)."""
    import pandas as pd

    from .runner import load_results

    expected = expected_keys(grid)
    df = load_results(grid.results) if Path(grid.results).exists() else pd.DataFrame()
    if len(df):
        keys = list(zip(df["label"], df["config_hash"], df["prompt_id"], df["seed"]))
        df = df[[k in expected for k in keys]].drop_duplicates(["label", "config_hash", "prompt_id", "seed"])
        df = df.reset_index(drop=True)
    df.attrs["label_order"] = [m.label for m in grid.methods]
    df.attrs["expected_per_label"] = len(expected) // max(len(grid.methods), 1)
    return df


def load_experiment_records(grid: Grid) -> list[dict]:
    """The raw records (dicts, file order) of exactly this grid: its methods, prompts and seeds, first copy of a key."""
    expected, seen, out = expected_keys(grid), set(), []
    if not Path(grid.results).exists():
        return out
    for rec in read_records(grid.results):
        key = record_key(rec)
        if key in expected and key not in seen:
            seen.add(key)
            out.append(rec)
    return out


def prepare(names, scale: str = "book", compute: str = "if-empty", progress: bool = True, **overrides):
    """What every experiment chapter starts with: the named grids at ``scale`` (with ``overrides``), their missing
    items run according to ``compute`` (see ``ensure_results``), and a coverage table (records / expected per grid).
    Returns ``(grids, coverage_frame)``."""
    import pandas as pd

    grids = {name: experiment_grid(name, scale, **overrides) for name in names}
    cov = {name: ensure_results(grid, compute=compute, progress=progress) for name, grid in grids.items()}
    frame = pd.DataFrame([{"grid": grids[n].name, "results file": Path(grids[n].results).name, "records": c["done"],
                           "expected": c["expected"]} for n, c in cov.items()]).set_index("grid")
    return grids, frame
