"""The book's comparison figures, drawn from the tables of ``sea_minimal.analysis`` (one function per figure;
each returns its matplotlib Figure). Same style as ``sea_minimal.plotting``."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .plotting import BOOK_WIDTH_IN, _colors, _style, method_color, method_marker  # noqa: F401  (the notebooks import these here)

JUDGES = {"harmful_kw": "keyword judge", "harmful_ml": "MiniLM judge"}


def _err(s: pd.DataFrame, col: str) -> np.ndarray:
    return np.vstack([s[col] - s[f"{col}_lo"], s[f"{col}_hi"] - s[col]])


def plot_harm_vs_compute(summary: pd.DataFrame, paper: Mapping[str, float] | None = None):
    """Harmful rate (%, 95% CI) against mean forward+backward tokens per prompt (log scale), one panel per judge,
    plus mean reward against median perplexity (is a lower harmful rate bought with word salad?). Panels in rows of
    two; with two judges the fourth place holds the legend."""
    judges = [j for j in JUDGES if j in summary]
    n = len(judges) + 1
    rows = math.ceil(n / 2)
    with _style():
        fig, grid = plt.subplots(rows, 2, figsize=(9.6, 3.5 * rows), layout="constrained", squeeze=False)
        axes = list(grid.flat)[:n]
        spare = list(grid.flat)[n:]
        colors = _colors(list(summary.index))
        for ax, judge in zip(axes, judges):
            for label, s in summary.iterrows():
                ax.errorbar(s.compute_tokens, s[judge], yerr=_err(summary.loc[[label]], judge), fmt="o", capsize=3,
                            color=colors[label], label=label)
            ax.set_xscale("log")
            ax.set(xlabel="forward + backward tokens per prompt", ylabel="harmful rate (%)", ylim=(-3, 103),
                   title=f"harmful rate, {JUDGES[judge]}")
        ax = axes[-1]
        for label, s in summary.iterrows():
            ax.errorbar(s.perplexity, s.reward, yerr=_err(summary.loc[[label]], "reward"), fmt="o", capsize=3,
                        color=colors[label], label=label)
        ax.set_xscale("log")
        ax.set(xlabel=r"median perplexity under $\pi_{ref}$", ylabel="mean reward", title="reward against fluency")
        if spare:
            for extra in spare:
                extra.axis("off")
            handles, labels = axes[0].get_legend_handles_labels()
            spare[0].legend(handles, labels, fontsize=8, loc="center", frameon=False, ncols=2)
        else:
            axes[0].legend(fontsize=7, loc="best")
    return fig


def plot_ablation_bars(summary: pd.DataFrame, paper: Mapping[str, float], title: str = ""):
    """Harmful rate per ablation variant (ours with 95% CIs, both judges) next to the paper's numbers."""
    labels = list(summary.index)
    x = np.arange(len(labels))
    with _style():
        fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels)), 3.8), layout="constrained")
        width = 0.27
        ax.bar(x - width, [paper.get(lab, np.nan) for lab in labels], width, color="0.7", label="paper (LLaMA-3.2-1B)")
        for k, judge in enumerate([j for j in JUDGES if j in summary]):
            ax.bar(x + k * width, summary[judge], width, yerr=_err(summary, judge), capsize=3,
                   label=f"ours, {JUDGES[judge]}")
        ax.set_xticks(x, labels, rotation=20, ha="right")
        ax.set(ylabel="harmful rate (%)", ylim=(0, 105), title=title)
        # Outside the axes: bars near 100% leave no free corner inside.
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_convergence(curves: pd.DataFrame, keys: Sequence[str] = ("reward_best_so_far", "reward_mean", "logp_ref",
                                                                   "energy"), marks: Mapping[str, int] | None = None):
    """Mean over prompts (band: 95% bootstrap-free normal CI of the mean) of each key against iteration, one line
    per label; ``marks`` draws a vertical line at each label's stabilisation iteration."""
    titles = {"reward_best_so_far": "best reward so far", "reward_mean": "mean chain reward",
              "logp_ref": r"log $\pi_{ref}(y\mid x)$ (nats)", "energy": "energy / loss (recipe's own)"}
    labels = list(dict.fromkeys(curves["label"]))
    colors = _colors(labels)
    ncols = min(2, len(keys))
    rows = math.ceil(len(keys) / ncols)
    with _style():
        fig, grid = plt.subplots(rows, ncols, figsize=(4.8 * ncols, 3.2 * rows), layout="constrained", squeeze=False)
        for extra in list(grid.flat)[len(keys):]:
            extra.axis("off")
        axes = list(grid.flat)[:len(keys)]
        for ax, key in zip(axes, keys):
            for label in labels:
                g = curves[curves["label"] == label].groupby("iteration")[key]
                mean, sem = g.mean(), g.sem().fillna(0)
                ax.plot(mean.index, mean.values, color=colors[label], label=label)
                ax.fill_between(mean.index, mean - 1.96 * sem, mean + 1.96 * sem, color=colors[label], alpha=0.2)
                if marks and marks.get(label) is not None and key.startswith("reward"):
                    ax.axvline(marks[label], color=colors[label], ls=":", lw=1)
            ax.set(xlabel="iteration", title=titles.get(key, key))
        axes[0].legend(fontsize=8)
    return fig


def plot_position_profiles(change: pd.DataFrame, kl: pd.DataFrame | None = None):
    """Left: share of prompts whose token at each position differs from the base policy's greedy answer, per
    method. Right: SEA's KL(softmax Z_0 || softmax Z_final) per position as a share of its total."""
    n = 2 if kl is not None and len(kl) else 1
    with _style():
        fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.6), layout="constrained", squeeze=False)
        labels = list(dict.fromkeys(change["label"]))
        colors = _colors(labels)
        ax = axes[0, 0]
        for label in labels:
            g = change[change["label"] == label]
            ax.plot(g["position"], g["changed"], marker=".", color=colors[label], label=label)
        ax.set(xlabel="response position (token)", ylabel="share of prompts changed", ylim=(-0.03, 1.03),
               title="tokens changed vs the greedy answer")
        ax.legend(fontsize=7)
        if n == 2:
            ax = axes[0, 1]
            for label in dict.fromkeys(kl["label"]):
                g = kl[kl["label"] == label]
                ax.plot(g["position"], g["kl_share"], marker=".", color=colors.get(label), label=label)
            T = kl["position"].max() + 1
            ax.axhline(1 / T, color="0.5", ls="--", lw=1, label="even spread")
            ax.set(xlabel="response position (token)", ylabel="share of total KL", title="SEA: where the logits moved")
            ax.legend(fontsize=7)
    return fig


def plot_attack_success(asr: pd.DataFrame | Mapping[str, pd.DataFrame], ylabel: str = "attack success rate (%)"):
    """Attack success rate (%, 95% CI) against the number of prefilled words, one line per method in its family's
    colour and marker. ``asr``: an :func:`sea_minimal.analysis.attack_success` table, or a mapping panel title -> table for
    side-by-side panels sharing the y axis (e.g. the complied share and the keyword judge's rate)."""
    panels = {"prefilling attack": asr} if isinstance(asr, pd.DataFrame) else dict(asr)
    methods = list(dict.fromkeys(m for t in panels.values() for m in t["method"]))
    colors = _colors(methods)
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 3.8), layout="constrained", sharey=True,
                                 squeeze=False)
        for ax, (title, t) in zip(axes[0], panels.items()):
            for m in methods:
                g = t[t["method"] == m]
                if len(g):
                    ax.errorbar(g["prefill_words"], g["asr"], yerr=np.vstack([g["asr"] - g["asr_lo"], g["asr_hi"] - g["asr"]]),
                                marker=method_marker(m), capsize=3, color=colors[m], label=m)
            ax.set(xlabel="prefilled words", ylim=(-3, 103), xticks=sorted(t["prefill_words"].unique()), title=title)
        axes[0][0].set_ylabel(ylabel)
        axes[0][-1].legend(fontsize=8)
    return fig


def plot_distance_to_optimum(summary: pd.DataFrame, floors: Mapping[str, float] | None = None):
    """Left: W1 distance to pi* (nats, 95% CI over prompts) against forward+backward tokens per prompt (log scale);
    dashed lines: the exact sampler's own distance with as many samples (``floors``: label -> value). Right: the
    refused rate (%, 95% CI) against the same cost, with pi*'s rate as a band. ``summary`` is indexed by label
    (``sea_minimal.optimum_analysis.summary``)."""
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(BOOK_WIDTH_IN - 0.5, 4.2), layout="constrained")
        rows = summary[~summary.index.str.startswith("pi*")]
        for label, s in rows.iterrows():
            chains = label.endswith("chains")
            kw = dict(fmt="s" if chains else "o", capsize=3, color=method_color(label), label=label,
                      mfc="white" if chains else None)
            if np.isfinite(s.w1):
                axes[0].errorbar(s.compute_tokens, s.w1, yerr=_err(rows.loc[[label]], "w1"), **kw)
            err = [[s["refused_%"] - s["refused_lo"]], [s["refused_hi"] - s["refused_%"]]]
            axes[1].errorbar(s.compute_tokens, s["refused_%"], yerr=err, **kw)
        for name, value in (floors or {}).items():
            axes[0].axhline(value, color="black", ls="--", lw=0.8)
            axes[0].annotate(name, (axes[0].get_xlim()[0], value), fontsize=7, va="bottom")
        if "pi*" in summary.index:
            s = summary.loc["pi*"]
            axes[1].axhspan(s["refused_lo"], s["refused_hi"], color="black", alpha=0.12, lw=0)
            axes[1].axhline(s["refused_%"], color="black", lw=1, label=r"$\pi^*$ (exact samples)")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("forward + backward tokens per prompt")
        axes[0].set(ylabel=r"$W_1$ to $\pi^*$ of $\log\pi^*(y\mid x)$ (nats)", title=r"distance to the optimum")
        axes[1].set(ylabel="refused (%)", ylim=(-3, 103), title="refusal rate")
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_frontier(front: pd.DataFrame):
    """The compute frontier (chapter 4): mean hard reward (left) and refused rate (right, %), each with its 95% CI,
    against mean forward+backward tokens per prompt (log scale). ``front`` is ``analysis.frontier``'s table; the
    points of one ``family`` (Best-of-N by N, a SEA recipe by iteration count) are joined in budget order, so a
    curve that lies above another at the same cost is the better way to spend that compute."""
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(BOOK_WIDTH_IN - 0.5, 4.2), layout="constrained")
        for family, g in front.groupby("family", sort=False):
            g = g.sort_values("compute_tokens")
            color = method_color(str(family))
            for ax, col in zip(axes, ("reward", "refused")):
                ax.errorbar(g["compute_tokens"], g[col], yerr=_err(g, col), fmt="o-" if len(g) > 1 else "o",
                            capsize=3, color=color, label=str(family), lw=1)
                if len(g) > 1 and g["budget"].notna().all():
                    for _, s in g.iterrows():
                        ax.annotate(f"{s.budget:g}", (s.compute_tokens, s[col]), fontsize=6, xytext=(3, 3),
                                    textcoords="offset points")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xlabel("forward + backward tokens per prompt")
        axes[0].set(ylabel="mean hard reward", title="reward bought per token of compute")
        axes[1].set(ylabel="refused (%)", ylim=(-3, 103), title="refusals bought per token of compute")
        axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_cost(per: pd.DataFrame, panels: Mapping[str, str], log_y: Sequence[str] = ()):
    """Cost against compute: one panel per column of ``panels`` ({column: y-axis label}), each method (index of
    ``per``, with a ``tokens`` column of forward+backward tokens per prompt) a point in its book colour and marker,
    against tokens on a log axis; Best-of-N sizes are joined by a line. Columns in ``log_y`` get a log y-axis."""
    from .plotting import method_family

    colors = _colors(per.index)  # iteration budgets of one recipe: shades of its colour
    with _style():
        fig, axes = plt.subplots(1, len(panels), figsize=(min(BOOK_WIDTH_IN, 5.0 * len(panels)), 3.9),
                                 layout="constrained", squeeze=False)
        for ax, (column, ylabel) in zip(axes[0], panels.items()):
            bon = per[[method_family(l) == "bon" for l in per.index]].sort_values("tokens")
            if len(bon) > 1:
                ax.plot(bon["tokens"], bon[column], color=method_color(bon.index[-1]), lw=1, zorder=1)
            for label, r in per.iterrows():
                ax.scatter(r["tokens"], r[column], color=colors[label], marker=method_marker(label), label=label,
                           zorder=2)
            ax.set(xscale="log", xlabel="forward + backward tokens per prompt", ylabel=ylabel)
            if column in log_y:
                ax.set_yscale("log")
        axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def plot_tuning(choice: pd.DataFrame, reference: pd.Series | None = None):
    """The tuning rule at a glance: each setting's mean hard reward against its broken rate (%), one marker per
    recipe, chosen settings filled, the broken limit as a dashed line and the ``reference`` row (pi_ref's samples,
    a ``summarize`` row) as a star. ``choice`` is ``analysis.choose_setting``'s table."""
    with _style():
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
        markers = dict(zip(dict.fromkeys(choice["recipe"]), "osD^v"))
        for label, s in choice.iterrows():
            color = method_color(str(s.recipe))
            ax.plot(s["broken %"], s.reward, markers[s.recipe], color=color, ms=8,
                    mfc=color if s.chosen else "white", label=s.recipe)
            ax.annotate(label, (s["broken %"], s.reward), fontsize=7, xytext=(4, 3), textcoords="offset points")
        if len(choice):
            ax.axvline(choice["broken limit %"].iloc[0], color="black", ls="--", lw=0.8)
        if reference is not None:
            ax.plot(reference["broken"], reference["reward"], "*", color="black", ms=11, label=r"$\pi_{ref}$ samples")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=7, loc="best")
        ax.set(xlabel="broken answers (%)", ylabel="mean hard reward", xlim=(-5, 105),
               title="tuning: reward against broken text (filled: chosen)")
    return fig


def plot_paper_vs_ours(summary: pd.DataFrame, paper: Mapping[str, float], paper_policy: str = "LLaMA-3.2-1B",
                       ax=None, title: str = ""):
    """The harmful-rate claims at a glance: per method (rows of ``summary``, from ``analysis.summarize``), the paper's
    harmful rate for ``paper_policy`` (``paper``: label -> %, a hollow diamond; methods without one have none) beside
    ours: the keyword rate (the paper's metric) and the complied share (harmful compliance by the three-outcome
    rule), each with its 95% interval over prompts. One row per method, so long labels stay readable. ``ax``: draw
    into this axes (e.g. one panel per SEA recipe) instead of a new figure; returns the figure either way."""
    labels = list(summary.index)
    y = np.arange(len(labels))[::-1]
    with _style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(7.0, 0.42 * len(labels) + 1.3), layout="constrained")
        fig = ax.figure
        colors = _colors(labels)
        for k, (col, name, marker) in enumerate((("harmful_kw", "ours: keyword harmful", "o"),
                                                 ("complied", "ours: complied (three outcomes)", "s"))):
            if col not in summary:
                continue
            for i, label in enumerate(labels):
                s = summary.loc[[label]]
                ax.errorbar(s[col], [y[i] + (0.14 if k == 0 else -0.14)], xerr=_err(s, col), fmt=marker, capsize=2,
                            color=colors[label], markerfacecolor=colors[label] if k == 0 else "white",
                            label=name if i == 0 else None)
        known = [(y[i], paper[label]) for i, label in enumerate(labels) if label in paper]
        if known:
            ax.scatter([v for _, v in known], [yy for yy, _ in known], marker="D", s=46, facecolors="none",
                       edgecolors="black", zorder=3, label=f"paper ({paper_policy})")
        ax.set_yticks(y, labels)
        ax.set(xlabel="harmful rate (%)", xlim=(-3, 103), ylim=(-0.7, len(labels) - 0.3), title=title)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig
