"""``chexbench weights fetch|list`` without network: a monkeypatched hub serves a state dict the test made."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from timm.models.resnet import BasicBlock, ResNet
from typer.testing import CliRunner

from chexbench.backbones import imagenet_weights
from chexbench.cli import app
from chexbench.core.context import RunContext
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES
from chexbench.spec.settings import Settings

runner = CliRunner()


def _rgb_tiny(layers=(1, 1, 1, 1)) -> ResNet:
    torch.manual_seed(0)
    return ResNet(
        BasicBlock, layers=layers, channels=(32, 64, 128, 256), stem_width=32, in_chans=3, num_classes=1000
    )


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """resnet_tiny declares a timm checkpoint; the 'hub' returns the file the test put in ``served``."""
    import huggingface_hub

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(type(BACKBONES.get("resnet_tiny")), "imagenet_weights", "resnet18.a1_in1k")
    monkeypatch.setattr(imagenet_weights, "_require_reachable", lambda url, what, timeout=5.0: None)
    served: dict[str, Path] = {}
    calls: list[tuple[str, str]] = []

    def fake_download(repo_id, filename, *, local_dir, **kw):
        calls.append((repo_id, filename))
        if filename not in served:
            from huggingface_hub.errors import EntryNotFoundError

            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        dest = Path(local_dir) / filename
        dest.write_bytes(served[filename].read_bytes())
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    return {"served": served, "calls": calls, "cache": tmp_path / "cache", "tmp": tmp_path}


def test_fetch_verifies_stores_and_imagenet_then_loads_it(hub):
    rgb = _rgb_tiny()
    save_file(rgb.state_dict(), hub["tmp"] / "served.safetensors")
    hub["served"]["model.safetensors"] = hub["tmp"] / "served.safetensors"
    out = runner.invoke(app, ["weights", "fetch", "resnet_tiny"])
    assert out.exit_code == 0, out.output
    stored = hub["cache"] / "weights" / "resnet18.a1_in1k.safetensors"
    sha = hashlib.sha256(stored.read_bytes()).hexdigest()
    assert stored.read_bytes() == (hub["tmp"] / "served.safetensors").read_bytes()
    assert hub["calls"] == [("timm/resnet18.a1_in1k", "model.safetensors")]
    assert str(stored) in out.output and sha in out.output
    record = json.loads((hub["cache"] / "weights" / "resnet18.a1_in1k.json").read_text())
    assert record["sha256"] == sha and record["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert record["source"].endswith("timm/resnet18.a1_in1k/model.safetensors")

    listed = runner.invoke(app, ["weights", "list"], terminal_width=400)
    assert listed.exit_code == 0 and sha in listed.output and "timm/resnet18.a1_in1k" in listed.output
    again = runner.invoke(app, ["weights", "fetch", "resnet_tiny"])
    assert again.exit_code == 0 and "already stored" in again.output and len(hub["calls"]) == 1
    assert (
        runner.invoke(app, ["weights", "fetch", "resnet_tiny", "--force"]).exit_code == 0
        and len(hub["calls"]) == 2
    )

    cell = CellConfig(
        strategy="imagenet",
        backbone="resnet_tiny",
        dataset="chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=Settings(image_size=32),
    )
    imagenet = STRATEGIES.get("imagenet")
    assert imagenet.invalid_reason(cell) is None and imagenet.unavailable_reason(cell) is None
    backbone = BACKBONES.get("resnet_tiny").build(32)
    init = imagenet.init_backbone(backbone, cell, RunContext(torch.device("cpu"), hub["tmp"], hub["tmp"]))
    assert init.source == str(stored) and init.extra["weights_sha256"] == sha
    assert torch.equal(backbone.model.layer3[0].conv2.weight, rgb.layer3[0].conv2.weight)
    assert torch.equal(backbone.model.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))


def test_torch_file_on_the_hub_is_stored_as_safetensors(hub):
    rgb = _rgb_tiny()
    torch.save(rgb.state_dict(), hub["tmp"] / "served.bin")
    hub["served"]["pytorch_model.bin"] = hub["tmp"] / "served.bin"
    out = runner.invoke(app, ["weights", "fetch", "resnet_tiny"])
    assert out.exit_code == 0, out.output
    from safetensors.torch import load_file

    stored = load_file(hub["cache"] / "weights" / "resnet18.a1_in1k.safetensors")
    assert torch.equal(stored["layer4.0.conv1.weight"], rgb.state_dict()["layer4.0.conv1.weight"])


def test_wrong_architecture_on_the_hub_stores_nothing(hub):
    save_file(_rgb_tiny(layers=(2, 1, 1, 1)).state_dict(), hub["tmp"] / "wrong.safetensors")
    hub["served"]["model.safetensors"] = hub["tmp"] / "wrong.safetensors"
    out = runner.invoke(app, ["weights", "fetch", "resnet_tiny"])
    assert out.exit_code == 2
    assert "unexpected keys [layer1.1." in out.output and len(out.output.strip().splitlines()) == 1
    assert not (hub["cache"] / "weights").exists() or not any((hub["cache"] / "weights").iterdir())


def test_offline_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    out = runner.invoke(app, ["weights", "fetch", "resnet50"])
    assert out.exit_code == 2
    assert (
        len(out.output.strip().splitlines()) == 1
        and "cannot download ImageNet weights of resnet50" in out.output
    )
    assert "unreachable" in out.output
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = runner.invoke(app, ["weights", "fetch", "vit_b16"])
    assert out.exit_code == 2 and "HF_HUB_OFFLINE" in out.output and not (tmp_path / "cache").exists()


def test_backbones_without_weights_are_refused_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path))
    out = runner.invoke(app, ["weights", "fetch", "vit_b16_convstem"])
    assert out.exit_code == 2 and "vit_b16_convstem has no ImageNet weights" in out.output
    out = runner.invoke(app, ["weights", "fetch", "resnet5"])
    assert out.exit_code == 2 and "did you mean" in out.output
    listed = runner.invoke(app, ["weights", "list"], terminal_width=400)
    assert listed.exit_code == 0
    row = next(line for line in listed.output.splitlines() if "vit_b16_convstem" in line)
    assert "not applicable" in row


def test_plan_says_not_applicable_and_names_no_weights_file(tmp_path, monkeypatch):
    monkeypatch.setenv("CHEXBENCH_CACHE", str(tmp_path / "cache"))
    grid = tmp_path / "g.toml"
    grid.write_text(
        '[axes]\nstrategy=["imagenet"]\nbackbone=["resnet_tiny","vit_b16_convstem","resnet50"]\n'
        'dataset=["chexpert"]\nprotocol=["linear"]\n'
    )
    out = runner.invoke(
        app, ["plan", "--grid", str(grid), "--results", str(tmp_path / "r")], terminal_width=400
    )
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())  # the summary lines, unwrapped
    assert "skipped ×1: not applicable: resnet_tiny has no ImageNet weights" in text
    assert "skipped ×1: not applicable: vit_b16_convstem has no ImageNet weights" in text
    assert "run `chexbench weights fetch resnet50`" in text
    assert (
        "resnet_tiny.safetensors" not in text
        and "'resnet_tiny' state dict" not in text
        and "convstem.safetensors" not in text
    )
