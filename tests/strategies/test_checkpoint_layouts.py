"""The checkpoint strategy reads each published layout strictly: encoder tensors equal, the rest dropped and
listed."""

from __future__ import annotations

import pickle

import pytest
import torch
from checkpoint_fixtures import expected_transfer, lightning_checkpoint, moco_checkpoint, rgb_resnet_tiny
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer

from chexbench.core.context import RunContext
from chexbench.core.errors import ConfigError, WeightsError
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, STRATEGIES

STRATEGY = STRATEGIES.get("checkpoint")


def _cell(path, backbone="resnet_tiny", size=32, **opts) -> CellConfig:
    return CellConfig(
        strategy="checkpoint",
        backbone=backbone,
        dataset="phantom-chexpert",
        protocol="linear",
        label_fraction=1.0,
        seed=0,
        settings=CellConfig.from_dict(
            {
                "strategy": "x",
                "backbone": "x",
                "dataset": "x",
                "protocol": "x",
                "label_fraction": 1.0,
                "seed": 0,
                "settings": {"image_size": size},
            }
        ).settings,
        strategy_options={"path": str(path), **opts},
    )


def _init(cell: CellConfig, tmp_path):
    backbone = BACKBONES.get(cell.backbone).build(cell.settings.image_size)
    STRATEGY.preflight(cell)  # the pre-run check agrees with the load
    record = STRATEGY.init_backbone(backbone, cell, RunContext(torch.device("cpu"), tmp_path, tmp_path))
    return backbone, record


def _assert_transferred(backbone, expected: dict[str, torch.Tensor]) -> None:
    got = backbone.model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v), k


@pytest.mark.parametrize(("fmt", "legacy"), [("auto", False), ("moco", True)])
def test_moco_checkpoint_keeps_the_query_encoder(tmp_path, fmt, legacy):
    path = tmp_path / "checkpoint_0199.pth.tar"
    encoder_q = moco_checkpoint(path)
    if legacy:  # the published MoCo v1/v2 files predate torch's zip format
        torch.save(torch.load(path, weights_only=True), path, _use_new_zipfile_serialization=False)
    backbone, record = _init(_cell(path, format=fmt), tmp_path)
    _assert_transferred(backbone, expected_transfer(encoder_q))
    dropped = record.extra["dropped_keys"]
    assert "module.queue" in dropped and "module.queue_ptr" in dropped
    assert {k for k in dropped if k.startswith("module.encoder_k.")} == {
        f"module.encoder_k.{k}" for k in encoder_q
    }
    assert {"module.encoder_q.fc.0.weight", "module.encoder_q.fc.2.bias"} <= set(dropped)
    assert not any(
        k.startswith("module.encoder_q.") and not k.startswith("module.encoder_q.fc.") for k in dropped
    )
    assert record.extra["layout"] == "moco" and record.extra["prefix"] == "module.encoder_q."
    assert record.loaded_keys == len(backbone.model.state_dict()) and record.reinitialized_keys == []
    assert any("conv1.weight: RGB filters summed" in n for n in record.extra["adapted"])


def test_explicit_prefix_takes_the_momentum_encoder_when_asked(tmp_path):
    path = tmp_path / "moco.pth"
    moco_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    encoder_k = {
        k[len("module.encoder_k.") :]: v for k, v in saved.items() if k.startswith("module.encoder_k.")
    }
    backbone, record = _init(_cell(path, prefix="module.encoder_k."), tmp_path)
    _assert_transferred(backbone, expected_transfer(encoder_k))
    assert any(k.startswith("module.encoder_q.") for k in record.extra["dropped_keys"])


def test_lightning_checkpoint_with_pickled_objects_and_module_prefix(tmp_path):
    for attr in ("model", "backbone"):
        path = tmp_path / f"{attr}.ckpt"
        encoder = lightning_checkpoint(path, attr)
        with pytest.raises(
            pickle.UnpicklingError
        ):  # the file really holds objects the restricted unpickler refuses
            torch.load(path, weights_only=True)
        backbone, record = _init(_cell(path, format="lightning"), tmp_path)
        _assert_transferred(backbone, expected_transfer(encoder))
        assert record.extra["prefix"] == f"{attr}." and record.extra["wrapper"] == "state_dict"
        assert {"classifier.weight", "classifier.bias", f"{attr}.fc.weight", f"{attr}.fc.bias"} == set(
            record.extra["dropped_keys"]
        )


def test_torchvision_resnet50_names_are_timm_names(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    import timm

    tv = torchvision.models.resnet50(weights=None)
    tm = timm.create_model("resnet50", pretrained=False)
    assert {k: tuple(v.shape) for k, v in tv.state_dict().items()} == {
        k: tuple(v.shape) for k, v in tm.state_dict().items()
    }
    path = tmp_path / "resnet50_torchvision.pth"
    torch.save(tv.state_dict(), path)
    backbone, record = _init(_cell(path, backbone="resnet50", size=64, format="torchvision"), tmp_path)
    _assert_transferred(backbone, expected_transfer(tv.state_dict()))
    assert record.extra["dropped_keys"] == ["fc.bias", "fc.weight"]
    assert record.extra["checkpoint_sha256"] and len(record.extra["checkpoint_sha256"]) == 64


def test_safetensors_timm_names_and_vit_position_embeddings(tmp_path):
    rgb = rgb_resnet_tiny()
    path = tmp_path / "r.safetensors"
    save_file(rgb.state_dict(), path)
    backbone, _ = _init(_cell(path, format="timm"), tmp_path)
    _assert_transferred(backbone, expected_transfer(rgb.state_dict()))

    vit = VisionTransformer(
        img_size=32,
        patch_size=8,
        in_chans=3,
        num_classes=0,
        embed_dim=96,
        depth=4,
        num_heads=3,
        mlp_ratio=2.0,
    )
    v3 = {f"module.base_encoder.{k}": v for k, v in vit.state_dict().items()}  # MoCo v3 layout
    v3 |= {f"module.momentum_encoder.{k}": v.clone() for k, v in vit.state_dict().items()}
    v3["module.predictor.0.weight"] = torch.zeros(4, 96)
    path = tmp_path / "v3.safetensors"
    save_file(v3, path)
    backbone, record = _init(_cell(path, backbone="vit_tiny", size=64), tmp_path)
    assert record.extra["layout"] == "moco" and record.extra["prefix"] == "module.base_encoder."
    assert backbone.model.pos_embed.shape == (1, 1 + 64, 96)
    assert torch.equal(backbone.model.blocks[2].mlp.fc1.weight, vit.blocks[2].mlp.fc1.weight)
    assert any("pos_embed resampled" in n for n in record.extra["adapted"])


def test_wrong_architecture_and_missing_file_refused_before_running(tmp_path):
    wrong = rgb_resnet_tiny()
    state = {f"module.encoder_q.{k}": v for k, v in wrong.state_dict().items()}
    state["module.encoder_q.layer4.1.conv1.weight"] = torch.zeros(256, 256, 3, 3)  # a block resnet_tiny lacks
    del state["module.encoder_q.layer2.0.bn1.weight"]
    path = tmp_path / "wrong.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(WeightsError) as e:
        STRATEGY.preflight(_cell(path))
    line = str(e.value)
    assert "\n" not in line and str(path) in line
    assert "missing keys [layer2.0.bn1.weight]" in line and "unexpected keys [layer4.1.conv1.weight]" in line
    with pytest.raises(WeightsError, match="missing keys"):  # the cell itself fails the same way
        STRATEGY.init_backbone(
            BACKBONES.get("resnet_tiny").build(32),
            _cell(path),
            RunContext(torch.device("cpu"), tmp_path, tmp_path),
        )
    with pytest.raises(WeightsError, match=r"checkpoint file not found: .*nope\.pth"):
        STRATEGY.preflight(_cell(tmp_path / "nope.pth"))
    torch.save(rgb_resnet_tiny().state_dict(), tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="format 'moco' expects keys under module.encoder_q."):
        STRATEGY.preflight(_cell(tmp_path / "plain.pth", format="moco"))
    with pytest.raises(WeightsError, match="ResNets only"):
        STRATEGY.preflight(_cell(tmp_path / "plain.pth", backbone="vit_tiny", format="torchvision"))


def test_two_full_encoders_without_a_convention_need_a_prefix(tmp_path):
    rgb = rgb_resnet_tiny()
    state = {f"vision.{k}": v for k, v in rgb.state_dict().items()} | {
        f"text_tower.{k}": v for k, v in rgb.state_dict().items()
    }
    torch.save(state, tmp_path / "two.pth")
    with pytest.raises(WeightsError, match="set prefix"):
        STRATEGY.preflight(_cell(tmp_path / "two.pth"))
    STRATEGY.preflight(_cell(tmp_path / "two.pth", prefix="text_tower."))


def test_reading_never_runs_code_from_the_file(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open('" + str(tmp_path / "pwned") + "', 'w').write('x')",))

    rgb = rgb_resnet_tiny()
    torch.save({"state_dict": rgb.state_dict(), "evil": Boom()}, tmp_path / "evil.pth")
    backbone, _ = _init(
        _cell(tmp_path / "evil.pth"), tmp_path
    )  # the weights are read; the object stays inert
    assert not (tmp_path / "pwned").exists()
    _assert_transferred(backbone, expected_transfer(rgb.state_dict()))


def test_grid_declares_several_named_checkpoints(tmp_path):
    from chexbench.spec.parse import parse_grid

    raw = {
        "axes": {
            "strategy": ["scratch", "checkpoint"],
            "backbone": ["resnet_tiny"],
            "dataset": ["phantom-chexpert"],
            "protocol": ["linear"],
        },
        "strategy": {
            "checkpoint": [
                {"name": "moco-cxr", "path": "a.pth", "format": "moco"},
                {"name": "lab-ssl", "path": "b.ckpt"},
            ]
        },
    }
    cells = [p.cell for p in parse_grid(raw, "g.toml").cells()]
    assert [c.strategy for c in cells] == ["scratch", "moco-cxr", "lab-ssl"]
    assert cells[1].strategy_options["path"] == "a.pth" and cells[2].strategy_options["path"] == "b.ckpt"
    assert STRATEGIES.get("moco-cxr") is STRATEGY and len({c.cell_id for c in cells}) == 3
    grid = parse_grid(raw, "g.toml")
    assert [p.cell.strategy for p in grid.cells({"strategy": ["checkpoint"]})] == ["moco-cxr", "lab-ssl"]
    assert [p.cell.strategy for p in grid.cells({"strategy": ["lab-ssl", "scratch"]})] == [
        "scratch",
        "lab-ssl",
    ]
    grid = parse_grid({**raw, "override": [{"match": {"strategy": "checkpoint"}, "lr": 0.5}]}, "g.toml")
    assert [p.cell.settings.lr for p in grid.cells()][1:] == [0.5, 0.5] and grid.cells()[
        0
    ].cell.settings.lr != 0.5
    both = {
        **raw,
        "axes": {**raw["axes"], "backbone": ["resnet_tiny", "vit_tiny"]},
        "strategy": {"checkpoint": {"name": "r", "path": "a.pth", "backbone": "resnet_tiny"}},
    }
    plan = {(p.cell.strategy, p.cell.backbone): p for p in parse_grid(both, "g.toml").cells()}
    assert plan[("r", "resnet_tiny")].status == "run"
    assert plan[("r", "vit_tiny")].status == "skipped" and plan[("r", "vit_tiny")].reason.startswith(
        "not applicable"
    )
    named = {**raw, "strategy": {"checkpoint": {"moco-cxr": {"path": "a.pth"}, "other": {"path": "c.pth"}}}}
    assert [p.cell.strategy for p in parse_grid(named, "g.toml").cells()] == ["scratch", "moco-cxr", "other"]
    single = {**raw, "strategy": {"checkpoint": {"path": "a.pth"}}}
    assert [p.cell.strategy for p in parse_grid(single, "g.toml").cells()] == ["scratch", "checkpoint"]
    for bad, msg in [
        ({"checkpoint": [{"path": "a.pth"}, {"name": "b", "path": "b.pth"}]}, "#1 needs a name"),
        ({"checkpoint": [{"name": "mocov2", "path": "a.pth"}]}, "'mocov2' is already a strategy"),
        (
            {"checkpoint": [{"name": "a", "path": "a.pth"}, {"name": "a", "path": "b.pth"}]},
            "two checkpoints are named 'a'",
        ),
        ({"checkpoint": {"name": "x", "path": "a.pth", "format": "mocco"}}, "format must be one of"),
        ({"checkpoint": {"name": "x"}}, 'path = "FILE" is required'),
        ({"checkpoint": {"name": "x", "path": "a.pth", "backbone": "resnet5"}}, "unknown backbone 'resnet5'"),
        ({}, r"\[strategy.checkpoint\] is missing"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            parse_grid({**raw, "strategy": bad}, "g.toml")


def test_moco_inside_a_lightning_module_and_a_prefix_without_its_dot(tmp_path):
    path = tmp_path / "moco.pth"
    encoder_q = moco_checkpoint(path)
    saved = torch.load(path, weights_only=True)["state_dict"]
    lit = {
        "model." + k[len("module.") :]: v for k, v in saved.items()
    }  # model.encoder_q.*, model.encoder_k.*, model.queue
    torch.save({"state_dict": lit, "epoch": 3, "global_step": 10}, tmp_path / "lit.ckpt")
    backbone, record = _init(_cell(tmp_path / "lit.ckpt"), tmp_path)
    _assert_transferred(backbone, expected_transfer(encoder_q))
    assert record.extra["prefix"] == "model.encoder_q." and record.extra["layout"] == "moco"
    backbone, record = _init(_cell(path, prefix="module.encoder_q"), tmp_path)
    _assert_transferred(backbone, expected_transfer(encoder_q))


def test_a_momentum_copy_beside_the_encoder_is_not_chosen(tmp_path):
    online, momentum = rgb_resnet_tiny(seed=5), rgb_resnet_tiny(seed=6)
    state = {f"backbone.{k}": v for k, v in online.state_dict().items()}  # lightly's MoCo module
    state |= {f"backbone_momentum.{k}": v for k, v in momentum.state_dict().items()}
    state["projection_head.layers.0.weight"] = torch.zeros(8, 256)
    torch.save({"state_dict": state, "epoch": 1}, tmp_path / "lightly.ckpt")
    backbone, record = _init(_cell(tmp_path / "lightly.ckpt"), tmp_path)
    _assert_transferred(backbone, expected_transfer(online.state_dict()))
    assert record.extra["prefix"] == "backbone."
