"""Prompts decoded together (left padding, attention masks, per-row position ids) give what one prompt at a time gives:
lm.greedy_batch, baselines.greedy_many and the runner's ``batch_prompts``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sea_minimal import runner
from sea_minimal.baselines import greedy, greedy_many
from sea_minimal.lm import decode, encode_prompt, greedy_batch

REPO = Path(__file__).resolve().parents[1]
# very different lengths: 1, 4, 13 and 7 tokens (the tiny model's prompts are token ids)
PROMPTS = [[3], [1, 4, 2, 7], [5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2], [2, 7, 1, 8, 2, 8, 1]]


def one_at_a_time(model, prompts, steps, **kw):
    out = []
    for p in prompts:
        s = decode(model, encode_prompt(model, torch.tensor(p)), 1, steps, None, temperature=0.0, **kw)
        out.append(s.ids(0))
    return out


def test_greedy_batch_equals_one_prompt_at_a_time(tiny_policy):
    model = tiny_policy.model
    batch = greedy_batch(model, [torch.tensor(p) for p in PROMPTS], 9)
    assert batch.ids == one_at_a_time(model, PROMPTS, 9)
    assert batch.emitted == [9] * 4 and batch.stopped == [False] * 4
    # a left-padded row must not see its padding: a pad id that the model reacts to changes nothing
    assert greedy_batch(model, [torch.tensor(p) for p in PROMPTS], 9, pad_id=5).ids == batch.ids


def test_greedy_batch_stops_and_bans_like_decode(tiny_policy):
    model = tiny_policy.model
    free = one_at_a_time(model, PROMPTS, 9)
    stop = [free[1][2]]  # a token one row emits mid-way: that row stops there, the others go on
    batch = greedy_batch(model, [torch.tensor(p) for p in PROMPTS], 9, stop_ids=stop)
    assert batch.ids == one_at_a_time(model, PROMPTS, 9, stop_ids=stop)
    assert batch.stopped[1] and batch.emitted[1] == len(batch.ids[1]) + 1
    banned = [free[0][0], free[2][0]]
    assert (greedy_batch(model, [torch.tensor(p) for p in PROMPTS], 6, banned_ids=banned).ids
            == one_at_a_time(model, PROMPTS, 6, banned_ids=banned))
    with pytest.raises(ValueError, match="non-empty"):
        greedy_batch(model, [torch.tensor([], dtype=torch.long)], 3)


def test_greedy_many_results_equal_greedy(tiny_policy, tiny_reward):
    full = one_at_a_time(tiny_policy.model, PROMPTS, 8)[2]
    cut = next(i for i in range(1, len(full)) if full[i] not in full[:i])  # a token row 2 first emits at `cut`
    tiny_policy.__dict__["special_ids"] = [full[cut]]
    many = greedy_many(tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], length=8)
    for prompt, seed, res in zip(PROMPTS, range(4), many):
        one = greedy(tiny_policy, tiny_reward, prompt, seed=seed, length=8)
        assert res.text == one.text and res.candidates[0]["token_ids"] == one.candidates[0]["token_ids"]
        assert res.candidates[0]["reward"] == pytest.approx(one.candidates[0]["reward"], abs=1e-6)
        assert res.initial_texts == one.initial_texts and res.config == one.config and res.seed == seed
        for key in ("forward_tokens", "backward_tokens", "reward_calls"):  # what the one-prompt run counts
            assert res.compute[key] == one.compute[key], key
        assert res.wall_time > 0 and set(res.compute) == set(one.compute)
    assert many[2].candidates[0]["token_ids"] == full[:cut]  # the stop token ended that row


def test_greedy_many_on_the_bundled_model(bundled_policy):
    from sea_minimal import demo_reward

    reward = demo_reward(bundled_policy)
    prompts = ["Hi.", "Name three colours.",
               "Explain in one sentence why the sky looks blue during the day but red at sunset, for a child."]
    many = greedy_many(bundled_policy, reward, prompts, [0, 0, 0], length=12)
    for prompt, res in zip(prompts, many):
        one = greedy(bundled_policy, reward, prompt, length=12)
        assert res.text == one.text
        assert res.compute["forward_tokens"] == one.compute["forward_tokens"]


def grid(results, batch_prompts=1):
    return {"name": "tiny", "policy": "tiny-random", "reward": "linear", "length": 5, "seeds": [0, 1],
            "dataset": {"name": "inline", "prompts": ["a", "bb bb bb bb", "c c", "dddd dddd dddd dddd dddd"]},
            "results": str(results), "batch_prompts": batch_prompts,
            "methods": [{"name": "greedy", "method": "greedy"},
                        {"name": "bon", "method": "best_of_n", "params": {"n": 2, "initial": False}}]}


def comparable(path):
    recs = [json.loads(line) for line in Path(path).read_text().splitlines()]
    keep = ("label", "config_hash", "prompt_id", "seed", "text", "candidates", "metrics", "initial_texts")
    rows = [{k: r[k] for k in keep} for r in recs]
    for r, rec in zip(rows, recs):
        r["compute"] = {k: rec["compute"][k] for k in ("forward_tokens", "backward_tokens", "reward_calls")}
    return sorted(rows, key=lambda r: (r["label"], r["prompt_id"], r["seed"]))


def test_runner_batch_prompts_writes_the_same_records(tmp_path):
    one = runner.run_grid(grid(tmp_path / "one.jsonl"), progress=False, log=lambda s: None)
    many = runner.run_grid(grid(tmp_path / "many.jsonl", batch_prompts=3), progress=False, log=lambda s: None)
    assert one["done"] == many["done"] == 16 and many["pending_left"] == 0
    assert comparable(tmp_path / "one.jsonl") == comparable(tmp_path / "many.jsonl")
    # resuming a batched run: only the missing items run, in batches again
    lines = (tmp_path / "many.jsonl").read_text().splitlines()
    (tmp_path / "many.jsonl").write_text("\n".join(lines[:5]) + "\n")
    again = runner.run_grid(grid(tmp_path / "many.jsonl", batch_prompts=3), progress=False, log=lambda s: None)
    assert again["done"] == 11 and comparable(tmp_path / "many.jsonl") == comparable(tmp_path / "one.jsonl")


def test_batches_group_one_method_and_seed():
    g = runner.parse_grid(grid("unused.jsonl"))
    prompts = [{"id": i, "prompt": "x"} for i in range(4)]
    groups = runner._batches(runner.pending_items(g, prompts, set()), 3)
    greedy_groups = [grp for grp in groups if grp[0][0].method == "greedy"]
    assert all(len(grp) == 1 for grp in groups if grp[0][0].method == "best_of_n")
    assert sorted(len(grp) for grp in greedy_groups) == [1, 1, 3, 3]  # per seed: prompts 0-2, then 3
    assert all(len({(spec.label, seed) for spec, _, seed in grp}) == 1 for grp in groups)
    assert sum(len(grp) for grp in groups) == 16


def test_bad_batch_prompts_is_a_one_line_error(tmp_path):
    with pytest.raises(runner.GridError, match="batch_prompts"):
        runner.parse_grid(grid(tmp_path / "r.jsonl", batch_prompts=0))
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid(tmp_path / "r.jsonl")))
    proc = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(path), "--batch-prompts", "0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--batch-prompts" in proc.stderr
