"""The smoke check of ``make test``: every layout of the smoke grid ran, is in the report, and learned."""

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
from smoke_check import MIN_FINETUNE_AUROC, check, smoke_datasets

from chexbench.bench.record import RECORD_SCHEMA
from chexbench.bench.store import ResultStore

DATASETS = ["phantom-chexpert", "phantom-indiana", "phantom-nih"]


def _store(root, cells):
    store = ResultStore(root)
    for k, (dataset, protocol, auroc) in enumerate(cells):
        rec = {f.name: "" if pa.types.is_large_string(f.type) else 0 for f in RECORD_SCHEMA}  # typed blanks
        rec.update(
            cell_id=f"c{k:03d}",
            strategy="scratch",
            backbone="resnet_tiny",
            dataset=dataset,
            protocol=protocol,
            label_fraction=1.0,
            seed=0,
            status="ok",
            macro_auroc=auroc,
        )
        preds = pd.DataFrame(
            {
                "image_id": ["a", "b"],
                "patient_id": ["p", "q"],
                "label": "edema",
                "y_true": [1.0, 0.0],
                "y_score": [0.9, 0.1],
                "split": "test",
            }
        )
        store.write(rec, preds)
    (root / "report.md").write_text("# report\nscratch " + " ".join(sorted({d for d, _, _ in cells})) + "\n")
    return root


def test_the_smoke_grid_evaluates_the_three_layouts():
    assert smoke_datasets() == DATASETS
    assert set(MIN_FINETUNE_AUROC) == set(DATASETS)


def test_a_sane_run_passes_and_each_missing_or_unlearned_dataset_is_named(tmp_path):
    good = [(d, p, 0.8) for d in DATASETS for p in ("finetune", "linear")]
    assert check(_store(tmp_path / "good", good), DATASETS) == []
    missing = [c for c in good if c[0] != "phantom-indiana"]
    assert check(_store(tmp_path / "missing", missing), DATASETS) == [
        "dataset phantom-indiana: no finished cell"
    ]
    chance = [(d, p, (0.52 if p == "finetune" else 0.55) if d == "phantom-nih" else 0.8) for d, p, _ in good]
    problems = check(_store(tmp_path / "chance", chance), DATASETS)
    assert len(problems) == 1 and problems[0].startswith("dataset phantom-nih: best macro AUROC 0.550 <")
    linear_only = [c for c in good if not (c[0] == "phantom-chexpert" and c[1] == "finetune")]
    assert check(_store(tmp_path / "linear", linear_only), DATASETS) == [
        "dataset phantom-chexpert: no finished finetune cell"
    ]


def test_make_test_runs_this_helper_as_a_script_and_a_bad_folder_fails_it(tmp_path):
    """`make test` runs the file it names after the smoke grid (a test helper, outside the package):
    the path exists, it runs as a script, and a folder without a report fails it with the reason."""
    repo = Path(__file__).parents[2]
    lines = [ln for ln in (repo / "Makefile").read_text().splitlines() if "smoke_check" in ln]
    assert len(lines) == 1 and ".smoke-check" in lines[0], lines
    script = re.search(r"(\S*smoke_check\.py)", lines[0]).group(1)
    assert (repo / script).is_file() and not (
        repo / "src" / "chexbench" / "bench" / "smoke_check.py"
    ).exists()
    proc = subprocess.run([sys.executable, str(repo / script), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 1 and "report.md was not written" in proc.stderr, proc.stderr
