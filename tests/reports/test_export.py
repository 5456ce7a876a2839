"""`chexbench report --format latex|markdown|csv`: manuscript tables with intervals and marks."""

from __future__ import annotations

import pandas as pd
import pytest
from synthetic_store import write_synthetic_results
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.reports.export import latex_escape

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    # 5 seeds: with 2 the between-seed variance is estimated on 1 df (t₁ = 12.7) and nothing here is
    # significant
    root = write_synthetic_results(
        tmp_path_factory.mktemp("tab") / "results", seeds=(0, 1, 2, 3, 4), n_patients=40
    )
    result = runner.invoke(
        app,
        [
            "report",
            "--results",
            str(root),
            "--bootstrap",
            "200",
            "--no-figures",
            "--format",
            "latex",
            "--format",
            "markdown",
            "--format",
            "csv",
        ],
    )
    assert result.exit_code == 0, result.output
    return root, pd.read_parquet(root / "leaderboard.parquet")


def test_every_format_is_written_and_named(exported):
    root, _ = exported
    for kind in ("leaderboard", "paired"):
        for ext in ("tex", "md", "csv"):
            assert (root / "tables" / f"{kind}.{ext}").stat().st_size > 0


def test_csv_numbers_are_the_leaderboards(exported):
    root, lb = exported
    csv = pd.read_csv(root / "tables" / "leaderboard.csv")
    assert len(csv) == len(lb)
    merged = csv.merge(lb, on=["macro_auroc"], suffixes=("", "_lb"))
    assert len(merged) == len(lb)
    assert (merged["macro_auroc_ci_low"] == merged["macro_auroc_ci_low_lb"]).all()
    paired = pd.read_csv(root / "tables" / "paired.csv")
    assert sorted(paired["delta"].round(12)) == sorted(lb.loc[lb["strategy"] != "scratch", "delta"].round(12))


def test_significance_marks_follow_the_holm_p(exported):
    root, lb = exported
    md = (root / "tables" / "paired.md").read_text()
    tex = (root / "tables" / "paired.tex").read_text()
    comp = lb[lb["strategy"] != "scratch"]
    n_sig = int((comp["p_holm"] < 0.05).sum())
    assert n_sig >= 1  # the synthetic SimCLR is clearly better with 40 patients
    assert md.count("↑") + md.count("↓") == n_sig + 2  # + "↑/↓" in the caption
    assert tex.count("$\\uparrow$") + tex.count("$\\downarrow$") == n_sig + 2
    for r in comp.itertuples():
        line = next(
            ln
            for ln in md.splitlines()
            if ln.startswith(
                f"| CheXpert | fine-tuning | 100% | {'ResNet-50' if r.backbone == 'resnet50' else 'ViT-B/16'}"
                f" | {'SimCLR' if r.strategy == 'simclr' else 'MoCo-v2'} |"
            )
        )
        assert f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]" in line
        assert ("↑" in line or "↓" in line) == (r.p_holm < 0.05)
        assert latex_escape(f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]") in tex


def test_latex_is_a_booktabs_table_with_specials_escaped(exported):
    root, _ = exported
    tex = (root / "tables" / "leaderboard.tex").read_text()
    assert (
        tex.startswith("\\begin{table}")
        and "\\toprule" in tex
        and "\\bottomrule" in tex
        and "\\end{table}" in tex
    )
    assert "95\\% CI" in tex and "\\label{tab:chexbench-leaderboard}" in tex
    assert latex_escape("a_b & 10% −0.1 -0.047 $\\uparrow$") == "a\\_b \\& 10\\% $-$0.1 $-$0.047 $\\uparrow$"


def test_unknown_format_is_one_line_and_writes_nothing(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0,), n_patients=8)
    result = runner.invoke(app, ["report", "--results", str(root), "--format", "tex"])
    assert result.exit_code == 2 and "--format 'tex': choose from latex, markdown, csv" in result.output
    assert not (root / "report.md").exists() and not (root / "tables").exists()
