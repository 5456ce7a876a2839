"""Problems that can be found without training stop `plan` and `run` before the first cell:
one line naming every problem and the cells it affects, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexbench.bench.preflight import PreflightError, group_label, preflight, split_summary
from chexbench.cli import app
from chexbench.datasets.phantom.generate import write_site
from chexbench.spec.parse import load_grid

runner = CliRunner()


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error:"), output
    return lines[0]


@pytest.fixture()
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A CheXpert-layout folder with one bad label value, an NIH root that is empty, and a good
    CheXpert-layout folder."""
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad"
    bad.mkdir()
    write_site(bad, "chexpert", 24, 32, 0, workers=1)
    csv = bad / "CheXpert-v1.0-small" / "train.csv"
    lines = csv.read_text().splitlines()
    cells = lines[3].split(",")
    cells[7] = "2.0"  # Cardiomegaly: not one of 1.0, 0.0, -1.0, blank
    lines[3] = ",".join(cells)
    csv.write_text("\n".join(lines) + "\n")
    good = tmp_path / "good"
    good.mkdir()
    write_site(good, "chexpert", 24, 32, 1, workers=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    return {"bad": bad / "CheXpert-v1.0-small", "good": good / "CheXpert-v1.0-small", "empty": empty}


def _grid(tmp_path: Path, roots: dict[str, Path]) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(
        'name = "pre"\n[axes]\nstrategy = ["scratch", "imagenet"]\nbackbone = ["resnet_tiny"]\ndataset ='
        ' ["chexpert", "nih", "phantom-chexpert"]\nprotocol = ["linear", "finetune"]\nseed = [0,'
        f' 1]\n[settings]\nimage_size = 32\n[dataset.chexpert]\nroot = "{roots["bad"]}"\n[dataset.nih]\nroot'
        f' = "{roots["empty"]}"\n[dataset.phantom-chexpert]\nroot = "{roots["good"].parent}"\n'
    )
    return path


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_bad_csv_value_and_an_empty_root_stop_plan_and_run_naming_the_cell_groups(
    tmp_path: Path, roots: dict[str, Path], command: str
) -> None:
    grid = _grid(tmp_path, roots)
    out = tmp_path / "results"
    result = runner.invoke(app, [command, "--grid", str(grid), "--results", str(out)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert line.startswith("error: 2 problems before the first cell"), line
    assert "'2.0'" in line or "2.0" in line, line  # the bad value, in the loader's words
    assert str(roots["bad"]) in line and str(roots["empty"]) in line
    # scratch runs (imagenet is skipped: no weights) on 2 protocols × 2 seeds per dataset
    assert "[dataset=chexpert: 4 cells]" in line and "[dataset=nih: 4 cells]" in line, line
    assert "phantom-chexpert" not in line  # the good dataset is not blamed
    assert not out.exists()


def test_plan_no_check_still_plans_a_grid_whose_data_is_not_here(
    tmp_path: Path, roots: dict[str, Path]
) -> None:
    grid = _grid(tmp_path, roots)
    result = runner.invoke(app, ["plan", "--grid", str(grid), "--no-check"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "12 to run" in result.output


def test_plan_prints_split_sizes_and_test_positives_and_warns_on_thin_labels(
    tmp_path: Path, roots: dict[str, Path]
) -> None:
    path = tmp_path / "g.toml"
    path.write_text(
        '[axes]\nstrategy = ["scratch"]\nbackbone = ["resnet_tiny"]\ndataset = ["chexpert"]\nprotocol ='
        ' ["linear"]\n[settings]\nimage_size = 32\nuncertainty = "ones"\n[dataset.chexpert]\nroot ='
        f' "{roots["good"]}"\n'
    )
    cell = load_grid(str(path)).cells()[0].cell
    summary = split_summary(cell)
    # against the loader's own index: frontal images per split, and U-Ones positives per label
    import numpy as np

    from chexbench.spec.registry import DATASETS

    index = DATASETS.get("chexpert").load_index(roots["good"])
    frontal = index[index["view"].isin(["PA", "AP"])]
    for split in ("train", "valid", "test"):
        part = frontal[frontal["split"] == split]
        assert summary.splits[split] == (len(part), part["patient_id"].nunique())
    test = frontal[frontal["split"] == "test"]
    for label in DATASETS.get("chexpert").eval_labels:
        pos = test[np.isin(test[label].to_numpy(), [1.0, -1.0])]
        assert summary.test_positives[label] == (pos["patient_id"].nunique(), len(pos))
    result = runner.invoke(app, ["plan", "--grid", str(path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    sizes = summary.splits["test"]
    assert f"test {sizes[0]:,} images / {sizes[1]:,} patients" in result.output
    assert "positives in the test split" in result.output
    assert "fewer than 10 positive test patients" in result.output  # 24 patients: every label is thin
    assert summary.thin_labels() == list(DATASETS.get("chexpert").eval_labels)


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_phantom_grid_without_pretrain_source_is_refused_by_plan_as_by_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """It used to plan fine and then refuse at `run` (the default source is CheXpert, with no root here)."""
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "g.toml"
    path.write_text(
        '[axes]\nstrategy = ["scratch", "simclr"]\nbackbone = ["resnet_tiny"]\ndataset ='
        ' ["phantom-nih"]\nprotocol = ["linear"]\n[settings]\nimage_size ='
        " 32\n[dataset.phantom-nih]\npatients = 20\nsize = 32\n"
    )
    out = tmp_path / "results"
    result = runner.invoke(app, [command, "--grid", str(path), "--results", str(out)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    assert "pretraining source 'chexpert' of simclr (settings.pretrain_source)" in line
    assert "[strategy=simclr: 1 cell]" in line
    assert not out.exists()


def test_a_component_hook_is_called_once_per_configuration_and_its_error_names_the_group(
    tmp_path: Path, roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from chexbench.core.errors import WeightsError
    from chexbench.spec.registry import BACKBONES

    calls: list[str] = []
    spec = BACKBONES.get("resnet_tiny")

    def hook(cell) -> None:
        calls.append(cell.cell_id)
        if cell.protocol == "finetune":
            raise WeightsError("resnet_tiny: weights file has keys of another architecture")

    monkeypatch.setattr(spec, "preflight", hook, raising=False)
    path = tmp_path / "g.toml"
    path.write_text(
        '[axes]\nstrategy = ["scratch"]\nbackbone = ["resnet_tiny"]\ndataset = ["chexpert"]\nprotocol ='
        ' ["linear", "finetune"]\nseed = [0, 1, 2]\n[settings]\nimage_size = 32\n[dataset.chexpert]\nroot ='
        f' "{roots["good"]}"\n'
    )
    planned = load_grid(str(path)).cells()
    with pytest.raises(PreflightError) as err:
        preflight(planned)
    assert len(calls) == 2  # one configuration per protocol; the three seeds share it
    assert str(err.value).endswith(
        "weights file has keys of another architecture [protocol=finetune: 3 cells]"
    )


def test_group_label_names_what_sets_the_group_apart() -> None:
    from chexbench.spec.cell import CellConfig

    universe = [
        CellConfig(s, "resnet_tiny", d, "linear", 1.0, 0)
        for s in ("scratch", "simclr")
        for d in ("nih", "chexpert")
    ]
    assert group_label([c for c in universe if c.dataset == "nih"], universe) == "dataset=nih: 2 cells"
    assert group_label(universe[:1], universe) == "strategy=scratch, dataset=nih: 1 cell"
    assert group_label(universe, universe) == "all 4 cells"
