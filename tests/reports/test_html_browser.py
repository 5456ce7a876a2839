"""report.html in a real browser (headless Chromium through its DevTools protocol).

Skipped, with the reason, where no Chromium is installed (`make test` installs Debian's
``chromium`` where apt is available) or websocket-client is missing.
"""

from __future__ import annotations

import re

import pytest

from chexbench.reports.report import write_report

pytest.importorskip("websocket", reason="websocket-client (dev extra) drives Chromium's DevTools protocol")
from headless_chromium import Browser, find_chromium  # noqa: E402

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no Chromium on this machine (Debian: apt-get install chromium; `make test` does it)",
)

ROWS = "Array.from(document.querySelectorAll('#leaderboard tbody tr')).filter(r => r.offsetParent !== null)"


def _column(header: list[str], name: str) -> int:
    return next(i for i, h in enumerate(header) if h.startswith(name))


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from synthetic_store import write_synthetic_results

    root = write_synthetic_results(
        tmp_path_factory.mktemp("html") / "results", fractions=(0.1, 1.0), seeds=(0,), n_patients=16
    )
    write_report(root, n_boot=100, seed=0, figures=True)
    return root / "report.html"


@pytest.fixture(scope="module")
def browser(page):
    with Browser() as b:
        b.open(page)
        yield b


def _choose(b: Browser, column: int, value: str) -> None:
    """Pick ``value`` in the filter of ``column`` as a user does (a change event)."""
    b.eval(
        f"(() => {{ const s = document.querySelector('select[data-filter-column=\"{column}\"]'); "
        f"s.value = '{value}'; s.dispatchEvent(new Event('change')); }})()"
    )


def _visible(b: Browser) -> list[list[str]]:
    return b.eval(f"{ROWS}.map(r => Array.from(r.cells).map(c => c.textContent))")


def _header(b: Browser) -> list[str]:
    return b.eval(
        "Array.from(document.querySelectorAll('#leaderboard thead th')).map(t => t.textContent.trim())"
    )


def test_page_renders_offline_without_console_errors(browser, page, tmp_path):
    assert browser.console_errors == []
    # the only request is the page itself: no script, font, style or image from anywhere else
    assert [u for u in browser.requests if not u.startswith(("file://", "data:"))] == []
    assert (
        browser.eval("document.querySelector('table').id") == "leaderboard"
    )  # the first table a reader meets
    assert browser.eval("document.querySelectorAll('img.figure').length") >= 4  # inline SVG figures
    assert browser.eval("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    shot = browser.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_leaderboard_number_is_report_md_s(browser, page):
    md = (page.parent / "report.md").read_text()
    header, rows = _header(browser), _visible(browser)
    assert len(rows) == 12  # 2 backbones × 3 strategies × 2 label fractions
    auroc = _column(header, "macro AUROC")
    for row in rows:
        assert re.match(r"0\.\d{3} \[0\.\d{3}, 0\.\d{3}\]", row[auroc]), row
        assert f"| {row[auroc]} |" in md, row[auroc]  # the same string in a leaderboard cell of report.md


def test_sorting_by_auroc_orders_the_rows_both_ways(browser):
    header = _header(browser)
    auroc = _column(header, "macro AUROC")
    button = f"document.querySelectorAll('#leaderboard thead th button')[{auroc}]"
    browser.eval(f"{button}.parentNode.click()")  # a click on the header cell (or on its button): best first
    values = [float(r[auroc].split()[0]) for r in _visible(browser)]
    assert values == sorted(values, reverse=True) and len(set(values)) > 1
    assert browser.eval(f"{button}.parentNode.getAttribute('aria-sort')") == "descending"
    browser.eval(f"{button}.focus()")  # the keyboard: Enter on the focused sort button sorts the other way
    browser.key("Enter", "Enter", 13)
    values = [float(r[auroc].split()[0]) for r in _visible(browser)]
    assert values == sorted(values)
    assert browser.eval(f"{button}.parentNode.getAttribute('aria-sort')") == "ascending"
    strategy = header.index("strategy")  # an axis sorts A→Z first
    browser.eval(f"document.querySelectorAll('#leaderboard thead th button')[{strategy}].click()")
    names = [r[strategy] for r in _visible(browser)]
    assert names == sorted(names) and len(set(names)) == 3


def test_a_filter_keeps_exactly_the_rows_of_that_value(browser):
    header = _header(browser)
    before = _visible(browser)
    col = header.index("backbone")
    _choose(browser, col, "vit_b16")
    after = _visible(browser)
    assert after == [r for r in before if r[col] == "vit_b16"] and len(after) == 6
    assert (
        browser.eval("document.querySelector('[data-count-for=leaderboard]').textContent")
        == "Showing 6 of 12 rows"
    )
    fraction = header.index("label fraction")
    _choose(browser, fraction, "0.1")
    assert _visible(browser) == [r for r in after if r[fraction] == "0.1"] and len(_visible(browser)) == 3
    browser.eval("document.querySelector('[data-reset-filters]').click()")
    assert len(_visible(browser)) == 12
    assert browser.console_errors == []
