"""Report figures as a reviewer reads them: vector copies, names in words, numbers that match the
tables, legends clear of the data, integer step axes."""

from __future__ import annotations

import re

import matplotlib
import pytest
from synthetic_store import write_synthetic_results

from chexbench.reports import plots
from chexbench.reports.aggregate import load_results
from chexbench.reports.leaderboard import build_tables
from chexbench.reports.names import config_label, display_name, fraction_words, row_label
from chexbench.reports.report import write_report

matplotlib.use("Agg", force=True)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """Every figure of a 2-seed, 2-fraction synthetic report, with the texts each figure drew."""
    root = write_synthetic_results(
        tmp_path_factory.mktemp("fig") / "results",
        fractions=(0.1, 1.0),
        seeds=(0, 1),
        n_patients=16,
        images_per_patient=2,
    )
    seen: dict[str, object] = {}
    original = plots.save_figure

    def keep(fig, path):
        fig.canvas.draw()
        seen[path.stem] = {
            "texts": [t.get_text() for t in fig.findobj(matplotlib.text.Text) if t.get_text()],
            "overlaps": [_legend_overlaps(ax) for ax in fig.axes if ax.get_legend() is not None],
            "xticks": [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes],
            "figure_legends": len(fig.legends),
            "axes_legends": sum(ax.get_legend() is not None for ax in fig.axes),
            "line_colors": [
                [
                    matplotlib.colors.to_hex(line.get_color())
                    for line in ax.get_lines()
                    if line.get_color() != "grey"
                ]
                for ax in fig.axes
            ],
            "rotated_numbers": [
                t.get_text()
                for t in fig.findobj(matplotlib.text.Text)
                if t.get_text().isdigit() and t.get_rotation()
            ],
            "bar_totals": [sum(p.get_height() for p in ax.patches) for ax in fig.axes],
            "axes_boxes": [ax.get_position().bounds for ax in fig.axes],
        }
        return original(fig, path)

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "save_figure", keep)
    write_report(root, n_boot=200, seed=0)
    mp.undo()
    results = load_results(root, n_boot=200, seed=0)
    return root, seen, build_tables(results)


def _legend_overlaps(ax) -> bool:
    return ax.get_legend().get_window_extent().overlaps(ax.get_window_extent())


def test_every_png_has_a_pdf_beside_it(rendered):
    root, _, _ = rendered
    pngs = sorted((root / "figures").glob("*.png"))
    assert len(pngs) == 5
    for png in pngs:
        pdf = png.with_suffix(".pdf")
        assert pdf.read_bytes()[:5] == b"%PDF-", pdf


def test_names_are_words_from_one_table():
    assert config_label("simclr", "resnet50", 0.1) == "SimCLR · ResNet-50 · 10% labels"
    assert fraction_words(0.005) == "0.5% labels" and fraction_words(1.0) == "100% labels"
    assert display_name("protocol", "finetune") == "fine-tuning"
    assert display_name("strategy", "not_installed_plugin") == "not_installed_plugin"
    # two configurations with the same axes stay apart by the keys that differ
    from types import SimpleNamespace

    row = SimpleNamespace(
        strategy="simclr",
        backbone="resnet50",
        label_fraction=0.1,
        configuration_label="simclr · strategy.temperature=0.2",
    )
    assert row_label(row) == "SimCLR · strategy.temperature=0.2 · ResNet-50 · 10% labels"
    assert row_label(row, backbone=False, fraction=False) == "SimCLR · strategy.temperature=0.2"


def test_forest_plot_prints_each_comparison_with_its_numbers(rendered):
    _, seen, tables = rendered
    texts = seen["forest_chexpert_finetune"]["texts"]
    lb = tables.leaderboard
    for r in lb[lb["strategy"] != "scratch"].itertuples():
        assert config_label(r.strategy, r.backbone, r.label_fraction) in texts
        assert any(
            t.startswith(f"{r.delta:+.3f} [{r.delta_ci_low:+.3f}, {r.delta_ci_high:+.3f}]") for t in texts
        ), r
    assert not any("resnet50" in t or "f=0.1" in t for t in texts)  # no internal strings


def test_roc_curves_pool_seeds_and_show_the_tables_auroc(rendered):
    _, seen, tables = rendered
    fig = seen["roc_chexpert_finetune"]
    assert any("mean over seeds; band: range across seeds" in t for t in fig["texts"])
    pl = tables.per_label
    top = pl[pl["label_fraction"] == pl["label_fraction"].max()]
    for r in top.itertuples():
        if r.label in tables.macro_labels["chexpert"]:
            assert f"{config_label(r.strategy, r.backbone)} (2 seeds)" in fig["texts"], (
                r
            )  # named once, in the legend
            assert f"{r.auroc:.3f}" in fig["texts"], r  # the panel's AUROC, in the configuration's colour
    # one legend for the figure, none repeated per panel (it took half the width)
    assert fig["figure_legends"] == 1 and fig["axes_legends"] == 0


def test_roc_curves_are_told_apart_by_colour(rendered):
    _, seen, _ = rendered
    panels = [c for c in seen["roc_chexpert_finetune"]["line_colors"] if c]
    assert len(panels) == 3
    for colors in (
        panels
    ):  # six configurations (2 backbones x 3 strategies): six colours, not three with two line styles
        assert len(colors) == 6 and len(set(colors)) == 6, colors
        assert set(colors) <= {c.lower() for c in plots._PALETTE}  # the colour-blind-safe palette


def test_a_reliability_diagram_per_configuration_with_bin_counts(rendered):
    _, seen, tables = rendered
    texts = seen["reliability_chexpert_finetune"]["texts"]
    lb = tables.leaderboard
    configs = lb[lb["label_fraction"] == 1.0]
    titles = [t for t in texts if "\nECE " in t]
    assert len(titles) == len(configs) == 6
    for r in configs.itertuples():
        assert any(t.startswith(config_label(r.strategy, r.backbone) + "\n") for t in titles)
    assert all(
        re.search(r"ECE \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", t) for t in titles
    )  # ECE with its interval
    fig = seen["reliability_chexpert_finetune"]
    assert not fig["rotated_numbers"]  # counts are a bar chart under each panel, not rotated text
    pairs = 16 * 2 * 3 * 2 * 0.9  # patients x images x labels x seeds, ~10% masked
    assert sum(1 for total in fig["bar_totals"] if total >= pairs * 0.9) == 6  # every panel's count bars
    columns = {round(box[0], 2) for box in fig["axes_boxes"]}
    assert len(columns) == 3  # a grid, not one tall column


def test_pretraining_curves_have_integer_step_and_epoch_axes(tmp_path):
    """A short run (4 steps, 2 epochs) would get ticks at 1.5, 2.5 … without an integer locator."""
    import pandas as pd

    pre = pd.DataFrame(
        {
            "run_id": "r1",
            "strategy": "simclr",
            "backbone": "resnet50",
            "epoch": [0, 0, 1, 1],
            "step": [1, 2, 3, 4],
            "loss": [5.0, 4.0, 3.5, 3.2],
            "probe_auroc": [float("nan"), 0.6, float("nan"), 0.7],
        }
    )
    seen = {}

    def keep(fig, path):
        fig.canvas.draw()
        seen["xticks"] = [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes]

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "save_figure", keep)
    plots.pretrain_curves(pre, tmp_path / "pretrain.png")
    mp.undo()
    assert len(seen["xticks"]) == 2
    for ticks in seen["xticks"]:
        shown = [t.replace("−", "-") for t in ticks if t]
        assert shown and all(t.lstrip("-").isdigit() for t in shown), ticks


def test_a_probe_with_one_point_gets_one_tick(tmp_path):
    """One probe at the end of epoch 1: the axis shows "1", not 0.945 … 1.050."""
    import pandas as pd

    pre = pd.DataFrame(
        {
            "run_id": "r1",
            "strategy": "simclr",
            "backbone": "resnet50",
            "epoch": [0, 0, 0],
            "step": [0, 5, 10],
            "loss": [5.0, 4.0, 3.5],
            "probe_auroc": [float("nan"), float("nan"), 0.62],
        }
    )
    seen = {}

    def keep(fig, path):
        fig.canvas.draw()
        seen["xticks"] = [[t.get_text() for t in ax.get_xticklabels() if t.get_text()] for ax in fig.axes]

    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "save_figure", keep)
    plots.pretrain_curves(pre, tmp_path / "pretrain.png")
    mp.undo()
    assert seen["xticks"][1] == ["1"]


def test_one_seed_is_flagged_on_the_forest_plot(tmp_path):
    root = write_synthetic_results(tmp_path / "results", seeds=(0,), n_patients=10)
    results = load_results(root, n_boot=100, seed=0)
    tables = build_tables(results)
    seen = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(
        plots,
        "save_figure",
        lambda fig, path: seen.setdefault("texts", [t.get_text() for t in fig.findobj(matplotlib.text.Text)]),
    )
    plots.forest_plot(tables, "chexpert", "finetune", tmp_path / "forest.png")
    mp.undo()
    assert sum("1 seed" in t for t in seen["texts"]) == 4  # every comparison of the 1-seed folder


def test_no_two_pretraining_runs_look_alike(tmp_path):
    # same method on two backbones, and two runs of one method × backbone (another pretraining seed)
    import pandas as pd

    rows = []
    for run, strategy, backbone in (
        ("a1", "simclr", "resnet50"),
        ("a2", "simclr", "vit_b16"),
        ("a3", "simclr", "resnet50"),
        ("b1", "mocov2", "resnet50"),
        ("b2", "mocov2", "vit_b16"),
    ):
        rows += [
            {
                "run_id": run,
                "strategy": strategy,
                "backbone": backbone,
                "epoch": e,
                "step": e + 1,
                "loss": 5.0 - e,
                "probe_auroc": 0.6 + 0.01 * e,
            }
            for e in range(4)
        ]
    seen = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(plots, "save_figure", lambda fig, path: seen.setdefault("axes", fig.axes))
    plots.pretrain_curves(pd.DataFrame(rows), tmp_path / "pretrain.png")
    mp.undo()
    for ax in seen["axes"]:
        looks = [
            (str(line.get_color()), line.get_linestyle(), str(line.get_marker())) for line in ax.get_lines()
        ]
        assert len(looks) == 5 and len(set(looks)) == 5, looks
        colors = {line.get_label(): str(line.get_color()) for line in ax.get_lines()}
        simclr = [c for name, c in colors.items() if name.startswith("SimCLR")]
        assert len(simclr) == 3 and len(set(simclr)) == 1  # the method keeps its colour across backbones


def test_pretraining_figure_shows_the_collapse_monitors_and_marks_collapsed_epochs(tmp_path):
    import pandas as pd

    rows = []
    for run, strategy, ratios, entropy in (
        ("h", "dino", [0.5, 0.4, 0.45], [2.0, 2.1, 2.2]),
        ("c", "dino", [0.2, 0.004, 0.0], [1.0, 0.05, 0.0]),
        ("s", "simclr", [0.3, 0.3, 0.3], [float("nan")] * 3),
    ):
        rows += [
            {
                "run_id": run,
                "strategy": strategy,
                "backbone": "vit_tiny",
                "epoch": e,
                "step": e + 1,
                "loss": 3.0 - e,
                "probe_auroc": float("nan"),
                "embed_std_ratio": r,
                "embed_rank": 5.0 - e,
                "feature_std_ratio": 0.2,
                "feature_rank": 9.0,
                "teacher_entropy": h,
                "collapsed": r < 0.01,
            }
            for e, (r, h) in enumerate(zip(ratios, entropy, strict=True))
        ]
    seen = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(
        plots,
        "save_figure",
        lambda fig, path: seen.setdefault("axes", [a for a in fig.axes if a.get_visible()]),
    )
    plots.pretrain_curves(pd.DataFrame(rows), tmp_path / "pretrain.png")
    mp.undo()
    titles = [ax.get_title() for ax in seen["axes"]]
    assert titles == [
        "Self-supervised pretraining loss",
        "Embedding spread (collapse → 0)",
        "Embedding effective rank",
        "DINO teacher entropy",
    ]
    spread = seen["axes"][1]
    crosses = [line for line in spread.get_lines() if line.get_marker() == "x"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [2, 3]  # run "c", epochs 2 and 3 (1-based)
    curves = [
        line for line in seen["axes"][3].get_lines() if len(line.get_xdata()) and line.get_marker() != "x"
    ]
    assert len(curves) == 2  # the two DINO runs only
