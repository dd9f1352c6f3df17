"""Plotting helpers on tiny SEA runs: figures have the expected panels and lines, tables one row per candidate."""

import dataclasses
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from conftest import DEVICE, tiny_lm  # noqa: E402
from sea_minimal import SEA, Policy, SEAConfig, VocabReward  # noqa: E402
from sea_minimal.plotting import (  # noqa: E402
    DEFAULT_KEYS,
    before_after_table,
    plot_kl_per_position,
    plot_trajectories,
)

PROMPT = [3, 1, 4, 1, 5]
CHAINS, LENGTH, STEPS = 2, 4, 3


@pytest.fixture(scope="module")
def policy():
    return Policy(tiny_lm(), tokenizer=None, name="tiny")


@pytest.fixture(scope="module")
def results(policy):
    reward = VocabReward(torch.linspace(-1.0, 1.0, 11, device=DEVICE))
    small = dict(num_chains=CHAINS, length=LENGTH, steps=STEPS, seed=0)
    return {
        "paper (langevin)": SEA(policy, reward, SEAConfig.paper(**small)).run([PROMPT], progress=False)[0],
        "released code": SEA(policy, reward, SEAConfig.released_code(**small)).run([PROMPT], progress=False)[0],
    }


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_trajectories_one_panel_per_key_and_lines_per_chain(results):
    keys = ("logp_ref", "reward_hard", "kl_init")
    fig = plot_trajectories(results, keys=keys)
    assert len(fig.axes) == len(keys)
    for ax in fig.axes:
        assert len(ax.lines) == len(results) * (CHAINS + 1)  # per recipe: one thin line per chain + the mean
        assert ax.get_xlabel() == "iteration"
        assert len(ax.lines[CHAINS].get_xdata()) == STEPS
    mean = fig.axes[1].lines[CHAINS].get_ydata()
    per_step = [sum(row) / CHAINS for row in results["paper (langevin)"].trajectory["reward_hard"]]
    assert list(mean) == pytest.approx(per_step)


def test_trajectories_split_the_energy_panel_by_recipe(results):
    fig = plot_trajectories(results)  # default keys, two recipes: the energy gets one panel per recipe
    assert len(fig.axes) == len(DEFAULT_KEYS) + 1
    assert [len(ax.lines) for ax in fig.axes[:2]] == [CHAINS + 1, CHAINS + 1]
    fig = plot_trajectories(results, keys=("energy",), split_energy=False, chains=False)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) == len(results)


def test_trajectories_accept_one_result_and_reject_unknown_keys(results):
    fig = plot_trajectories(results["released code"], keys=("energy", "noise"))
    assert len(fig.axes) == 2 and all(len(ax.lines) == CHAINS + 1 for ax in fig.axes)
    with pytest.raises(KeyError, match="nope"):
        plot_trajectories(results, keys=("nope",))
    with pytest.raises(ValueError, match="No results"):
        plot_trajectories({})


def test_kl_per_position_lines_span_the_response(results):
    fig = plot_kl_per_position(results, logy=True)
    (ax,) = fig.axes
    assert len(ax.lines) == len(results) * (CHAINS + 1)
    assert all(len(line.get_xdata()) == LENGTH for line in ax.lines)
    assert ax.get_yscale() == "log"
    fig, ax = plt.subplots()
    assert plot_kl_per_position(results, ax=ax, chains=False) is fig and len(ax.lines) == len(results)


def test_before_after_table_has_one_row_per_candidate(results):
    for res in results.values():
        table = before_after_table(res)
        assert len(table) == len(res.candidates) == CHAINS
        assert list(table["initial_text"]) == res.initial_texts
        assert list(table["final_reward"]) == [c["reward"] for c in res.candidates]
        assert table["selected"].sum() == 1 and table["selected"].iloc[res.selected]


def test_before_after_table_with_rewrites_and_logprob_columns(results):
    res = results["released code"]
    rewrites = [{"source": f"rewrite of chain {c}", "token_ids": [1, 2], "text": "1 2", "reward": 0.5 + c}
                for c in range(CHAINS)]
    res = dataclasses.replace(res, candidates=res.candidates + rewrites, selected=len(res.candidates) + 1)
    table = before_after_table(res, logprobs={"initial_logp_ref": [-1.0, -2.0],
                                              "final_logp_ref": [-3.0, -4.0, -5.0, -6.0]}, max_chars=2)
    assert len(table) == 2 * CHAINS
    assert list(table["chain"]) == [0, 1, 0, 1]
    assert table["initial_text"].iloc[2:].isna().all() and all(math.isnan(v) for v in table["initial_reward"][2:])
    assert list(table["initial_logp_ref"][:2]) == [-1.0, -2.0] and table["initial_logp_ref"][2:].isna().all()
    assert list(table["final_logp_ref"]) == [-3.0, -4.0, -5.0, -6.0]
    assert table["selected"].tolist() == [False, False, False, True]
    assert all(len(t) <= 2 for t in table["final_text"])
    with pytest.raises(ValueError, match="one per candidate"):
        before_after_table(res, logprobs={"final_logp_ref": [0.0]})


def test_frontier_joins_each_family_in_budget_order():
    import pandas as pd

    from sea_minimal import analysis
    from sea_minimal.report_plots import plot_frontier

    points = pd.DataFrame([
        {"label": f"bon[n={n}]", "family": "best-of-n", "budget": n, "prompt_id": p, "reward": float(n + p),
         "outcome": "refused" if p else "complied", "compute_tokens": 100.0 * n} for n in (1, 4, 16) for p in range(3)
    ] + [{"label": "args", "family": "args", "budget": float("nan"), "prompt_id": p, "reward": 1.0, "outcome": "broken",
          "compute_tokens": 900.0} for p in range(3)])
    fig = plot_frontier(analysis.frontier(points))
    left, right = fig.axes[:2]
    xs = [line.get_xdata().tolist() for line in left.get_lines() if len(line.get_xdata()) == 3]
    assert [100.0, 400.0, 1600.0] in xs  # one curve through the three Best-of-N points, cheapest first
    assert right.get_ylim() == (-3, 103) and left.get_xscale() == "log"
    assert {t.get_text() for t in right.get_legend().get_texts()} == {"best-of-n", "args"}
    plt.close(fig)


def test_cost_plot_places_each_method_and_joins_best_of_n():
    import pandas as pd

    from sea_minimal import analysis
    from sea_minimal.plotting import method_color
    from sea_minimal.report_plots import plot_cost

    records = pd.DataFrame([{"label": label, "prompt_id": p, "compute_forward_tokens": tokens, "compute_backward_tokens": 0,
                             "compute_wall_time": seconds + p} for label, tokens, seconds in
                            (("bon[n=4]", 400, 4.0), ("bon[n=16]", 1600, 16.0), ("sea-langevin[its=30]", 3000, 60.0))
                            for p in range(2)])
    per = analysis.cost_per_label(records)
    assert per.index.tolist() == ["bon[n=4]", "bon[n=16]", "sea-langevin[its=30]"]
    assert per.loc["bon[n=16]", "wall_s"] == 16.5 and per.loc["sea-langevin[its=30]", "s_per_1k_tokens"] == pytest.approx(20.1667, rel=1e-4)
    assert analysis.cost_per_label(records.iloc[0:0]).empty
    fig = plot_cost(per, {"wall_s": "wall time (s)", "s_per_1k_tokens": "s per 1k tokens"}, log_y=("wall_s",))
    left, right = fig.axes[:2]
    assert left.get_yscale() == "log" and right.get_yscale() == "linear" and left.get_xscale() == "log"
    assert [line.get_xdata().tolist() for line in left.get_lines()] == [[400.0, 1600.0]]  # Best-of-N joined, SEA alone
    sea = [c for c in left.collections if c.get_label() == "sea-langevin[its=30]"][0]
    assert sea.get_offsets().tolist() == [[3000.0, 60.5]]  # mean of 60 s and 61 s
    assert tuple(sea.get_facecolor()[0][:3]) == pytest.approx(method_color("sea-langevin[its=30]"))  # alone: its family's colour
    plt.close(fig)


def test_attack_plot_draws_one_panel_per_table_in_each_methods_colour():
    import pandas as pd

    from sea_minimal.plotting import method_color, method_marker
    from sea_minimal.report_plots import plot_attack_success

    asr = pd.DataFrame({"method": ["greedy", "greedy", "sea-langevin"], "prefill_words": [0, 9, 0],
                        "asr": [50.0, 90.0, 20.0], "asr_lo": [30.0, 80.0, 10.0], "asr_hi": [70.0, 100.0, 30.0]})
    fig = plot_attack_success({"complied": asr, "keyword judge": asr[asr["method"] == "greedy"]})
    left, right = fig.axes[:2]
    assert [left.get_title(), right.get_title()] == ["complied", "keyword judge"]
    lines = {ax.get_title(): {c.get_label(): c.lines[0] for c in ax.containers} for ax in (left, right)}
    assert lines["complied"]["greedy"].get_ydata().tolist() == [50.0, 90.0]
    assert set(lines["keyword judge"]) == {"greedy"}  # sea-langevin is not in that panel's table
    assert tuple(lines["complied"]["sea-langevin"].get_color()[:3]) == pytest.approx(method_color("sea-langevin"))
    assert {m: line.get_marker() for m, line in lines["complied"].items()} == {
        m: method_marker(m) for m in ("greedy", "sea-langevin")}  # the family's marker too
    plt.close(fig)
    single = plot_attack_success(asr)
    assert len(single.axes) == 1 and single.axes[0].get_title() == "prefilling attack"
    plt.close(single)


def test_tuning_plot_fills_only_the_chosen_setting():
    import pandas as pd

    from sea_minimal.report_plots import plot_tuning

    choice = pd.DataFrame({"recipe": ["sea-langevin", "sea-langevin", "sea-reference"], "broken %": [0.0, 50.0, 0.0],
                           "reward": [1.0, 3.0, 2.0], "broken limit %": [15.0] * 3, "chosen": [True, False, True]},
                          index=["eta=1", "eta=10", "lr=0.1"])
    fig = plot_tuning(choice, pd.Series({"broken": 0.0, "reward": 4.0}))
    ax = fig.axes[0]
    filled = [line for line in ax.get_lines() if line.get_marker() in "os" and line.get_mfc() != "white"]
    assert len(filled) == 2
    assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == [15.0]
    assert len(ax.get_legend().get_texts()) == 3  # two recipes and pi_ref, each once
    plt.close(fig)


def test_every_figure_gives_a_method_the_same_colour_and_marker():
    """One visual language (issue 15): a method's colour depends on its family only, not on the other labels of the
    figure or their order; Best-of-N is one ramp, darker with N; SEA's recipes, ARGS, CBS and greedy differ."""
    from sea_minimal.plotting import _colors, method_color, method_family, method_marker

    assert _colors(["greedy", "sea-langevin", "args"])["sea-langevin"] == _colors(["sea-langevin"])["sea-langevin"]
    assert method_color("sea-langevin[its=30]") == method_color("sea-langevin@3w") == method_color("sea-langevin")
    families = ["greedy", "args", "cbs[chunk=10]", "sea-langevin", "sea-reference", "bon[n=16]"]
    assert len({method_color(f) for f in families}) == len(families)
    assert len({method_marker(f) for f in families}) == len(families)
    ramp = [method_color(f"BoN-{n}") for n in (1, 4, 16, 64, 256)]
    assert [sum(c) for c in ramp] == sorted((sum(c) for c in ramp), reverse=True) and len(set(ramp)) == 5
    assert method_color("bon[n=64]") == method_color("BoN-64") == method_color("Best-of-64")
    assert method_color("pi_ref") == method_color("BoN-1") and method_color("pi*") == (0.0, 0.0, 0.0)
    assert [method_family(x) for x in ("cbs[chunk=32]", "sea-reference/without noise", "pi-star", "mystery")] == [
        "cbs", "sea-reference", "pi*", "other"]
    assert method_color("langevin") == method_color("sea-langevin")  # plot_trajectories labels runs by recipe
    assert len(set(_colors(["mine", "yours", "theirs"]).values())) == 3


def test_variants_of_one_method_in_one_figure_get_shades_of_its_colour():
    from sea_minimal.plotting import _colors, method_color

    labels = ["sea-langevin[its=10]", "sea-langevin[its=30]", "sea-langevin[its=100]", "greedy"]
    colors = _colors(labels)
    assert list(colors) == labels and len(set(colors.values())) == 4 and colors["greedy"] == method_color("greedy")
    blue = method_color("sea-langevin")
    for label in labels[:3]:  # a shade keeps the hue: the channels keep their order
        assert sorted(range(3), key=lambda i: colors[label][i]) == sorted(range(3), key=lambda i: blue[i])


def test_paper_vs_ours_draws_each_rate_at_its_value_and_the_paper_only_where_known():
    import pandas as pd

    from sea_minimal.report_plots import plot_paper_vs_ours

    summary = pd.DataFrame({"harmful_kw": [80.0, 40.0], "harmful_kw_lo": [70.0, 30.0], "harmful_kw_hi": [90.0, 50.0],
                            "complied": [75.0, 20.0], "complied_lo": [60.0, 10.0], "complied_hi": [85.0, 35.0]},
                           index=["greedy", "sea-langevin[its=100]"])
    fig = plot_paper_vs_ours(summary, {"greedy": 65.96})
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["greedy", "sea-langevin[its=100]"]
    paper = [c for c in ax.collections if c.get_label().startswith("paper")]
    assert len(paper) == 1 and paper[0].get_offsets().tolist() == [[65.96, 1.0]]  # greedy is the top row
    xs = sorted(float(line.get_xdata()[0]) for line in ax.get_lines() if line.get_marker() in ("o", "s"))
    assert xs == [20.0, 40.0, 75.0, 80.0]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {
        "ours: keyword harmful", "ours: complied (three outcomes)", "paper (LLaMA-3.2-1B)"}


def test_paper_vs_ours_draws_into_a_given_panel_with_its_title():
    import matplotlib.pyplot as plt
    import pandas as pd

    from sea_minimal.report_plots import plot_paper_vs_ours

    summary = pd.DataFrame({"harmful_kw": [80.0], "harmful_kw_lo": [70.0], "harmful_kw_hi": [90.0]}, index=["1 chain"])
    fig, (top, bottom) = plt.subplots(2, 1)
    assert plot_paper_vs_ours(summary, {"1 chain": 13.65}, ax=bottom, title="sea-langevin, 12 prompts") is fig
    assert bottom.get_title() == "sea-langevin, 12 prompts" and not top.get_lines() and len(fig.axes) == 2
    assert [float(line.get_xdata()[0]) for line in bottom.get_lines() if line.get_marker() == "o"] == [80.0]
    plt.close(fig)
