"""Self-supervised recipes per backbone family: the study's ConvStem question compares like with like."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from chexbench.backbones.vit import VitTiny
from chexbench.reports.study import study_questions_section
from chexbench.spec.parse import load_grid
from chexbench.spec.registry import BACKBONES, STRATEGIES

RECIPE_KEYS = ("pretrain_optimizer", "pretrain_lr", "pretrain_weight_decay", "pretrain_warmup_epochs")


@pytest.fixture(scope="module")
def full():
    return load_grid("full").cells()


def _cell(planned, strategy: str, backbone: str, **axes):
    axes = {"dataset": "chexpert", "protocol": "linear", "label_fraction": 0.1, "seed": 0, **axes}
    (hit,) = [
        p
        for p in planned
        if p.cell.strategy == strategy
        and p.cell.backbone == backbone
        and all(getattr(p.cell, k) == v for k, v in axes.items())
    ]
    return hit


def test_mocov2_on_the_two_vits_of_the_full_grid_differs_only_in_the_stem(full) -> None:
    patch = _cell(full, "mocov2", "vit_b16").cell
    conv = _cell(full, "moco_convstem", "vit_b16_convstem").cell
    a, b = (
        STRATEGIES.get("mocov2").resolved_options(patch),
        STRATEGIES.get("moco_convstem").resolved_options(conv),
    )
    assert a == b
    ka, kb = STRATEGIES.get("mocov2").pretrain_key(patch), STRATEGIES.get("moco_convstem").pretrain_key(conv)
    assert {k for k in ka if ka[k] != kb[k]} == {"backbone"}  # the same pretraining run but for the stem


def test_the_vit_recipe_is_moco_v3s_and_the_resnet_recipe_moco_v2s(full) -> None:
    vit = STRATEGIES.get("mocov2").resolved_options(_cell(full, "mocov2", "vit_b16").cell)
    # MoCo v3 (Chen, Xie & He 2021), ViT-B: AdamW, lr 1.5e-4 · B/256 (B = 256 here), wd 0.1, 40 warmup
    # epochs, momentum 0.99 → 1 (cosine), temperature 0.2
    assert {k: vit[k] for k in RECIPE_KEYS} == {
        "pretrain_optimizer": "adamw",
        "pretrain_lr": 1.5e-4 * vit["pretrain_batch_size"] / 256,
        "pretrain_weight_decay": 0.1,
        "pretrain_warmup_epochs": 40.0,
    }
    assert (vit["momentum"], vit["cosine_momentum"], vit["temperature"]) == (0.99, True, 0.2)
    resnet = STRATEGIES.get("mocov2").resolved_options(_cell(full, "mocov2", "resnet50").cell)
    # MoCo-v2 (Chen, Fan, Girshick & He 2020): SGD lr 0.03 at batch 256, wd 1e-4, momentum 0.999
    assert {k: resnet[k] for k in RECIPE_KEYS} == {
        "pretrain_optimizer": "sgd",
        "pretrain_lr": 0.03,
        "pretrain_weight_decay": 1e-4,
        "pretrain_warmup_epochs": 0.0,
    }
    assert (resnet["momentum"], resnet["cosine_momentum"], resnet["temperature"]) == (0.999, False, 0.2)
    assert vit["queue_size"] == resnet["queue_size"] == 65536  # the same objective on both families


def test_simclr_gets_one_recipe_for_both_vits_and_another_for_resnet(full) -> None:
    simclr = STRATEGIES.get("simclr")
    patch = simclr.resolved_options(_cell(full, "simclr", "vit_b16").cell)
    conv = simclr.resolved_options(_cell(full, "simclr", "vit_b16_convstem").cell)
    resnet = simclr.resolved_options(_cell(full, "simclr", "resnet50").cell)
    assert patch == conv
    assert patch["pretrain_weight_decay"] == 0.1 and resnet["pretrain_weight_decay"] == 1e-6


def test_the_recipe_is_chosen_by_the_backbone_family_attribute_not_its_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class PluginViT(VitTiny):  # a plugin backbone whose name says nothing about its family
        name = "lung_encoder"
        kind = "vit"

    class PluginCNN(VitTiny):
        name = "vit_lookalike"
        kind = "cnn"

    BACKBONES._ensure_loaded()
    from chexbench.spec.registry import Entry

    for cls in (PluginViT, PluginCNN):
        monkeypatch.setitem(BACKBONES._entries, cls.name, Entry(cls.name, cls(), "", "test"))
    moco = STRATEGIES.get("mocov2")
    assert moco.recipe_for("lung_encoder")["pretrain_optimizer"] == "adamw"
    assert moco.recipe_for("vit_lookalike")["pretrain_optimizer"] == "sgd"


def test_moco_convstem_is_an_alias_that_runs_once_and_shares_mocov2s_pretraining(full) -> None:
    alias = STRATEGIES.get("moco_convstem")
    assert alias.alias_of == "mocov2" and "mocov2" in STRATEGIES.entry("moco_convstem").description
    conv_alias = _cell(full, "moco_convstem", "vit_b16_convstem")
    conv_target = _cell(full, "mocov2", "vit_b16_convstem")
    assert conv_alias.status == "run"
    assert conv_target.status == "skipped" and "runs as moco_convstem" in conv_target.reason
    assert alias.pretrain_key(conv_alias.cell) == STRATEGIES.get("mocov2").pretrain_key(conv_target.cell)
    assert _cell(full, "mocov2", "vit_b16").status == "run"


def _record(strategy: str, backbone: str, fraction: float, options: dict) -> dict:
    return {
        "strategy": strategy,
        "backbone": backbone,
        "dataset": "chexpert",
        "protocol": "linear",
        "label_fraction": fraction,
        "config_json": json.dumps({"strategy_options": options}),
    }


def test_the_report_names_the_comparison_for_each_study_question() -> None:
    same = {"temperature": 0.2}
    ok = pd.DataFrame(
        [
            _record("scratch", "vit_b16", 0.1, {}),
            _record("mocov2", "vit_b16", 0.1, same),
            _record("moco_convstem", "vit_b16_convstem", 0.1, same),
            _record("mocov2", "vit_b16", 1.0, same),
        ]
    )
    text = study_questions_section(ok)
    assert "`mocov2`·`vit_b16` vs `moco_convstem`·`vit_b16_convstem` (chexpert · linear · 0.1)" in text
    assert "⚠" not in text
    assert "`vit_b16`: `mocov2`, `scratch`" in text
    assert "`mocov2`·`vit_b16`: 0.1, 1" in text
    ok.loc[2, "config_json"] = json.dumps({"strategy_options": {"temperature": 0.1}})
    assert "not like with like" in study_questions_section(ok)


def test_the_study_section_holds_when_no_conv_stem_vit_is_in_the_results() -> None:
    ok = pd.DataFrame([_record("mocov2", "vit_b16", 0.1, {}), _record("scratch", "resnet50", 0.1, {})])
    assert "not in these results" in study_questions_section(ok)


def test_dino_mae_byol_in_the_full_grid_take_their_papers_recipe_per_family_and_mae_skips_non_patchify(
    full,
) -> None:
    dino_vit = STRATEGIES.get("dino").resolved_options(_cell(full, "dino", "vit_b16").cell)
    dino_rn = STRATEGIES.get("dino").resolved_options(_cell(full, "dino", "resnet50").cell)
    # DINO (Caron et al. 2021): ViT AdamW 5e-4 · B/256, wd 0.04, τ_t 0.04 → 0.07 over 30 epochs; ResNet-50 SGD
    # 0.03, wd 1e-4
    assert {k: dino_vit[k] for k in RECIPE_KEYS} == {
        "pretrain_optimizer": "adamw",
        "pretrain_lr": 5e-4,
        "pretrain_weight_decay": 0.04,
        "pretrain_warmup_epochs": 10.0,
    }
    assert (dino_vit["teacher_temp"], dino_vit["warmup_teacher_temp_epochs"], dino_vit["crop_scale_min"]) == (
        0.07,
        30.0,
        0.4,
    )
    assert (dino_rn["pretrain_optimizer"], dino_rn["pretrain_lr"], dino_rn["crop_scale_min"]) == (
        "sgd",
        0.03,
        0.14,
    )
    assert dino_vit["out_dim"] == 65536 and dino_vit["local_crops"] == 8 and dino_vit["centering"] is True
    mae = STRATEGIES.get("mae").resolved_options(_cell(full, "mae", "vit_b16").cell)
    assert (mae["mask_ratio"], mae["decoder_depth"], mae["decoder_dim"], mae["pretrain_weight_decay"]) == (
        0.75,
        8,
        512,
        0.05,
    )
    for backbone in ("resnet50", "vit_b16_convstem"):
        assert _cell(full, "mae", backbone).status == "skipped"
    byol = STRATEGIES.get("byol").resolved_options(_cell(full, "byol", "resnet50").cell)
    assert (byol["momentum"], byol["proj_dim"], byol["pred_hidden_dim"]) == (0.996, 256, 4096)
