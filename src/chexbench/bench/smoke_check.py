"""``python -m chexbench.bench.smoke_check DIR``: check that a smoke run produced a sane report.

Used by ``make test`` after the smoke grid: the report exists and names every strategy
that ran, the store holds exactly one record per cell with no failures, and fine-tuning
on phantoms learned something (macro AUROC well above chance).
"""

from __future__ import annotations

import sys
from pathlib import Path

from chexbench.bench.store import ResultStore

MIN_FINETUNE_AUROC = 0.65


def check(results: Path) -> list[str]:
    problems = []
    report = results / "report.md"
    if not report.is_file():
        return [f"{report} was not written"]
    text = report.read_text()
    recs = ResultStore(results).records()
    if recs.empty:
        return ["no records in the store"]
    if recs["cell_id"].duplicated().any():
        problems.append("duplicate records for one cell")
    failed = recs[recs["status"] != "ok"]
    for _, r in failed.iterrows():
        problems.append(f"cell {r['cell_id']} failed: {r['failure_reason']}")
    for strategy in sorted(set(recs["strategy"])):
        if strategy not in text:
            problems.append(f"strategy {strategy} does not appear in report.md")
    ft = recs[(recs["protocol"] == "finetune") & (recs["status"] == "ok")]
    if ft.empty:
        problems.append("no finished finetune cell")
    else:
        best = ft["macro_auroc"].max()
        if not best >= MIN_FINETUNE_AUROC:
            problems.append(f"best finetune macro AUROC {best:.3f} < {MIN_FINETUNE_AUROC}: the pipeline learned nothing")
    return problems


def main() -> None:
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "chexbench-results")
    problems = check(results)
    if problems:
        for p in problems:
            print(f"smoke check: {p}", file=sys.stderr)
        sys.exit(1)
    n = len(ResultStore(results).records())
    print(f"smoke check: ok ({n} cells, report at {results / 'report.md'})")


if __name__ == "__main__":
    main()
