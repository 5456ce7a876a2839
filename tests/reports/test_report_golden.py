"""Golden-file test of report.md for a small fixed result set (figures rendered too).

Regenerate after an intended change with ``CHEXBENCH_UPDATE_GOLDEN=1 pytest
tests/reports/test_report_golden.py``
and read the diff before committing it.
"""

from __future__ import annotations

import os
from pathlib import Path

from synthetic_store import write_synthetic_results

from chexbench.reports.report import write_report

GOLDEN = Path(__file__).parent / "golden" / "report_small.md"


def test_report_markdown_matches_golden(tmp_path):
    root = write_synthetic_results(
        tmp_path / "results", fractions=(0.1, 1.0), seeds=(0, 1), n_patients=16, images_per_patient=2
    )
    text = write_report(root, n_boot=200, seed=0).read_text()
    for png in (
        "forest_chexpert_finetune",
        "fraction_chexpert_finetune",
        "roc_chexpert_finetune",
        "reliability_chexpert_finetune",
        "pretrain_loss",
    ):
        assert (root / "figures" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (root / "figures" / f"{png}.pdf").read_bytes()[:5] == b"%PDF-"  # vector copy for a manuscript
    if os.environ.get("CHEXBENCH_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text(), (
        "report.md changed; if intended, regenerate the golden file (see module docstring)"
    )


def test_report_is_deterministic(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0,), n_patients=10)
    first = write_report(root, n_boot=100, seed=3, figures=False).read_text()
    second = write_report(root, n_boot=100, seed=3, figures=False).read_text()
    assert first == second
