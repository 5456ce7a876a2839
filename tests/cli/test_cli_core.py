"""The command line through Typer's CliRunner: clear one-line errors, nothing written on bad input."""

from typer.testing import CliRunner

from chexbench.cli import app

runner = CliRunner()


def _one_error_line(result) -> str:
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error:")
    return lines[0]


def test_list_shows_registries():
    result = runner.invoke(app, ["list", "strategies"])
    assert result.exit_code == 0, result.output
    assert "scratch" in result.output and "imagenet" in result.output
    result = runner.invoke(app, ["list", "grids"])
    assert "smoke" in result.output


def test_list_unknown_registry():
    result = runner.invoke(app, ["list", "strategis"])
    assert result.exit_code == 2
    assert "unknown registry" in _one_error_line(result)


def test_unknown_strategy_exits_with_one_line_and_writes_nothing(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scrach"]\nbackbone=["resnet_tiny"]\ndataset=["chexpert"]\nprotocol=["finetune"]\n'
    )
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(out)])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "unknown strategy 'scrach'" in line and "did you mean 'scratch'" in line and str(grid) in line
    assert not out.exists()


def test_misspelled_grid_key(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["chexpert"]\nprotocol=["finetune"]\n[settings]\nepocs'
        " = 3\n"
    )
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(out)])
    assert result.exit_code == 2
    assert "unknown key 'epocs' in [settings]; did you mean 'epochs'" in _one_error_line(result)
    assert not out.exists()


def test_missing_data_root_exits_with_one_line_and_writes_nothing(tmp_path):
    grid = tmp_path / "g.toml"
    missing = tmp_path / "no-such-chexpert"
    grid.write_text(
        '[axes]\nstrategy=["scratch"]\nbackbone=["resnet_tiny"]\ndataset=["chexpert"]\nprotocol=["finetune"]\n[dataset.chexpert]\nroot'
        f' = "{missing}"\n'
    )
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(out)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert "chexpert" in line and str(missing) in line
    assert not out.exists()


def test_plan_lists_skipped_with_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["scratch","imagenet"]\nbackbone=["resnet_tiny"]\ndataset=["chexpert"]\nprotocol=["finetune"]\nseed=[0,1]\n'
    )
    result = runner.invoke(
        app, ["plan", "--grid", str(grid), "--results", str(tmp_path / "r"), "--no-check"]
    )  # no CheXpert here
    assert result.exit_code == 0, result.output
    assert "4 cells" in result.output and "2 to run" in result.output and "2 skipped" in result.output
    assert "no ImageNet weights" in result.output


def test_missing_pretraining_source_root_is_one_line_before_anything_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["simclr"]\nbackbone=["resnet_tiny"]\ndataset=["phantom-chexpert"]\nprotocol=["linear"]\n[settings]\npretrain_source'
        ' = "nih"\n[dataset.phantom-chexpert]\npatients = 20\nsize = 48\n'
    )
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", "--grid", str(grid), "--results", str(out)])
    assert result.exit_code == 2, result.output
    line = _one_error_line(result)
    assert "pretraining source 'nih' of simclr" in line and "pretrain_root" in line
    assert not out.exists()
