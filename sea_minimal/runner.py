"""Experiment runner: a YAML grid of methods x prompts x seeds -> one JSON line per run, resumable.

Grid file (see ``grids/smoke.yaml``)::

    name: smoke
    policy: smollm2-135m-instruct     # bundled name, local folder, HF id, or tiny-random (tests)
    system_prompt: null               # optional: null keeps the chat template's default; "" = an empty system
                                      # message (the paper's setting for Llama); part of every config hash when set
    reward: demo                      # demo | harmlessness | harmlessness-v2 | contrast-refusal | contrast-truthful | linear (tiny-random) | <HF id or folder>
    dataset: {name: advbench, first: 2}   # or ids: [...], or subset: {n: 50, seed: 0};
                                          # or {name: inline, prompts: [...]}
    seeds: [0]
    length: 50                        # response tokens, given to every method unless its params override it
    defaults: {}                      # other params given to every method (optional)
    results: results/smoke.jsonl      # relative paths are relative to the working directory
    device: cpu                       # optional (default: cuda when available)
    threads: 1                        # optional torch CPU threads (1 is far faster on a CPU shared with other jobs)
    batch_prompts: 1                  # optional: prompts run together by methods with a batched form (greedy, BoN,
                                      # ARGS, CBS, SEA);
                                      # records are the same as one at a time (``run --batch-prompts N`` overrides)
    data_dir: null                    # optional (default: $SEA_DATA_DIR, else ../shared/data)
    methods:
      - {name: greedy, method: greedy}
      - {name: bon, method: best_of_n, params: {n: 2}, variants: [{n: 2}, {n: 8}]}   # -> bon[n=2], bon[n=8]
      - {name: sea, method: sea, params: {steps: 2}}

A method entry may set ``prefill: "Sure, I can"`` in its params (or variants): the runner opens the assistant turn
with that text (a prefilling attack) and the method continues it; the record keeps ``prefill`` and judges
``prefill + text``.

Each (method label, config hash, prompt id, seed) is one record, appended to the results file as one line with a
single ``os.write`` on an ``O_APPEND`` descriptor followed by ``os.fsync``. The config hash covers the method, its
full params, the policy, the reward and the dataset, so a changed setting is a new key. On start the runner reads
the keys already present and skips them, so it can be killed (even with SIGKILL) and restarted: at most a trailing
partial line is lost, and it is cut off (with a warning) before new lines are appended. A lock (``flock``) keeps
two runners from writing the same file at once.

``load_results(path)`` reads a results file into a tidy pandas DataFrame (one row per record, metrics and compute
as columns).
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import yaml

KEY_FIELDS = ("label", "config_hash", "prompt_id", "seed")
RUNNER_PARAMS = {"prefill"}  # params the runner consumes itself (not passed to the method)
TINY_POLICY = "tiny-random"


# ---------------------------------------------------------------------------------------------- the grid
@dataclass
class MethodSpec:
    label: str
    method: str
    params: dict
    config_hash: str = ""


@dataclass
class Grid:
    name: str
    methods: list[MethodSpec]
    dataset: dict
    seeds: list[int]
    results: Path
    policy: str = "smollm2-135m-instruct"
    reward: str = "demo"
    device: str | None = None
    data_dir: str | None = None
    sleep: float = 0.0  # seconds to wait after each item (demos and the kill/resume test)
    threads: int | None = None  # torch CPU threads (1 is far faster on a CPU shared with other jobs)
    system_prompt: str | None = None  # None keeps the chat template's default system message
    batch_prompts: int = 1  # prompts run together by methods in methods.BATCHED (greedy, BoN, ARGS, CBS, SEA)
    raw: dict = field(default_factory=dict)


class GridError(ValueError):
    """The grid file is invalid; the message names the problem and the fix."""


def config_hash(method: str, params: dict, policy: str, reward: str, dataset: str) -> str:
    """Stable 10-character hash of everything that defines one method's output besides prompt and seed."""
    blob = json.dumps({"method": method, "params": params, "policy": policy, "reward": reward, "dataset": dataset},
                      sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def _variant_label(name: str, variant: dict) -> str:
    return name + "[" + ",".join(f"{k}={v}" for k, v in variant.items()) + "]"


def _check_params(method: str, params: dict) -> None:
    from .config import SEAConfig
    from .methods import get_method

    try:
        fn = get_method(method)
    except KeyError as err:
        raise GridError(str(err.args[0])) from None
    sig = inspect.signature(fn)
    reserved = {"policy", "reward", "prompt", "seed"}  # the runner passes these itself
    given = sorted(reserved & set(params))
    if given:
        raise GridError(f"method {method!r} is given {given} in `params:`, which the runner sets itself. Fix: remove "
                        "them (the grid's `policy:`, `reward:`, `dataset:` and `seeds:` set them).")
    accepted = {n for n, p in sig.parameters.items() if p.kind is not p.VAR_KEYWORD} - reserved
    accepted |= RUNNER_PARAMS
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        accepted |= set(SEAConfig.__dataclass_fields__) - reserved if method == "sea" else set(params)
    unknown = sorted(set(params) - accepted)
    if unknown:
        raise GridError(f"method {method!r} does not take the params {unknown}. It takes: {sorted(accepted)}")


def parse_grid(spec: dict, results: str | os.PathLike | None = None) -> Grid:
    """Validate a grid dict (the parsed YAML) and expand its methods/variants."""
    if not isinstance(spec, dict):
        raise GridError("A grid must be a mapping with at least `methods:` and `dataset:`.")
    for key in ("methods", "dataset"):
        if key not in spec:
            raise GridError(f"The grid has no `{key}:` entry (see sea_minimal/runner.py for the format).")
    name = str(spec.get("name", "grid"))
    defaults = dict(spec.get("defaults") or {})
    if "length" in spec:
        defaults.setdefault("length", int(spec["length"]))
    dataset = spec["dataset"] if isinstance(spec["dataset"], dict) else {"name": spec["dataset"]}
    if "name" not in dataset:
        raise GridError("`dataset:` needs a `name:` (advbench, hh_rlhf, truthfulqa, gsm8k, math500 or inline).")
    policy, reward = str(spec.get("policy", "smollm2-135m-instruct")), str(spec.get("reward", "demo"))
    system_prompt = spec.get("system_prompt")
    # the policy key of the hash: unchanged when the template's default system message is kept (older records)
    policy_key = policy if system_prompt is None else f"{policy}|system={system_prompt!r}"
    methods: list[MethodSpec] = []
    for entry in spec["methods"]:
        if isinstance(entry, str):
            entry = {"name": entry, "method": entry}
        if "method" not in entry:
            raise GridError(f"method entry {entry!r} has no `method:` (a key of sea_minimal.methods.METHODS).")
        base = {**defaults, **(entry.get("params") or {})}
        label = str(entry.get("name", entry["method"]))
        variants = entry.get("variants") or [None]
        for variant in variants:
            params, lab = dict(base), label
            if variant is not None:
                variant = dict(variant)
                lab = str(variant.pop("name", None) or _variant_label(label, variant))
                params.update(variant)
            _check_params(entry["method"], params)
            h = config_hash(entry["method"], params, policy_key, reward, dataset["name"])
            methods.append(MethodSpec(lab, entry["method"], params, h))
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise GridError(f"Method labels must be unique, got {labels}. Fix: give each entry/variant its own `name:`.")
    seeds = spec.get("seeds", [0])
    seeds = [int(s) for s in (seeds if isinstance(seeds, list) else [seeds])]
    out = results or spec.get("results") or f"results/{name}.jsonl"
    return Grid(name=name, methods=methods, dataset=dataset, seeds=seeds, results=Path(out), policy=policy,
                reward=reward, device=spec.get("device"), data_dir=spec.get("data_dir"),
                sleep=float(spec.get("sleep", 0.0)), threads=spec.get("threads"), system_prompt=system_prompt,
                batch_prompts=_positive_int(spec.get("batch_prompts", 1), "batch_prompts"), raw=spec)


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise GridError(f"`{name}:` must be a positive integer, got {value!r}.")
    return value


def label_matches(label: str, pattern: str) -> bool:
    """Shell-style match of a method label, where ``[`` and ``]`` are literal: labels such as ``bon[n=16]@5w``
    carry their parameters in brackets, so ``bon[n=16]@*`` must select them (not read ``[n=16]`` as a set)."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, label, flags=re.DOTALL) is not None


def select_methods(grid: Grid, patterns: list[str] | None) -> Grid:
    """The grid restricted to the methods whose label matches one of the shell ``patterns`` (None: all);
    ``*`` and ``?`` are wildcards, brackets are literal (see :func:`label_matches`)."""
    if not patterns:
        return grid
    kept = [m for m in grid.methods if any(label_matches(m.label, p) for p in patterns)]
    if not kept:
        raise GridError(f"No method label matches {patterns}. Labels: {[m.label for m in grid.methods]}")
    return Grid(**{**grid.__dict__, "methods": kept})


def load_grid(path: str | os.PathLike, results: str | os.PathLike | None = None) -> Grid:
    with open(path) as fh:
        spec = yaml.safe_load(fh)
    return parse_grid(spec, results)


def load_prompts(dataset: dict, data_dir=None) -> list[dict]:
    """The grid's prompts: rows {id, prompt, ...} of the named dataset, selected by ids / first / subset."""
    from . import data

    if dataset["name"] == "inline":
        rows = [{"id": i, "prompt": p} for i, p in enumerate(dataset.get("prompts") or [])]
        if not rows:
            raise GridError("dataset `inline` needs a non-empty `prompts:` list.")
    else:
        rows = data.load_dataset(dataset["name"], data_dir)
    return data.select(rows, ids=dataset.get("ids"), first=dataset.get("first"), subset=dataset.get("subset"))


# ---------------------------------------------------------------------------------------------- policy, reward
def tiny_random_policy(vocab_size: int = 32, seed: int = 0, device: str = "cpu"):
    """A tiny random Llama without tokenizer (prompts become token ids): for tests and dry runs."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from .models import Policy

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         initializer_range=0.5, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return Policy(LlamaForCausalLM(config).to(device).eval(), tokenizer=None, name=TINY_POLICY)


def make_policy(name: str, device: str | None = None, system_prompt: str | None = None):
    if name == TINY_POLICY:
        return tiny_random_policy(device=device or "cpu")
    from .models import load_policy

    return load_policy(name, device=device, system_prompt=system_prompt)


def make_reward(name: str, policy):
    """demo (vocabulary reward), harmlessness (the project's trained head), linear (tiny tests), or an HF id/folder
    of a sequence-classification reward model sharing the policy's vocabulary."""
    import torch

    from .rewards import VocabReward, demo_reward

    if name == "demo":
        return demo_reward(policy)
    if name == "linear":
        return VocabReward(torch.linspace(-1.0, 1.0, policy.vocab_size, device=policy.device), reduce="mean")
    if name == "contrast-refusal":  # r_c = log pi_ref(y | refusal turns + x) - log pi_ref(y | x), exact pi* known
        from .contrast import ContrastReward

        return ContrastReward(policy)
    if name == "contrast-truthful":  # the same with TruthfulQA's QA primer as the context (sea_minimal.truthfulqa)
        from .contrast import ContrastReward
        from .truthfulqa import QA_PRIMER_TURNS

        return ContrastReward(policy, turns=QA_PRIMER_TURNS)
    if name == "truthful-head":  # a Bradley-Terry head on TruthfulQA reference answers (questions 160-816)
        from .truthfulqa import load_truth_reward

        return load_truth_reward(policy)
    if name in ("harmlessness", "harmlessness-v2"):  # the HH-only head of the first runs; the on-policy head
        from .reward_model import HEAD_FILE, V2_HEAD_FILE, load_harmlessness_reward, v2_head_file

        own = v2_head_file(getattr(policy, "name", ""))  # a head trained on this policy's backbone, if there is one
        v2 = own if own.exists() else V2_HEAD_FILE
        return load_harmlessness_reward(policy, v2 if name == "harmlessness-v2" else HEAD_FILE)
    from .reward_model import load_hf_reward

    return load_hf_reward(name, policy)  # vocabulary check; drops GRM's extra padding row explicitly


def prompt_input(policy, text: str, prefill: str = ""):
    """What a method is given: the text; with a ``prefill``, the token ids of the chat prompt whose assistant turn
    starts with it; for a tokenizer-free tiny policy, a deterministic list of token ids."""
    if policy.tokenizer is None:
        return [ord(c) % policy.vocab_size for c in (text + prefill)[:24]] or [0]
    if prefill:
        return policy.encode_prompt(text, prefill=prefill).tolist()
    return text


# ---------------------------------------------------------------------------------------------- results file
def _parse_lines(data: bytes, path) -> tuple[list[dict], int]:
    """Parse complete lines; returns (records, byte length of the complete part). Warns on bad lines."""
    end = data.rfind(b"\n") + 1
    if end < len(data):
        warnings.warn(f"{path}: ignoring a trailing partial line ({len(data) - end} bytes; an interrupted write).")
    records = []
    for n, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}: line {n} is not valid JSON; ignored.")
    return records, end


def read_records(path: str | os.PathLike) -> list[dict]:
    """All complete records of a results file (a trailing partial line is ignored with a warning)."""
    path = Path(path)
    if not path.exists():
        return []
    return _parse_lines(path.read_bytes(), path)[0]


def record_key(rec: dict) -> tuple:
    return tuple(rec[k] for k in KEY_FIELDS)


class ResultsFile:
    """Append-only JSONL file with an exclusive lock; cuts a trailing partial line on open."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise RuntimeError(f"{self.path} is locked by another runner. Wait for it, or use another results file.")
        size = os.fstat(self.fd).st_size
        data = os.pread(self.fd, size, 0) if size else b""
        self.records, end = _parse_lines(data, self.path)
        if end < size:
            os.ftruncate(self.fd, end)  # a killed write left half a line: drop it before appending
            os.fsync(self.fd)

    def keys(self) -> set:
        return {record_key(r) for r in self.records if all(k in r for k in KEY_FIELDS)}

    def append(self, record: dict) -> None:
        line = (json.dumps(record, default=_json_default, allow_nan=True) + "\n").encode()
        written = os.write(self.fd, line)  # O_APPEND: one write at the end of the file
        while written < len(line):  # not expected for regular files; never leaves a gap
            written += os.write(self.fd, line[written:])
        os.fsync(self.fd)

    def close(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def merge_results(target: str | os.PathLike, *parts: str | os.PathLike) -> int:
    """Append to ``target`` every record of ``parts`` whose key it lacks; returns how many were added.

    One runner holds a results file at a time, so parallel workers each write their own file (``run --results``);
    this folds them back in. Records already in ``target`` (same label, config hash, prompt and seed) are skipped,
    so merging twice adds nothing."""
    added = 0
    with ResultsFile(target) as out:
        seen = out.keys()
        for part in parts:
            if not Path(part).exists():
                raise FileNotFoundError(f"No results file {part}. Fix: pass the files that `run --results` wrote.")
            for rec in read_records(part):
                if record_key(rec) not in seen:
                    out.append(rec)
                    seen.add(record_key(rec))
                    added += 1
    return added


def _json_default(obj):
    try:
        import torch

        if isinstance(obj, torch.Tensor):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---------------------------------------------------------------------------------------------- metrics
def _keyword_judge():
    try:
        from . import judges
    except Exception:  # noqa: BLE001 - the judges module is optional
        return None
    return getattr(judges, "keyword_is_harmful", None)


def record_metrics(policy, prompt, result, judge=None, prefill: str = "", reward=None) -> dict:
    """Metrics of the selected response: reward, log pi_ref (sum, per token), length, diversity, keyword judge and
    three-outcome judge (``outcome``: refused / complied / broken, :func:`sea_minimal.judges.outcome` at
    :data:`~sea_minimal.judges.FLUENCY_LIMIT`), both of ``prefill + text``: what the user reads under a prefilling
    attack.

    With the contrast reward (exact optimum known) also, for every candidate, log pi_ref(y|x) and log pi_ref(y|x+)
    on the response space (``optimum_log_pi_ref`` / ``optimum_log_pi_steered``, lists in candidate order): at
    alpha = 1 the second is the exact log pi*(y|x)."""
    from .metrics import diversity, response_length, response_logprob

    cand = result.candidates[result.selected]
    ids = cand.get("token_ids") or []
    logp = response_logprob(policy, prompt, ids)
    length = response_length(result.text, ids)
    out = {"reward": cand["reward"], "initial_reward": max(result.initial_rewards) if result.initial_rewards else None,
           "logp_ref_sum": logp["sum"], "logp_ref_per_token": logp["per_token"], "length_tokens": length["tokens"],
           "length_words": length["words"], "diversity": diversity(result.text)}
    if judge is not None:
        out["keyword_harmful"] = bool(judge(prefill + result.text))
    if policy.tokenizer is not None and ids:  # refused / complied / broken, of what the user reads
        from .judges import FLUENCY_LIMIT, outcome

        out["outcome"] = outcome(prefill + result.text, logp["per_token"], FLUENCY_LIMIT)
    from .contrast import ContrastReward, score_responses

    if isinstance(reward, ContrastReward):
        ids = [c["token_ids"] for c in result.candidates]
        scores = score_responses(reward, policy.encode_prompt(prompt), ids)
        out["optimum_log_pi_ref"], out["optimum_log_pi_steered"] = scores.log_pi_ref.tolist(), scores.log_pi_steered.tolist()
    return out


# ---------------------------------------------------------------------------------------------- running
def pending_items(grid: Grid, prompts: list[dict], done: set) -> list[tuple[MethodSpec, dict, int]]:
    """(method, prompt row, seed) not yet in ``done``; prompt-major order, so partial runs compare methods."""
    return [(m, row, s) for row in prompts for m in grid.methods for s in grid.seeds
            if (m.label, m.config_hash, row["id"], s) not in done]


def _batches(pending: list, size: int) -> list[list]:
    """Pending items in run order, as groups run together: up to ``size`` items of one method and seed for a
    method with a batched form (methods.BATCHED), single items otherwise. Each group keeps its first item's place."""
    from .methods import BATCHED

    groups, open_groups = [], {}
    for item in pending:
        spec, _, seed = item
        if size <= 1 or spec.method not in BATCHED:
            groups.append([item])
            continue
        key = (spec.label, seed)
        if key not in open_groups or len(open_groups[key]) >= size:
            open_groups[key] = [item]
            groups.append(open_groups[key])
        else:
            open_groups[key].append(item)
    return groups


def _record(grid, spec, row, seed, prefill, prompt, res, policy, reward, judge, wall_time: float) -> dict:
    """The results-file line of one (method, prompt, seed) run."""
    return {
        "label": spec.label, "config_hash": spec.config_hash, "prompt_id": row["id"], "seed": seed,
        "method": spec.method, "result_method": res.method, "params": spec.params, "grid": grid.name,
        "dataset": grid.dataset["name"], "policy": grid.policy, "reward_name": grid.reward,
        "prompt": row["prompt"], "prefill": prefill, "text": res.text, "selected": res.selected,
        "candidates": res.candidates, "initial_texts": res.initial_texts,
        "initial_rewards": res.initial_rewards, "iterations": res.iterations,
        "trajectory": res.trajectory, "kl_per_position": res.kl_per_position,
        "metrics": record_metrics(policy, prompt, res, judge, prefill, reward), "compute": res.compute,
        "wall_time": wall_time, "versions": res.versions, "device": res.device,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run_grid(grid: Grid | dict | str | os.PathLike, policy_factory: Callable | None = None,
             reward_factory: Callable | None = None, progress: bool = True, limit: int | None = None,
             log: Callable[[str], None] = print, only: set | None = None) -> dict:
    """Run every pending item of ``grid`` and append its record. Returns {done, skipped, pending_left, path}.

    ``policy_factory(name, device) -> Policy`` and ``reward_factory(name, policy) -> Reward`` replace the default
    loaders (tests). ``limit`` runs at most that many items this time. ``only``: run just the items whose key
    (label, config hash, prompt id, seed) is in this set, and count only those (a cluster job's share:
    :mod:`sea_minimal.cluster`).
    """
    from tqdm.auto import tqdm

    from .methods import BATCHED
    from .methods import get_method

    if not isinstance(grid, Grid):
        grid = parse_grid(grid) if isinstance(grid, dict) else load_grid(grid)
    prompts = load_prompts(grid.dataset, grid.data_dir)

    def mine(items):
        return items if only is None else [it for it in items if (it[0].label, it[0].config_hash, it[1]["id"], it[2])
                                           in only]

    with ResultsFile(grid.results) as results:
        pending = mine(pending_items(grid, prompts, results.keys()))
        total = len(prompts) * len(grid.methods) * len(grid.seeds) if only is None else len(only)
        skipped = total - len(pending)
        if limit is not None:
            pending = pending[: int(limit)]
        log(f"[sea_minimal] grid '{grid.name}': {total} items ({len(grid.methods)} methods x {len(prompts)} prompts x "
            f"{len(grid.seeds)} seeds), {skipped} already in {grid.results}, running {len(pending)}")
        if not pending:
            return {"done": 0, "skipped": skipped, "pending_left": 0, "path": str(grid.results)}
        if grid.threads:
            import torch

            torch.set_num_threads(int(grid.threads))
        policy = (make_policy(grid.policy, grid.device, grid.system_prompt) if policy_factory is None
                  else policy_factory(grid.policy, grid.device))
        reward = (reward_factory or make_reward)(grid.reward, policy)
        judge = _keyword_judge()
        bar = tqdm(total=len(pending), desc=grid.name, unit="run", disable=not progress, dynamic_ncols=True)
        done = 0
        for group in _batches(pending, grid.batch_prompts):
            spec, seed = group[0][0], group[0][2]
            more = f" +{len(group) - 1}" if len(group) > 1 else ""
            bar.set_postfix_str(f"{spec.label} #{group[0][1]['id']}{more} seed {seed}")
            params = {k: v for k, v in spec.params.items() if k not in RUNNER_PARAMS}
            prefill = str(spec.params.get("prefill") or "")
            inputs = [prompt_input(policy, row["prompt"], prefill) for _, row, _ in group]
            start = time.perf_counter()
            try:
                if len(group) > 1:
                    outs = BATCHED[spec.method](policy, reward, inputs, [s for _, _, s in group], **params)
                else:
                    outs = [get_method(spec.method)(policy, reward, inputs[0], seed, **params)]
            except Exception as err:
                ids = ", ".join(str(row["id"]) for _, row, _ in group)
                raise RuntimeError(f"{spec.label} failed on prompt {ids} seed {seed}: {err}") from err
            share = (time.perf_counter() - start) / len(group)
            for (_, row, seed), prompt, res in zip(group, inputs, outs):
                results.append(_record(grid, spec, row, seed, prefill, prompt, res, policy, reward, judge,
                                       share if len(group) > 1 else time.perf_counter() - start))
                done += 1
                bar.update(1)
            if grid.sleep:
                time.sleep(grid.sleep)
        bar.close()
    left = len(mine(pending_items(grid, prompts, {record_key(r) for r in read_records(grid.results)})))
    log(f"[sea_minimal] wrote {done} records to {grid.results} ({left} items left)")
    return {"done": done, "skipped": skipped, "pending_left": left, "path": str(grid.results)}


# ---------------------------------------------------------------------------------------------- analysis
def load_results(path: str | os.PathLike):
    """A results file as a tidy DataFrame: one row per record; ``metrics`` as columns, ``compute`` as
    ``compute_*`` columns; params, candidates and versions kept as objects (``params_json`` for grouping)."""
    import pandas as pd

    rows = []
    for rec in read_records(path):
        row = {k: v for k, v in rec.items() if k not in ("metrics", "compute")}
        row.update(rec.get("metrics") or {})
        row.update({f"compute_{k}": v for k, v in (rec.get("compute") or {}).items()})
        row["params_json"] = json.dumps(rec.get("params", {}), sort_keys=True)
        rows.append(row)
    return pd.DataFrame(rows)
