"""`report` and `status` only read the stored results (nothing written, moved or quarantined), and a
report reads each record and each predictions file once."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from synthetic_store import write_synthetic_results
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.reports.report import write_report

#: what a report writes into the results folder (everything else there is the run's)
REPORT_OUTPUTS = {
    "report.md",
    "report.html",
    "leaderboard.parquet",
    "leaderboard.csv",
    "per_label.parquet",
    "per_label.csv",
    "subgroups.parquet",
    "subgroups.csv",
    "subgroup_gaps.parquet",
    "subgroup_gaps.csv",
    "figures",
}


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    return {
        p.relative_to(root): (p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*") if p.is_file()
    }


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_report_and_status_never_write_into_the_stored_results(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0, 1), n_patients=12, images_per_patient=2)
    cells = sorted(p.stem for p in (root / "records").glob("c*.parquet"))
    _truncate(root / "records" / f"{cells[0]}.parquet")  # damaged files that a mover would quarantine
    _truncate(root / "predictions" / f"{cells[1]}.parquet")
    _truncate(root / "skipped.parquet")
    before = _snapshot(root)
    status = CliRunner().invoke(app, ["status", "--results", str(root)], env={"COLUMNS": "250"})
    assert status.exit_code == 0, status.output
    assert _snapshot(root) == before  # status writes nothing at all
    write_report(root, n_boot=100, seed=0, figures=False)
    after = _snapshot(root)
    assert {p: after.get(p) for p in before} == before  # every stored file untouched, none moved
    new = {p.parts[0] for p in set(after) - set(before)}
    assert new and new <= REPORT_OUTPUTS and not (root / "quarantine").exists()


def test_a_report_reads_each_record_and_predictions_file_once(tmp_path, monkeypatch):
    root = write_synthetic_results(tmp_path / "results", seeds=(0, 1), n_patients=12, images_per_patient=2)
    tables, footers = Counter(), Counter()
    real_table, real_metadata = pq.read_table, pq.read_metadata

    def read_table(source, *args, **kwargs):
        tables[Path(source).relative_to(root)] += 1
        return real_table(source, *args, **kwargs)

    def read_metadata(source, *args, **kwargs):
        footers[Path(source).relative_to(root)] += 1
        return real_metadata(source, *args, **kwargs)

    monkeypatch.setattr(pq, "read_table", read_table)
    monkeypatch.setattr(pq, "read_metadata", read_metadata)
    write_report(root, n_boot=100, seed=0)  # figures too: the ROC curves read predictions
    stored = {
        p.relative_to(root)
        for folder in ("records", "predictions")
        for p in (root / folder).glob("*.parquet")
    }
    assert {p for p in tables if p.parts[0] in ("records", "predictions")} == stored
    over = {str(p): n for p, n in tables.items() if n > 1}
    assert not over, f"read more than once: {over}"
    assert max(footers[p] for p in stored if p.parts[0] == "predictions") == 1
