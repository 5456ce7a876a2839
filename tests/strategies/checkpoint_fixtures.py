"""Checkpoints in the layouts published models ship in, built from real (tiny) models.

- :func:`moco_checkpoint`: facebookresearch/moco ``main_moco.py`` — ``{"epoch", "arch",
  "state_dict", "optimizer"}``, the state dict of ``DistributedDataParallel(MoCo(...))``:
  ``module.encoder_q.*`` (query encoder, its ``fc`` an MLP head as with ``--mlp``),
  ``module.encoder_k.*`` (momentum encoder), ``module.queue``, ``module.queue_ptr``.
- :func:`lightning_checkpoint`: a LightningModule holding the encoder as ``self.<attr>``,
  with the pickled hyper-parameter object, optimizer and loop state Lightning saves beside it.
- :func:`rgb_resnet_tiny`: ``resnet_tiny``'s architecture with 3 input channels and a
  1000-way ``fc``, named as timm (and torchvision) name ResNets.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from timm.models.resnet import BasicBlock, ResNet
from torch import nn


def rgb_resnet_tiny(num_classes: int = 1000, seed: int = 0) -> ResNet:
    torch.manual_seed(seed)
    return ResNet(
        BasicBlock,
        layers=(1, 1, 1, 1),
        channels=(32, 64, 128, 256),
        stem_width=32,
        in_chans=3,
        num_classes=num_classes,
    )


def _mlp_head(encoder: ResNet, dim: int = 16) -> ResNet:
    hidden = encoder.fc.in_features
    encoder.fc = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, dim))  # MoCo-v2 --mlp
    return encoder


class MoCoLike(nn.Module):
    """The module tree of facebookresearch/moco's ``MoCo`` (builder.py), enough for its state dict."""

    def __init__(self, seed: int = 0, queue: int = 64, dim: int = 16):
        super().__init__()
        self.encoder_q = _mlp_head(rgb_resnet_tiny(seed=seed), dim)
        self.encoder_k = _mlp_head(rgb_resnet_tiny(seed=seed + 1), dim)
        self.register_buffer("queue", nn.functional.normalize(torch.randn(dim, queue), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


class DDP(nn.Module):
    """Stands for DistributedDataParallel: its state dict keys carry ``module.``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module


def moco_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a MoCo checkpoint; return the query encoder's state dict (what must be transferred)."""
    model = DDP(MoCoLike(seed))
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    loss = sum(p.sum() for p in model.module.encoder_q.parameters())
    loss.backward()
    opt.step()
    torch.save(
        {"epoch": 200, "arch": "resnet50", "state_dict": model.state_dict(), "optimizer": opt.state_dict()},
        path,
    )
    return {k: v.clone() for k, v in model.module.encoder_q.state_dict().items()}


class HParams(dict):
    """Stands for Lightning's ``AttributeDict``: a class the restricted unpickler does not know."""


class LitModule(nn.Module):
    def __init__(self, attr: str, seed: int = 0):
        super().__init__()
        setattr(self, attr, rgb_resnet_tiny(num_classes=5, seed=seed))
        self.classifier = nn.Linear(256, 5)  # a task head of the LightningModule, outside the encoder


def lightning_checkpoint(path: Path, attr: str = "model", seed: int = 0) -> dict[str, torch.Tensor]:
    module = LitModule(attr, seed)
    torch.save(
        {
            "epoch": 9,
            "global_step": 1000,
            "pytorch-lightning_version": "2.4.0",
            "state_dict": module.state_dict(),
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": HParams(
                lr=1e-3, args=argparse.Namespace(data="/data/cxr"), out=Path("/runs/x")
            ),
            "callbacks": {
                "ModelCheckpoint": {"best_model_score": np.float64(0.81), "scores": np.array([0.7, 0.81])}
            },
        },
        path,
    )
    return {k: v.clone() for k, v in getattr(module, attr).state_dict().items()}


def expected_transfer(encoder_state: dict[str, torch.Tensor], head: str = "fc.") -> dict[str, torch.Tensor]:
    """What our one-channel backbone must hold after loading ``encoder_state``."""
    out = {k: v for k, v in encoder_state.items() if not k.startswith(head)}
    out["conv1.weight"] = encoder_state["conv1.weight"].sum(dim=1, keepdim=True)
    return out
