"""report.html from the same sections as report.md (no browser: tests/reports/test_html_browser.py opens
it)."""

from __future__ import annotations

import base64
import json
import re
import zlib
from html.parser import HTMLParser

import numpy as np
import pytest
from synthetic_store import _predictions, _record, _truth

from chexbench.bench.store import ResultStore
from chexbench.reports.aggregate import load_results
from chexbench.reports.crosscheck import delong_crosscheck
from chexbench.reports.html import LEADERBOARD_ID, leaderboard_rows, render_html
from chexbench.reports.leaderboard import build_tables
from chexbench.reports.report import join_sections, report_sections, write_report


class _Tables(HTMLParser):
    """Every table of a page: id → rows of cell texts; and every URL the page would load."""

    def __init__(self):
        super().__init__()
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.urls: list[str] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("id") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        for key in ("src", "href"):
            if key in a:
                self.urls.append(a[key])

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _swept_results(root):
    """Two strategies × a swept ``strategy.temperature`` (a split key) × two backbones, two seeds."""
    store = ResultStore(root)
    truth = _truth(24, 2)
    n = 0
    for backbone in ("resnet50", "vit_b16"):
        for strategy, temps in (("scratch", [None]), ("simclr", [0.1, 0.5])):
            for temp in temps:
                for seed in (0, 1):
                    n += 1
                    rec = _record(f"c{n:011d}", strategy, backbone, "chexpert", "finetune", 1.0, seed)
                    config = json.loads(rec["config_json"])
                    if temp is not None:
                        config["strategy_options"] = {"temperature": temp}
                    rec["config_json"] = json.dumps(config, sort_keys=True)
                    strength = 0.6 if strategy == "scratch" else 0.8 + temp
                    store.write(
                        rec,
                        _predictions(
                            truth, np.random.default_rng(zlib.crc32(rec["cell_id"].encode())), strength
                        ),
                    )
    return root


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    root = _swept_results(tmp_path_factory.mktemp("swept") / "results")
    write_report(root, n_boot=200, seed=0, figures=False)
    return root


def test_report_html_is_written_beside_report_md_and_loads_nothing(swept):
    page = (swept / "report.html").read_text()
    parser = _Tables()
    parser.feed(page)
    assert [u for u in parser.urls if not u.startswith(("#", "data:"))] == []  # no file, no network
    assert "<script src" not in page and "<link" not in page
    md = (swept / "report.md").read_text()
    for heading in re.findall(r"^## (.+)$", md, flags=re.M):  # every section of report.md is on the page
        assert f">{heading.replace('`', '')}<" in re.sub(r"</?code>", "", page), heading


def test_leaderboard_rows_show_report_md_s_strings_and_the_swept_key(swept):
    page = (swept / "report.html").read_text()
    md = (swept / "report.md").read_text()
    parser = _Tables()
    parser.feed(page)
    ((header, *rows),) = [t for i, t in parser.tables if i == LEADERBOARD_ID]
    assert "strategy.temperature" in header  # a swept axis is a column, and a filter
    assert f'data-filter-column="{header.index("strategy.temperature")}"' in page
    assert len(rows) == 2 * 3  # backbones × (scratch, simclr at two temperatures): never pooled
    auroc = header.index("macro AUROC [95% CI]")
    temperature = header.index("strategy.temperature")
    assert sorted({r[temperature] for r in rows}) == ["0.1", "0.5", "default"]
    for r in rows:
        assert re.match(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", r[auroc])
        assert f" {r[auroc]} |" in md  # the very string report.md shows
    delta = header.index("Δ vs scratch [95% CI]")
    for r in rows:
        if r[header.index("strategy")] != "scratch":
            assert f"| {r[delta]} |" in md  # the paired comparison's Δ, as in report.md


def test_a_section_another_module_adds_appears_on_the_page_without_html_work(swept):
    results = load_results(swept, n_boot=200, seed=0)
    tables = build_tables(results)
    sections = report_sections(results, tables, cross=delong_crosscheck(results, tables))
    added = "## Collapse monitors\n\nEmbedding std per epoch.\n\n| run | std |\n|---|---|\n| `r1` | 0.123 |\n"
    page = render_html([*sections, added], tables)
    assert '<h2 id="collapse-monitors">Collapse monitors</h2>' in page
    assert "<td><code>r1</code></td>\n<td>0.123</td>" in page
    assert (
        join_sections(sections) == (swept / "report.md").read_text()
    )  # report.md is the join of the same sections


def test_figures_are_inline_svg_beside_their_png_and_pdf(swept, tmp_path):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from chexbench.reports.html import figure_svgs
    from chexbench.reports.plots import save_figure

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, 1], label="chance")
    save_figure(fig, tmp_path / "roc_x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc_x.pdf", "roc_x.png", "roc_x.svg"]
    results = load_results(swept, n_boot=200, seed=0)
    tables = build_tables(results)
    figures = "## Figures\n\n**ROC**\n\n![ROC curves](figures/roc_x.png)\n\n![gone](figures/other.png)\n"
    page = render_html(["# report\n", figures], tables, figure_svgs(tmp_path))
    svg = re.search(r'<img class="figure" src="data:image/svg\+xml;base64,([^"]+)" alt="ROC curves" />', page)
    assert svg and base64.b64decode(svg.group(1)) == (tmp_path / "roc_x.svg").read_bytes()
    assert b"<svg" in (tmp_path / "roc_x.svg").read_bytes()
    assert "[figure not embedded: figures/other.png]" in page  # never a link to a file beside the page


def test_no_html_writes_none_and_the_leaderboard_of_an_empty_folder_is_empty(tmp_path):
    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(tmp_path / "results", fractions=(1.0,), seeds=(0,), n_patients=12)
    write_report(root, n_boot=100, seed=0, figures=False, html=False)
    assert (root / "report.md").exists() and not (root / "report.html").exists()
    header, rows = leaderboard_rows(build_tables(load_results(root, n_boot=100, seed=0)))
    assert len(rows) == 6 and header[:5] == ["dataset", "protocol", "label fraction", "backbone", "strategy"]


def test_report_cli_format_html_writes_the_page_and_no_html_contradicts_it(tmp_path):
    from synthetic_store import write_synthetic_results
    from typer.testing import CliRunner

    from chexbench.cli import app

    root = write_synthetic_results(tmp_path / "results", fractions=(1.0,), seeds=(0,), n_patients=12)
    res = CliRunner().invoke(
        app,
        ["report", "--results", str(root), "--bootstrap", "100", "--no-figures", "--format", "html"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 0, res.output
    assert str(root / "report.html") in res.output and (root / "report.html").read_text().startswith(
        "<!DOCTYPE html>"
    )
    assert not (root / "tables").exists()  # html is the page, not a manuscript table
    res = CliRunner().invoke(app, ["report", "--results", str(root), "--format", "html", "--no-html"])
    assert res.exit_code != 0 and "--format html and --no-html contradict" in res.output
