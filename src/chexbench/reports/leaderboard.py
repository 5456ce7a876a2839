"""Scored cells → leaderboard tables: one row per configuration (seeds pooled), Δ vs baseline.

A *configuration* is a cell's resolved config without its seed (``configuration_hash``); its
cells are its seeds. Two configurations may share the five axes (dataset, protocol, label
fraction, backbone, strategy) and differ in another key: a swept option axis
(``protocol.topk``, ``strategy.temperature``, ``settings.uncertainty`` …) or a setting changed
between two runs into the same folder. Such keys (``split_keys``) become columns of every
table, named after the grid key; they are never averaged over.

A configuration's macro metric averages the evaluation labels defined (both classes present)
on its own test set, so a number depends only on its own cells.

Comparison families (for the corrections):
- *headline*: every macro-AUROC Δ vs the baseline strategy in the report (all datasets,
  protocols, label fractions, backbones) — Holm and BH over that one family;
- *summary*: in each group of configurations that differ only in the strategy (and its
  options), the top point estimate vs each other one — Holm over all of them;
- *per-label*: every per-label AUROC Δ vs the baseline — BH over that family (exploratory).

Patient resamples are derived from the test set's patients alone, and the seed-pooled interval
(``seeds.py``: the test-sample interval widened by a t-based between-seed part, no random draws) from the
configuration's own
cells, so a number is reproduced exactly by any report that contains its cells.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from chexbench.core.errors import ChexbenchError
from chexbench.reports.aggregate import CONFIG_AXES, LoadedResults
from chexbench.reports.bootstrap import macro_k, macro_point, macro_replicates
from chexbench.reports.compare import adjust_p_values
from chexbench.reports.seeds import (
    SeedSummary,
    combine_seeds,
    paired_seed_delta,
    with_label_interval,
    with_macro_interval,
)

#: the axes every table already shows; other varying keys get their own column
AXIS_KEYS = frozenset(CONFIG_AXES)
SIGNIFICANCE = 0.05


@dataclass
class Tables:
    """The report's numbers: DataFrames that the Markdown and the Parquet/CSV are made from."""

    leaderboard: pd.DataFrame  # one row per configuration
    per_label: pd.DataFrame  # one row per configuration × evaluation label
    macro_labels: dict[str, list[str]]  # dataset → labels in the macro of every test set of that dataset
    undefined_labels: dict[str, dict[str, str]]  # dataset → label → why it is left out (of some test set)
    baseline: str
    split_keys: list[str] = field(
        default_factory=list
    )  # grid keys telling configurations of the same axes apart
    varying_keys: list[str] = field(
        default_factory=list
    )  # every non-axis grid key that varies (leaderboard.csv)
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)  # one row per group of competing strategies
    test_set_labels: dict[str, list[str]] = field(default_factory=dict)  # test set key → macro labels
    test_set_undefined: dict[str, dict[str, str]] = field(
        default_factory=dict
    )  # test set key → label → why not


def display_value(value: Any) -> str:
    """A config value as a table shows it; ``default`` where the key is not set."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


#: how a key a configuration does not have at all shows where that must be told from ``null``
#: (a record written before the key existed beside one that sets it to nothing)
UNSET = "unset"


def _canonical(config: dict[str, Any], key: str) -> str:
    """The exact value of ``key`` in ``config``: absent, ``null``, ``5`` and ``5.0`` all differ."""
    return "\x00absent" if key not in config else json.dumps(config[key], sort_keys=True, default=str)


def display_values(configurations: dict[str, dict[str, Any]], keys: list[str]) -> dict[str, dict[str, str]]:
    """``{hash: {key: shown value}}``: :func:`display_value`, except for a key where two different
    values would show alike (absent and ``null`` both ``default``; ``5`` and ``5.0``; floats equal to 6
    digits), which shows its exact values instead (``unset``, ``null``, ``5.0``, ``0.1000001``) —
    otherwise two configurations get the same row label and one row hides the other."""
    out: dict[str, dict[str, str]] = {h: {} for h in configurations}
    for k in keys:
        shown = {h: display_value(c.get(k)) for h, c in configurations.items()}
        exact = {h: _canonical(c, k) for h, c in configurations.items()}
        if len(set(shown.values())) < len(set(exact.values())):
            shown = {h: UNSET if k not in c else exact[h] for h, c in configurations.items()}
        for h in configurations:
            out[h][k] = shown[h]
    return out


def varying_keys(configurations: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(every non-axis key whose value differs between configurations, the subset that differs
    between two configurations with the same five axes: these must be shown to tell rows apart).
    Values are compared exactly (absent ≠ ``null``, ``5`` ≠ ``5.0``), not as they are shown."""
    keys = sorted({k for c in configurations.values() for k in c} - AXIS_KEYS)
    values = {h: {k: _canonical(c, k) for k in keys} for h, c in configurations.items()}
    varying = [k for k in keys if len({v[k] for v in values.values()}) > 1]
    by_axes: dict[tuple, list[str]] = {}
    for h, c in configurations.items():
        by_axes.setdefault(tuple(str(c.get(a)) for a in CONFIG_AXES), []).append(h)
    split = [k for k in varying if any(len({values[h][k] for h in hs}) > 1 for hs in by_axes.values())]
    return varying, split


def configuration_label(strategy: str, keys: dict[str, str], split_keys: list[str]) -> str:
    """``simclr`` or ``simclr · strategy.temperature=0.1`` (the split keys, in order)."""
    extra = [f"{k}={keys[k]}" for k in split_keys]
    return " · ".join([strategy, *extra])


def test_set_label_sets(results: LoadedResults) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Per test set: the evaluation labels defined in its cells, and why the others are not."""
    labels: dict[str, list[str]] = {}
    undefined: dict[str, dict[str, str]] = {}
    for key, ts in sorted(results.test_sets.items()):
        order: list[str] = []
        why: dict[str, str] = {}
        for cell_id in ts.cell_ids:
            for name, ls in results.scores[cell_id].labels.items():
                if name not in order:
                    order.append(name)
                if not ls.defined and name not in why:
                    why[name] = f"{ls.reason} ({ls.n_pos} pos / {ls.n_neg} neg)"
        labels[key] = [k for k in order if k not in why]
        undefined[key] = why
    return labels, undefined


def macro_label_sets(results: LoadedResults) -> tuple[dict[str, list[str]], dict[str, dict[str, str]]]:
    """Per dataset: the labels in the macro of every one of its test sets, and why the others are not."""
    ts_labels, ts_undefined = test_set_label_sets(results)
    labels: dict[str, list[str]] = {}
    undefined: dict[str, dict[str, str]] = {}
    for key, ts in sorted(results.test_sets.items()):
        if ts.dataset in labels:
            labels[ts.dataset] = [k for k in labels[ts.dataset] if k in ts_labels[key]]
        else:
            labels[ts.dataset] = list(ts_labels[key])
        for name, why in ts_undefined[key].items():
            undefined.setdefault(ts.dataset, {}).setdefault(name, why)
        undefined.setdefault(ts.dataset, {})
    return labels, undefined


def _summaries(results: LoadedResults, cell_ids: list[str], labels: list[str]) -> dict[str, SeedSummary]:
    """Macro AUROC/AUPRC and per-label AUROC/AUPRC summaries over the seeds ``cell_ids``: each a test-sample
    interval of the seed mean widened by the between-seed part (``seeds.py``); the test-sample part per label
    hm-score (AUROC, ``seeds.with_label_interval``) or logit-t-adj (AUPRC), the macro's MOVER over its labels'
    (``seeds.with_macro_interval``)."""
    cells = [results.scores[c] for c in cell_ids]
    out: dict[str, SeedSummary] = {}
    for metric in ("auroc", "auprc"):
        for label in cells[0].labels:
            if all(label in c.labels for c in cells):
                first = cells[0].labels[label]
                summary = combine_seeds(
                    [getattr(c.labels[label], metric) for c in cells],
                    [getattr(c.labels[label], f"{metric}_boot") for c in cells],
                    df_test=first.df,
                    k=first.k,
                    factor_test=first.factor,
                )
                # per-label AUROC: the chosen per-label interval (hm-score) as the test-sample part
                out[f"{label}:{metric}"] = (
                    with_label_interval(summary, first) if metric == "auroc" else summary
                )
        macro = combine_seeds(
            [macro_point(c, labels, metric) for c in cells],
            [macro_replicates(c, labels, metric) for c in cells],
            k=macro_k(cells[0], labels),
        )
        # the chosen macro interval (MOVER over its labels' test-sample intervals) widened by the macro's seed
        # part
        parts = [out.get(f"{k}:{metric}") for k in labels]
        out[f"macro_{metric}"] = with_macro_interval(macro, parts) if labels and all(parts) else macro
    return out


@dataclass
class _Configuration:
    """One configuration's cells, keys and seed-pooled summaries (internal to build_tables)."""

    hash: str
    axes: dict[str, Any]
    keys: dict[str, str]  # every varying key → display value
    label: str
    strategy_label: str  # the strategy and its own varying options (a summary row's columns show the rest)
    cell_ids: list[str]
    seeds: list[int]
    test_set: str
    labels: list[str]
    summaries: dict[str, SeedSummary]


def build_tables(results: LoadedResults, baseline: str = "scratch") -> Tables:
    """Leaderboard, per-label and summary tables with seed-pooled intervals and Δ vs ``baseline``."""
    macro_labels, undefined = macro_label_sets(results)
    ts_labels, ts_undefined = test_set_label_sets(results)
    varying, split = varying_keys(results.configurations)
    configs = _configurations(results, ts_labels, varying, split)
    _check_rows_are_distinct(configs.values())
    order = sorted(
        configs.values(), key=lambda c: (*(c.axes[a] for a in CONFIG_AXES), *(c.keys[k] for k in split))
    )
    bases = {c.hash: _baseline_of(c, configs, split, baseline) for c in order}

    rows, label_rows = [], []
    for c in order:
        base_hash, base_note = bases[c.hash]
        rows.append(_leaderboard_row(c, results, baseline, base_hash, configs.get(base_hash), base_note))
        label_rows.extend(_label_rows(c, results, configs.get(base_hash), base_note))

    leaderboard = pd.DataFrame(rows)
    per_label = pd.DataFrame(label_rows)
    if not leaderboard.empty:
        leaderboard["p_holm"] = adjust_p_values(leaderboard["p_value"], "holm")
        leaderboard["p_bh"] = adjust_p_values(leaderboard["p_value"], "bh")
    if not per_label.empty:
        per_label["p_bh"] = adjust_p_values(per_label["p_value"], "bh")
    summary = _summary(order, split, results)
    return Tables(
        leaderboard,
        per_label,
        macro_labels,
        undefined,
        baseline,
        split,
        varying,
        summary,
        ts_labels,
        ts_undefined,
    )


def _configurations(
    results: LoadedResults, ts_labels: dict[str, list[str]], varying: list[str], split: list[str]
) -> dict[str, _Configuration]:
    """Every configuration of the successful cells, its seeds pooled, by configuration hash."""
    configs: dict[str, _Configuration] = {}
    shown = display_values(results.configurations, varying)
    ok = results.ok.sort_values([*CONFIG_AXES, "seed", "cell_id"])
    for h, recs in ok.groupby("configuration_hash", sort=False):
        cell_ids = list(recs["cell_id"])
        test_keys = sorted({results.test_set_of[c] for c in cell_ids})
        labels = [
            k
            for k in ts_labels[test_keys[0]]
            if all(k in ts_labels[t] for t in test_keys)
            and all(k in results.scores[c].labels for c in cell_ids)
        ]  # only its own evaluation labels
        keys = shown[h]
        first = recs.iloc[0]
        configs[h] = _Configuration(
            hash=str(h),
            axes={a: first[a] for a in CONFIG_AXES},
            keys=keys,
            label=configuration_label(str(first["strategy"]), keys, split),
            strategy_label=configuration_label(
                str(first["strategy"]), keys, [k for k in split if k.startswith("strategy.")]
            ),
            cell_ids=cell_ids,
            seeds=[int(s) for s in recs["seed"]],
            test_set=",".join(test_keys),
            labels=labels,
            summaries=_summaries(results, cell_ids, labels),
        )
    return configs


def _check_rows_are_distinct(configs: Any) -> None:
    """Two configurations the tables would show as one row (same axes and shown keys) are an error,
    never one row silently replacing the other."""
    seen: dict[tuple, str] = {}
    for c in configs:
        row = (*(str(c.axes[a]) for a in CONFIG_AXES), c.label)
        if row in seen:
            raise ChexbenchError(
                f"configurations {seen[row][:12]} and {c.hash[:12]} would show as the same row '{c.label}'"
                f" ({', '.join(f'{a}={c.axes[a]}' for a in CONFIG_AXES)}); their settings differ only where"
                " the report cannot show it"
            )
        seen[row] = c.hash


def _leaderboard_row(
    c: _Configuration,
    results: LoadedResults,
    baseline: str,
    base_hash: str,
    base: _Configuration | None,
    base_note: str,
) -> dict[str, Any]:
    """One configuration's leaderboard row: macro AUROC/AUPRC over seeds, calibration, Δ vs its baseline."""
    summ = c.summaries
    ts = results.test_sets[c.test_set.split(",")[0]]
    row = {
        **c.axes,
        **c.keys,
        "configuration_label": c.label,
        "configuration_hash": c.hash,
        "seeds": ",".join(str(s) for s in c.seeds),
        "cell_ids": ",".join(c.cell_ids),
        "test_set": c.test_set,
        "n_test_images": ts.n_images,
        "n_test_patients": ts.n_patients,
        "n_seeds": summ["macro_auroc"].n_seeds,
        "baseline": baseline,
        "baseline_configuration": base_hash,
    }
    for metric in ("macro_auroc", "macro_auprc"):
        s = summ[metric]
        row.update(
            {
                metric: s.mean,
                f"{metric}_sd": s.sd,
                f"{metric}_ci_low": s.ci_low,
                f"{metric}_ci_high": s.ci_high,
            }
        )
    row["n_degenerate"] = summ["macro_auroc"].n_degenerate
    first = results.scores[c.cell_ids[0]]
    row["few_positive_labels"] = ",".join(k for k in c.labels if first.labels[k].few_positive_patients)
    row["pretraining"] = pretraining_note(results, c.hash, c.cell_ids)
    row.update(_calibration(results, c.cell_ids, c.labels))
    row["n_boot"] = results.n_boot
    row["labels"] = json.dumps(c.labels)
    row.update(_delta(c, base, base_note, "macro_auroc", results))
    return row


def _label_rows(
    c: _Configuration, results: LoadedResults, base: _Configuration | None, base_note: str
) -> list[dict[str, Any]]:
    """One configuration's per-label rows (the labels its first cell scored and its seeds pooled)."""
    summ = c.summaries
    first_cell = results.scores[c.cell_ids[0]]
    out = []
    for label in first_cell.labels:
        if f"{label}:auroc" not in summ:
            continue
        a, p = summ[f"{label}:auroc"], summ[f"{label}:auprc"]
        first = first_cell.labels[label]
        lrow = {
            **c.axes,
            **c.keys,
            "configuration_label": c.label,
            "configuration_hash": c.hash,
            "label": label,
            "n_seeds": a.n_seeds,
            "auroc": a.mean,
            "auroc_sd": a.sd,
            "auroc_ci_low": a.ci_low,
            "auroc_ci_high": a.ci_high,
            "auprc": p.mean,
            "auprc_ci_low": p.ci_low,
            "auprc_ci_high": p.ci_high,
            "auprc_sd": p.sd,
            "n_pos": first.n_pos,
            "n_neg": first.n_neg,
            "n_pos_patients": first.n_pos_patients,
            "few_positive_patients": bool(first.defined and first.few_positive_patients),
            "n_degenerate": a.n_degenerate,
            "undefined_reason": first.reason,
        }
        lrow.update(_delta(c, base, base_note, f"{label}:auroc", results))
        out.append(lrow)
    return out


def pretraining_note(results: LoadedResults, configuration_hash: str, cell_ids: list[str]) -> str:
    """Whether a configuration's interval includes pretraining variance, in words: ``settings.pretrain_seed =
    "per_seed"`` gives each fine-tuning seed its own pretraining run (included); otherwise its seeds share one
    run (not included). Cells without a pretraining run (``init_json``'s ``pretrain_run``) have none to vary.
    """
    runs = set()
    for cell in cell_ids:
        rec = results.ok.loc[results.ok["cell_id"] == cell]
        try:
            init = json.loads(str(rec["init_json"].iloc[0])) if len(rec) and "init_json" in rec else {}
        except (TypeError, ValueError):
            init = {}
        run = init.get("pretrain_run") if isinstance(init, dict) else None
        if run:
            runs.add(str(run))
    if not runs:
        return "no pretraining run"
    setting = results.configurations.get(configuration_hash, {}).get("settings.pretrain_seed")
    n = len(cell_ids)
    if setting == "per_seed":
        return f"included: each seed its own pretraining run ({len(runs)} run(s) for {n} seed(s))"
    shown = "default" if setting is None else str(setting)
    return f"not included: {len(runs)} pretraining run(s) (pretrain_seed {shown}) shared by {n} seed(s)"


def _shared_keys(split: list[str]) -> list[str]:
    """The split keys that a strategy's competitors must share (not the strategy's own options)."""
    return [k for k in split if not k.startswith("strategy.")]


def _baseline_of(
    c: _Configuration, configs: dict[str, _Configuration], split: list[str], baseline: str
) -> tuple[str, str]:
    """(hash of the baseline configuration that ``c`` is compared with, or "", and a note)."""
    if c.axes["strategy"] == baseline:
        return "", "baseline"
    same_axes = [
        b
        for b in configs.values()
        if b.axes["strategy"] == baseline
        and all(b.axes[a] == c.axes[a] for a in ("dataset", "protocol", "label_fraction", "backbone"))
    ]
    if not same_axes:
        return "", f"no '{baseline}' cell for this backbone/fraction"
    shared = _shared_keys(split)
    match = [b for b in same_axes if all(b.keys[k] == c.keys[k] for k in shared)]
    if len(match) > 1:  # a swept strategy option reaches the baseline too (a grid axis applies to every cell)
        match = [b for b in match if all(b.keys[k] == c.keys[k] for k in split)] or match
    if not match:
        want = ", ".join(f"{k}={c.keys[k]}" for k in shared)
        return "", f"no '{baseline}' configuration with {want}"
    if len(match) > 1:
        return (
            "",
            (
                f"{len(match)} '{baseline}' configurations match ({'; '.join(b.label for b in match)}):"
                " ambiguous"
            ),
        )
    return match[0].hash, ""


def unpaired_reason(results: LoadedResults, test_set_a: str, test_set_b: str) -> str:
    """Why two configurations are not paired ("" when they are: same images, same truth)."""
    if test_set_a == test_set_b:
        return ""
    if "," in test_set_a or "," in test_set_b:
        return "a configuration's seeds were tested on different test sets: not paired"
    a, b = results.test_sets[test_set_a], results.test_sets[test_set_b]
    if a.images_key != b.images_key:
        return "different test images: not paired"
    return "same test images but different y_true (another label policy): not paired"


def _delta(
    c: _Configuration, base: _Configuration | None, note: str, metric: str, results: LoadedResults
) -> dict:
    """Δ vs baseline columns; NaN with a reason when there is nothing to compare."""
    empty = {"delta": np.nan, "delta_ci_low": np.nan, "delta_ci_high": np.nan, "p_value": np.nan}
    if base is None:
        return {**empty, "delta_note": note}
    why = unpaired_reason(results, c.test_set, base.test_set)
    if why:
        return {**empty, "delta_note": why}
    a, b = c.summaries.get(metric), base.summaries.get(metric)
    if a is None or b is None or not (np.isfinite(a.mean) and np.isfinite(b.mean)):
        return {**empty, "delta_note": "undefined"}
    if metric == "macro_auroc" and c.labels != base.labels:
        return {**empty, "delta_note": "macro over different labels: not paired"}
    d = paired_seed_delta(a, b)
    return {
        "delta": d.delta,
        "delta_ci_low": d.ci_low,
        "delta_ci_high": d.ci_high,
        "p_value": d.p_value,
        "delta_note": "",
    }


def _summary(order: list[_Configuration], split: list[str], results: LoadedResults) -> pd.DataFrame:
    """Per group of configurations that differ only in the strategy (and its options): the top
    macro AUROC, and its paired test against every other one of the group. The top is "best"
    only when every one of those tests is significant after Holm over the whole summary family."""
    shared = _shared_keys(split)
    groups: dict[tuple, list[_Configuration]] = {}
    for c in order:
        key = tuple(c.axes[a] for a in ("backbone", "dataset", "protocol", "label_fraction")) + tuple(
            c.keys[k] for k in shared
        )
        groups.setdefault(key, []).append(c)
    rows, tests = [], []
    for key, members in groups.items():
        row: dict[str, Any] = dict(
            zip(("backbone", "dataset", "protocol", "label_fraction"), key[:4], strict=True)
        )
        row.update(dict(zip(shared, key[4:], strict=True)))
        defined = [c for c in members if np.isfinite(c.summaries["macro_auroc"].mean)]
        row.update({"n_candidates": len(defined), "top_label": "", "top_hash": "", "verdict": "undefined"})
        if defined:
            top = sorted(defined, key=lambda c: (-c.summaries["macro_auroc"].mean, c.label))[0]
            s = top.summaries["macro_auroc"]
            row.update(
                {
                    "top_label": top.strategy_label,
                    "top_strategy": top.axes["strategy"],
                    "top_hash": top.hash,
                    "macro_auroc": s.mean,
                    "macro_auroc_ci_low": s.ci_low,
                    "macro_auroc_ci_high": s.ci_high,
                    "macro_auroc_sd": s.sd,
                    "n_seeds": s.n_seeds,
                }
            )
            for other in defined:
                if other is top:
                    continue
                why = unpaired_reason(results, top.test_set, other.test_set)
                if not why and top.labels != other.labels:
                    why = "macro over different labels: not paired"
                t = {
                    "group": len(rows),
                    "other": other.strategy_label,
                    "note": why,
                    "delta": np.nan,
                    "ci_low": np.nan,
                    "ci_high": np.nan,
                    "p_value": np.nan,
                }
                if not why:
                    o = other.summaries["macro_auroc"]
                    d = paired_seed_delta(s, o)
                    t.update(
                        {"delta": d.delta, "ci_low": d.ci_low, "ci_high": d.ci_high, "p_value": d.p_value}
                    )
                tests.append(t)
        rows.append(row)
    tests_df = pd.DataFrame(
        tests, columns=["group", "other", "note", "delta", "ci_low", "ci_high", "p_value"]
    )
    tests_df["p_holm"] = adjust_p_values(tests_df["p_value"], "holm") if len(tests_df) else []
    n_family = int(tests_df["p_value"].notna().sum())
    for i, row in enumerate(rows):
        row["n_family"] = n_family
        if not row["top_label"]:
            continue
        mine = tests_df[tests_df["group"] == i]
        if mine.empty:
            row.update(
                {
                    "verdict": "only one",
                    "closest": "",
                    "closest_delta": np.nan,
                    "closest_ci_low": np.nan,
                    "closest_ci_high": np.nan,
                    "closest_p_holm": np.nan,
                    "closest_note": "",
                }
            )
            continue
        unpaired = mine[mine["note"] != ""]
        # the closest competitor: the untestable one first, else the one with the largest corrected p
        worst = (
            unpaired.iloc[0]
            if len(unpaired)
            else mine.sort_values(["p_holm", "other"], ascending=[False, True]).iloc[0]
        )
        row.update(
            {
                "closest": worst["other"],
                "closest_delta": worst["delta"],
                "closest_ci_low": worst["ci_low"],
                "closest_ci_high": worst["ci_high"],
                "closest_p_holm": worst["p_holm"],
                "closest_note": worst["note"],
            }
        )
        significant = unpaired.empty and bool(((mine["p_holm"] < SIGNIFICANCE) & (mine["delta"] > 0)).all())
        row["verdict"] = (
            "best" if significant else ("not tested" if len(unpaired) else "no significant difference")
        )
    return pd.DataFrame(rows)


def _calibration(results: LoadedResults, cell_ids: list[str], labels: list[str]) -> dict:
    """Mean over seeds of the macro (over ``labels``) test ECE and sensitivity / specificity at the
    validation-chosen operating point; NaN where a seed lacks them."""
    per_seed = []
    for c in cell_ids:
        cal = results.calibration[c]
        cal = cal[cal["label"].isin(labels)]
        per_seed.append(
            [
                cal[m].mean() if len(cal) and cal[m].notna().all() else np.nan
                for m in ("ece", "sensitivity", "specificity")
            ]
        )
    arr = np.array(per_seed, dtype=float).reshape(-1, 3)
    means = arr.mean(axis=0) if len(arr) else np.full(3, np.nan)
    out = {
        "macro_ece": means[0],
        "macro_sensitivity": means[1],
        "macro_specificity": means[2],
        "macro_ece_ci_low": np.nan,
        "macro_ece_ci_high": np.nan,
    }
    # the interval: each seed's macro ECE per patient resample (the resamples of its AUROC), pooled over seeds
    # as AUROC's
    reps = []
    for c in cell_ids:
        boot = results.ece_boot.get(c, {})
        if not all(label in boot for label in labels) or not labels:
            return out
        reps.append(np.mean(np.vstack([boot[label] for label in labels]), axis=0))
    if np.isfinite(means[0]) and reps:
        s = combine_seeds(
            [p[0] for p in per_seed], reps
        )  # as AUPRC's: logit scale, bootstrap se + between-seed part
        out.update(macro_ece_ci_low=s.ci_low, macro_ece_ci_high=s.ci_high)
    return out
