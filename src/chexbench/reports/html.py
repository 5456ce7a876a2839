"""report.html: the report's sections as one self-contained page that sorts and filters.

One source for both files: the page is rendered from the very Markdown sections that make
report.md (``report.report_sections``), so every number, mark and note is the same string in
both, and a section another module adds to the report appears here with no HTML work. Two
things are the page's own, and both reuse the Markdown's formatting functions on the same
table rows:

- an interactive leaderboard, one row per configuration (dataset, protocol, label fraction,
  backbone, strategy and every key that tells configurations apart as columns), each a
  ``<select>`` filter; macro AUROC with its interval and Holm mark (``leaderboard_cell``), Δ vs
  the baseline (``fmt_delta``) and its Holm-corrected p (``fmt_p``);
- figures inline as SVG (``figures/*.svg``, written beside each PNG), as ``data:`` images, so
  the page needs no other file and no network.

Every table gets keyboard-operable sort buttons in its header (``aria-sort`` says the order; a
leaderboard metric sorts best-first on its first click, every other column A→Z / low→high);
long tables get a text filter. No framework, no build step, no CDN: the script below is the
whole of it, and without script the page is a plain, complete report. Printing shows every row.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence

from markdown_it import MarkdownIt

from chexbench.reports.leaderboard import Tables
from chexbench.reports.markdown import fmt_delta, fmt_fraction, fmt_p, key_columns, leaderboard_cell

#: the id of the interactive leaderboard (the browser test and the script find it by it)
LEADERBOARD_ID = "leaderboard"
#: a table with more rows than this gets a text filter above it
FILTER_MIN_ROWS = 8

_AXIS_COLUMNS = (
    ("dataset", "dataset"),
    ("protocol", "protocol"),
    ("label_fraction", "label fraction"),
    ("backbone", "backbone"),
    ("strategy", "strategy"),
)


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 2
    while slug in used:
        slug, n = f"{base}-{n}", n + 1
    used.add(slug)
    return slug


def leaderboard_rows(t: Tables) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The interactive leaderboard: (header, rows of (shown text, sort value)).

    The shown text of each number is made by the same function as report.md's cell for it."""
    lb = t.leaderboard
    keys = key_columns(t)
    header = (
        [name for _, name in _AXIS_COLUMNS]
        + keys
        + ["macro AUROC [95% CI]", "seeds", f"Δ vs {t.baseline} [95% CI]", "p Holm"]
    )
    if lb.empty:
        return header, []
    rows = []
    order = ["dataset", "protocol", "label_fraction", "backbone", "strategy", *keys]
    for _, r in lb.sort_values(order, kind="stable").iterrows():
        cells = [
            (str(r["dataset"]), ""),
            (str(r["protocol"]), ""),
            (fmt_fraction(r["label_fraction"]), repr(float(r["label_fraction"]))),
            (str(r["backbone"]), ""),
            (str(r["strategy"]), ""),
        ]
        cells += [(str(r[k]), "") for k in keys]
        auroc = float(r["macro_auroc"])
        cells.append((leaderboard_cell(r), repr(auroc) if math.isfinite(auroc) else ""))
        cells.append((str(int(r["n_seeds"])), str(int(r["n_seeds"]))))
        if r["strategy"] == t.baseline:
            cells += [("baseline", ""), ("—", "")]
        else:
            delta = float(r["delta"])
            shown = (
                fmt_delta(delta, r["delta_ci_low"], r["delta_ci_high"])
                if math.isfinite(delta)
                else f"n/a ({r.get('delta_note', '')})"
            )
            p = float(r["p_holm"])
            cells += [
                (shown, repr(delta) if math.isfinite(delta) else ""),
                (fmt_p(p), repr(p) if math.isfinite(p) else ""),
            ]
        rows.append(cells)
    return header, rows


def _leaderboard_html(t: Tables) -> str:
    header, rows = leaderboard_rows(t)
    if not rows:
        return ""
    n_filters = len(_AXIS_COLUMNS) + len(key_columns(t))
    filters = []
    for i in range(n_filters):
        values = sorted({r[i][0] for r in rows}, key=lambda v: (_numbers_first(v), v))
        options = "".join(f'<option value="{html.escape(v)}">{html.escape(v)}</option>' for v in values)
        filters.append(
            f'<label>{html.escape(header[i])} <select data-filter-column="{i}">'
            f'<option value="">all ({len(values)})</option>{options}</select></label>'
        )
    metrics = set(header[n_filters:])  # a metric sorts best-first on its first click, an axis A→Z
    first = ' data-sort-first="descending"'
    head = "".join(f'<th scope="col"{first if h in metrics else ""}>{html.escape(h)}</th>' for h in header)
    body = []
    for r in rows:
        tds = "".join(
            (
                f'<td data-value="{html.escape(v)}">{html.escape(text)}</td>'
                if v
                else f"<td>{html.escape(text)}</td>"
            )
            for text, v in r
        )
        body.append(f"<tr>{tds}</tr>")
    return (
        '<section id="all-configurations" aria-labelledby="all-configurations-h">\n'
        '<h2 id="all-configurations-h">Leaderboard: every configuration</h2>\n'
        "<p>One row per configuration (seeds pooled). The numbers are those of the leaderboards and paired "
        "comparisons below, and of report.md. Filter by any column; sort with the column buttons (a metric"
        " sorts best first).</p>\n"
        f'<div class="controls" role="group" aria-label="filters">{"".join(filters)}'
        '<button type="button" data-reset-filters>show all</button></div>\n'
        f'<p class="count" aria-live="polite" data-count-for="{LEADERBOARD_ID}"></p>\n'
        f'<div class="table-wrap"><table id="{LEADERBOARD_ID}" class="data'
        f' leaderboard">\n<thead><tr>{head}</tr></thead>\n'
        f"<tbody>\n{chr(10).join(body)}\n</tbody></table></div>\n</section>\n"
    )


def _numbers_first(v: str) -> float:
    """Numeric values first in numeric order (label fractions), then text."""
    try:
        return float(v)
    except ValueError:
        return math.inf


def _markdown() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False}).enable("table")


def _section_html(
    md: MarkdownIt, text: str, figures: Mapping[str, bytes], used: set[str]
) -> tuple[str, str, str]:
    """(slug, title, HTML) of one Markdown section; headings get ids, images become inline SVG."""
    tokens = md.parse(text)
    title = ""
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            inline = tokens[i + 1].content
            tok.attrSet("id", _slug(inline, used))
            if not title and tok.tag in ("h1", "h2"):
                title = inline.replace("`", "")
    rendered = md.renderer.render(tokens, md.options, {})
    rendered = re.sub(
        r'<img src="([^"]*)" alt="([^"]*)" />',
        lambda m: _figure(html.unescape(m.group(1)), m.group(2), figures),
        rendered,
    )
    rendered = rendered.replace("<table>", '<div class="table-wrap"><table class="data">').replace(
        "</table>", "</table></div>"
    )
    return _slug(title or "section", used), title, rendered


def _figure(src: str, alt: str, figures: Mapping[str, bytes]) -> str:
    """A figure as an inline SVG ``data:`` image (no other file, no network); its name where there is no
    SVG."""
    svg = figures.get(src.rsplit("/", 1)[-1].rsplit(".", 1)[0])
    if svg is None:
        return f'<span class="missing-figure">[figure not embedded: {html.escape(src)}]</span>'
    data = base64.b64encode(svg).decode("ascii")
    return f'<img class="figure" src="data:image/svg+xml;base64,{data}" alt="{alt}" />'


def render_html(
    sections: Sequence[str],
    tables: Tables,
    figures: Mapping[str, bytes] | None = None,
    title: str = "chexbench report",
) -> str:
    """The whole page from report.md's ``sections`` (Markdown strings, the first the intro) and the
    tables they were made from; ``figures``: figure stem → SVG bytes."""
    md = _markdown()
    figures = figures or {}
    used: set[str] = {"all-configurations", "all-configurations-h"}
    parts, toc = [], []
    leaderboard = _leaderboard_html(tables)
    for i, text in enumerate(sections):
        slug, heading, body = _section_html(md, text, figures, used)
        if leaderboard and i == 1:  # first after the intro: the table a reader filters and sorts
            toc.append('<li><a href="#all-configurations">Leaderboard: every configuration</a></li>')
            parts.append(leaderboard)
        if i > 0 and heading:
            toc.append(f'<li><a href="#{slug}">{html.escape(heading)}</a></li>')
        parts.append(
            f'<section id="{slug}">\n{body}</section>\n'
            if i > 0
            else f'<header id="{slug}">\n{body}</header>\n'
        )
    if leaderboard and len(sections) < 2:
        parts.append(leaderboard)
    nav = f'<nav aria-label="contents"><h2 class="toc">Contents</h2><ol>{"".join(toc)}</ol></nav>\n'
    head = parts[0] if parts else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{head}{nav}{''.join(parts[1:])}</main>\n<script>{_JS}</script>\n</body>\n</html>\n"
    )


def figure_svgs(folder) -> dict[str, bytes]:
    """``{stem: SVG bytes}`` of the figures in ``folder`` (empty when there is none)."""
    return (
        {p.stem: p.read_bytes() for p in sorted(folder.glob("*.svg"))}
        if folder is not None and folder.is_dir()
        else {}
    )


_CSS = """
:root {
  color-scheme: light;
  --fg: #1b1b1b;
  --bg: #fff;
  --muted: #4a4a4a;
  --line: #c8c8c8;
  --head: #eef1f4;
  --focus: #0b57d0;
}
* { box-sizing: border-box; }
body {
  margin: 0;
  color: var(--fg);
  background: var(--bg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
}
main { max-width: 1200px; margin: 0 auto; padding: 1rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05rem; }
code {
  font: 0.92em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: #f3f3f3;
  padding: 0 .2em;
  border-radius: 3px;
}
a { color: #0b4fa8; }
a:focus, button:focus, select:focus, input:focus { outline: 3px solid var(--focus); outline-offset: 1px; }
nav ol { columns: 2; margin: 0; } nav .toc { border: 0; margin-top: 1rem; }
.table-wrap { overflow-x: auto; margin: .6rem 0 1rem; }
table.data { border-collapse: collapse; font-size: 13.5px; }
table.data th, table.data td {
  border: 1px solid var(--line);
  padding: .25rem .5rem;
  text-align: left;
  vertical-align: top;
}
table.data thead th { background: var(--head); position: sticky; top: 0; }
table.data tbody tr:nth-child(even) { background: #f8f9fa; }
th button.sort {
  font: inherit;
  font-weight: 600;
  color: inherit;
  background: none;
  border: 0;
  padding: 0;
  cursor: pointer;
  text-align: left;
}
th button.sort::after { content: " \\2195"; color: var(--muted); }
th[aria-sort="ascending"] button.sort::after { content: " \\25B2"; color: var(--fg); }
th[aria-sort="descending"] button.sort::after { content: " \\25BC"; color: var(--fg); }
.controls { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: center; margin: .5rem 0; }
.controls select, .controls input, .controls button { font: inherit; padding: .15rem .3rem; }
.count { color: var(--muted); margin: .2rem 0; }
tr.filtered-out { display: none; }
img.figure { max-width: 100%; height: auto; display: block; margin: .5rem 0 1.5rem; }
.missing-figure { color: var(--muted); }
@media print {
  nav, .controls, .count, .row-filter { display: none !important; }
  tr.filtered-out { display: table-row !important; }
  main { max-width: none; padding: 0; } body { font-size: 11pt; }
  table.data { font-size: 9pt; } table.data thead th { position: static; }
  th button.sort::after { content: ""; }
  section, figure, img.figure { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""

_JS = r"""
(function () {
  "use strict";
  var NUMBER = /^[+\-\u2212]?(\d+\.?\d*|\.\d+)(e[+\-]?\d+)?/i;
  function sortValue(td) {
    if (!td) return null;
    var v = td.getAttribute("data-value");
    if (v !== null) return v === "" ? null : parseFloat(v);
    var text = td.textContent.trim();
    var m = text.replace(/^<\s*/, "").match(NUMBER);
    if (m) return parseFloat(m[0].replace("\u2212", "-"));
    if (text === "" || text === "\u2014" || text.indexOf("n/a") === 0) return null;
    return text.toLowerCase();
  }
  function compare(a, b) {
    if (a === null && b === null) return 0;
    if (a === null) return 1;  // n/a and empty sort last in both directions
    if (b === null) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b));
  }
  function sortBy(table, column, th) {
    var body = table.tBodies[0];
    var current = th.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : th.getAttribute("data-sort-first") !== "descending";
    var rows = Array.prototype.slice.call(body.rows).map(function (row, i) {
      return { row: row, i: i, v: sortValue(row.cells[column]) };
    });
    rows.sort(function (x, y) {
      if (x.v === null || y.v === null) return compare(x.v, y.v) || x.i - y.i;
      var c = compare(x.v, y.v);
      return (ascending ? c : -c) || x.i - y.i;
    });
    rows.forEach(function (r) { body.appendChild(r.row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (cell) {
      cell.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  function makeSortable(table) {
    if (!table.tHead || !table.tBodies.length) return;
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, column) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "sort";
      button.setAttribute("data-sort-column", th.textContent.trim());
      while (th.firstChild) button.appendChild(th.firstChild);
      th.appendChild(button);
      // the button's clicks (and Enter) bubble here
      th.addEventListener("click", function () { sortBy(table, column, th); });
    });
  }
  function updateCount(table) {
    var out = document.querySelector('[data-count-for="' + table.id + '"]');
    if (!out) return;
    var rows = table.tBodies[0].rows, shown = 0;
    for (var i = 0; i < rows.length; i++) if (!rows[i].classList.contains("filtered-out")) shown++;
    out.textContent = "Showing " + shown + " of " + rows.length + " rows";
  }
  function applyFilters(table, selects) {
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var keep = selects.every(function (s) {
        var col = parseInt(s.getAttribute("data-filter-column"), 10);
        return s.value === "" || row.cells[col].textContent === s.value;
      });
      row.classList.toggle("filtered-out", !keep);
    });
    updateCount(table);
  }
  function addTextFilter(table, n) {
    var label = document.createElement("label");
    label.className = "row-filter controls";
    var input = document.createElement("input");
    input.type = "search";
    input.placeholder = "filter " + n + " rows";
    label.appendChild(document.createTextNode("Filter rows "));
    label.appendChild(input);
    var wrap = table.parentNode;
    wrap.parentNode.insertBefore(label, wrap);
    input.addEventListener("input", function () {
      var q = input.value.trim().toLowerCase();
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
        row.classList.toggle("filtered-out", q !== "" && row.textContent.toLowerCase().indexOf(q) < 0);
      });
    });
  }
  var tables = document.querySelectorAll("table.data");
  Array.prototype.forEach.call(tables, function (table) {
    makeSortable(table);
    if (table.id !== "__LEADERBOARD__" && table.tBodies.length
        && table.tBodies[0].rows.length > __FILTER_MIN_ROWS__) {
      addTextFilter(table, table.tBodies[0].rows.length);
    }
  });
  var board = document.getElementById("__LEADERBOARD__");
  if (board) {
    var section = board.closest("section");
    var selects = Array.prototype.slice.call(section.querySelectorAll("select[data-filter-column]"));
    selects.forEach(function (s) {
      s.addEventListener("change", function () { applyFilters(board, selects); });
    });
    var reset = section.querySelector("[data-reset-filters]");
    if (reset) reset.addEventListener("click", function () {
      selects.forEach(function (s) { s.value = ""; });
      applyFilters(board, selects);
    });
    updateCount(board);
  }
})();
""".replace("__LEADERBOARD__", LEADERBOARD_ID).replace("__FILTER_MIN_ROWS__", str(FILTER_MIN_ROWS))
