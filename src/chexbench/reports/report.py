"""``write_report``: a pure function from a results directory to report.md, figures and tables.

It reads the stored results through one read-only :class:`~chexbench.bench.store.ResultsView`
(each record and predictions file once; a damaged file is told and left out, never moved) and
writes only the outputs below.

Outputs (in the results directory, each written atomically):
    report.html               the same sections as one self-contained page (sortable, filterable tables, SVG
    figures)
    report.md                 summary, leaderboards, comparisons, per-label tables, calibration,
                              skipped / failed cells, methods, provenance
    leaderboard.parquet/.csv  one row per configuration (seeds pooled)
    tables/*.tex|md|csv       with ``table_formats``: leaderboard and paired table for a manuscript
    per_label.parquet/.csv    one row per configuration × label
    subgroups.parquet/.csv, subgroup_gaps.parquet/.csv
                              per cell × subgroup variable × subgroup × label, and each label's largest gap
    external.parquet/.csv     with ``evaluate_on`` predictions: one row per (cell, target, label or macro)
    figures/*.png + pdf + svg label-fraction curves, ROC curves, forest plot, reliability
                              diagrams, pretraining loss curves
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from chexbench.bench.record import RecordStatus
from chexbench.bench.store import ResultsView
from chexbench.core.atomic import (
    atomic_write_parquet,
    atomic_write_text,
    clean_stale_temporaries,
    make_temp_dir,
    temp_name,
)
from chexbench.core.errors import ConfigError
from chexbench.reports.aggregate import LoadedResults, load_results, mixed_code_versions
from chexbench.reports.bootstrap import DEFAULT_N_BOOT, DEFAULT_SEED
from chexbench.reports.cell_warnings import warnings_section
from chexbench.reports.crosscheck import delong_crosscheck
from chexbench.reports.export import check_formats, write_tables
from chexbench.reports.external import ExternalResults, external_results, external_section
from chexbench.reports.html import figure_svgs, render_html
from chexbench.reports.leaderboard import Tables, build_tables
from chexbench.reports.localization_table import localization_section
from chexbench.reports.markdown import (
    calibration_section,
    comparison_section,
    crosscheck_section,
    failed_section,
    leaderboard_section,
    per_label_section,
    provenance_section,
    skipped_section,
    summary_section,
    superseded_section,
)
from chexbench.reports.methods import hyperparameter_section
from chexbench.reports.plots import write_figures
from chexbench.reports.study import study_questions_section
from chexbench.reports.subgroup_section import SubgroupTables, subgroup_section, subgroup_tables


def _blank_rule(results: LoadedResults) -> str:
    """How blank labels were treated, per dataset, from the cells' data manifests."""
    negative: set[str] = set()
    masked: set[str] = set()
    unknown: set[str] = set()
    excluded: dict[str, int] = {}
    missing: dict[str, int] = {}
    for _, rec in results.ok.iterrows():
        try:
            manifest = json.loads(rec.get("data_json") or "{}")
        except (TypeError, json.JSONDecodeError):
            manifest = {}
        name = str(rec["dataset"])
        missing[name] = max(missing.get(name, 0), int(manifest.get("skipped_images") or 0))
        if "blank_is_negative" not in manifest:
            unknown.add(name)
            continue
        (negative if manifest["blank_is_negative"] else masked).add(name)
        n = int((manifest.get("unlabeled_images_excluded") or {}).get("test", 0))
        excluded[name] = max(excluded.get(name, 0), n)
    parts = []
    if negative:
        parts.append(
            f"a blank (not mentioned) label is a negative on {', '.join(sorted(negative))} (CheXpert"
            " convention)"
        )
    if masked:
        parts.append(f"a blank label is masked on {', '.join(sorted(masked))}")
    if unknown:
        parts.append(f"the blank rule is not recorded for {', '.join(sorted(unknown))}")
    left_out = ", ".join(f"{k} {v}" for k, v in sorted(excluded.items()) if v)
    tail = f" (test images left out: {left_out})" if left_out else ""
    if negative or masked:
        parts.append(f"images with no usable label are left out of every split{tail}")
    rule = "; ".join(parts) or "no cell scored"
    gone = ", ".join(f"{k} {v}" for k, v in sorted(missing.items()) if v)
    skipped = (
        " Images listed by a dataset but missing or unreadable when it was prepared are left out of every"
        f" split (**{gone}**; `chexbench data prepare` again once they are restored)."
        if gone
        else ""
    )
    return (
        f"Targets: {rule}; masked labels (blank where masked, uncertain under U-Ignore) are dropped per"
        f" label.{skipped}"
    )


def methods_section(results: LoadedResults) -> str:
    return (
        "## Methods\n\n- Per-label AUROC (exact Mann–Whitney with midranks for ties) and AUPRC (average"
        f" precision) on the test split. {_blank_rule(results)}\n- 95% intervals: patient-level (cluster)"
        f" bootstrap, {results.n_boot} resamples, seed {results.seed}, for the standard error. Per-label"
        " AUROC: the score interval {A : (AUROC − A)² ≤ z² · D · V(A)}, V Hanley & McNeil's variance of an"
        " AUROC A on the label's positive and negative images, D the larger of the"
        " clustered-over-independent DeLong variance ratio and the bootstrap variance · k/(k − 1) over"
        " V(AUROC) (k = min(positive, negative test patients)); per-label AUPRC: logit(value) ± t · se ·"
        " √(k/(k − 1)) on k − 1 degrees of freedom; macro AUROC and AUPRC: MOVER for the mean of its labels'"
        " intervals, L = mean − √(Σ_ij r_ij e_i e_j) / n (n labels, e_i each label's distance to its own"
        " lower bound, r_ij the labels' bootstrap correlation; likewise the upper bound); all chosen by a"
        " coverage simulation (`chexbench bench coverage`, table in docs/STATISTICS.md). Patients are"
        " resampled, not images, because images of one patient are correlated. The same resamples serve"
        " every label and every cell evaluated on the same test set. ⚑ marks a number resting on a label"
        " with fewer than 10 positive test patients.\n- Resamples in which a label has no positive or no"
        " negative image have no AUROC; they are counted and left out of that interval (column"
        " `n_degenerate` of `leaderboard.csv`). A macro value needs every macro label defined.\n- Seeds:"
        " mean ± between-seed sd; the interval is for the mean over fine-tuning seeds: the test-sample"
        " interval of the seed mean (as above), each side widened on the logit scale in quadrature by"
        " t_{S−1} · s/√S, so it covers test-sample and seed variation, not pretraining variation unless"
        " each seed has its own pretraining run (the line under each leaderboard says). Checked by"
        " simulation on clustered test sets with 2, 3 and 5 seeds and a seed spread larger or smaller than"
        " the test-sample spread: per-label and macro AUROC and their Δ covered at least 0.96"
        " (conservative), docs/STATISTICS.md. With one seed it is the per-label (or macro) interval only.\n-"
        " Paired Δ vs the baseline (macro and per label): same patient resamples for both arms; MOVER (Zou &"
        " Donner 2008) on the two arms' intervals, L = Δ − √((A − l_A)² + (u_B − B)² − 2r (A − l_A)(u_B −"
        " B)), U likewise, r the arms' correlation (shared-resample covariance over each arm's variance plus"
        " its between-seed variance), and p the level at which that interval touches 0, so p < 0.05 exactly"
        " when the interval excludes 0; Holm and Benjamini–Hochberg corrections over the family stated"
        " above.\n- DeLong's test assumes independent images; it is a cross-check only (see"
        " `docs/STATISTICS.md`).\n"
    )


def _without_superseded(records: pd.DataFrame, results: LoadedResults) -> pd.DataFrame:
    """``records`` less the superseded cells (their configuration and seed has a newer run)."""
    if results.superseded.empty:
        return records
    return records[~records["cell_id"].isin(set(results.superseded["cell_id"]))]


def code_versions_note(results: LoadedResults, tables: Tables) -> str:
    """Under the leaderboards, one line per configuration whose pooled seeds come from different
    code (``git_sha`` or ``chexbench_version``); "" when none."""
    mixed = mixed_code_versions(results.ok)
    if mixed.empty:
        return ""
    labels: dict[str, str] = {}
    if not tables.leaderboard.empty and "configuration_label" in tables.leaderboard:
        labels = dict(
            zip(
                tables.leaderboard["configuration_hash"].astype(str),
                tables.leaderboard["configuration_label"].astype(str),
                strict=False,
            )
        )
    lines = [
        f"- `{labels.get(str(r.configuration_hash), r.strategy)}` · {r.backbone} · {r.dataset} · {r.protocol}"
        f" · label fraction {float(r.label_fraction):g} (seeds {r.seeds}): {r.versions}"
        for r in mixed.itertuples()
    ]
    return (
        "**Seeds pooled across code versions.** These rows pool seeds written by different code "
        "(chexbench version and git sha); rerun the older seeds if the code changed what is measured.\n\n"
        + "\n".join(lines)
        + "\n"
    )


def report_sections(
    results: LoadedResults,
    tables: Tables,
    figures_md: str = "",
    cross: pd.DataFrame | None = None,
    subgroups: SubgroupTables | None = None,
    external: ExternalResults | None = None,
) -> list[str]:
    """The report's sections, each a Markdown string (the first the intro): report.md joins them,
    report.html renders the same strings (``html.render_html``), so both show the same numbers.
    ``external``: the scored ``evaluate_on`` predictions (default: scored here)."""
    n_ok, n_failed, n_skipped = len(results.ok), len(results.failed), len(results.skipped)
    intro = (
        f"# chexbench report\n\nResults: `{results.root.name}` — {n_ok} cell(s) scored, {n_failed} failed,"
        f" {n_skipped} skipped. Baseline: `{tables.baseline}`. Intervals: 95%, from the patient-level"
        f" bootstrap ({results.n_boot} resamples, seed {results.seed}); seeds pooled by widening the"
        " test-sample interval with a t-based between-seed part (see Methods).\n"
    )
    sections = [
        intro,
        summary_section(tables),
        study_questions_section(results.ok, tables.baseline),
        leaderboard_section(tables, results),
        code_versions_note(results, tables),  # "" unless a row pools seeds written by different code
        comparison_section(tables),
        crosscheck_section(cross if cross is not None else pd.DataFrame(), tables, results),
        per_label_section(tables, results.n_boot),
        subgroup_section(
            subgroups or SubgroupTables(), results.n_boot
        ),  # "" unless predictions carry sex/age/view/site
        calibration_section(tables, results),
        external_section(
            external if external is not None else external_results(results), results
        ),  # "" without evaluate_on
        # the cells the tables use: superseded cells (same configuration and seed, an older run) are out,
        # else the localization table would count them as extra seeds; the warnings also keep failed cells
        localization_section(results.ok),  # "" unless cells stored a localization result
        warnings_section(
            _without_superseded(results.records, results)
        ),  # "" unless a cell recorded a warning
    ]
    if figures_md:
        sections.append(figures_md)
    sections += [
        skipped_section(results),
        failed_section(results),
        superseded_section(results),
        methods_section(results),
        hyperparameter_section(results.ok),
        provenance_section(results),
    ]
    return [s for s in sections if s]


def render_report(
    results: LoadedResults, tables: Tables, figures_md: str = "", cross: pd.DataFrame | None = None
) -> str:
    """The full Markdown text of the report."""
    return join_sections(report_sections(results, tables, figures_md, cross))


def join_sections(sections: list[str]) -> str:
    return "\n".join(s.rstrip() + "\n" for s in sections)


def check_baseline(results_dir: str | Path, baseline: str, view: ResultsView | None = None) -> None:
    """Refuse (one line) a baseline strategy that no finished cell of ``results_dir`` used.

    Every Δ and p of the report is relative to the baseline; without it they would all be n/a.
    A folder with no finished cell has nothing to compare, so it passes. ``view``: read through it
    (the report's own, so that its records are read once).
    """
    recs = (view if view is not None else ResultsView(results_dir)).records()
    strategies = (
        sorted({str(s) for s in recs.loc[recs["status"] == RecordStatus.OK, "strategy"]}) if len(recs) else []
    )
    if strategies and baseline not in strategies:
        raise ConfigError(
            f"--baseline '{baseline}': no finished cell of {results_dir} used that strategy "
            f"(strategies there: {', '.join(strategies)})"
        )


def write_report(
    results_dir: str | Path,
    baseline: str = "scratch",
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    figures: bool = True,
    table_formats: Sequence[str] = (),
    html: bool = True,
) -> Path:
    """Score every finished cell of ``results_dir`` and write the report; returns report.md's path.

    ``html``: also report.html beside it, rendered from the same sections (see ``reports/html.py``).

    Everything is computed (figures into a hidden temporary folder) before anything is
    replaced, so an error leaves the previous report, tables and figures as they were.
    """
    formats = check_formats(list(table_formats))
    view = ResultsView(results_dir)  # read-only and cached: each record and predictions file is read once
    check_baseline(results_dir, baseline, view)
    results = load_results(results_dir, n_boot=n_boot, seed=seed, view=view)
    tables = build_tables(results, baseline=baseline)
    root = Path(results_dir)
    cross = delong_crosscheck(results, tables)
    subgroups = subgroup_tables(results, tables)
    external = external_results(results)
    clean_stale_temporaries(root, recursive=False)  # figures staged by a report that was killed
    staged = make_temp_dir(root, "figures") if figures else None
    try:
        figures_md = ""
        if staged is not None:
            figures_md = write_figures(results, tables, staged)
        sections = report_sections(results, tables, figures_md, cross, subgroups, external)
        text = join_sections(sections)
        page = (
            render_html(sections, tables, figure_svgs(staged), title=f"chexbench report · {root.name}")
            if html
            else None
        )
    except BaseException:
        if staged is not None:
            shutil.rmtree(staged, ignore_errors=True)
        raise
    if staged is not None:
        _swap_folder(staged, root / "figures")
    if not tables.leaderboard.empty:
        atomic_write_parquet(tables.leaderboard, root / "leaderboard.parquet")
        atomic_write_text(tables.leaderboard.to_csv(index=False), root / "leaderboard.csv")
    if not tables.per_label.empty:
        atomic_write_parquet(tables.per_label, root / "per_label.parquet")
        atomic_write_text(tables.per_label.to_csv(index=False), root / "per_label.csv")
    if not subgroups.empty:
        for name, frame in (("subgroups", subgroups.subgroups), ("subgroup_gaps", subgroups.gaps)):
            atomic_write_parquet(frame, root / f"{name}.parquet")
            atomic_write_text(frame.to_csv(index=False), root / f"{name}.csv")
    if not external.rows.empty:
        atomic_write_parquet(external.rows, root / "external.parquet")
        atomic_write_text(external.rows.to_csv(index=False), root / "external.csv")
    path = root / "report.md"
    atomic_write_text(text, path)
    if page is not None:
        atomic_write_text(page, root / "report.html")
    if formats:
        write_tables(tables, root / "tables", formats)
    return path


def _swap_folder(staged: Path, final: Path) -> None:
    """Replace ``final`` by ``staged`` (two renames; stale figures of an earlier report go away)."""
    old = None
    if final.exists():
        old = final.with_name(temp_name(f"{final.name}.old"))
        final.rename(old)
    staged.rename(final)
    os.chmod(final, 0o755)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
