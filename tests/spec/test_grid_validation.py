"""A mistyped grid or filter stops `plan`, `run` and `submit` with one line and exit 2, writing nothing.

Each case is a small valid grid with one mistake. On the code before typed validation, most of
these planned and ran (``--only strategy=simclrr`` ran 0 cells and exited 0, ``"settings.epochz"``
raised a raw TypeError, ``optimizer = "adamx"`` or ``"strategy.temperatur"`` were accepted).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.core.errors import ConfigError
from chexbench.spec.grid import parse_only
from chexbench.spec.parse import load_grid

runner = CliRunner()

BASE = """
name = "typo"
[axes]
strategy = ["scratch", "simclr"]
backbone = ["resnet_tiny", "vit_convstem_tiny"]
dataset = ["phantom-chexpert"]
protocol = ["linear"]
label_fraction = [0.5, 1.0]
seed = [0, 1]
{axes}
[settings]
image_size = 32
pretrain_source = "phantom-chexpert"
{settings}
{tail}
"""

# (case id, extra [axes] lines, extra [settings] lines, tables after, --only values, fragments of the error
# line)
CASES = [
    (
        "only-strategy-typo",
        "",
        "",
        "",
        ["strategy=simclrr"],
        ["--only strategy=simclrr", "did you mean 'simclr'"],
    ),
    ("only-seed-not-in-grid", "", "", "", ["seed=7"], ["--only seed=7", "seed values: 0, 1"]),
    (
        "only-fraction-not-in-grid",
        "",
        "",
        "",
        ["label_fraction=0.1"],
        ["--only label_fraction=0.1", "0.5, 1"],
    ),
    (
        "only-registered-but-not-in-grid",
        "",
        "",
        "",
        ["backbone=vit_tiny"],
        ["--only backbone=vit_tiny", "not a backbone of grid"],
    ),
    (
        "settings-axis-typo",
        '"settings.epochz" = [1, 2]',
        "",
        "",
        [],
        ["unknown key 'epochz'", "did you mean 'epochs'"],
    ),
    (
        "option-axis-typo",
        '"strategy.temperatur" = [0.1]',
        "",
        "",
        [],
        ["'temperatur'", "did you mean 'temperature'"],
    ),
    (
        "option-axis-bad-type",
        '"strategy.temperature" = [0.1, "hot"]',
        "",
        "",
        [],
        ["'temperature' must be float", "'hot'"],
    ),
    ("settings-axis-bad-type", '"settings.epochs" = ["ten"]', "", "", [], ["'epochs' must be int", "'ten'"]),
    (
        "optimizer-choice",
        "",
        'optimizer = "adamx"',
        "",
        [],
        ["'optimizer' must be one of 'adamw', 'sgd'", "'adamx'"],
    ),
    ("uncertainty-choice", "", 'uncertainty = "maybe"', "", [], ["'uncertainty' must be one of", "'maybe'"]),
    ("views-choice", "", 'views = "frontall"', "", [], ["'views'", "did you mean 'frontal'"]),
    ("epochs-range", "", "epochs = 0", "", [], ["'epochs' must be int >= 1", "got 0"]),
    (
        "pretrain-source-typo",
        "",
        "",
        '[strategy.simclr]\npretrain_source = "phantom-chexpertt"',
        [],
        ["unknown dataset 'phantom-chexpertt'"],
    ),
    (
        "strategy-option-type",
        "",
        "",
        '[strategy.simclr]\ntemperature = "hot"',
        [],
        ["[strategy.simclr] 'temperature' must be float"],
    ),
    (
        "strategy-option-choice",
        "",
        "",
        '[strategy.simclr]\npretrain_optimizer = "lamb"',
        [],
        ["'pretrain_optimizer' must be one of 'sgd', 'adamw', 'lars'"],
    ),
    (
        "protocol-option-choice",
        "",
        "",
        '[protocol.linear]\nhead = "mlp"',
        [],
        ["[protocol.linear] 'head' must be one of 'linear', 'topk'"],
    ),
    (
        "dataset-option-type",
        "",
        "",
        '[dataset.phantom-chexpert]\npatients = "many"',
        [],
        ["'patients' must be int"],
    ),
    (
        "backbone-option-choice",
        "",
        "",
        "[backbone.vit_convstem_tiny]\nstem_convs = 5",
        [],
        ["'stem_convs' must be one of 3, 4"],
    ),
    (
        "recipe-family-typo",
        "",
        "",
        "[strategy.simclr.recipe.vitt]\npretrain_lr = 1e-4",
        [],
        ["unknown backbone family 'vitt'", "did you mean 'vit'"],
    ),
    (
        "override-match-typo",
        "",
        "",
        '[[override]]\nmatch = { backbone = "resnet_tinyy" }\nlr = 1e-4',
        [],
        ["matches no cell", "did you mean 'resnet_tiny'"],
    ),
    (
        "override-value-range",
        "",
        "",
        "[[override]]\nmatch = { seed = 1 }\nbatch_size = -4",
        [],
        ["[[override]] #1 'batch_size' must be int >= 1"],
    ),
    (
        "override-sets-an-option",
        "",
        "",
        '[[override]]\nmatch = { strategy = "simclr" }\ntemperature = 0.1',
        [],
        ["'temperature' is a component option", "settings only"],
    ),
    ("settings-float-for-int", "", "epochs = 10.5", "", [], ["'epochs' must be int", "10.5"]),
    ("settings-string-for-bool", "", 'amp = "yes"', "", [], ["'amp' must be bool", "'yes'"]),
    (
        "dataset-option-typo",
        "",
        "",
        "[dataset.phantom-chexpert]\npatiens = 20",
        [],
        ["unknown key 'patiens'", "did you mean 'patients'"],
    ),
    (
        "section-typo",
        "",
        "",
        "[strategies.simclr]\ntemperature = 0.1",
        [],
        ["unknown key 'strategies'", "did you mean 'strategy'"],
    ),
    ("fraction-bool", "", "", "", [], None),  # replaced below: label_fraction = [true]
    ("seed-twice", "", "", "", [], None),  # replaced below: seed = [0, 0]
    (
        "alias-own-table",
        "",
        "",
        "[strategy.moco_convstem]\ntemperature = 0.1",
        [],
        ["moco_convstem is an alias of mocov2", "[strategy.mocov2]"],
    ),
]


def _grid_text(axes: str, settings: str, tail: str) -> str:
    return BASE.format(axes=axes, settings=settings, tail=tail)


def _case_text(case_id: str, axes: str, settings: str, tail: str) -> str:
    text = _grid_text(axes, settings, tail)
    if case_id == "fraction-bool":
        text = text.replace("label_fraction = [0.5, 1.0]", "label_fraction = [true]")
    if case_id == "seed-twice":
        text = text.replace("seed = [0, 1]", "seed = [0, 0]")
    return text


EXPECTED_EXTRA = {
    "fraction-bool": ["label_fraction values must be numbers in (0, 1]", "True"],
    "seed-twice": ["[axes] seed lists 0 twice"],
}


def _one_error_line(output: str) -> str:
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error:"), output
    return lines[0]


def test_the_base_grid_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(_grid_text("", "", ""))
    planned = load_grid(str(path)).cells(parse_only(["seed=1", "label_fraction=0.5"]))
    assert len(planned) == 4


@pytest.mark.parametrize(
    ("case_id", "axes", "settings", "tail", "only", "fragments"), CASES, ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_mistyped_grid_or_filter_stops_with_one_line_and_writes_nothing(
    tmp_path: Path,
    command: str,
    case_id: str,
    axes: str,
    settings: str,
    tail: str,
    only: list[str],
    fragments: list[str] | None,
) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(_case_text(case_id, axes, settings, tail))
    out = tmp_path / "results"
    args = [command, "--grid", str(path), "--results", str(out)]
    for o in only:
        args += ["--only", o]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = _one_error_line(result.output)
    for fragment in fragments or EXPECTED_EXTRA[case_id]:
        assert fragment in line, line
    assert not out.exists()


@pytest.mark.parametrize("case_id", ["only-strategy-typo", "option-axis-typo", "optimizer-choice"])
def test_submit_refuses_a_mistyped_grid_before_any_job(tmp_path: Path, case_id: str) -> None:
    case = next(c for c in CASES if c[0] == case_id)
    path = tmp_path / "grid.toml"
    path.write_text(_case_text(case_id, case[1], case[2], case[3]))
    out = tmp_path / "results"
    args = ["submit", "--grid", str(path), "--results", str(out), "--executor", "local"]
    for o in case[4]:
        args += ["--only", o]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert case[5][0] in _one_error_line(result.output)
    assert not out.exists()


def test_an_option_axis_applies_only_to_the_components_that_declare_it(tmp_path: Path) -> None:
    path = tmp_path / "grid.toml"
    path.write_text(_grid_text('"strategy.temperature" = [0.1, 0.2]', "", ""))
    planned = load_grid(str(path)).cells(parse_only(["seed=0", "label_fraction=1.0"]))
    scratch = [p.cell for p in planned if p.cell.strategy == "scratch"]
    simclr = [p.cell for p in planned if p.cell.strategy == "simclr"]
    assert len(scratch) == 2 and all(
        c.strategy_options == {} for c in scratch
    )  # once per backbone, not per temperature
    assert sorted(c.strategy_options["temperature"] for c in simclr) == [0.1, 0.1, 0.2, 0.2]


def test_an_integer_count_stays_an_integer_where_a_fraction_is_also_allowed(tmp_path: Path) -> None:
    # topk: an int is a count of tokens, a float a fraction; 4 must not become 4.0
    path = tmp_path / "grid.toml"
    path.write_text(_grid_text('"protocol.topk" = [4, 0.5]', "", ""))
    planned = load_grid(str(path)).cells(parse_only(["seed=0", "label_fraction=1.0", "strategy=scratch"]))
    values = sorted(
        (type(p.cell.protocol_options["topk"]).__name__, p.cell.protocol_options["topk"]) for p in planned
    )
    assert values == [("float", 0.5), ("float", 0.5), ("int", 4), ("int", 4)]


def test_parse_only_rejects_an_empty_value() -> None:
    with pytest.raises(ConfigError, match="names no value"):
        parse_only(["seed="])
