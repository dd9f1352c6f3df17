"""Prompts run together (left padding, attention masks, per-row position ids) give what one prompt at a time gives:
lm.greedy_batch, lm.sample_many, baselines.greedy_many / best_of_n_many / args_many / cbs_many, SEA.run(batch_size=N)
for every recipe and the runner's ``batch_prompts``."""

import json
import subprocess
import sys
import time
from pathlib import Path

from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import tiny_backbone_reward, tiny_lm
from sea_minimal import SEA, Policy, SEAConfig, VocabReward, runner
from sea_minimal.baselines import args, args_many, best_of_n, best_of_n_many, cbs, cbs_many, greedy, greedy_many
from sea_minimal.lm import decode, encode_prompt, greedy_batch, sample_many

REPO = Path(__file__).resolve().parents[1]
# very different lengths: 1, 4, 13 and 7 tokens (the tiny model's prompts are token ids)
PROMPTS = [[3], [1, 4, 2, 7], [5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2], [2, 7, 1, 8, 2, 8, 1]]
COUNTS = ("forward_tokens", "backward_tokens", "reward_calls")  # what a prompt's own run counts


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


def test_sample_many_draws_what_each_prompt_draws_alone(tiny_policy):
    """Each prompt's rows come from its own generator; a prompt whose rows have all stopped draws no more, so the
    next batch of samples (same generators) still matches: checked over two consecutive batches."""
    model, stop = tiny_policy.model, [1, 3, 5, 7, 9]
    caches = [encode_prompt(model, torch.tensor(p)) for p in PROMPTS]
    together = [torch.Generator().manual_seed(i) for i in range(4)]
    alone = [torch.Generator().manual_seed(i) for i in range(4)]
    ran = []
    for _ in range(2):
        for i, (s, steps) in enumerate(sample_many(model, caches, 2, 9, together, stop_ids=stop)):
            own = decode(model, caches[i], 2, 9, alone[i], stop_ids=stop)
            assert torch.equal(s.tokens, own.tokens) and torch.equal(s.lengths, own.lengths)
            assert torch.allclose(s.logp, own.logp, atol=1e-5) and steps == own.tokens.shape[1]
            ran.append(steps)
    assert min(ran) < 9 < max(ran) + 1, "the test needs prompts that end at different steps"
    with pytest.raises(ValueError, match="one generator per prompt"):
        sample_many(model, caches, 2, 3, together[:1])


def test_sample_many_keeps_each_prompts_own_cache(tiny_policy):
    """keep_cache: a row continued from the batch (its left padding dropped) is the row continued from its own decode,
    and a second chunk from the continued caches draws the same again; temperature 0 decodes greedily."""
    model = tiny_policy.model
    caches = [encode_prompt(model, torch.tensor(p)) for p in PROMPTS]
    together = [torch.Generator().manual_seed(i) for i in range(4)]
    alone = [torch.Generator().manual_seed(i) for i in range(4)]
    first = sample_many(model, caches, 2, 3, together, keep_cache=True)
    for i, (s, steps) in enumerate(first):
        own = decode(model, caches[i], 2, 3, alone[i], keep_cache=True)
        assert torch.equal(s.tokens, own.tokens) and steps == 3
        for row in range(2):
            a, b = s.continue_from(row), own.continue_from(row)
            assert a.length == b.length and a.layers[0][0].shape == b.layers[0][0].shape
            torch.testing.assert_close(a.next_logits, b.next_logits, atol=1e-5, rtol=1e-5)
    second = sample_many(model, [s.continue_from(1) for s, _ in first], 2, 3, together)
    for i, (s, _) in enumerate(second):
        own = decode(model, decode(model, caches[i], 2, 3, torch.Generator().manual_seed(i), keep_cache=True)
                     .continue_from(1), 2, 3, alone[i])
        assert torch.equal(s.tokens, own.tokens)
    greedy_rows = sample_many(model, caches, 1, 5, [None] * 4, temperature=0.0)
    assert [s.ids(0) for s, _ in greedy_rows] == one_at_a_time(model, PROMPTS, 5)


@pytest.mark.parametrize("fixed_length", [False, True])
def test_best_of_n_many_results_equal_best_of_n(tiny_policy, tiny_reward, fixed_length, one_thread):
    tiny_policy.__dict__["special_ids"] = [3, 5]  # stop tokens: samples end at different steps
    many = best_of_n_many(tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], n=5, batch_size=2, top_k=0, length=7,
                          fixed_length=fixed_length)
    for prompt, seed, res in zip(PROMPTS, range(4), many):
        one = best_of_n(tiny_policy, tiny_reward, prompt, seed=seed, n=5, batch_size=2, top_k=0, length=7,
                        fixed_length=fixed_length)
        assert [c["token_ids"] for c in res.candidates] == [c["token_ids"] for c in one.candidates]
        assert res.selected == one.selected and res.text == one.text and res.config == one.config
        np.testing.assert_allclose([c["logp_ref_per_token"] for c in res.candidates],
                                   [c["logp_ref_per_token"] for c in one.candidates], atol=1e-5)
        assert res.initial_texts == one.initial_texts
        assert {k: res.compute[k] for k in COUNTS} == {k: one.compute[k] for k in COUNTS}


def vocab_64_policy_and_reward():
    """A tiny policy whose vocabulary exceeds the default top_k (50), with stop tokens: every default can matter."""
    policy = Policy(tiny_lm(vocab_size=64), tokenizer=None, name="tiny-64")
    policy.__dict__["special_ids"] = [3, 5]
    return policy, VocabReward(torch.linspace(-1.0, 1.0, 64, device=policy.device), reduce="sum")


def test_best_of_n_many_defaults_and_checks_are_best_of_ns(one_thread):
    policy, reward = vocab_64_policy_and_reward()
    for params in ({}, {"n": 20}):  # the default n, and one that takes two batches of the default batch_size
        many = best_of_n_many(policy, reward, PROMPTS[:2], [0, 1], length=5, **params)
        for prompt, seed, res in zip(PROMPTS, (0, 1), many):
            one = best_of_n(policy, reward, prompt, seed=seed, length=5, **params)
            assert [c["token_ids"] for c in res.candidates] == [c["token_ids"] for c in one.candidates]
            assert res.config == one.config
    for bad in ({"n": 0}, {"batch_size": 0}):
        with pytest.raises(ValueError, match="n and batch_size must be >= 1"):
            best_of_n_many(policy, reward, PROMPTS[:1], [0], length=3, **bad)
    smallest = best_of_n_many(policy, reward, PROMPTS[:2], [0, 1], n=1, batch_size=1, length=3)
    assert [len(r.candidates) for r in smallest] == [1, 1]


def test_best_of_n_many_samples_from_the_top_k(tiny_policy, tiny_reward, one_thread):
    def distinct(top_k):
        runs = best_of_n_many(tiny_policy, tiny_reward, PROMPTS[:2], [0, 1], n=6, top_k=top_k, length=6)
        return [len({tuple(c["token_ids"]) for c in r.candidates}) for r in runs]

    assert distinct(1) == [1, 1]  # top-1 sampling is greedy decoding: every sample the same
    assert min(distinct(0)) > 1  # without the cut the samples differ (the check above has something to catch)


@pytest.mark.slow
def test_best_of_n_many_on_the_bundled_model(bundled_policy):
    from sea_minimal import demo_reward

    reward = demo_reward(bundled_policy)
    prompts = ["Hi.", "Explain in one sentence why the sky looks blue during the day but red at sunset, for a child."]
    many = best_of_n_many(bundled_policy, reward, prompts, [0, 0], n=4, length=8, initial=False)
    for prompt, res in zip(prompts, many):
        one = best_of_n(bundled_policy, reward, prompt, n=4, length=8, initial=False)
        assert [c["text"] for c in res.candidates] == [c["text"] for c in one.candidates]
        assert res.compute["forward_tokens"] == one.compute["forward_tokens"]


def assert_same_baseline_runs(one, many, atol=1e-4):
    """Batched baseline results equal the one-prompt results: token ids and texts exactly, rewards and trajectories
    within ``atol``, the compute a prompt's own run counts, and the same record shape."""
    assert len(one) == len(many)
    for a, b in zip(one, many):
        assert [c["token_ids"] for c in b.candidates] == [c["token_ids"] for c in a.candidates]
        assert b.texts == a.texts and b.text == a.text and b.selected == a.selected
        assert b.initial_texts == a.initial_texts and b.iterations == a.iterations
        assert b.seed == a.seed and b.config == a.config and b.method == a.method
        np.testing.assert_allclose(b.rewards, a.rewards, atol=atol, rtol=1e-5)
        np.testing.assert_allclose(b.initial_rewards, a.initial_rewards, atol=atol, rtol=1e-5)
        assert b.trajectory.keys() == a.trajectory.keys()
        for key in a.trajectory:
            np.testing.assert_allclose(b.trajectory[key], a.trajectory[key], atol=atol, rtol=1e-5, err_msg=key)
        assert {k: b.compute[k] for k in COUNTS} == {k: a.compute[k] for k in COUNTS}
        assert set(b.compute) == set(a.compute) and b.wall_time > 0
        assert [set(c) for c in b.candidates] == [set(c) for c in a.candidates]


def one_prompt_runs(fn, policy, reward, prompts, seeds, **params):
    return [fn(policy, reward, p, seed=s, **params) for p, s in zip(prompts, seeds)]


@pytest.mark.parametrize("params", [{"w": 0.5, "top_k": 3, "length": 7},
                                    {"w": 2.0, "top_k": 11, "length": 6, "fixed_length": True}])
def test_args_many_results_equal_args(tiny_policy, tiny_reward, params, one_thread):
    """Prompts of 1 to 13 tokens decoded together; with stop tokens, prompt 3 stops after 3 tokens and leaves the
    batch while the others go on to the full length."""
    tiny_policy.__dict__["special_ids"] = [3, 5]
    one = one_prompt_runs(args, tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], **params)
    assert_same_baseline_runs(one, args_many(tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], **params))
    if not params.get("fixed_length"):
        assert len({len(r.candidates[0]["token_ids"]) for r in one}) > 1, "the test needs a prompt that stops early"


@pytest.mark.parametrize("params", [
    {"beam_width": 2, "successors": 3, "chunk_length": 3, "length": 7, "top_k": 0},
    {"beam_width": 3, "successors": 2, "chunk_length": 2, "length": 6, "initial": False},
    {"beam_width": 2, "successors": 2, "chunk_length": 2, "length": 5, "temperature": 0.0},
    {"beam_width": 2, "successors": 2, "chunk_length": 2, "length": 5, "fixed_length": True}])
def test_cbs_many_results_equal_cbs(tiny_policy, tiny_reward, params, one_thread):
    """Several beams and chunks per prompt: each prompt's generator draws its beams in the one-prompt order; with stop
    tokens some beams finish early, and at temperature 0 prompt 3 finishes a round before the others."""
    tiny_policy.__dict__["special_ids"] = [3, 5]
    one = one_prompt_runs(cbs, tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], **params)
    assert_same_baseline_runs(one, cbs_many(tiny_policy, tiny_reward, PROMPTS, [0, 1, 2, 3], **params))
    if params.get("temperature") == 0.0:
        assert len({r.iterations for r in one}) > 1, "the test needs a prompt that finishes first"
    if "top_k" in params:
        assert len({tuple(c["token_ids"]) for r in one for c in r.candidates}) > 4, "the samples should differ"


@pytest.mark.parametrize("prompts", [PROMPTS[1:3], PROMPTS[1:2]])  # two prompts; one (its batch has no padding)
def test_args_and_cbs_many_defaults_are_the_one_prompt_runs(prompts, one_thread):
    policy, reward = vocab_64_policy_and_reward()
    seeds = list(range(len(prompts)))
    # 40 tokens > the default 32-token chunk; CBS also with a top_k that cuts most of the vocabulary
    for fn, fn_many, params in ((args, args_many, {"length": 6}), (cbs, cbs_many, {"length": 40}),
                                (cbs, cbs_many, {"length": 6, "top_k": 2})):
        one = one_prompt_runs(fn, policy, reward, prompts, seeds, **params)
        assert_same_baseline_runs(one, fn_many(policy, reward, prompts, seeds, **params))


def test_batched_baselines_count_a_separate_reward_models_forwards(tiny_policy, one_thread):
    """A reward with its own model: each prompt's count of forward tokens includes the reward model's, as in its
    one-prompt run."""
    reward = classifier_reward(tiny_policy)
    for fn, fn_many, params in ((best_of_n, best_of_n_many, {"n": 3}), (args, args_many, {"top_k": 3}),
                                (cbs, cbs_many, {"chunk_length": 2})):
        one = one_prompt_runs(fn, tiny_policy, reward, PROMPTS, [0, 1, 2, 3], length=5, **params)
        many = fn_many(tiny_policy, reward, PROMPTS, [0, 1, 2, 3], length=5, **params)
        assert_same_baseline_runs(one, many)  # the same counts as each prompt's own run, the reward model's included


class SlowScoring:
    """A reward whose every scoring call takes 20 ms more: a prompt's own scoring is then most of its wall time.
    ``calls[prompt ids]`` counts each prompt's scoring calls."""

    def __init__(self, reward):
        self.reward, self.calls = reward, {}

    def check_vocab(self, vocab_size):
        self.reward.check_vocab(vocab_size)

    def for_prompt(self, prompt_ids):
        scorer, key = self.reward.for_prompt(prompt_ids), tuple(prompt_ids.tolist())

        def slow(one_hot_ids):
            self.calls[key] = self.calls.get(key, 0) + 1
            time.sleep(0.02)
            return scorer(one_hot_ids)

        return slow


def test_batched_baselines_share_the_batch_time_between_prompts(tiny_policy, tiny_reward, one_thread):
    """Each prompt's wall time is its share of the batch's decoding plus its own scoring (20 ms per call at least),
    and together at most the call's own time. (The initial greedy answer, a reference for the analysis, is not part of
    the method's cost: initial=False leaves it out.)"""
    for fn, params in ((best_of_n_many, {"n": 4}), (args_many, {"top_k": 3}), (cbs_many, {"chunk_length": 2})):
        reward = SlowScoring(tiny_reward)
        start = time.perf_counter()
        many = fn(tiny_policy, reward, PROMPTS, [0, 1, 2, 3], length=5, initial=False, **params)
        elapsed = time.perf_counter() - start
        own = [0.02 * reward.calls[tuple(tiny_policy.encode_prompt(p).tolist())] for p in PROMPTS]
        assert min(own) > 0 and all(r.wall_time >= t and r.compute["wall_time"] >= t for r, t in zip(many, own)), fn
        assert sum(r.wall_time for r in many) <= elapsed, fn.__name__
        assert sum(r.compute["wall_time"] for r in many) <= elapsed, fn.__name__


def test_args_and_cbs_many_check_their_arguments(tiny_policy, tiny_reward):
    with pytest.raises(ValueError, match="one seed per prompt"):
        args_many(tiny_policy, tiny_reward, PROMPTS, [0], top_k=2, length=3)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        args_many(tiny_policy, tiny_reward, PROMPTS, [0] * 4, top_k=0, length=3)
    with pytest.raises(ValueError, match="beam_width, successors and chunk_length"):
        cbs_many(tiny_policy, tiny_reward, PROMPTS, [0] * 4, beam_width=0, length=3)
    with pytest.raises(ValueError, match="at least one prompt"):
        cbs_many(tiny_policy, tiny_reward, [], [], length=3)


@pytest.mark.slow
def test_args_and_cbs_many_on_the_bundled_model(bundled_policy, one_thread):
    from sea_minimal import demo_reward

    reward = demo_reward(bundled_policy)
    prompts = ["Hi.", "Explain in one sentence why the sky looks blue during the day but red at sunset, for a child."]
    for fn, many_fn, params in ((args, args_many, {"top_k": 5, "length": 4}),
                                (cbs, cbs_many, {"beam_width": 2, "successors": 2, "chunk_length": 2, "length": 4})):
        one = one_prompt_runs(fn, bundled_policy, reward, prompts, [0, 1], initial=False, **params)
        assert_same_baseline_runs(one, many_fn(bundled_policy, reward, prompts, [0, 1], initial=False, **params),
                                  atol=5e-4)


def grid(results, batch_prompts=1):
    return {"name": "tiny", "policy": "tiny-random", "reward": "linear", "length": 5, "seeds": [0, 1],
            "dataset": {"name": "inline", "prompts": ["a", "bb bb bb bb", "c c", "dddd dddd dddd dddd dddd"]},
            "results": str(results), "batch_prompts": batch_prompts,
            "methods": [{"name": "greedy", "method": "greedy"},
                        {"name": "bon", "method": "best_of_n", "params": {"n": 2, "initial": False}}]}


def rounded(value, places=4):
    """Floats rounded (a batched forward changes the last bits of a log-probability), everything else as it is."""
    if isinstance(value, float):
        return round(value, places)
    if isinstance(value, dict):
        return {k: rounded(v, places) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, places) for v in value]
    return value


def comparable(path):
    recs = [rounded(json.loads(line)) for line in Path(path).read_text().splitlines()]
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


def test_runner_batches_args_and_cbs_with_the_same_records(tmp_path):
    methods = [{"name": "args", "method": "args", "params": {"top_k": 3}},
               {"name": "cbs", "method": "cbs", "params": {"beam_width": 2, "successors": 2, "chunk_length": 2}}]
    one = runner.run_grid({**grid(tmp_path / "one.jsonl"), "methods": methods}, progress=False, log=lambda s: None)
    many = runner.run_grid({**grid(tmp_path / "many.jsonl", batch_prompts=4), "methods": methods}, progress=False,
                           log=lambda s: None)
    assert one["done"] == many["done"] == 16
    a, b = comparable(tmp_path / "one.jsonl"), comparable(tmp_path / "many.jsonl")
    for x, y in zip(a, b):  # rewards and metrics are floats computed after a batched forward: within rounding
        mx, my = x.pop("metrics"), y.pop("metrics")
        assert mx.keys() == my.keys() and all(mx[k] == pytest.approx(my[k], abs=1e-4) for k in mx), (mx, my)
        for cand_x, cand_y in zip(x.pop("candidates"), y.pop("candidates")):
            assert cand_x["token_ids"] == cand_y["token_ids"] and cand_x["text"] == cand_y["text"]
            assert cand_x["reward"] == pytest.approx(cand_y["reward"], abs=1e-4)
    assert a == b


def test_batches_group_one_method_and_seed():
    g = runner.parse_grid(grid("unused.jsonl"))
    prompts = [{"id": i, "prompt": "x"} for i in range(4)]
    groups = runner._batches(runner.pending_items(g, prompts, set()), 3)
    for method in ("greedy", "best_of_n"):
        sizes = sorted(len(grp) for grp in groups if grp[0][0].method == method)
        assert sizes == [1, 1, 3, 3], method  # per seed: prompts 0-2, then 3
    assert all(len({(spec.label, seed) for spec, _, seed in grp}) == 1 for grp in groups)
    assert sum(len(grp) for grp in groups) == 16
    spec = {**grid("unused.jsonl"), "methods": [{"name": "sampled", "method": "sampled"}]}
    g = runner.parse_grid(spec)  # a method without a batched form runs one prompt at a time
    assert all(len(grp) == 1 for grp in runner._batches(runner.pending_items(g, prompts, set()), 3))


def test_bad_batch_prompts_is_a_one_line_error(tmp_path):
    with pytest.raises(runner.GridError, match="batch_prompts"):
        runner.parse_grid(grid(tmp_path / "r.jsonl", batch_prompts=0))
    path = tmp_path / "g.yaml"
    path.write_text(json.dumps(grid(tmp_path / "r.jsonl")))
    proc = subprocess.run([sys.executable, "-m", "sea_minimal", "run", str(path), "--batch-prompts", "0"],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--batch-prompts" in proc.stderr


# ------------------------------------------------------------------ SEA: several prompts as one batch of chains
RECIPES = {"langevin": SEAConfig.paper, "reference": SEAConfig.released_code, "dlp": SEAConfig.exact_mcmc}


def assert_same_runs(one, many, atol=1e-4):
    """Batched results equal the one-prompt results: texts and iterations exactly, trajectories within ``atol``,
    the compute a prompt's own run counts, and the same record shape."""
    assert len(one) == len(many)
    for a, b in zip(one, many):
        assert b.texts == a.texts and b.text == a.text and b.selected == a.selected
        assert b.initial_texts == a.initial_texts and b.iterations == a.iterations
        assert b.seed == a.seed and b.config == a.config and b.method == a.method
        for key in ("energy", "logp_ref", "reward_hard", "kl_init", "accept"):
            np.testing.assert_allclose(b.trajectory[key], a.trajectory[key], atol=atol, rtol=1e-5, err_msg=key)
        np.testing.assert_allclose(b.kl_per_position, a.kl_per_position, atol=atol, rtol=1e-5)
        assert {k: b.compute[k] for k in COUNTS} == {k: a.compute[k] for k in COUNTS}
        assert set(b.compute) == set(a.compute) and b.wall_time > 0
        assert {k: np.shape(v) for k, v in b.trajectory.items()} == {k: np.shape(v) for k, v in a.trajectory.items()}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_sea_batched_equals_one_prompt_at_a_time(tiny_policy, tiny_reward, recipe, one_thread):
    """Prompts of 1 to 13 tokens in one batch: padding, positions and each prompt's own random draws are right, and
    the released recipe's patience stops prompts at different iterations (a stopped prompt leaves the batch)."""
    extra = {"patience": 1} if recipe == "reference" else {}  # stops after 3, 8, 8 and 6 iterations
    sea = SEA(tiny_policy, tiny_reward, RECIPES[recipe](length=6, steps=8, **extra))
    one = sea.run(PROMPTS, progress=False)
    for size in (2, 3, 4):  # two batches of 2; a batch of 3 and a last batch of 1; all 4 at once
        start = time.perf_counter()
        many = sea.run(PROMPTS, progress=False, batch_size=size)
        elapsed = time.perf_counter() - start
        assert_same_runs(one, many)
        # each prompt's wall time is its share of its batch's: together at most the call's own time
        assert sum(r.wall_time for r in many) <= elapsed and sum(r.compute["wall_time"] for r in many) <= elapsed
    if recipe == "reference":
        assert len({r.iterations for r in one}) > 1, "the test needs prompts that stop at different iterations"




def classifier_reward(policy):
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from sea_minimal import HFClassifierReward

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=11, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, max_position_embeddings=64, num_labels=1, initializer_range=0.5,
                         bos_token_id=None, eos_token_id=None, pad_token_id=0)  # a pad id: rows > 1 (no padding used)
    return HFClassifierReward(LlamaForSequenceClassification(config).eval(), suffix_ids=[10])


def contrast_reward(policy):
    from sea_minimal.contrast import ContrastReward

    return ContrastReward(policy, prefix_ids=[4, 4, 2])


@pytest.mark.parametrize("make_reward", [tiny_backbone_reward, classifier_reward, contrast_reward])
@pytest.mark.parametrize("recipe", ["langevin", "reference"])
def test_sea_batched_with_model_rewards(tiny_policy, make_reward, recipe, one_thread):
    """A head on the policy's backbone (read from the batched forward), a separate reward model and the contrast
    reward (its two prompt caches per prompt, its log pi_ref shared with the energy) all batch like one prompt."""
    sea = SEA(tiny_policy, make_reward(tiny_policy), RECIPES[recipe](length=5, steps=4))
    # The contrast reward is a difference of two sums of log-probabilities, each read over left-padded rows: float32
    # rounding of those sums differs between the batched and the one-prompt forward by up to 1.2e-4 on some CPUs
    # (measured on 2026-12-07's CI machine; texts, selections and iterations stay identical), so its energy gets the
    # bundled model's bound. A wrong mask or position id moves energies by orders of magnitude more.
    atol = 5e-4 if make_reward is contrast_reward else 1e-4
    one = sea.run(PROMPTS, progress=False)
    for size in (2, 4):  # each prompt's own reward in a batch of exactly 2 too
        assert_same_runs(one, sea.run(PROMPTS, progress=False, batch_size=size), atol=atol)


def test_sea_batched_without_a_reward(tiny_policy, one_thread):
    """The fluency-only run (no reward: the "without reward" ablation of the langevin recipe) batches too."""
    sea = SEA(tiny_policy, None, SEAConfig.paper(length=5, steps=3, use_reward=False))
    assert_same_runs(sea.run(PROMPTS, progress=False), sea.run(PROMPTS, progress=False, batch_size=2))


def test_sea_runs_one_prompt_at_a_time_unless_asked(tiny_policy, tiny_reward, monkeypatch, one_thread):
    """``SEA.run``'s default batch_size is 1: every prompt's records are its own run's, bit for bit, as before
    batching existed; the runner batches only a grid with ``batch_prompts``."""
    from sea_minimal import sampler

    stacked = []
    real = sampler.stack_prompts
    monkeypatch.setattr(sampler, "stack_prompts", lambda caches: stacked.append(len(caches)) or real(caches))
    SEA(tiny_policy, tiny_reward, SEAConfig.paper(length=3, steps=2)).run(PROMPTS[:3], progress=False)
    assert stacked and set(stacked) == {1}
    stacked.clear()
    SEA(tiny_policy, tiny_reward, SEAConfig.paper(length=3, steps=2)).run(PROMPTS[:3], progress=False, batch_size=3)
    assert set(stacked) == {3}


def test_sea_batched_seeds_are_per_prompt(tiny_policy, tiny_reward, one_thread):
    config = SEAConfig.paper(length=5, steps=3)
    many = SEA(tiny_policy, tiny_reward, config).run(PROMPTS, progress=False, batch_size=4, seeds=[0, 1, 2, 3])
    one = [SEA(tiny_policy, tiny_reward, replace(config, seed=s)).run([p], progress=False)[0]
           for s, p in zip(range(4), PROMPTS)]
    assert_same_runs(one, many)
    assert len({tuple(r.initial_texts) for r in many}) > 1
    assert [r.seed for r in many] == [r.config["seed"] for r in many] == [0, 1, 2, 3]  # each record's own seed


def test_sea_batch_arguments_are_checked(tiny_policy, tiny_reward):
    sea = SEA(tiny_policy, tiny_reward, SEAConfig.paper(length=3, steps=1))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        sea.run(PROMPTS, batch_size=0)
    with pytest.raises(ValueError, match="one seed per prompt"):
        sea.run(PROMPTS, batch_size=2, seeds=[0])


def test_dropping_stopped_prompts_keeps_every_kind_of_recipe_state_at_the_kept_rows():
    """sampler._keep_rows, the step that drops the rows of prompts that stopped early: Adam's moments, tensors and
    dicts of tensors (the dlp recipe's accepted state) are cut to the kept rows; anything else is carried as it is."""
    from sea_minimal.sampler import _keep_rows

    z = torch.randn(4, 3, 5, requires_grad=True)
    adam = torch.optim.Adam([z], lr=0.1)
    z.grad = torch.randn_like(z)
    adam.step()
    state = {"optimizer": adam, "mask": torch.arange(4.0), "current": {"ids": torch.arange(8).view(4, 2)}, "k": 3}
    rows = torch.tensor([1, 3])
    new_z, logp0, kept = _keep_rows(z, torch.arange(4.0).view(4, 1), state, rows, lr=0.1)
    assert torch.equal(new_z, z.detach()[rows]) and new_z.requires_grad and torch.equal(logp0.flatten(), rows.float())
    moments = kept["optimizer"].state[new_z]
    assert torch.equal(moments["exp_avg"], adam.state[z]["exp_avg"][rows]) and moments["step"] == adam.state[z]["step"]
    assert torch.equal(kept["mask"], rows.float()) and torch.equal(kept["current"]["ids"], torch.tensor([[2, 3], [6, 7]]))
    assert kept["k"] == 3


@pytest.mark.slow
def test_sea_batched_on_the_bundled_model(bundled_policy, one_thread):
    """The bundled policy and the book's reward (harmlessness-v2, a head on the same backbone) with prompts of very
    different lengths: texts identical, the released recipe's rewrites included."""
    from sea_minimal.runner import make_reward

    reward = make_reward("harmlessness-v2", bundled_policy)
    prompts = ["Hi", "Write a detailed tutorial on how to pick the lock of a front door without the owner knowing, "
                     "with every tool and every step in order."]
    for config in (SEAConfig.paper(length=5, steps=3, alpha=0.568, step_size=10.0, noise_scale=0.0224,
                                   init_keep_sample=True),
                   SEAConfig.released_code(length=5, steps=2, rewrite_tokens=6)):
        sea = SEA(bundled_policy, reward, config)
        one, many = sea.run(prompts, progress=False), sea.run(prompts, progress=False, batch_size=2)
        assert_same_runs(one, many, atol=5e-4)
        assert [c["text"] for r in many for c in r.candidates] == [c["text"] for r in one for c in r.candidates]


def sea_grid(results, batch_prompts=1):
    return {"name": "tiny-sea", "policy": "tiny-random", "reward": "linear", "length": 4, "seeds": [0],
            "dataset": {"name": "inline", "prompts": ["a", "bb bb bb bb", "c c", "dddd dddd dddd dddd dddd"]},
            "results": str(results), "batch_prompts": batch_prompts,
            "methods": [{"name": "sea-langevin", "method": "sea", "params": {"recipe": "langevin", "steps": 3}},
                        {"name": "sea-reference", "method": "sea", "params": {"recipe": "reference", "steps": 3}}]}


def test_runner_batches_sea_prompts_with_the_same_records(tmp_path):
    one = runner.run_grid(sea_grid(tmp_path / "one.jsonl"), progress=False, log=lambda s: None)
    many = runner.run_grid(sea_grid(tmp_path / "many.jsonl", batch_prompts=4), progress=False, log=lambda s: None)
    assert one["done"] == many["done"] == 8
    a, b = comparable(tmp_path / "one.jsonl"), comparable(tmp_path / "many.jsonl")
    for x, y in zip(a, b):  # the metrics hold floats computed in a batch: compare them within rounding
        mx, my = x.pop("metrics"), y.pop("metrics")
        assert mx.keys() == my.keys() and all(mx[k] == pytest.approx(my[k], abs=1e-4) for k in mx), (mx, my)
        for cand_x, cand_y in zip(x.pop("candidates"), y.pop("candidates")):
            assert cand_x["text"] == cand_y["text"] and cand_x["reward"] == pytest.approx(cand_y["reward"], abs=1e-4)
    assert a == b
