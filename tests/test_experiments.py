"""The book's experiment grids at smoke / book / paper scale, coverage and loading exactly one grid's records."""

import json

import pytest

from sea_minimal import experiments, runner


@pytest.mark.parametrize("name", sorted(experiments.EXPERIMENTS))
def test_every_grid_parses_at_every_scale(name, tmp_path):
    book = experiments.experiment_grid(name, "book", results_dir=tmp_path)
    smoke = experiments.experiment_grid(name, "smoke", results_dir=tmp_path)
    paper = experiments.experiment_grid(name, "paper", results_dir=tmp_path)
    assert [m.label for m in smoke.methods] == [m.label for m in book.methods] == [m.label for m in paper.methods]
    reasoning = name in ("gsm8k", "math500")  # `first: 200` grids, kept whole at paper scale (the paper's 200)
    first = reasoning or name.startswith("truthfulqa")  # `first: N` grids (TruthfulQA: the paper's first 100, or 50)
    assert (smoke.dataset["first"] if first else len(smoke.dataset["ids"])) == 2
    listed = ("tune", "convergence", "tune_exact", "tune_v2")  # these keep their listed prompts
    assert ("ids" in paper.dataset or "first" in paper.dataset) == (name in listed or first)
    for s, b in zip(smoke.methods, book.methods):
        assert s.params.get("length", 0) <= 8 and s.params.get("steps", 0) <= 2 and s.params.get("n", 0) <= 8
        assert s.config_hash != b.config_hash
    for p, b in zip(paper.methods, book.methods):
        assert p.params.get("length") in (None, 320 if reasoning else 50)  # a worked solution needs more than 50
        if p.method == "sea":  # the frontier's iteration budgets (paper_steps: listed) stay as listed
            assert p.params["steps"] == (b.params["steps"] if name in ("sea_v2", "ablations_v2", "prefill_v2") else 200)


def test_evaluation_grids_share_the_40_prompts_and_tuning_prompts_are_disjoint():
    ids = {name: experiments.grid_spec(name)["dataset"].get("ids") for name in experiments.EXPERIMENTS}
    evaluation = ids["baselines"]
    assert len(evaluation) == 40 and len(set(evaluation)) == 40
    for name in ("sea", "ablations", "prefill", "baselines_v2", "sea_v2"):
        assert ids[name] == evaluation, name
    assert set(ids["convergence"]) <= set(evaluation)
    for name in ("ablations_v2", "prefill_v2"):  # round 2's ablations and attack: the first 20 evaluation prompts
        assert ids[name] == evaluation[:20], name
    assert not set(ids["tune"]) & set(evaluation)
    assert experiments.grid_spec("tune_v2")["dataset"]["name"] == "do_not_answer"  # round 2 tunes off AdvBench


def test_policy_override_changes_every_key(tmp_path):
    a = experiments.experiment_grid("sea", "book", results_dir=tmp_path)
    b = experiments.experiment_grid("sea", "book", results_dir=tmp_path, policy="HuggingFaceTB/SmolLM2-360M-Instruct")
    assert not {m.config_hash for m in a.methods} & {m.config_hash for m in b.methods}


def test_prompts_override_keeps_the_first_prompts_of_a_grid(tmp_path):
    listed = experiments.experiment_grid("sea_v2", "book", results_dir=tmp_path, prompts=10)
    assert listed.dataset["ids"] == experiments.grid_spec("sea_v2")["dataset"]["ids"][:10]
    assert experiments.experiment_grid("truthfulqa_head", "book", prompts=7).dataset["first"] == 7
    assert experiments.experiment_grid("truthfulqa_head", "smoke", prompts=7).dataset["first"] == 2  # smoke: 2
    same = experiments.experiment_grid("sea_v2", "book", results_dir=tmp_path)
    assert [m.config_hash for m in listed.methods] == [m.config_hash for m in same.methods]  # the same records
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="positive number of prompts"):
            experiments.experiment_grid("sea_v2", "book", prompts=bad)


def test_another_policys_recorded_spread_moves_the_reward_weights(monkeypatch):
    """alpha, the ARGS w and the released recipe's reward_weight were set for harmlessness-v2's spread on SmolLM2
    (the grids' reward_spread, 4.44): a policy whose recorded spread is half as large doubles them."""
    from sea_minimal import scale

    def weights(grid):
        return {m.label: {k: m.params[k] for k in scale.REWARD_SCALED_PARAMS if k in m.params} for m in grid.methods}

    own_sea, own_base = (experiments.experiment_grid(n, "book") for n in ("sea_v2", "baselines_v2"))
    monkeypatch.setattr(scale, "recorded_spread", lambda policy, reward: 2.22 if policy == "other-policy" else None)
    sea = experiments.experiment_grid("sea_v2", "book", policy="other-policy")
    base = experiments.experiment_grid("baselines_v2", "book", policy="other-policy")
    assert weights(sea)["sea-langevin[its=30]"] == {"alpha": 1.14} and weights(sea)["sea-reference[its=10]"] == {
        "reward_weight": 2.0} and weights(base)["args"] == {"w": 1.14}
    assert weights(own_sea)["sea-langevin[its=30]"] == {"alpha": 0.568} and weights(own_base)["args"] == {"w": 0.568}
    assert {m.label: m.params["steps"] for m in sea.methods} == {m.label: m.params["steps"] for m in own_sea.methods}
    with pytest.warns(UserWarning, match="no spread of harmlessness-v2 on unmeasured is recorded.*Fix: python "
                                         "scripts/train_reward.py spread --policy unmeasured"):
        kept = experiments.experiment_grid("sea_v2", "book", policy="unmeasured")
    assert weights(kept) == weights(own_sea)
    old = experiments.experiment_grid("sea", "book", policy="other-policy")  # round 1 has no reward_spread: as written
    assert weights(old) == weights(experiments.experiment_grid("sea", "book"))


def test_the_bundled_policys_recorded_spreads_set_another_rewards_weights():
    """SmolLM2's recorded spreads (results/reward_model/spread.json): the first harmlessness head's std is 0.364, so
    round 2's ARGS weight for it is 0.568 x 4.44 / 0.364, the weight rule's alpha for that head (6.92)."""
    spreads = json.loads((experiments.REPO / "results" / "reward_model" / "spread.json").read_text())
    base = experiments.experiment_grid("baselines_v2", "book", reward="harmlessness")
    w = next(m.params["w"] for m in base.methods if m.method == "args")
    assert w == pytest.approx(spreads["alpha"]["harmlessness"], rel=0.01)


def test_coverage_and_load_experiment_keep_only_this_grid(tmp_path):
    spec = {"name": "t", "policy": "tiny-random", "reward": "linear", "length": 3, "seeds": [0],
            "dataset": {"name": "inline", "prompts": ["a b", "c d", "e f"]}, "results": str(tmp_path / "r.jsonl"),
            "methods": [{"name": "greedy", "method": "greedy"}]}
    grid = runner.parse_grid(spec)
    assert experiments.coverage(grid)["done"] == 0
    assert experiments.ensure_results(grid, compute="never")["done"] == 0
    runner.run_grid(grid, progress=False, log=lambda s: None, limit=2)
    assert experiments.coverage(grid) == {"done": 2, "expected": 3, "missing": 1, "by_label": {"greedy": 2}}
    # "if-empty" leaves a partly run grid as it is; "missing" completes it
    assert experiments.ensure_results(grid, compute="if-empty", progress=False)["missing"] == 1
    assert experiments.ensure_results(grid, compute="missing", progress=False)["missing"] == 0
    # a record of another config in the same file is not loaded
    with open(grid.results, "a") as fh:
        rec = json.loads(open(grid.results).readline())
        fh.write(json.dumps({**rec, "config_hash": "other"}) + "\n")
    df = experiments.load_experiment(grid)
    assert len(df) == 3 and set(df["config_hash"]) == {grid.methods[0].config_hash}
    with pytest.raises(ValueError, match="compute="):
        experiments.ensure_results(grid, compute="always")


def test_system_prompt_is_part_of_the_key_only_when_set(tmp_path):
    a = experiments.experiment_grid("sea", "book", results_dir=tmp_path)
    b = experiments.experiment_grid("sea", "book", results_dir=tmp_path, system_prompt="")
    assert a.system_prompt is None and b.system_prompt == ""
    assert not {m.config_hash for m in a.methods} & {m.config_hash for m in b.methods}


def test_prepare_reads_without_running_and_notes_every_scale(tmp_path):
    grids, cov = experiments.prepare(("sea", "prefill"), "smoke", compute="never", results_dir=tmp_path)
    assert set(grids) == {"sea", "prefill"} and cov["records"].tolist() == [0, 0]
    assert cov.loc["advbench_sea-smoke", "expected"] == 2 * len(grids["sea"].methods)
    for scale in experiments.SCALES:
        assert scale in experiments.scale_note(scale)


def test_round_2_tuning_requests_are_in_the_reward_data_tuning_split():
    splits = json.loads((experiments.REPO / "results" / "reward_model" / "splits.json").read_text())
    ids = experiments.grid_spec("tune_v2")["dataset"]["ids"]
    assert set(ids) <= set(splits["do_not_answer"]["tune"])  # never a request the reward was trained on


def test_round_2_ablation_variants_each_change_one_field_of_their_full_method_row(tmp_path):
    """Chapter 5 reads each variant against the main grid's row of the same recipe and budget: the two configs must
    differ in exactly the field the variant names (the whole point of an ablation)."""
    from sea_minimal.methods import _sea_config

    full = experiments.ablation_full_labels()
    assert full == {"sea-langevin": "sea-langevin[its=30]", "sea-reference": "sea-reference[its=10]"}
    main = {m.label: m for m in experiments.experiment_grid("sea_v2", "book", results_dir=tmp_path).methods}
    ablations = experiments.experiment_grid("ablations_v2", "book", results_dir=tmp_path).methods
    field = {"1 chain": "num_chains", "random init": "init", "without reward": "use_reward",
             "without reference": "use_reference", "without noise": "use_noise"}
    assert len(ablations) == 2 * len(field)
    for variant in ablations:
        recipe, name = variant.label.split("/")
        row = main[full[recipe]]
        a, b = (_sea_config(m.params["recipe"], 0, {k: v for k, v in m.params.items() if k != "recipe"}).to_dict()
                for m in (row, variant))
        assert {k for k in a if a[k] != b[k]} == {field[name]}, variant.label


def test_ablation_full_labels_refuses_a_budget_the_main_grid_does_not_run(monkeypatch):
    spec = experiments.grid_spec("ablations_v2")
    spec["methods"][0]["params"]["steps"] = 7
    real = experiments.grid_spec
    monkeypatch.setattr(experiments, "grid_spec", lambda name: spec if name == "ablations_v2" else real(name))
    with pytest.raises(ValueError, match=r"sea-langevin runs 7 iterations, but grid 'sea_v2' has no row"):
        experiments.ablation_full_labels()


def test_prefill_unattacked_labels_map_each_attacked_method_to_its_unattacked_row():
    # round 2: SEA at the attacked run's budget, Best-of-16 from the first 16 of the 256 samples
    assert experiments.prefill_unattacked_labels() == {
        "greedy": "greedy", "bon[n=16]": "bon[n=16]", "sea-langevin[its=30]": "sea-langevin",
        "sea-reference[its=10]": "sea-reference"}
    # round 1: the main grids hold each attacked method under its own label
    assert experiments.prefill_unattacked_labels("prefill", ("baselines", "sea")) == {
        m: m for m in ("greedy", "bon[n=16]", "sea-langevin", "sea-reference")}


def test_prefill_unattacked_labels_refuse_a_method_the_main_grids_do_not_run():
    with pytest.raises(ValueError, match=r"sea-langevin has no unattacked run 'sea-langevin\[its=30\]'"):
        experiments.prefill_unattacked_labels(main=("baselines_v2",))
    spec = experiments.grid_spec("prefill_v2")
    spec["methods"][1]["params"]["n"] = 32
    for v in spec["methods"][1]["variants"]:
        v["name"] = v["name"].replace("n=16", "n=32")
    real = experiments.grid_spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(experiments, "grid_spec", lambda name: spec if name == "prefill_v2" else real(name))
        with pytest.raises(ValueError, match=r"bon\[n=32\] has no unattacked run"):
            experiments.prefill_unattacked_labels()


def test_benchmark_command_passes_every_given_setting_and_only_those():
    cmd = experiments.benchmark_command("book", "/tmp/c.json", round_=2, prompts=10, only=("greedy", "bon[n=4]"),
                                        device="cpu", data_dir="/data")
    assert cmd[1].endswith("scripts/benchmark_methods.py")
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert cmd[2:].count("--only") == 2 and cmd[-4:] == ["--only", "greedy", "--only", "bon[n=4]"]
    assert {k: flags[k] for k in ("--round", "--scale", "--prompts", "--out", "--device", "--data-dir")} == {
        "--round": "2", "--scale": "book", "--prompts": "10", "--out": "/tmp/c.json", "--device": "cpu", "--data-dir": "/data"}
    assert "--policy" not in cmd and "--reward" not in cmd  # not given: the script's defaults (the grids' settings)
