"""`chexbench list`: fast (no torch), `list settings` / `list options NAME` generated from the code."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

from typer.testing import CliRunner

from chexbench.cli import app
from chexbench.spec.reference import option_rows, undocumented_options
from chexbench.spec.registry import BACKBONES, REGISTRIES, STRATEGIES, Registry
from chexbench.spec.settings import Settings

runner = CliRunner()


def test_version_prints_the_package_version():
    import chexbench

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"chexbench {chexbench.__version__}"


def _modules_loaded_by_cli(commands: list[list[str]], modules: tuple[str, ...], check: str = "") -> str:
    """In a fresh interpreter: run each chexbench command (exit code 0, then ``check``, a Python
    statement about ``r.output``), print which of ``modules`` got imported; returns that line."""
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from chexbench.cli import app\n"
        f"for args in {commands!r}:\n"
        "    r = CliRunner().invoke(app, args)\n"
        "    assert r.exit_code == 0, r.output\n"
        f"    {check or 'pass'}\n"
        f"print(sorted(m for m in {modules!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_help_and_list_import_neither_torch_nor_timm():
    """`chexbench --help` and `chexbench list` (every kind) list the built-ins from their declarations:
    no torch or timm import (seconds) on the way."""
    check = (
        "assert 'simclr' in r.output and 'vit_b16' in r.output and 'phantom-nih' in r.output and 'finetune'"
        " in r.output"
    )
    assert _modules_loaded_by_cli([["list"]], ("torch", "timm"), check) == "[]"
    kinds = ("strategies", "backbones", "datasets", "protocols", "grids")
    commands = [["--help"], *(["list", kind] for kind in kinds)]
    assert _modules_loaded_by_cli(commands, ("torch", "timm")) == "[]"


def test_list_settings_imports_neither_torch_nor_timm():
    """The settings reference is read from the Settings fields (chexbench.spec): no component loads."""
    check = "assert 'pretrain_seed' in r.output and 'int >= 1' in r.output"
    assert _modules_loaded_by_cli([["list", "settings"]], ("torch", "timm"), check) == "[]"


def test_list_shows_what_the_loaded_registries_hold():
    """What `list` shows of each built-in before its module is imported (name, description, source)
    is what the registry holds once it is loaded, and every declaration loads (a fresh registry per kind,
    so nothing looked up earlier in this process hides a declaration)."""
    total = 0
    for reg in REGISTRIES.values():
        fresh: Registry = Registry(reg.kind)
        for name, declared in reg.declarations().items():
            fresh.declare(name, declared.target, declared.description)
        listed = fresh.listing()
        assert listed == [(e.name, e.description, e.source) for e in fresh.entries()]
        assert all(e.obj.name == e.name and e.description for e in fresh.entries())
        total += len(listed)
    assert total == 12 + 11 + 6 + 2  # strategies, backbones, datasets, protocols (grids: files, added)


def test_flops_only_when_asked():
    result = runner.invoke(app, ["list", "backbones"])
    assert result.exit_code == 0 and "GFLOPs" not in result.output
    result = runner.invoke(app, ["list", "backbones", "--flops"])
    assert result.exit_code == 0, result.output
    assert "GFLOPs" in result.output and "@64px" in result.output


def test_list_settings_shows_every_key_with_default_and_meaning():
    result = runner.invoke(app, ["list", "settings"])
    assert result.exit_code == 0, result.output
    for f in fields(Settings):
        line = next((ln for ln in result.output.splitlines() if f" {f.name} " in ln), None)
        assert line is not None, f.name
        assert len(line.split("│")[4].strip()) > 10, f"no meaning for {f.name}: {line}"
    assert "settings.pretrain_seed" in result.output  # the axis for pretraining variance is documented


def test_every_option_of_every_component_has_a_meaning():
    assert undocumented_options() == []


def test_list_options_of_a_strategy_shows_defaults_and_meanings():
    result = runner.invoke(app, ["list", "options", "mocov2"])
    assert result.exit_code == 0, result.output
    assert "[strategy.mocov2] options" in result.output
    queue = next(ln for ln in result.output.splitlines() if " queue_size " in ln)
    assert "65536" in queue and "negative keys" in queue
    # inherited defaults are the strategy's own (MoCo-v2 pretrains with SGD)
    assert '"sgd"' in next(ln for ln in result.output.splitlines() if " pretrain_optimizer " in ln)
    assert [r.key for r in option_rows(STRATEGIES.get("mocov2"))] == list(STRATEGIES.get("mocov2").options)
    # the type column shows the field's type and bounds, or its choices
    assert "int >= 1" in queue
    assert '"sgd" | "adamw" | "lars"' in next(
        ln for ln in result.output.splitlines() if " pretrain_optimizer " in ln
    )


def test_list_options_of_unknown_component_is_one_line():
    result = runner.invoke(app, ["list", "options", "simclrr"])
    assert result.exit_code == 2
    assert "did you mean 'simclr'" in result.output and len(result.output.strip().splitlines()) == 1


def test_piped_tables_are_not_cut():
    """Under a pipe (CliRunner is not a terminal) a long description is printed whole, on one line."""
    result = runner.invoke(app, ["list", "options", "imagenet"])
    assert result.exit_code == 0
    assert (
        "~/.cache/chexbench/weights/<timm name>.safetensors or timm's local Hugging Face cache"
        in result.output
    )
    assert "…" not in result.output


def test_every_backbone_says_its_profile_size():
    """`list --flops` profiles a backbone at its own ``profile_size`` (the CPU-sized test variants
    at 64 px, the study's backbones at 224 px), never by a test on its name."""
    sizes = {name: BACKBONES.get(name).profile_size for name in BACKBONES.names()}
    assert sizes == {
        "resnet50": 224,
        "resnet_tiny": 64,
        "vit_b16": 224,
        "vit_b16_convstem": 224,
        "vit_convstem_tiny": 64,
        "vit_tiny": 64,
        "densenet121": 224,
        "vit_b14_dinov2": 224,
        "vit_b14_reg4_dinov2": 224,
        "vit_b16_clip": 224,
        "vit_b32_clip": 224,
    }


def test_help_and_list_import_neither_pandas_nor_pyarrow():
    """The CLI imports the atomic writers at start-up; pandas/pyarrow (≈ 0.4 s) load only when a
    Parquet file is written, not for `chexbench --help` or `chexbench list`."""
    assert _modules_loaded_by_cli([["--help"], ["list"]], ("pandas", "pyarrow")) == "[]"
