"""Fine-tuning trains on full batches only: the remainder batch of an epoch (one image, say) never
sets a CNN's BatchNorm statistics; a train split smaller than one batch is one batch of the whole
split; a split of one image is refused. The effective schedule is in the record."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from chexbench.backbones.base import Backbone
from chexbench.core.context import RunContext
from chexbench.core.errors import DataError
from chexbench.datasets.celldata import CellData, SplitData
from chexbench.spec.cell import CellConfig
from chexbench.spec.registry import BACKBONES, PROTOCOLS
from chexbench.spec.settings import Settings
from chexbench.strategies.base import InitRecord

LABELS = ["Atelectasis", "Cardiomegaly"]


class TinyCNN(nn.Module):
    """conv → BatchNorm → pooled features (B, 4); records the batch size of every training forward."""

    num_features = 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.train_batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.train_batches.append(x.shape[0])
        return self.bn(self.conv(x)).mean(dim=(2, 3))


def _split(n: int, seed: int) -> SplitData:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < 0.5).astype(np.float32)
    y[: min(n, 2)] = np.array([[1, 0], [0, 1]])[: min(n, 2)]  # both classes of each label present
    img = rng.normal(100, 20, size=(n, 16, 16)) + 40 * y[:, :1, None]
    ids = np.array([f"{seed}-{i}" for i in range(n)])
    return SplitData(np.clip(img, 0, 255).astype(np.uint8), y, ids, ids)


def _data(n_train: int) -> CellData:
    return CellData(list(LABELS), list(LABELS), _split(n_train, 1), _split(12, 2), _split(12, 3), {})


def _cell(batch_size: int = 16, epochs: int = 2) -> CellConfig:
    return CellConfig(
        "scratch",
        "resnet_tiny",
        "phantom-chexpert",
        "finetune",
        1.0,
        0,
        Settings(image_size=16, epochs=epochs, batch_size=batch_size, warmup_epochs=0.5, eval_batch_size=64),
        protocol_options={"augment": False},
    )


@pytest.fixture
def ctx(tmp_path) -> RunContext:
    return RunContext(
        device=torch.device("cpu"), results_dir=tmp_path / "results", cache_dir=tmp_path / "cache"
    )


def test_finetuning_never_trains_on_the_remainder_batch(ctx):
    net = TinyCNN()
    backbone = Backbone(net, BACKBONES.get("resnet_tiny"), 16)
    result = PROTOCOLS.get("finetune").run(backbone, _data(33), _cell(), ctx, InitRecord(source="random"))
    # 33 images at batch 16: two full batches per epoch; the 33rd image of each epoch's order is dropped
    assert net.train_batches == [16, 16, 16, 16]
    sched = result.extra["schedule"]
    assert (
        sched["steps_per_epoch"] == 2
        and sched["total_steps"] == 4
        and sched["warmup_steps"] == 1
        and sched["drop_last"] is True
    )


def test_a_train_split_smaller_than_one_batch_is_one_batch_of_the_whole_split(ctx):
    net = TinyCNN()
    backbone = Backbone(net, BACKBONES.get("resnet_tiny"), 16)
    result = PROTOCOLS.get("finetune").run(
        backbone, _data(5), _cell(batch_size=16), ctx, InitRecord(source="random")
    )
    assert net.train_batches == [5, 5] and result.extra["schedule"]["total_steps"] == 2


def test_a_train_split_of_one_image_is_refused_with_one_line(ctx):
    with pytest.raises(DataError, match=r"^protocol finetune: the train split has 1 image .*need at least 2"):
        PROTOCOLS.get("finetune").open_cell(_data(1), _cell(), ctx, InitRecord(source="random"))


def test_the_linear_probe_keeps_every_image_of_its_frozen_features(ctx):
    # the linear protocol trains a head on frozen features (no BatchNorm statistics change): unchanged
    setup = PROTOCOLS.get("linear").open_cell(_data(33), _cell(), ctx, InitRecord(source="random"))
    assert setup.steps_per_epoch == 3 and not setup.drop_last
