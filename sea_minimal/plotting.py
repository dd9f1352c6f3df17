"""Figures and tables for SEA runs: one style, each function returns what it drew.

* :func:`plot_trajectories` -- the per-iteration quantities of ``SEAResult.trajectory``, one panel each.
* :func:`plot_kl_per_position` -- where along the response the logits moved (KL between initial and final logits).
* :func:`before_after_table` -- each chain's text before and after, with rewards (and extra columns, e.g. the
  log pi_ref of each text from :func:`sea_minimal.metrics.response_logprob`).
* :func:`method_color` / :func:`method_marker` -- the one colour and marker of a method family in every figure
  (Best-of-N a green ramp by N, each SEA recipe its own hue); variants of one method in one figure get its shades.

The style is seaborn's ``whitegrid`` theme in ``notebook`` context with the ``colorblind`` palette and
matplotlib's bundled font (nothing is downloaded). It is applied inside each function only, so importing this
module changes no global setting; call :func:`set_style` to use it for your own figures too.
"""

from __future__ import annotations

import math
import re
from contextlib import contextmanager
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd
import seaborn as sns

from .sampler import SEAResult

PALETTE = "colorblind"
# The widest figure (inches) that the book's text column (about 690 px wide at a 1280 px window) shows with readable
# labels: at this width a figure is shown at about 0.64 of its size at 100 dpi, so a 10-pt label stays about 9 px
# tall. scripts/check_rendered_book.py fails a page whose figures are shrunk further; wider layouts take two rows.
BOOK_WIDTH_IN = 10.5
DEFAULT_KEYS = ("energy", "logp_ref", "reward_hard", "reward_soft", "kl_init")

# y-axis labels, with units. The energy's meaning depends on the recipe (see ENERGY_LABELS).
LABELS = {
    "energy": "energy / loss",
    "logp_ref": r"log $\pi_{ref}(y\mid x)$ (nats)",
    "reward_hard": "reward of decoded tokens",
    "reward_soft": "reward of soft tokens",
    "kl_init": r"KL(softmax $Z_0$ $\|$ softmax $Z$) (nats/token)",
    "noise": "noise std (logit units)",
    "wall_time": "wall time (s)",
}
TITLES = {
    "energy": "objective minimised",
    "logp_ref": "fluency under the reference model",
    "reward_hard": "reward (hard tokens)",
    "reward_soft": "reward (soft tokens)",
    "kl_init": "distance from the initial logits",
    "noise": "noise",
    "wall_time": "wall time",
}
ENERGY_LABELS = {
    "langevin": r"U = $-\log\pi_{ref} - \alpha r$ (nats)",
    "reference": r"loss = $-w_r r_{soft} + w_f$ fluency",
}


@contextmanager
def _style():
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.9):
        yield


def set_style() -> None:
    """Apply this module's style globally (seaborn whitegrid, notebook context, colorblind palette)."""
    sns.set_theme(style="whitegrid", context="notebook", palette=PALETTE, font_scale=0.9)


def _as_dict(results) -> dict[str, SEAResult]:
    if isinstance(results, SEAResult):
        return {results.config.get("recipe", "SEA"): results}
    if isinstance(results, Mapping):
        if not results:
            raise ValueError("No results to plot. Fix: pass {label: SEAResult, ...} with at least one entry.")
        return dict(results)
    raise TypeError(f"Expected a SEAResult or a dict {{label: SEAResult}}, got {type(results).__name__}.")


# One visual language for every figure of the book: a fixed colour and marker per method family, whatever else a
# figure shows. Best-of-N (and pi_ref, Best-of-1) is one green ramp, darker with N; each SEA recipe has its own hue.
_BASE = sns.color_palette(PALETTE, 10)
_BON_RAMP = sns.color_palette("Greens", 6)[1:]
FAMILIES = {  # label prefix -> (colour, marker), longest prefixes first where they overlap
    "sea-langevin": (_BASE[0], "P"), "sea-reference": (_BASE[3], "X"), "sea-dlp": (_BASE[8], "p"),
    "sea-mh": (_BASE[8], "p"), "greedy": (_BASE[7], "D"), "args": (_BASE[1], "^"), "cbs": (_BASE[4], "s"),
    "sampled": (_BASE[5], "v"),
}
_OTHER = (_BASE[9], "o")


def method_family(label: str) -> str:
    """The family a method label belongs to: ``"pi*"``, ``"bon"`` (Best-of-N and pi_ref), a key of ``FAMILIES``, or
    ``"other"``.

    Labels are the runner's (``bon[n=16]@3w``, ``sea-langevin[its=30]``, ``sea-reference/without noise``) or the
    tables' (``BoN-64``, ``Best-of-4``, ``pi_ref``)."""
    low = label.lower()
    low = {"langevin": "sea-langevin", "reference": "sea-reference", "dlp": "sea-dlp"}.get(low, low)  # bare recipes
    if low.startswith(("pi*", "pi-star", "pi_star")):
        return "pi*"
    if low.startswith(("bon", "best-of", "best_of", "pi_ref")):
        return "bon"
    return next((name for name in FAMILIES if low.startswith(name)), "other")


def _best_of_n_size(label: str) -> int | None:
    """N of a Best-of-N label (``BoN-64``, ``Best-of-4``, ``bon[n=16]``; pi_ref is N = 1), None when it has none."""
    if label.lower().startswith("pi_ref"):
        return 1
    m = re.search(r"(?:bon-|best-of-|best_of_n-|n=)(\d+)", label.lower())
    return int(m.group(1)) if m else None


def method_color(label: str) -> tuple:
    """The fixed colour of a method label (RGB in [0, 1]): one per family, Best-of-N a ramp by log4 N, pi-star
    black."""
    family = method_family(label)
    if family == "pi*":
        return (0.0, 0.0, 0.0)
    if family == "bon":
        n = _best_of_n_size(label)
        return _BON_RAMP[-1] if n is None else _BON_RAMP[min(int(math.log(n) / math.log(4)), len(_BON_RAMP) - 1)]
    return FAMILIES.get(family, _OTHER)[0]


def method_marker(label: str) -> str:
    """The fixed matplotlib marker of a method label's family."""
    family = method_family(label)
    return {"pi*": "*", "bon": "o"}.get(family) or FAMILIES.get(family, _OTHER)[1]


def _colors(labels) -> dict[str, tuple]:
    """{label: colour} for one figure: each label its family's colour (method_color); where several labels of one
    figure share a colour (variants of one recipe), shades of it from dark to light, in the order given; labels of
    no known family, distinct colours of seaborn's ``dark`` palette."""
    labels = list(dict.fromkeys(labels))
    others = [label for label in labels if method_family(label) == "other"]
    colors = dict(zip(others, sns.color_palette("dark", max(len(others), 1))))  # labels of no family: distinct
    by_color: dict[tuple, list[str]] = {}
    for label in labels:
        if label not in colors:
            by_color.setdefault(tuple(method_color(label)), []).append(label)
    for color, group in by_color.items():
        if len(group) == 1:
            colors[group[0]] = color
        else:
            dark = tuple(0.55 * c for c in color)
            light = tuple(c + 0.6 * (1 - c) for c in color)
            colors.update(zip(group, sns.blend_palette([dark, color, light], len(group))))
    return {label: colors[label] for label in labels}


def _grid(n_panels: int, ncols: int | None, panel_size=(4.0, 3.0)):
    """A figure of ``n_panels`` axes in rows of ``ncols`` (default up to 3), no wider than ``BOOK_WIDTH_IN``."""
    ncols = ncols or min(3, n_panels)
    nrows = math.ceil(n_panels / ncols)
    width = min(panel_size[0] * ncols, BOOK_WIDTH_IN)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_size[1] * nrows),
                             squeeze=False, layout="constrained")
    flat = list(axes.flat)
    for ax in flat[n_panels:]:
        fig.delaxes(ax)
    return fig, flat[:n_panels]


def plot_trajectories(results, keys: Sequence[str] = DEFAULT_KEYS, ncols: int | None = None,
                      chains: bool = True, split_energy: bool = True):
    """Plot the per-iteration quantities of one or more SEA runs, one panel per quantity.

    x is the iteration (0 = the first update, computed on the initial logits). In every panel each recipe
    label has one colour: a thick line for the mean over chains and, with ``chains=True``, one thin line per
    chain. Quantities and units (see :class:`~sea_minimal.sampler.SEAResult`):

    * ``energy``: what the recipe minimises -- U = -log pi_ref(y|x) - alpha r (nats) for ``langevin``, the loss
      -w_r r_soft + w_f * fluency for ``reference``. These two live on unrelated scales, so when ``results`` mixes
      recipes and ``split_energy`` is true the energy gets one panel per recipe.
    * ``logp_ref``: log pi_ref of the hard tokens fed forward at that iteration, summed over positions (nats).
    * ``reward_hard`` / ``reward_soft``: the reward of the decoded tokens / of the relaxed (soft) tokens.
    * ``kl_init``: mean over positions of KL(softmax Z_0 || softmax Z) (nats per token).
    * ``noise``, ``wall_time``: the noise std used, seconds since the start.

    Args:
        results: ``{label: SEAResult}`` (or one SEAResult, labelled by its recipe).
        keys: trajectory keys, one panel each, in this order.
        ncols: panels per row (default: up to 3).
        chains: draw the thin per-chain lines.
        split_energy: one energy panel per recipe when the results use different recipes.

    Returns:
        The matplotlib Figure. ``fig.axes`` holds one Axes per panel; each Axes holds, per label, its per-chain
        lines followed by its mean line (which carries the label).
    """
    results = _as_dict(results)
    for label, res in results.items():
        missing = [k for k in keys if k not in res.trajectory]
        if missing:
            raise KeyError(f"{label}: no trajectory for {missing}. Available: {sorted(res.trajectory)}")
    colors = _colors(list(results))
    recipes = {label: res.config.get("recipe", "") for label, res in results.items()}
    panels: list[tuple[str, list[str]]] = []  # (key, labels drawn in that panel)
    for key in keys:
        if key == "energy" and split_energy and len(set(recipes.values())) > 1:
            for recipe in dict.fromkeys(recipes.values()):
                panels.append((key, [lab for lab in results if recipes[lab] == recipe]))
        else:
            panels.append((key, list(results)))

    with _style():
        fig, axes = _grid(len(panels), ncols)
        for ax, (key, labels) in zip(axes, panels):
            for label in labels:
                frame = results[label].trajectory_frame()
                wide = frame.pivot(index="iteration", columns="chain", values=key)
                if chains:
                    for chain in wide.columns:
                        ax.plot(wide.index, wide[chain], color=colors[label], lw=0.8, alpha=0.4)
                ax.plot(wide.index, wide.mean(axis=1), color=colors[label], lw=2.2, label=label)
            title = TITLES.get(key, key)
            ylabel = LABELS.get(key, key)
            panel_recipes = {recipes[lab] for lab in labels}
            if key == "energy" and len(panel_recipes) == 1:
                (recipe,) = panel_recipes
                ylabel = ENERGY_LABELS.get(recipe, ylabel)
                if len(panels) > len(keys):
                    title = f"{title}: {recipe}"
            ax.set(title=title, xlabel="iteration", ylabel=ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = [plt.Line2D([], [], color=colors[lab], lw=2.2) for lab in results]
        note = " (thick: mean over chains; thin: each chain)" if chains else " (mean over chains)"
        fig.legend(handles, list(results), loc="outside lower center", ncols=min(len(results), 4),
                   title="recipe" + note, frameon=False)
    return fig


def plot_kl_per_position(results, ax=None, logy: bool = False, chains: bool = True):
    """Plot, per response position, how far the final logits moved from the initial ones.

    y = KL(softmax Z_0[t] || softmax Z_final[t]) in nats, x = response position t (0 = first response token).
    The paper's "deep alignment" claim is that SEA spreads this change over all positions rather than
    concentrating it on the first tokens. Each label gets one colour: a thick line for the mean over chains and,
    with ``chains=True``, a thin line per chain.

    Args:
        results: ``{label: SEAResult}`` (or one SEAResult).
        ax: draw into this Axes (default: a new figure).
        logy: logarithmic y axis (useful when the recipes move the logits by very different amounts).
        chains: draw the thin per-chain lines.

    Returns:
        The matplotlib Figure (one Axes; per label, its per-chain lines then its mean line).
    """
    results = _as_dict(results)
    colors = _colors(list(results))
    with _style():
        if ax is None:
            fig, ax = plt.subplots(figsize=(8.5, 3.2), layout="constrained")
        else:
            fig = ax.figure
        for label, res in results.items():
            kl = pd.DataFrame(res.kl_per_position).T  # rows: position, columns: chain
            if chains:
                for chain in kl.columns:
                    ax.plot(kl.index, kl[chain], color=colors[label], lw=0.8, alpha=0.4)
            ax.plot(kl.index, kl.mean(axis=1), color=colors[label], lw=2.2, label=label)
        ax.set(xlabel="response position t", ylabel=r"KL(softmax $Z_0$ $\|$ softmax $Z_{final}$) (nats)",
               title="where the logits moved")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if logy:
            ax.set_yscale("log")
        ax.legend(title="recipe", frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def before_after_table(result: SEAResult, logprobs: Mapping[str, Sequence[float]] | None = None,
                       max_chars: int | None = None) -> pd.DataFrame:
    """One row per candidate of ``result``: the text before and after SEA, with rewards.

    Columns: ``candidate`` (index into ``result.candidates``), ``source`` (``chain c`` or ``rewrite of chain c``),
    ``chain``, ``initial_text`` and ``initial_reward`` (the decoded initial logits of that chain; empty for a
    rewrite, whose "before" is its chain's final text), ``final_text``, ``final_reward`` (hard reward, in the
    reward's units) and ``selected`` (the answer SEA returns).

    Args:
        result: a SEAResult.
        logprobs: optional extra columns, e.g. ``{"initial_logp_ref": [...], "final_logp_ref": [...]}`` (see
            :func:`sea_minimal.metrics.response_logprob`); an ``initial_*`` list has one value per chain, any
            other one value per candidate.
        max_chars: cut longer texts to this many characters (ending in an ellipsis) for display.
    """
    n_chains = len(result.initial_texts)

    def cut(text):
        if text is None or max_chars is None or len(text) <= max_chars:
            return text
        return text[: max(max_chars - 1, 0)] + "\u2026"

    rows = []
    for i, cand in enumerate(result.candidates):
        source = cand.get("source", f"chain {i}")
        chain = int(source.rsplit(" ", 1)[-1]) if source.rsplit(" ", 1)[-1].isdigit() else i
        is_chain = i < n_chains and not source.startswith("rewrite")
        rows.append({
            "candidate": i, "source": source, "chain": chain,
            "initial_text": cut(result.initial_texts[chain]) if is_chain else None,
            "initial_reward": result.initial_rewards[chain] if is_chain else float("nan"),
            "final_text": cut(cand["text"]), "final_reward": cand["reward"], "selected": i == result.selected,
        })
    table = pd.DataFrame(rows)
    for name, values in (logprobs or {}).items():
        values = list(values)
        if name.startswith("initial"):
            if len(values) != n_chains:
                raise ValueError(f"{name}: expected {n_chains} values (one per chain), got {len(values)}")
            table[name] = [values[c] if src.startswith("chain") else float("nan")
                           for c, src in zip(table["chain"], table["source"])]
        else:
            if len(values) != len(table):
                raise ValueError(f"{name}: expected {len(table)} values (one per candidate), got {len(values)}")
            table[name] = values
    return table


# (x, y, width, height) of each box of the pipeline diagram, in axes units (the axes are 10.5 x 3.9).
_PIPELINE_BOXES = {
    "Z": (0.1, 1.7, 1.7, 1.0, "logits $Z$\n$T\\times V$, one row\nper response token"),
    "st": (2.5, 1.7, 2.4, 1.0, "straight-through $\\tilde y(Z)$\nforward: one-hot $\\arg\\max Z$\nbackward: $\\partial\\,$softmax$(Z/\\tau)$"),
    "ref": (5.6, 2.45, 2.0, 0.85, "reference model\n$\\log\\pi_{ref}(\\tilde y\\mid x)$"),
    "rew": (5.6, 1.1, 2.0, 0.85, "reward model\n$r(x, \\tilde y)$"),
    "U": (8.3, 1.7, 2.1, 1.0, "energy\n$U = -\\log\\pi_{ref} - \\alpha\\, r$"),
}


def plot_pipeline():
    """The paper's SEA loop as a diagram (chapter 2): logits -> straight-through tokens -> reference model and reward
    -> energy -> gradient back to the logits -> Langevin update. Returns the Figure (``BOOK_WIDTH_IN`` wide)."""
    from matplotlib.patches import FancyBboxPatch

    with _style():
        fig, ax = plt.subplots(figsize=(BOOK_WIDTH_IN, 3.9), layout="constrained")
        ax.set(xlim=(0, 10.5), ylim=(0, 3.9))
        ax.axis("off")
        colors = {"Z": "0.92", "st": "0.92", "ref": method_color("sea-langevin"), "rew": method_color("bon[n=64]"),
                  "U": "0.92"}
        centre = {}
        for key, (x, y, w, h, text) in _PIPELINE_BOXES.items():
            face = colors[key] if isinstance(colors[key], str) else (*colors[key], 0.25)
            ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=face, ec="0.3", lw=1))
            ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9.5)
            centre[key] = (x, y, w, h)

        def arrow(start, end, text="", style="-|>", color="0.25", rad=0.0, text_at=None):
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle=style, color=color, lw=1.4, connectionstyle=f"arc3,rad={rad}"))
            if text:
                ax.text(*(text_at or ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.12)), text, ha="center",
                        va="bottom", fontsize=8.5, color=color)

        def right(k, dy=0.0):
            x, y, w, h = centre[k]
            return (x + w + 0.05, y + h / 2 + dy)

        def left(k, dy=0.0):
            x, y, w, h = centre[k]
            return (x - 0.05, y + h / 2 + dy)

        arrow(right("Z"), left("st"), "forward")
        arrow(right("st", 0.25), left("ref"))
        arrow(right("st", -0.25), left("rew"))
        arrow(right("ref"), left("U", 0.25))
        arrow(right("rew"), left("U", -0.25))
        # The backward pass and the update close the loop underneath.
        back = "#b2182b"
        ax.annotate("", xy=(0.95, 1.62), xytext=(9.35, 1.62),
                    arrowprops=dict(arrowstyle="-|>", color=back, lw=1.6, connectionstyle="bar,fraction=-0.12"))
        ax.text(5.2, 0.18, r"backward: $\nabla_Z U$ through both models, then the Langevin step "
                r"$Z \leftarrow Z - \eta\,\nabla_Z U + \sqrt{2\eta}\,s\,\xi$", ha="center", va="bottom",
                fontsize=9, color=back)
        ax.text(5.2, 3.62, "one SEA iteration, for C chains at once (the prompt's key/value cache is computed once)",
                ha="center", va="bottom", fontsize=9, color="0.3")
    return fig
