"""Comparing methods with the exact optimum of the contrast reward (chapter "Does SEA sample the optimal policy?").

Records come from the runner with reward ``contrast-refusal``: every record's metrics hold, per candidate,
log pi_ref(y|x) and log pi_ref(y|x+) on the response space (``optimum_log_pi_ref`` / ``optimum_log_pi_steered``).
At alpha = 1 the second is the exact log pi*(y|x) (Z = 1), and the records of the ``pi_star`` method are exact
samples of pi*.

:func:`sample_frame` turns records into one row per *sample* a method produces:

* ``pi_star``: its n samples; a random half (drawn per prompt) is the reference the others are compared with, the
  other half gives held-out rows ("pi* held-out") that show what an exact sampler scores with as many samples as a
  method has;
* ``best_of_n`` with n = N_max samples: Best-of-N for every N in ``bon_sizes`` from its first N samples (each is an
  independent Best-of-N run), and "pi_ref" (all samples: each is a Best-of-1 pick);
* ``sea``: the chains' final answers ("<label> chains": the sampler's own samples) and the selected answer;
* other methods: the selected answer.

Distances are 1-D Wasserstein distances between the exact log pi*(y|x) values of a method's samples and of pi*'s
reference samples, per prompt, averaged over prompts (nats). A sampler of pi* scores near the held-out rows; a
mode seeker scores high log pi* and a large distance.
"""

from __future__ import annotations

import numpy as np

from .judges import OUTCOMES, bootstrap_ci, is_refusal, outcome

BON_SIZES = (1, 4, 16, 64)
PI_STAR = "pi*"


def _rows_of(rec: dict, indices, label: str, compute_share: float = 1.0, all_of_pi_star: bool = False) -> list[dict]:
    m, cands = rec["metrics"], rec["candidates"]
    compute = rec.get("compute") or {}
    cost = (compute.get("forward_tokens", 0) + compute.get("backward_tokens", 0)) * compute_share
    out = []
    for i in indices:
        ids, text = cands[i]["token_ids"], cands[i]["text"]
        lp_ref, lp_star = float(m["optimum_log_pi_ref"][i]), float(m["optimum_log_pi_steered"][i])
        out.append({"prompt_id": rec["prompt_id"], "label": label, "text": text, "tokens": len(ids),
                    "log_pi_ref": lp_ref, "log_pi_star": lp_star, "reward": lp_star - lp_ref,
                    "logp_per_token": lp_ref / max(len(ids), 1), "refused": is_refusal(text),
                    "compute_tokens": cost, "all_of_pi_star": all_of_pi_star})
    return out


def sample_frame(records, bon_sizes=BON_SIZES, perplexity_limit: float | None = None):
    """One row per sample (see the module docstring). Columns: prompt_id, label, text, tokens, log_pi_ref,
    log_pi_star (exact at alpha = 1), reward (r_c), logp_per_token, refused, compute_tokens (forward + backward
    tokens of the run that made it), all_of_pi_star (the row is one of the pi_star record's n samples, counted once),
    and with ``perplexity_limit`` the ``outcome`` (:func:`sea_minimal.judges.outcome`).
    """
    import pandas as pd

    rows = []
    for rec in records:
        if "optimum_log_pi_steered" not in (rec.get("metrics") or {}):
            raise ValueError(f"record {rec.get('label')} #{rec.get('prompt_id')} has no optimum scores: it was not "
                             "run with reward 'contrast-refusal'.")
        method, label, n_cand = rec["method"], rec["label"], len(rec["candidates"])
        if method == "pi_star":
            # Which samples are the reference is drawn per prompt: the runner seeds every prompt alike, so sample i
            # of every prompt shares its random numbers, and a fixed split by index would share its luck too.
            order = np.random.default_rng(int(rec["prompt_id"])).permutation(n_cand).tolist()
            half = n_cand // 2
            rows += _rows_of(rec, order[:half], PI_STAR, all_of_pi_star=True)
            rows += _rows_of(rec, order[half:], f"{PI_STAR} held-out ({n_cand - half})", all_of_pi_star=True)
            for k in sorted({4, 1} - {n_cand - half}, reverse=True):
                if k < n_cand - half:
                    rows += _rows_of(rec, order[half: half + k], f"{PI_STAR} held-out ({k})")
        elif method == "best_of_n":
            rewards = [c["reward"] for c in rec["candidates"]]
            rows += _rows_of(rec, range(n_cand), "pi_ref", 1.0 / n_cand)
            for n in bon_sizes:
                if 1 < n <= n_cand:
                    pick = int(np.argmax(rewards[:n]))  # first maximum, as best_of_n picks
                    rows += _rows_of(rec, [pick], f"BoN-{n}", n / n_cand)
        elif method == "sea":
            chains = int(rec["params"].get("num_chains", 4)) if isinstance(rec.get("params"), dict) else 4
            rows += _rows_of(rec, range(min(chains, n_cand)), f"{label} chains")
            rows += _rows_of(rec, [rec["selected"]], label)
        else:
            rows += _rows_of(rec, [rec["selected"]], label)
    frame = pd.DataFrame(rows)
    if perplexity_limit is not None and len(frame):
        frame["outcome"] = [outcome(t, lp, perplexity_limit) for t, lp in zip(frame.text, frame.logp_per_token)]
    return frame


def wasserstein_1d(a, b) -> float:
    """W1 distance between the empirical distributions of two 1-D samples (same units as the values)."""
    a, b = np.sort(np.asarray(a, dtype=float)), np.sort(np.asarray(b, dtype=float))
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein_1d needs two non-empty samples.")
    grid = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(a, grid[:-1], side="right") / a.size
    cdf_b = np.searchsorted(b, grid[:-1], side="right") / b.size
    return float(np.sum(np.abs(cdf_a - cdf_b) * np.diff(grid)))


def distance_to_optimum(frame, label: str, reference: str = PI_STAR, column: str = "log_pi_star") -> dict:
    """Per-prompt W1 between ``label``'s and the reference samples' ``column``; {prompt_id: nats}."""
    ref = frame[frame.label == reference].groupby("prompt_id")[column].apply(list)
    own = frame[frame.label == label].groupby("prompt_id")[column].apply(list)
    return {pid: wasserstein_1d(vals, ref[pid]) for pid, vals in own.items() if pid in ref.index}


def _per_prompt_ci(per_prompt, scale: float = 1.0) -> tuple[float, float, float]:
    values = np.asarray(list(per_prompt), dtype=float) * scale
    return bootstrap_ci(values) if values.size else (np.nan, np.nan, np.nan)


def summary(frame, labels=None) -> "pd.DataFrame":  # noqa: F821
    """One row per label: prompts, samples, rates (%, CIs by bootstrap over prompts of the per-prompt share),
    mean r_c, log pi*, log pi_ref (nats), W1 to pi* (nats, with CI), forward+backward tokens per prompt."""
    import pandas as pd

    labels = list(dict.fromkeys(frame.label)) if labels is None else labels
    out = []
    for label in labels:
        part = frame[frame.label == label]
        if part.empty:
            continue
        by_prompt = part.groupby("prompt_id")
        row = {"label": label, "prompts": by_prompt.ngroups, "samples": len(part)}
        rates = {"refused": by_prompt.refused.mean()}
        if "outcome" in part:
            rates = {name: by_prompt.outcome.apply(lambda s, n=name: float((s == n).mean())) for name in OUTCOMES}
        for name, per_prompt in rates.items():
            row[f"{name}_%"], row[f"{name}_lo"], row[f"{name}_hi"] = _per_prompt_ci(per_prompt, 100.0)
        for col in ("reward", "log_pi_star", "log_pi_ref"):
            row[col] = float(by_prompt[col].mean().mean())
        dist = distance_to_optimum(frame, label) if label != PI_STAR else {}
        row["w1"], row["w1_lo"], row["w1_hi"] = _per_prompt_ci(dist.values()) if dist else (np.nan,) * 3
        row["compute_tokens"] = float(by_prompt.compute_tokens.first().mean())
        out.append(row)
    return pd.DataFrame(out)


def importance_estimates(frame, alphas=(0.5, 2.0)) -> "pd.DataFrame":  # noqa: F821
    """pi*_alpha estimated by self-normalised importance sampling from pi*_1's samples (all pi* rows of a prompt).

    Per prompt, weights w ∝ exp((alpha - 1) r_c) (see :func:`sea_minimal.contrast.importance_weights`). Returns one
    row per alpha: refused % (weighted), mean r_c, mean log pi_ref, the effective sample size (median and minimum
    over prompts) and the number of samples per prompt. alpha = 1 is the exact row (all weights equal).
    """
    import pandas as pd

    star = frame[frame.all_of_pi_star]
    rows = []
    for alpha in (1.0, *alphas):
        per_prompt = []
        for _, part in star.groupby("prompt_id"):
            logw = (alpha - 1.0) * part.reward.to_numpy()
            w = np.exp(logw - logw.max())
            w /= w.sum()
            per_prompt.append({"refused": float((w * part.refused.to_numpy()).sum()),
                               "reward": float((w * part.reward.to_numpy()).sum()),
                               "log_pi_ref": float((w * part.log_pi_ref.to_numpy()).sum()),
                               "ess": float(1.0 / (w ** 2).sum()), "n": len(part)})
        pp = pd.DataFrame(per_prompt)
        lo_hi = _per_prompt_ci(pp.refused, 100.0)
        rows.append({"alpha": alpha, "refused_%": lo_hi[0], "refused_lo": lo_hi[1], "refused_hi": lo_hi[2],
                     "reward": float(pp.reward.mean()), "log_pi_ref": float(pp.log_pi_ref.mean()),
                     "ess_median": float(pp.ess.median()), "ess_min": float(pp.ess.min()),
                     "samples_per_prompt": int(pp.n.median())})
    return pd.DataFrame(rows)


def choose_by_distance(frame, labels) -> dict:
    """The tuning rule: among ``labels`` (one recipe's settings), the one whose chains are closest to pi*.

    Returns {"label": the choice, "distances": {label: mean W1 over prompts}}."""
    distances = {}
    for label in labels:
        d = distance_to_optimum(frame, label)
        distances[label] = float(np.mean(list(d.values()))) if d else float("nan")
    finite = {k: v for k, v in distances.items() if np.isfinite(v)}
    if not finite:
        raise ValueError(f"no distances for {list(labels)}: are the pi_star records in the frame?")
    return {"label": min(finite, key=finite.get), "distances": distances}


def verdict(table, paper_recipes=("sea-langevin", "sea-reference"), exact_recipe: str = "sea-dlp",
            floor_label: str = "pi* held-out (4)", factor: float = 2.0) -> dict:
    """The report's rule for "SEA approximates the optimal RLHF policy", fixed before the runs it judges.

    A recipe's chains *approximate* pi* when (a) their W1 distance to pi* is at most ``factor`` times that of the
    exact sampler with as many samples (``floor_label``: 4 held-out pi* samples against 4 chains) and (b) their
    refused-rate CI overlaps pi*'s. Verdict: "reproduced" if a paper recipe's chains do, "partly" if only the
    MH-corrected recipe's do (the method's energy is right, the paper's samplers are not), else "not reproduced".
    ``table`` is :func:`summary` indexed by label. Returns {"verdict", "reason", "checks": {label: dict}}.
    """
    floor = float(table.loc[floor_label, "w1"])
    star = table.loc[PI_STAR]
    checks = {}
    for recipe in (*paper_recipes, exact_recipe):
        label = f"{recipe} chains"
        if label not in table.index:
            continue
        s = table.loc[label]
        close = bool(s.w1 <= factor * floor)
        overlap = bool(s.refused_lo <= star.refused_hi and star.refused_lo <= s.refused_hi)
        checks[label] = {"w1": float(s.w1), "w1_limit": factor * floor, "close": close, "refusal_overlaps": overlap,
                         "approximates": close and overlap}
    paper_ok = [k for k in checks if k.split(" ")[0] in paper_recipes and checks[k]["approximates"]]
    exact_ok = checks.get(f"{exact_recipe} chains", {}).get("approximates", False)
    if paper_ok:
        outcome_, reason = "reproduced", f"{', '.join(paper_ok)} within {factor:g}x the exact sampler's distance"
    elif exact_ok:
        outcome_, reason = "partly", ("only the MH-corrected recipe's chains come within "
                                      f"{factor:g}x the exact sampler's distance; the paper's recipes do not")
    else:
        why = [f"{k.replace(' chains', '')}: " + ("W1 within the limit" if c["close"] else
                                                  f"W1 {c['w1']:.1f} > {c['w1_limit']:.1f}")
               + ("" if c["refusal_overlaps"] else f", refused {table.loc[k, 'refused_%']:.1f}% vs pi*'s "
                                                    f"{star['refused_%']:.1f}% (CIs apart)")
               for k, c in checks.items()]
        outcome_, reason = "not reproduced", "no recipe's chains approximate pi* (" + "; ".join(why) + ")"
    return {"verdict": outcome_, "reason": reason, "checks": checks, "floor": floor}
