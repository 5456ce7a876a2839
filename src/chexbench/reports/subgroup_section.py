"""The report's subgroup section and its artefacts (``subgroups.csv``, ``subgroup_gaps.csv``).

For every scored cell and every subgroup variable its predictions carry with at least two subgroups on
the test split (``subgroups.VARIABLES``: sex, age band, view, site), :func:`subgroups.analyse_subgroups`
on the cell's test rows under its test set's shared patient resamples. The artefacts hold every cell;
the Markdown shows one table per configuration and variable, from the configuration's first seed
(subgroup statistics are per cell: seeds are not pooled here), and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from chexbench.reports.aggregate import LoadedResults
from chexbench.reports.intervals import FEW_POSITIVE_PATIENTS
from chexbench.reports.leaderboard import Tables
from chexbench.reports.markdown import fmt_ci, fmt_delta, fmt_p, table
from chexbench.reports.subgroups import VARIABLES, analyse_subgroups, subgroup_order, subgroup_values
from chexbench.spec.cell import AXES

CELL_COLUMNS = ("cell_id", "configuration_hash", "configuration_label", *AXES)


@dataclass
class SubgroupTables:
    """Every cell's subgroup rows and largest gaps (CELL_COLUMNS, then ``subgroups``' columns)."""

    subgroups: pd.DataFrame = field(default_factory=pd.DataFrame)
    gaps: pd.DataFrame = field(default_factory=pd.DataFrame)
    skipped: dict[str, str] = field(default_factory=dict)  # variable → why no cell shows it

    @property
    def empty(self) -> bool:
        return self.subgroups.empty


def _labels(tables: Tables) -> dict[str, str]:
    lb = tables.leaderboard
    if lb.empty or "configuration_label" not in lb.columns:
        return {}
    return dict(
        zip(lb["configuration_hash"].astype(str), lb["configuration_label"].astype(str), strict=False)
    )


def subgroup_tables(results: LoadedResults, tables: Tables) -> SubgroupTables:
    """Subgroup analyses of every scored cell, for each variable its test predictions carry with ≥ 2
    subgroups."""
    labels_of = _labels(tables)
    rows, gaps = [], []
    for rec in results.ok.itertuples(index=False):
        cell_id = str(rec.cell_id)
        if cell_id not in results.scores:
            continue
        preds = results.predictions(cell_id)
        test = preds[preds["split"] == "test"].reset_index(drop=True) if "split" in preds.columns else preds
        present = [
            v
            for v in VARIABLES
            if v in test.columns and len(subgroup_order(v, subgroup_values(test, v, cell_id))) >= 2
        ]
        if not present:
            continue
        resamples = results.test_sets[results.test_set_of[cell_id]].resamples
        configuration = str(rec.configuration_hash)
        cell = {
            "cell_id": cell_id,
            "configuration_hash": configuration,
            "configuration_label": labels_of.get(configuration, str(rec.strategy)),
            "strategy": rec.strategy,
            "backbone": rec.backbone,
            "dataset": rec.dataset,
            "protocol": rec.protocol,
            "label_fraction": rec.label_fraction,
            "seed": rec.seed,
        }
        labels = list(results.scores[cell_id].labels)
        for variable in present:
            a = analyse_subgroups(test, variable, resamples, labels, cell_id)
            rows.append(a.table.assign(**cell, n_without=a.n_without))
            gaps.append(a.gaps.assign(**cell))
    if not rows:
        return SubgroupTables()
    sub = pd.concat(rows, ignore_index=True)
    gap = pd.concat(gaps, ignore_index=True)
    front = list(CELL_COLUMNS)
    return SubgroupTables(
        sub[front + [c for c in sub.columns if c not in front]],
        gap[front + [c for c in gap.columns if c not in front]],
    )


def _cell(r: pd.Series) -> str:
    if pd.isna(r["auroc"]):
        return f"n/a ({r['note']})"
    few = " ⚑" if r["n_pos_patients"] < FEW_POSITIVE_PATIENTS else ""
    return (
        f"{fmt_ci(r['auroc'], r['auroc_ci_low'], r['auroc_ci_high'])}"
        f" ({int(r['n_pos_patients'])}/{int(r['n_patients'])}){few}"
    )


def subgroup_section(st: SubgroupTables, n_boot: int) -> str:
    """Markdown: per configuration (its first seed) and variable, per-label AUROC in each subgroup and the
    largest gap with its interval, Holm p and test; "" when no cell carries a variable with ≥ 2 subgroups."""
    if st.empty:
        return ""
    parts = [
        "## Subgroups\n",
        (
            "Per-label AUROC [95% interval] in each subgroup (the per-label interval of Methods on the"
            " subgroup's test images, under the test set's shared patient resamples) and (positive patients"
            f" / patients); ⚑ fewer than {FEW_POSITIVE_PATIENTS} positive patients. Age in bands <40, 40–59,"
            " 60–79, ≥80 years. *Largest gap*: the highest minus the lowest subgroup AUROC of the label, 95%"
            " interval and p by MOVER on the two subgroups' intervals — *independent* when they share no"
            " patient, *patient bootstrap* (both AUROCs on the same patient resamples, their correlation"
            " used) when a patient has images in both (docs/STATISTICS.md, Subgroups); p Holm-corrected over"
            " every pair of subgroups of every label of the variable. Shown: each configuration's first seed"
            " (subgroup statistics are per cell, seeds not pooled; every cell in `subgroups.csv` and"
            f" `subgroup_gaps.csv`); only variables with at least two subgroups. {n_boot} resamples.\n"
        ),
    ]
    sub, gaps = st.subgroups, st.gaps
    # in the leaderboards' order (dataset, protocol, fraction, backbone, configuration), each configuration's
    # first seed
    order = ["dataset", "protocol", "label_fraction", "backbone", "configuration_label", "seed", "cell_id"]
    first = sub.sort_values(order, kind="stable").drop_duplicates("configuration_hash")["cell_id"]
    for cell_id in first:
        cs = sub[sub["cell_id"] == cell_id]
        head = cs.iloc[0]
        seeds = sorted(sub.loc[sub["configuration_hash"] == head["configuration_hash"], "seed"].unique())
        parts.append(
            f"### `{head['configuration_label']}` · {head['backbone']} · {head['dataset']} ·"
            f" {head['protocol']} · label fraction {float(head['label_fraction']):g} — seed {head['seed']}"
            + (f" (of seeds {', '.join(map(str, seeds))})" if len(seeds) > 1 else "")
            + "\n"
        )
        for variable, cv in cs.groupby("variable", sort=False):
            groups = list(dict.fromkeys(cv["subgroup"]))
            gv = gaps[(gaps["cell_id"] == cell_id) & (gaps["variable"] == variable)].set_index("label")
            out = []
            for label, cl in cv.groupby("label", sort=False):
                by_group = {r["subgroup"]: r for _, r in cl.iterrows()}
                g = gv.loc[label] if label in gv.index else None
                if g is None or not isinstance(g["higher"], str):
                    gap_text, p_text, test = (str(g["note"]) if g is not None else "n/a"), "", ""
                else:
                    gap_text = (
                        f"{g['higher']} − {g['lower']}"
                        f" {fmt_delta(g['gap'], g['gap_ci_low'], g['gap_ci_high'])}"
                        + (" ⚑" if g["flag"] else "")
                    )
                    p_text, test = fmt_p(g["p_holm"]), str(g["test"]).split(" (")[0]
                out.append([label, *[_cell(by_group[s]) for s in groups], gap_text, p_text, test])
            without = int(cv["n_without"].iloc[0])
            parts.append(
                f"**{variable}**"
                + (f" ({without} test image(s) without a value, in no subgroup)" if without else "")
                + "\n\n"
                + table(["label", *groups, "largest gap [95% CI]", "p Holm", "test"], out)
                + "\n"
            )
    return "\n".join(parts)
