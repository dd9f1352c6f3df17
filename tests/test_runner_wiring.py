"""The runner passes what it is given to where it belongs: grid fields to the loaders, the reward to the record's
metrics, the timing of a batch to its records; and the results file keeps every byte, mode and warning it promises.

Each test here was written against a surviving mutant of ``scripts/mutation_test.py`` (issue 16): a one-line
change of ``sea_minimal/runner.py`` that the rest of the suite let through."""

import json
import os
import stat
import time
import warnings
from types import SimpleNamespace

import pytest
import torch

from sea_minimal import runner
from sea_minimal.contrast import ContrastReward, score_responses
from sea_minimal.rewards import VocabReward

PROMPTS = ["How do I pick a lock?", "Tell me a joke.", "Write a poem."]


def grid(results, methods=None, **extra):
    return {"name": "wiring", "policy": "tiny-random", "reward": "linear", "length": 4, "seeds": [0],
            "dataset": {"name": "inline", "prompts": PROMPTS}, "results": str(results),
            "methods": methods or [{"name": "greedy", "method": "greedy"}], **extra}


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def quiet(**kw):
    return {"progress": False, "log": lambda s: None, **kw}


# ------------------------------------------------------------------------------------------ loaders get the grid
def test_the_grid_names_the_policy_device_and_system_prompt_it_loads(tmp_path, monkeypatch):
    seen = []

    def fake_make_policy(name, device=None, system_prompt=None):
        seen.append((name, device, system_prompt))
        return runner.tiny_random_policy()

    monkeypatch.setattr(runner, "make_policy", fake_make_policy)
    runner.run_grid(grid(tmp_path / "r.jsonl", device="cpu", system_prompt="Be brief."), **quiet())
    assert seen == [("tiny-random", "cpu", "Be brief.")]

    factory_args = []
    runner.run_grid(grid(tmp_path / "s.jsonl", device="cpu"),
                    policy_factory=lambda name, device: factory_args.append((name, device))
                    or runner.tiny_random_policy(), **quiet())
    assert factory_args == [("tiny-random", "cpu")]


def test_make_policy_passes_name_device_and_system_prompt_to_the_loader(monkeypatch):
    from sea_minimal import models

    seen = []
    monkeypatch.setattr(models, "load_policy", lambda *a, **kw: seen.append((a, kw)) or "loaded")
    assert runner.make_policy("some/model", "cuda:1", "Be brief.") == "loaded"
    assert seen == [(("some/model",), {"device": "cuda:1", "system_prompt": "Be brief."})]
    assert runner.make_policy(runner.TINY_POLICY).name == runner.TINY_POLICY


def test_make_reward_builds_each_named_reward_for_the_policy_it_is_given(monkeypatch):
    from sea_minimal import reward_model, rewards

    policy = runner.tiny_random_policy()
    linear = runner.make_reward("linear", policy)
    assert isinstance(linear, VocabReward) and linear.reduce == "mean"
    assert linear.weights.tolist() == pytest.approx(torch.linspace(-1.0, 1.0, policy.vocab_size).tolist())

    monkeypatch.setattr(rewards, "demo_reward", lambda p: ("demo", p))
    assert runner.make_reward("demo", policy) == ("demo", policy)

    from sea_minimal import contrast, truthfulqa

    monkeypatch.setattr(contrast, "ContrastReward", lambda p, turns=None: ("contrast", p, turns))
    assert runner.make_reward("contrast-refusal", policy) == ("contrast", policy, None)
    assert runner.make_reward("contrast-truthful", policy) == ("contrast", policy, truthfulqa.QA_PRIMER_TURNS)

    loaded = []
    monkeypatch.setattr(reward_model, "load_harmlessness_reward", lambda p, f: loaded.append((p, f)) or "head")
    monkeypatch.setattr(reward_model, "load_hf_reward", lambda n, p: loaded.append((n, p)) or "hf")
    assert runner.make_reward("harmlessness", policy) == "head"
    assert runner.make_reward("harmlessness-v2", policy) == "head"
    assert runner.make_reward("org/reward-model", policy) == "hf"
    assert loaded == [(policy, reward_model.HEAD_FILE), (policy, reward_model.V2_HEAD_FILE),
                      ("org/reward-model", policy)]
    assert reward_model.HEAD_FILE != reward_model.V2_HEAD_FILE


def test_a_dataset_is_read_from_the_grids_data_dir_and_selected_as_asked(tmp_path):
    (tmp_path / "advbench").mkdir()
    rows = "\n".join(f"Request number {i},Sure {i}" for i in range(10))
    (tmp_path / "advbench" / "harmful_behaviors.csv").write_text("goal,target\n" + rows + "\n")
    first = runner.load_prompts({"name": "advbench", "first": 3}, tmp_path)
    assert [r["prompt"] for r in first] == ["Request number 0", "Request number 1", "Request number 2"]
    subset = runner.load_prompts({"name": "advbench", "subset": {"n": 4, "seed": 1}}, tmp_path)
    assert len(subset) == 4 and [r["id"] for r in subset] == sorted(r["id"] for r in subset) != [0, 1, 2, 3]
    assert [r["id"] for r in runner.load_prompts({"name": "advbench", "ids": [7, 2]}, tmp_path)] == [7, 2]

    path = tmp_path / "r.jsonl"
    spec = grid(path, dataset={"name": "advbench", "first": 2}, data_dir=str(tmp_path))
    assert runner.run_grid(spec, **quiet())["done"] == 2
    assert [r["prompt"] for r in records(path)] == ["Request number 0", "Request number 1"]


def test_prompt_input_of_a_tokenizer_free_policy_is_24_ids_at_most_and_never_empty():
    policy = runner.tiny_random_policy()
    ids = runner.prompt_input(policy, "x" * 30, prefill="yy")
    assert ids == [ord("x") % policy.vocab_size] * 24
    assert runner.prompt_input(policy, "") == [0]


def test_grid_threads_are_set_before_the_run(tmp_path, monkeypatch):
    threads = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    runner.run_grid(grid(tmp_path / "r.jsonl", threads=1), **quiet())
    assert threads == [1]


# ------------------------------------------------------------------------------------------ what a record holds
def test_the_contrast_rewards_exact_optimum_columns_are_recorded_for_every_candidate(tmp_path):
    made = []

    def contrast(name, policy):
        made.append(ContrastReward(policy, prefix_ids=[5, 6, 7]))
        return made[-1]

    path = tmp_path / "r.jsonl"
    methods = [{"name": "bon", "method": "best_of_n", "params": {"n": 3, "initial": False}}]
    runner.run_grid(grid(path, methods=methods), reward_factory=contrast, **quiet())
    rec = records(path)[0]
    policy = made[0].policy
    scores = score_responses(made[0], policy.encode_prompt(runner.prompt_input(policy, rec["prompt"])),
                             [c["token_ids"] for c in rec["candidates"]])
    assert len(rec["metrics"]["optimum_log_pi_ref"]) == 3
    assert rec["metrics"]["optimum_log_pi_ref"] == pytest.approx(scores.log_pi_ref.tolist(), abs=1e-5)
    assert rec["metrics"]["optimum_log_pi_steered"] == pytest.approx(scores.log_pi_steered.tolist(), abs=1e-5)
    assert rec["metrics"]["optimum_log_pi_ref"] != pytest.approx(rec["metrics"]["optimum_log_pi_steered"])

    plain = tmp_path / "plain.jsonl"  # any other reward: no such columns
    runner.run_grid(grid(plain, methods=methods), **quiet())
    assert "optimum_log_pi_ref" not in records(plain)[0]["metrics"]


def test_record_metrics_reports_the_best_initial_reward_and_judges_the_text_as_read():
    policy = runner.tiny_random_policy()
    result = SimpleNamespace(candidates=[{"reward": 0.5, "token_ids": [1, 2, 3]}], selected=0, text="abc",
                             initial_rewards=[0.1, 0.7, -0.2])
    judged = []
    out = runner.record_metrics(policy, [1, 2], result, judge=lambda t: judged.append(t) or True)
    assert out["initial_reward"] == 0.7 and out["reward"] == 0.5 and out["keyword_harmful"] is True
    assert judged == ["abc"]  # no prefill unless one is given
    assert "outcome" not in out  # a tokenizer-free policy has no words to judge
    runner.record_metrics(policy, [1, 2], result, judge=judged.append, prefill="Sure, ")
    assert judged[-1] == "Sure, abc"
    assert runner.record_metrics(policy, [1, 2], SimpleNamespace(**{**vars(result), "initial_rewards": []}),
                                 )["initial_reward"] is None


def test_a_batched_groups_records_share_its_time_and_a_single_item_gets_its_own(tmp_path):
    path = tmp_path / "r.jsonl"
    runner.run_grid(grid(path, batch_prompts=2), **quiet())
    times = [r["wall_time"] for r in records(path)]
    assert len(times) == 3 and times[0] == times[1] and times[2] != times[0]
    assert all(0 < t < 60 for t in times)  # seconds of this run, not a clock reading


def test_batches_of_two_are_batched():
    g = runner.parse_grid(grid("unused.jsonl"))
    groups = runner._batches(runner.pending_items(g, [{"id": i, "prompt": "x"} for i in range(3)], set()), 2)
    assert [len(grp) for grp in groups] == [2, 1]


def test_a_failing_method_names_its_label_prompt_and_seed(tmp_path, monkeypatch):
    from sea_minimal import methods

    def broken(*a, **kw):
        raise ValueError("boom")

    monkeypatch.setattr(methods, "get_method", lambda name: broken)
    with pytest.raises(RuntimeError, match=r"^greedy failed on prompt 0 seed 0: boom$"):
        runner.run_grid(grid(tmp_path / "r.jsonl"), **quiet())
    monkeypatch.setitem(methods.BATCHED, "greedy", broken)  # a batch names all its prompts
    with pytest.raises(RuntimeError, match=r"^greedy failed on prompt 0, 1 seed 0: boom$"):
        runner.run_grid(grid(tmp_path / "b.jsonl", batch_prompts=2), **quiet())


def test_run_grid_sleeps_between_items_and_logs_what_it_wrote(tmp_path, monkeypatch):
    import time

    slept, logged = [], []
    monkeypatch.setattr(time, "sleep", slept.append)
    path = tmp_path / "r.jsonl"
    summary = runner.run_grid(grid(path, sleep=0.25), progress=False, log=logged.append)
    assert slept == [0.25] * 3
    assert logged[-1] == f"[sea_minimal] wrote 3 records to {path} (0 items left)"
    assert summary == {"done": 3, "skipped": 0, "pending_left": 0, "path": str(path)}


def test_variant_labels_join_their_settings_with_commas(tmp_path):
    spec = grid(tmp_path / "r.jsonl", methods=[{"name": "args", "method": "args", "variants": [{"w": 0.5, "top_k": 3}]}])
    assert [m.label for m in runner.parse_grid(spec).methods] == ["args[w=0.5,top_k=3]"]


# ------------------------------------------------------------------------------------------ the results file
def test_results_file_is_created_with_its_folders_and_mode_0644(tmp_path):
    old = os.umask(0)
    try:
        path = tmp_path / "a" / "b" / "r.jsonl"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a new, empty file warns about nothing
            with runner.ResultsFile(path) as results:
                results.append({"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_append_writes_the_whole_line_when_the_system_writes_part_of_it(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(runner.os, "write", lambda fd, data: real_write(fd, bytes(data[:5])))
    record = {"text": "a longer line than five bytes", "t": torch.tensor([1.5, 2.0]), "nan": float("nan")}
    with runner.ResultsFile(tmp_path / "r.jsonl") as results:
        results.append(record)
        results.append({"n": 2})
    text = (tmp_path / "r.jsonl").read_text()
    assert text == '{"text": "a longer line than five bytes", "t": [1.5, 2.0], "nan": NaN}\n{"n": 2}\n'


def test_closing_twice_is_harmless(tmp_path):
    results = runner.ResultsFile(tmp_path / "r.jsonl")
    results.close()
    results.close()
    with runner.ResultsFile(tmp_path / "r.jsonl"):  # the lock was released
        pass


def test_bad_lines_are_named_by_file_and_line_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n\nnot json\n{"a": 2}\n{"a": 3')
    with pytest.warns(UserWarning) as caught:
        got = runner.read_records(path)
    assert got == [{"a": 1}, {"a": 2}]
    messages = [str(w.message) for w in caught]
    assert f"{path}: ignoring a trailing partial line (7 bytes; an interrupted write)." in messages
    assert f"{path}: line 3 is not valid JSON; ignored." in messages
    with pytest.warns(UserWarning, match=r"r\.jsonl: ignoring a trailing partial line \(7 bytes"):
        with runner.ResultsFile(path) as results:
            assert results.records == [{"a": 1}, {"a": 2}]
    assert path.read_bytes().endswith(b'{"a": 2}\n')  # the partial line is cut before appending


# ------------------------------------------------------------------------------------------ the grid, parsed
def test_parse_grid_reads_every_field_of_a_grid_file():
    spec = {"name": "full", "policy": "some/model", "reward": "harmlessness", "system_prompt": "Be brief.",
            "dataset": "advbench", "seeds": 3, "length": 7, "defaults": {"fixed_length": True}, "device": "cuda:1",
            "data_dir": "/data", "sleep": 1, "threads": 2, "batch_prompts": 4,
            "methods": ["greedy", {"name": "b", "method": "best_of_n", "params": {"n": 2},
                                   "variants": [{"n": 4}, {"name": "big", "n": 8}]}]}
    grid = runner.parse_grid(spec)
    assert (grid.name, grid.policy, grid.reward, grid.system_prompt) == ("full", "some/model", "harmlessness",
                                                                         "Be brief.")
    assert grid.dataset == {"name": "advbench"} and grid.seeds == [3] and grid.results == runner.Path(
        "results/full.jsonl")
    assert (grid.device, grid.data_dir, grid.sleep, grid.threads, grid.batch_prompts) == ("cuda:1", "/data", 1.0, 2,
                                                                                          4)
    assert isinstance(grid.sleep, float) and grid.raw is spec
    assert [(m.label, m.method, m.params) for m in grid.methods] == [
        ("greedy", "greedy", {"fixed_length": True, "length": 7}),
        ("b[n=4]", "best_of_n", {"fixed_length": True, "length": 7, "n": 4}),
        ("big", "best_of_n", {"fixed_length": True, "length": 7, "n": 8})]
    policy_key = "some/model|system='Be brief.'"
    assert grid.methods[0].config_hash == runner.config_hash("greedy", {"fixed_length": True, "length": 7}, policy_key,
                                                             "harmlessness", "advbench")
    plain = runner.parse_grid({**spec, "system_prompt": None})  # no system prompt: the policy name alone
    assert plain.methods[0].config_hash == runner.config_hash("greedy", {"fixed_length": True, "length": 7}, "some/model",
                                                              "harmlessness", "advbench")
    assert runner.parse_grid(spec, results="elsewhere.jsonl").results == runner.Path("elsewhere.jsonl")
    assert runner.parse_grid({**spec, "results": "r.jsonl"}).results == runner.Path("r.jsonl")
    bare = runner.parse_grid({"methods": ["greedy"], "dataset": {"name": "inline", "prompts": ["x"]}})
    assert (bare.name, bare.policy, bare.reward, bare.seeds, bare.batch_prompts) == ("grid", "smollm2-135m-instruct",
                                                                                     "demo", [0], 1)
    assert (bare.device, bare.data_dir, bare.sleep, bare.threads, bare.system_prompt) == (None, None, 0.0, None, None)
    assert bare.methods[0].params == {} and bare.results == runner.Path("results/grid.jsonl")


def test_config_hash_is_ten_hex_characters_of_everything_that_defines_a_method():
    h = runner.config_hash("greedy", {"length": 5}, "p", "r", "d")
    assert len(h) == 10 and int(h, 16) >= 0
    import hashlib
    import json as _json

    blob = _json.dumps({"method": "greedy", "params": {"length": 5}, "policy": "p", "reward": "r", "dataset": "d"},
                       sort_keys=True, default=str)
    assert h == hashlib.sha1(blob.encode()).hexdigest()[:10]
    others = [runner.config_hash("sea", {"length": 5}, "p", "r", "d"), runner.config_hash("greedy", {"length": 6}, "p",
              "r", "d"), runner.config_hash("greedy", {"length": 5}, "q", "r", "d"),
              runner.config_hash("greedy", {"length": 5}, "p", "s", "d"),
              runner.config_hash("greedy", {"length": 5}, "p", "r", "e")]
    assert len({h, *others}) == 6
    assert runner.config_hash("greedy", {"a": 1, "b": 2}, "p", "r", "d") == runner.config_hash(
        "greedy", {"b": 2, "a": 1}, "p", "r", "d")  # key order does not matter


@pytest.mark.parametrize("bad, message", [
    ([], "must be a mapping"), ({"dataset": "x"}, "no `methods:`"), ({"methods": []}, "no `dataset:`"),
    ({"methods": [], "dataset": {"first": 1}}, "needs a `name:`"),
    ({"methods": [{"params": {}}], "dataset": "inline"}, "has no `method:`"),
    ({"methods": ["greedy"], "dataset": "inline", "batch_prompts": 0}, "`batch_prompts:` must be a positive integer"),
    ({"methods": ["greedy"], "dataset": "inline", "batch_prompts": True}, "must be a positive integer, got True"),
    ({"methods": ["greedy"], "dataset": "inline", "batch_prompts": 2.5}, "must be a positive integer, got 2.5"),
])
def test_bad_grids_are_refused_with_the_problem_named(bad, message):
    with pytest.raises(runner.GridError, match=message):
        runner.parse_grid(bad)


def test_method_params_are_checked_against_the_method_signature():
    ok = {"dataset": "inline", "methods": [{"method": "sea", "params": {"steps": 2, "recipe": "dlp", "prefill": "x"}},
                                           {"method": "best_of_n", "params": {"n": 2, "prefill": "Sure"}}]}
    assert len(runner.parse_grid(ok).methods) == 2  # SEAConfig fields for sea; the runner's own prefill for all
    with pytest.raises(runner.GridError, match=r"^method 'sea' does not take the params \['stepz'\]\. It takes: "):
        runner.parse_grid({"dataset": "inline", "methods": [{"method": "sea", "params": {"stepz": 2}}]})
    with pytest.raises(runner.GridError, match=r"method 'greedy' does not take the params \['n'\]"):
        runner.parse_grid({"dataset": "inline", "methods": [{"method": "greedy", "params": {"n": 2}}]})
    with pytest.raises(runner.GridError, match="Unknown method"):
        runner.parse_grid({"dataset": "inline", "methods": ["dpo"]})


@pytest.mark.parametrize("method", ["sea", "best_of_n"])
@pytest.mark.parametrize("name", ["policy", "reward", "prompt", "seed"])
def test_params_the_runner_sets_itself_are_refused_by_name(method, name):
    """A `seed:` under params would reach the method twice (SEAConfig has a seed field): a TypeError mid-run."""
    with pytest.raises(runner.GridError, match=rf"method '{method}' is given \['{name}'\] in `params:`.*Fix: remove"):
        runner.parse_grid({"dataset": "inline", "methods": [{"method": method, "params": {name: 1}}]})


def test_a_method_given_by_name_alone_is_labelled_by_it():
    (spec,) = runner.parse_grid({"dataset": "inline", "methods": ["greedy"]}).methods
    assert (spec.label, spec.method, spec.params) == ("greedy", "greedy", {})


def test_a_batched_groups_time_is_split_between_its_records_not_multiplied(tmp_path, monkeypatch):
    from sea_minimal import methods

    batched = methods.BATCHED["greedy"]

    def slow(*args, **kw):  # a batch that takes 0.4 s: each of its two records took 0.2 s of it
        time.sleep(0.4)
        return batched(*args, **kw)

    monkeypatch.setitem(methods.BATCHED, "greedy", slow)
    path = tmp_path / "r.jsonl"
    runner.run_grid(grid(path, batch_prompts=2), **quiet())
    first, second, alone = (r["wall_time"] for r in records(path))
    assert first == second and 0.2 <= first < 0.4 and alone < 0.2


def test_select_methods_keeps_the_matching_labels_and_names_them_when_none_match():
    grid = runner.parse_grid({"dataset": "inline", "methods": ["greedy", {"name": "bon[n=16]", "method": "best_of_n"}]})
    assert [m.label for m in runner.select_methods(grid, ["bon[n=16]"]).methods] == ["bon[n=16]"]
    assert runner.select_methods(grid, None) is grid
    with pytest.raises(runner.GridError, match=r"No method label matches \['x\*'\]\. Labels: \['greedy', 'bon\[n=16\]'\]"):
        runner.select_methods(grid, ["x*"])


def test_harmlessness_v2_is_the_head_trained_on_the_policy_when_there_is_one(monkeypatch, tmp_path):
    """Another policy (scripts/train_reward.py --policy NAME) gets its own head file, reward folder and, once its head
    exists, make_reward uses it; until then the bundled head (whose hidden size check then names the fix)."""
    from types import SimpleNamespace

    from sea_minimal import reward_model

    assert reward_model.v2_head_file("smollm2-135m-instruct") == reward_model.V2_HEAD_FILE
    assert reward_model.v2_head_file("org/model").name == "harmlessness_v2_org--model.safetensors"
    assert reward_model.reward_folder("smollm2-135m-instruct") == reward_model.REPORT_DIR
    assert reward_model.reward_folder("gemma3-270m") == reward_model.REPORT_DIR / "gemma3-270m"
    monkeypatch.setattr(reward_model, "ASSETS", tmp_path)
    loaded = []
    monkeypatch.setattr(reward_model, "load_harmlessness_reward", lambda p, f: loaded.append(f) or "head")
    policy = SimpleNamespace(name="other")
    runner.make_reward("harmlessness-v2", policy)
    (tmp_path / "harmlessness_v2_other.safetensors").write_bytes(b"")
    runner.make_reward("harmlessness-v2", policy)
    runner.make_reward("harmlessness", policy)  # the HH-only head has one file for everyone
    assert loaded == [reward_model.V2_HEAD_FILE, tmp_path / "harmlessness_v2_other.safetensors",
                      reward_model.HEAD_FILE]


def test_a_registered_method_with_its_own_keywords_is_passed_any_param(monkeypatch):
    """A user's method that takes ``**params`` decides its own params: the runner checks SEAConfig's fields only for
    sea, and would refuse this grid if it checked them for every method with keywords."""
    from sea_minimal import methods

    def scaled_greedy(policy, reward, prompt, seed, **params):
        raise AssertionError("parse_grid does not run methods")

    monkeypatch.setitem(methods.METHODS, "scaled_greedy", scaled_greedy)
    (spec,) = runner.parse_grid({"dataset": "inline", "methods": [
        {"method": "scaled_greedy", "params": {"temperature_schedule": "cosine", "prefill": "Sure"}}]}).methods
    assert spec.params == {"temperature_schedule": "cosine", "prefill": "Sure"}
    with pytest.raises(runner.GridError, match=r"method 'sea' does not take the params \['temperature_schedule'\]"):
        runner.parse_grid({"dataset": "inline", "methods": [{"method": "sea",
                                                             "params": {"temperature_schedule": "cosine"}}]})


def test_the_truthful_head_reward_is_chapter_8ds_committed_head_on_the_policy(monkeypatch):
    """``reward: truthful-head`` (grids/truthfulqa_head.yaml) loads the committed truth head onto the grid's own
    policy; the head file itself is checked by chapter 8d's notebook test."""
    from sea_minimal import truthfulqa

    loaded = []
    monkeypatch.setattr(truthfulqa, "load_truth_reward", lambda policy: loaded.append(policy) or "truth head")
    policy = SimpleNamespace(name="smollm2-135m-instruct")
    assert runner.make_reward("truthful-head", policy) == "truth head"
    assert loaded == [policy]
    assert truthfulqa.TRUTH_HEAD_FILE.exists()
