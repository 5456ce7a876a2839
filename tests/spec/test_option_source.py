"""One source per option: every row `chexbench list settings` / `list options` prints is its pydantic
field (name, type, bounds, default, meaning), and no meaning is written anywhere else."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.spec.options import options_model
from chexbench.spec.reference import OPTION_KINDS, format_default
from chexbench.spec.registry import REGISTRIES
from chexbench.spec.settings import SETTINGS_MODEL, Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "chexbench"
runner = CliRunner()


def _table_rows(output: str) -> dict[str, dict[str, list[str]]]:
    """``{title: {key: [type, default, meaning]}}`` of every table a `list` command printed."""
    tables: dict[str, dict[str, list[str]]] = {}
    title = ""
    for line in output.splitlines():
        if line.startswith("[") and " options" in line or line.startswith("[settings] keys"):
            title = line.split(" ")[0]
            tables[title] = {}
        elif line.startswith("│") and title:
            cells = [c.strip() for c in line.split("│")[1:-1]]
            assert len(cells) == 4, line
            tables[title][cells[0]] = cells[1:]
    return tables


def _bound_words(field: Any) -> list[str]:
    """The field's bounds as the type column must show them (``>= 1``, ``> 0``, ``<= 2048``)."""
    words = []
    for item in field.metadata:
        for attr, symbol in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            value = getattr(item, attr, None)
            if value is not None:
                words.append(f"{symbol} {value:g}" if isinstance(value, float) else f"{symbol} {value}")
    return words


def _assert_row_is_the_field(where: str, key: str, row: list[str], field: Any) -> None:
    type_, default, meaning = row
    assert meaning == (field.description or "").strip() and meaning, (
        f"{where} {key}: meaning {meaning!r} is not its field's"
    )
    assert default == format_default(field.default), (
        f"{where} {key}: default {default} is not its field's {field.default!r}"
    )
    for word in _bound_words(field):
        assert word in type_, f"{where} {key}: type column {type_!r} lacks the bound {word}"
    annotation = field.annotation
    if typing.get_origin(annotation) is typing.Literal:
        assert type_ == " | ".join(
            f'"{c}"' if isinstance(c, str) else str(c) for c in typing.get_args(annotation)
        ), (where, key)
    elif annotation in (int, float, bool, str):
        assert type_.split(" ")[0] == annotation.__name__, (where, key, type_)


def test_every_list_options_row_is_its_pydantic_field() -> None:
    result = runner.invoke(app, ["list", "options"])
    assert result.exit_code == 0, result.output
    tables = _table_rows(result.output)
    checked = 0
    for kind, section in OPTION_KINDS.items():
        for entry in REGISTRIES[kind].entries():
            model = options_model(entry.obj)
            title = f"[{section}.{entry.name}]"
            rows = tables.get(title, {})
            assert list(rows) == list(model.model_fields), (
                f"{title}: rows {list(rows)} vs fields {list(model.model_fields)}"
            )
            for key, field in model.model_fields.items():
                _assert_row_is_the_field(title, key, rows[key], field)
                checked += 1
            assert entry.obj.options == model.defaults(), (
                f"{title}: the options it reads are not its fields' defaults"
            )
    assert checked > 200  # every option of every built-in strategy, backbone, dataset and protocol


def test_every_list_settings_row_is_its_settings_field() -> None:
    result = runner.invoke(app, ["list", "settings"])
    assert result.exit_code == 0, result.output
    rows = _table_rows(result.output)["[settings]"]
    assert list(rows) == list(Settings.__dataclass_fields__) == list(SETTINGS_MODEL.model_fields)
    for key, field in SETTINGS_MODEL.model_fields.items():
        _assert_row_is_the_field("[settings]", key, rows[key], field)
        assert field.description == Settings.__dataclass_fields__[key].metadata["meaning"]
        assert field.default == Settings.__dataclass_fields__[key].default


def _string_constants() -> dict[str, list[str]]:
    """Every string literal in src/chexbench (implicit concatenations joined) → the files holding it."""
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.setdefault(node.value.strip(), []).append(str(path.relative_to(SRC)))
    return found


def test_no_meaning_is_written_twice_in_the_sources() -> None:
    """A meaning copied into a help dict, a docstring table or a second model shows up as a second literal."""
    constants = _string_constants()
    meanings = {f.description.strip() for f in SETTINGS_MODEL.model_fields.values()}
    for kind in OPTION_KINDS:
        for entry in REGISTRIES[kind].entries():
            meanings |= {
                f.description.strip() for f in options_model(entry.obj).model_fields.values() if f.description
            }
    twice = {m: constants[m] for m in meanings if len(constants.get(m, [])) > 1}
    assert twice == {}


def test_no_component_carries_option_help_and_no_help_dict_remains() -> None:
    for kind in OPTION_KINDS:
        for entry in REGISTRIES[kind].entries():
            for cls in type(entry.obj).__mro__:
                assert "option_help" not in vars(cls), f"{kind}/{entry.name}: {cls.__name__}.option_help"
    offenders = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if "option_help" in text:
            offenders.append(f"{path.relative_to(SRC)}: option_help")
        # a module-level dict of meanings (SETTINGS_HELP, HEAD_OPTIONS_HELP, TOPK_OPTIONS_HELP, …)
        offenders += [
            f"{path.relative_to(SRC)}: {m}"
            for m in re.findall(r"^\s*(\w+_HELP)\s*(?::[^=\n]*)?=\s*[{(]?\s*(?:\{|dict\()", text, re.M)
        ]
    assert offenders == []


@pytest.mark.parametrize(
    "section, name", [("strategy", "mocov2_topk"), ("protocol", "linear"), ("dataset", "phantom-nih")]
)
def test_a_changed_description_changes_the_printed_row(monkeypatch, section: str, name: str) -> None:
    """The rows are read from the fields at print time, not from a copy."""
    kind = next(k for k, s in OPTION_KINDS.items() if s == section)
    model = options_model(REGISTRIES[kind].get(name))
    key = next(iter(model.model_fields))
    monkeypatch.setattr(model.model_fields[key], "description", "a meaning only this test writes")
    result = runner.invoke(app, ["list", "options", name])
    assert result.exit_code == 0, result.output
    assert _table_rows(result.output)[f"[{section}.{name}]"][key][2] == "a meaning only this test writes"


def test_the_docs_name_exactly_each_strategys_options() -> None:
    """docs/SELF_SUPERVISED.md names the options (their defaults and meanings come from `list options`):
    the names it gives per strategy must be the fields, no more, no fewer."""
    from chexbench.strategies.pretrain import PretrainOptions

    text = (SRC.parents[1] / "docs" / "SELF_SUPERVISED.md").read_text()
    section = text[
        text.index("## Options (`[strategy.<name>]` in a grid)") : text.index("## Collapse monitors")
    ]
    common, *adds = re.split(r"\n- ", section.split("Common to every self-supervised strategy:")[1])
    assert set(re.findall(r"`(\w+)`", common)) == set(PretrainOptions.model_fields)
    strategies = {"MoCo-v2": "mocov2", "MoCo v3": "mocov3", "BYOL": "byol", "DINO": "dino", "MAE": "mae"}
    named = {}
    for line in adds:
        label, rest = line.split(" adds ", 1)
        named[strategies[label]] = set(re.findall(r"`(\w+)`", rest.split(";")[0]))
    assert set(named) == set(strategies.values())
    for name, options in named.items():
        own = set(options_model(REGISTRIES["strategies"].get(name)).model_fields) - set(
            PretrainOptions.model_fields
        )
        assert options == own, name
