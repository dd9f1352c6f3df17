"""Experiment runner: grid parsing, records, resume after SIGKILL, partial lines, load_results, CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sea_minimal import runner
from sea_minimal.data import data_dir

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "Write a poem.", "Explain gravity.", "Say hi.", "Count to 3."]


def tiny_grid(results, n_prompts=3, sleep=0.0, **extra):
    return {"name": "tiny", "policy": "tiny-random", "reward": "linear", "length": 4, "seeds": [0],
            "dataset": {"name": "inline", "prompts": PROMPTS[:n_prompts]}, "results": str(results), "sleep": sleep,
            "methods": [{"name": "greedy", "method": "greedy"},
                        {"name": "bon", "method": "best_of_n", "params": {"n": 2, "initial": False}}], **extra}


def lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_parse_grid_variants_and_hashes(tmp_path):
    spec = tiny_grid(tmp_path / "r.jsonl")
    spec["methods"].append({"name": "args", "method": "args", "params": {"top_k": 3}, "variants": [{"w": 0.5}, {"w": 2}]})
    spec["methods"].append({"name": "sea", "method": "sea", "params": {"steps": 2, "num_chains": 2}})
    grid = runner.parse_grid(spec)
    assert [m.label for m in grid.methods] == ["greedy", "bon", "args[w=0.5]", "args[w=2]", "sea"]
    assert grid.methods[2].params == {"length": 4, "top_k": 3, "w": 0.5}
    assert len({m.config_hash for m in grid.methods}) == 5
    again = runner.parse_grid(spec)
    assert [m.config_hash for m in again.methods] == [m.config_hash for m in grid.methods]  # stable
    other = runner.parse_grid({**spec, "length": 5})
    assert other.methods[0].config_hash != grid.methods[0].config_hash  # params are part of the key
    with pytest.raises(runner.GridError, match="does not take"):
        runner.parse_grid({**spec, "methods": [{"method": "best_of_n", "params": {"beams": 2}}]})
    with pytest.raises(runner.GridError, match="Unknown method"):
        runner.parse_grid({**spec, "methods": [{"method": "dpo"}]})
    with pytest.raises(runner.GridError, match="unique"):
        runner.parse_grid({**spec, "methods": [{"method": "greedy"}, {"method": "greedy"}]})


def test_run_records_and_resume_in_process(tmp_path):
    path = tmp_path / "r.jsonl"
    summary = runner.run_grid(tiny_grid(path), progress=False, log=lambda s: None)
    assert summary["done"] == 6 and summary["pending_left"] == 0
    recs = lines(path)
    assert len({runner.record_key(r) for r in recs}) == 6
    rec = recs[0]
    for key in ("label", "method", "params", "config_hash", "prompt_id", "prompt", "seed", "text", "candidates",
                "metrics", "compute", "versions", "device", "timestamp"):
        assert key in rec
    assert {"reward", "logp_ref_sum", "logp_ref_per_token", "length_tokens", "length_words",
            "diversity"} <= set(rec["metrics"])
    assert rec["compute"]["forward_tokens"] > 0 and rec["metrics"]["length_tokens"] == 4
    again = runner.run_grid(tiny_grid(path), progress=False, log=lambda s: None)
    assert again["done"] == 0 and again["skipped"] == 6 and len(lines(path)) == 6
    more = runner.run_grid(tiny_grid(path, n_prompts=4), progress=False, log=lambda s: None)  # grid grows
    assert more["done"] == 2 and len(lines(path)) == 8

    df = runner.load_results(path)
    assert len(df) == 8 and {"label", "prompt_id", "reward", "diversity", "compute_forward_tokens"} <= set(df.columns)
    assert df.groupby("label").size().to_dict() == {"bon": 4, "greedy": 4}


def test_trailing_partial_line_is_cut_and_rerun(tmp_path):
    path = tmp_path / "r.jsonl"
    runner.run_grid(tiny_grid(path, n_prompts=2), progress=False, log=lambda s: None)
    good = path.read_bytes()
    first_two = good.split(b"\n")[:2]
    path.write_bytes(b"\n".join(first_two) + b"\n" + b'{"label": "bon", "config_ha')  # killed mid-write
    with pytest.warns(UserWarning, match="partial line"):
        assert len(runner.read_records(path)) == 2
    with pytest.warns(UserWarning, match="partial line"):
        df = runner.load_results(path)
    assert len(df) == 2
    with pytest.warns(UserWarning, match="partial line"):
        summary = runner.run_grid(tiny_grid(path, n_prompts=2), progress=False, log=lambda s: None)
    assert summary["done"] == 2
    recs = lines(path)  # every line parses
    assert len(recs) == 4 and len({runner.record_key(r) for r in recs}) == 4


def test_second_runner_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    with runner.ResultsFile(path):
        with pytest.raises(RuntimeError, match="locked"):
            runner.ResultsFile(path)


@pytest.mark.heavy  # 25 s of subprocesses: left out of mutation runs, kept in the suite
def test_sigkill_and_restart_loses_and_duplicates_nothing(tmp_path):
    """Run the CLI in a subprocess, SIGKILL it after a few records, restart: every key exactly once."""
    path = tmp_path / "r.jsonl"
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(path, n_prompts=6, sleep=0.4)))
    cmd = [sys.executable, "-m", "sea_minimal", "run", str(grid_file), "--quiet", "--threads", "1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            if path.exists() and path.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"runner ended before the kill: {proc.stdout.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    killed_at = path.read_bytes().count(b"\n")
    assert 3 <= killed_at < 12, "the kill should land in the middle of the 12 items"
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{killed_at} already in" in done.stdout
    text = path.read_text()
    assert text.endswith("\n")
    recs = [json.loads(line) for line in text.splitlines()]  # no corrupt line
    keys = [runner.record_key(r) for r in recs]
    assert len(keys) == 12 and len(set(keys)) == 12
    assert {(k[0], k[2]) for k in keys} == {(m, i) for m in ("greedy", "bon") for i in range(6)}


def test_cli_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmethods: [{method: nosuch}]\ndataset: {name: inline, prompts: [hi]}\n")
    out = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "Unknown method" in out.stderr


@pytest.mark.slow
def test_smoke_grid_cli(tmp_path):
    """grids/smoke.yaml on the bundled model (first prompt: greedy, BoN-2, SEA 2 steps), through the CLI."""
    if not (data_dir() / "advbench").is_dir():
        from conftest import missing_prerequisite

        missing_prerequisite(f"no AdvBench under {data_dir()} (set SEA_DATA_DIR)")
    path = tmp_path / "smoke.jsonl"
    out = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(REPO / "grids" / "smoke.yaml"),
                          "--results", str(path), "--limit", "3", "--quiet"], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    recs = lines(path)
    assert [r["label"] for r in recs] == ["greedy", "bon-2", "sea"] and {r["prompt_id"] for r in recs} == {0}
    assert recs[2]["result_method"] == "sea-langevin" and recs[2]["compute"]["backward_tokens"] > 0
    assert all(r["text"] and r["metrics"]["length_tokens"] == 8 for r in recs)


def test_prefill_param_is_consumed_by_the_runner_and_recorded(tmp_path):
    path = tmp_path / "p.jsonl"
    spec = tiny_grid(path, n_prompts=2)
    spec["methods"] = [{"name": "greedy", "method": "greedy", "variants": [{"name": "greedy@0w", "prefill": ""},
                                                                         {"name": "greedy@2w", "prefill": "ab"}]},
                       {"name": "sea", "method": "sea", "params": {"steps": 2, "num_chains": 2, "prefill": "ab"}}]
    grid = runner.parse_grid(spec)
    assert len({m.config_hash for m in grid.methods}) == 3  # the prefill is part of the key
    runner.run_grid(grid, progress=False, log=lambda s: None)
    recs = {(r["label"], r["prompt_id"]): r for r in lines(path)}
    assert recs[("greedy@2w", 0)]["prefill"] == "ab" and recs[("greedy@0w", 0)]["prefill"] == ""
    # the tiny policy reads the prefill as part of its prompt ids, so the continuation changes
    assert recs[("greedy@2w", 0)]["candidates"][0]["token_ids"] != recs[("greedy@0w", 0)]["candidates"][0]["token_ids"]
    sea = recs[("sea", 1)]
    assert len(sea["trajectory"]["reward_hard"]) == 2 and len(sea["kl_per_position"]) == 2


def test_prefill_is_appended_after_the_opened_assistant_turn():
    class Tok:
        chat_template = "x"

        def apply_chat_template(self, messages, tokenize, add_generation_prompt):
            return "<user>" + messages[-1]["content"] + "<assistant>"

        def __call__(self, text, add_special_tokens, return_tensors):
            import torch
            return {"input_ids": torch.tensor([[ord(c) for c in text]])}

    policy = runner.tiny_random_policy(vocab_size=256)
    policy.tokenizer = Tok()
    ids = runner.prompt_input(policy, "hi", prefill="Sure,")
    assert "".join(chr(i) for i in ids) == "<user>hi<assistant>Sure,"
    assert runner.prompt_input(policy, "hi") == "hi"


def test_only_runs_the_matching_methods(tmp_path):
    path = tmp_path / "o.jsonl"
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(path, n_prompts=2)))
    from sea_minimal.__main__ import main

    assert main(["run", str(grid_file), "--only", "bo*", "--quiet"]) == 0
    assert {r["label"] for r in lines(path)} == {"bon"}
    assert main(["run", str(grid_file), "--only", "nothing*", "--quiet"]) == 2


def test_only_patterns_treat_brackets_in_labels_literally():
    # Labels carry their parameters in brackets: 'bon[n=16]@*' selects them instead of reading [n=16] as a set.
    assert runner.label_matches("bon[n=16]@5w", "bon[n=16]@*")
    assert not runner.label_matches("bon[n=16]@5w", "bon[n=4]@*")
    assert runner.label_matches("bon[n=16]@5w", "bon*") and runner.label_matches("sea-x/1ch", "sea-?/*")
    assert not runner.label_matches("greedy", "gr.edy")  # regex characters are literal too


def test_parallel_workers_merge_without_duplicates(tmp_path):
    # Two workers on one grid, each with its own results file (one runner per file), folded back together.
    main_file, part = tmp_path / "main.jsonl", tmp_path / "part.jsonl"
    grid_file = tmp_path / "g.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(main_file, n_prompts=3)))
    from sea_minimal.__main__ import main

    assert main(["run", str(grid_file), "--only", "greedy", "--quiet"]) == 0
    assert main(["run", str(grid_file), "--only", "bon", "--limit", "2", "--results", str(part), "--quiet"]) == 0
    assert main(["merge", str(main_file), str(part)]) == 0
    assert runner.merge_results(main_file, part) == 0  # twice adds nothing
    recs = lines(main_file)
    assert len(recs) == len({runner.record_key(r) for r in recs}) == 5
    assert main(["run", str(grid_file), "--quiet"]) == 0  # the grid sees the merged records: only 1 item is left
    assert len(lines(main_file)) == 6
    assert main(["merge", str(main_file), str(tmp_path / "missing.jsonl")]) == 2


# --------------------------------------------------------------------------------------------- found by mutmut


def _rec(label, prompt_id, **extra):
    return {"label": label, "config_hash": "h", "prompt_id": prompt_id, "seed": 0, **extra}


def test_merge_counts_and_deduplicates_within_and_across_parts(tmp_path):
    target, a, b = tmp_path / "all.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(_rec("m", i)) + "\n" for i in (0, 1)))
    b.write_text("".join(json.dumps(_rec("m", i)) + "\n" for i in (1, 2, 2, 3)))  # 1 is in a; 2 twice
    assert runner.merge_results(target, a, b) == 4
    assert sorted(r["prompt_id"] for r in runner.read_records(target)) == [0, 1, 2, 3]
    assert runner.merge_results(target, a, b) == 0
    with pytest.raises(FileNotFoundError, match=r"No results file .*missing\.jsonl\. Fix: pass the files that"):
        runner.merge_results(target, tmp_path / "missing.jsonl")


def test_load_results_flattens_metrics_and_compute(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(_rec("m", 0, params={"b": 1, "a": 2}, metrics={"reward": 0.5},
                                    compute={"forward_tokens": 7})) + "\n" + json.dumps(_rec("m", 1)) + "\n")
    df = runner.load_results(path)
    assert "metrics" not in df and "compute" not in df
    assert df.loc[0, "reward"] == 0.5 and df.loc[0, "compute_forward_tokens"] == 7
    assert list(df["params_json"]) == ['{"a": 2, "b": 1}', "{}"]


def test_records_serialise_paths_tuples_and_tensors_and_name_what_they_cannot():
    import torch

    assert json.loads(json.dumps({"p": Path("x/y"), "t": (1, 2), "z": torch.tensor([1.5])},
                                 default=runner._json_default)) == {"p": "x/y", "t": [1, 2], "z": [1.5]}
    with pytest.raises(TypeError, match="^not JSON serialisable: set$"):
        runner._json_default({1})


def test_a_record_has_exactly_the_documented_fields_and_a_rerun_says_what_it_skipped(tmp_path):
    path, logged = tmp_path / "r.jsonl", []
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(path)))
    first = runner.run_grid(grid_file, progress=False, log=logged.append)  # a grid read from its YAML file
    assert first["done"] == 6 and first["skipped"] == 0
    assert any("6 items (2 methods x 3 prompts x 1 seeds), 0 already in" in line for line in logged)
    rec = lines(path)[0]
    assert set(rec) == {"label", "config_hash", "prompt_id", "seed", "method", "result_method", "params", "grid",
                        "dataset", "policy", "reward_name", "prompt", "prefill", "text", "selected", "candidates",
                        "initial_texts", "initial_rewards", "iterations", "trajectory", "kl_per_position",
                        "metrics", "compute", "wall_time", "versions", "device", "timestamp"}
    assert (rec["grid"], rec["dataset"], rec["policy"], rec["reward_name"]) == ("tiny", "inline", "tiny-random",
                                                                                "linear")
    assert rec["result_method"] == "greedy" and rec["iterations"] == 1 and rec["selected"] == 0
    assert rec["timestamp"].endswith("+00:00") and rec["wall_time"] > 0
    again = runner.run_grid(grid_file, progress=False, log=logged.append)
    assert again == {"done": 0, "skipped": 6, "pending_left": 0, "path": str(path)}


def test_a_dry_run_piped_into_a_reader_that_stops_early_ends_without_a_traceback(tmp_path):
    """`python -m sea_minimal run GRID --dry-run | head -1`: the closed pipe is not an error of the run."""
    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(tiny_grid(tmp_path / "r.jsonl", n_prompts=2)))
    cmd = [sys.executable, "-m", "sea_minimal", "run", str(grid_file), "--dry-run"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader goes away before the first line is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert proc.returncode == 141 and "Traceback" not in err, err
