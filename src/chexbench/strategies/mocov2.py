"""Strategy ``mocov2``: MoCo-v2 (He et al. 2020, "Momentum Contrast for Unsupervised Visual
Representation Learning"; Chen et al. 2020, "Improved Baselines with Momentum Contrastive
Learning").

A query encoder (trained) and a key encoder (its exponential moving average, momentum
``m``) embed two views; InfoNCE contrasts each query with its key against a FIFO queue of
past keys (size ``queue_size``, capped at the pretraining-set size minus the batch size — a
queue of the whole pool would hold a key of every image, so each query would meet its own
image's previous key as a negative; the cap is noted in the record).
MLP head, temperature 0.2. The optimization recipe depends on the backbone family
(:attr:`MoCoV2.recipes`): MoCo-v2's SGD on a ResNet, MoCo v3's AdamW recipe on a ViT.

**Why shuffle-BN, and what is done here.** With BatchNorm, a query and its key computed
in the same batch can "communicate" through the batch statistics, and the model finds a
shortcut that lowers the loss without learning good features (He et al. 2020, sec. 3.3).
MoCo shuffles the sample order across GPUs before the key encoder (and unshuffles after),
so a key's BN statistics come from a different subset of images than its query's. On one
device we emulate this as the MoCo reference's single-GPU demo does: each encoder runs
its batch in ``bn_splits`` chunks (each chunk normalized with its own statistics, like
one GPU of a group), and the key batch is randomly permuted before chunking and
unpermuted after. A batch not divisible by ``bn_splits`` is split into groups whose sizes
differ by one (noted in the record). Backbones without BatchNorm (ViTs with LayerNorm) skip
the chunking.
Under torchrun (:mod:`chexbench.core.distributed`) every rank holds the global batch's
views, the key batch is permuted across ranks and each rank encodes its slice of the
permuted batch (MoCo's ``_batch_shuffle_ddp``); keys are gathered from all ranks,
unshuffled and enqueued on every rank. BN groups over all ranks number
``max(bn_splits, world size)``, so 2 ranks with ``bn_splits = 2`` compute exactly the
single-process step. SyncBatchNorm is never used: it would bring the shortcut back.
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from chexbench.core.distributed import all_gather_keys, has_batch_norm, local_rows, world_size
from chexbench.strategies.heads import ProjectionHead
from chexbench.strategies.losses import info_nce
from chexbench.strategies.momentum import KeyQueue, cosine_momentum, momentum_update
from chexbench.strategies.pretrain import PretrainOptions, PretrainStrategy, split_forward


class MoCoOptions(PretrainOptions):
    """MoCo's options, over the common pretraining options."""

    queue_size: int = Field(
        65536,
        ge=1,
        description=(
            "negative keys kept in the FIFO queue (capped at the pretraining-pool size minus the batch size)"
        ),
    )
    momentum: float = Field(
        0.999,
        ge=0,
        le=1,
        description=(
            "momentum of the key encoder's exponential moving average (the start value with cosine_momentum)"
        ),
    )
    cosine_momentum: bool = Field(
        False,
        description=(
            "raise the momentum to 1 on a half-cosine schedule (BYOL / MoCo v3) instead of keeping it fixed"
        ),
    )
    bn_splits: int = Field(
        2,
        ge=1,
        description=(
            "groups of the shuffled / split batch norm that stops the key encoder from cheating on one device"
        ),
    )
    temperature: float = Field(0.2, gt=0, description="softmax temperature of InfoNCE")


#: MoCo-v2 on a ResNet (Chen, Fan, Girshick & He 2020): SGD lr 0.03 at batch 256, wd 1e-4, m 0.999
MOCO_V2_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "sgd",
    "pretrain_lr": 0.03,
    "pretrain_weight_decay": 1e-4,
    "pretrain_warmup_epochs": 0.0,
    "momentum": 0.999,
    "cosine_momentum": False,
}
#: the ViT recipe of MoCo v3 (Chen, Xie & He 2021): AdamW lr 1.5e-4 × B/256, wd 0.1, 40 warmup
#: epochs, momentum 0.99 rising to 1 on a cosine; the same objective (queue, τ) as on a ResNet
MOCO_V3_VIT_RECIPE: dict[str, Any] = {
    "pretrain_optimizer": "adamw",
    "pretrain_lr": 1.5e-4,
    "pretrain_weight_decay": 0.1,
    "pretrain_warmup_epochs": 40.0,
    "momentum": 0.99,
    "cosine_momentum": True,
}


class MoCoModel(nn.Module):
    """Query encoder + head, momentum key encoder + head, key queue; ``loss(v1, v2, progress)``."""

    def __init__(
        self,
        encoder: nn.Module,
        num_features: int,
        hidden_dim: int,
        proj_dim: int,
        queue_size: int,
        momentum: float,
        temperature: float,
        bn_splits: int = 2,
        cosine_schedule: bool = False,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.projector = ProjectionHead(num_features, hidden_dim, proj_dim, batch_norm=False)
        self.key_encoder = copy.deepcopy(encoder)
        self.key_projector = copy.deepcopy(self.projector)
        for p in [*self.key_encoder.parameters(), *self.key_projector.parameters()]:
            p.requires_grad_(False)
        self.queue = KeyQueue(queue_size, proj_dim, generator)
        self.base_momentum = momentum
        self.cosine_schedule = cosine_schedule
        self.temperature = temperature
        self.bn_splits = bn_splits
        self._pending_keys: torch.Tensor | None = None
        # a checkpoint taken after a step holds that step's keys in the queue
        self.register_state_dict_pre_hook(lambda module, prefix, keep_vars: module.flush_queue())

    def momentum_at(self, progress: float) -> float:
        if not self.cosine_schedule:
            return self.base_momentum
        return cosine_momentum(progress, self.base_momentum)

    def loss(
        self,
        v1: torch.Tensor,
        v2: torch.Tensor,
        progress: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        # v1, v2: the global batch (B, 1, H, W); under torchrun each rank keeps its slice (b = B / w)
        self.flush_queue()
        splits = max(1, self.bn_splits // world_size())  # BN groups over all ranks: max(bn_splits, w)
        q = self.projector(split_forward(self.encoder, local_rows(v1), splits))  # (b, proj_dim)
        with torch.no_grad():
            m = self.momentum_at(progress)
            momentum_update(self.encoder, self.key_encoder, m)
            momentum_update(self.projector, self.key_projector, m)
            perm = torch.randperm(v2.shape[0], generator=generator).to(
                v2.device, non_blocking=True
            )  # shuffle-BN, across ranks
            k = self.key_projector(split_forward(self.key_encoder, local_rows(v2[perm]), splits))
            k_all = all_gather_keys(F.normalize(k.float(), dim=1))[
                torch.argsort(perm)
            ]  # (B, proj_dim), unshuffled
        # the queue itself (not a copy) is saved for backward, so this step's keys are enqueued only
        # when the next step starts (or a state dict is taken): by then backward is done with it
        loss = info_nce(q, local_rows(k_all), self.queue.keys, self.temperature, queue_normalized=True)
        self._pending_keys = k_all  # every rank enqueues every rank's keys: the queues stay identical
        return loss

    @torch.no_grad()
    def flush_queue(self) -> None:
        """Enqueue the last step's keys (after its backward); a no-op when there are none."""
        if self._pending_keys is not None:
            self.queue.enqueue(self._pending_keys)
            self._pending_keys = None


class MoCoV2(PretrainStrategy):
    name = "mocov2"
    option_model = MoCoOptions
    recipes: ClassVar[dict[str, dict[str, Any]]] = {"cnn": MOCO_V2_RECIPE, "vit": MOCO_V3_VIT_RECIPE}

    def build_model(self, encoder, opts, pool_size, generator):
        notes = []
        queue_size = int(opts["queue_size"])
        batch = min(int(opts["pretrain_batch_size"]), pool_size)
        # a queue of the whole pool holds every image's key from its previous epoch: the query
        # would meet its own image among the negatives; pool − batch keeps the current batch's out
        cap = max(pool_size - batch, 1)
        if queue_size > cap:
            notes.append(
                f"queue size {queue_size} capped at {cap} (pretraining-set size {pool_size} − batch {batch}),"
                " so that the queue cannot hold a key of every image"
            )
            queue_size = cap
        splits = int(opts["bn_splits"])
        local = batch // world_size()
        if splits > 1 and has_batch_norm(encoder) and local % min(splits, local):
            sizes = [len(c) for c in torch.arange(local).tensor_split(min(splits, local))]
            notes.append(
                f"shuffle-BN: batch {local} is not divisible by bn_splits {splits}; BN groups of {sizes}"
                " images"
            )
        model = MoCoModel(
            encoder,
            encoder.num_features,
            int(opts["proj_hidden_dim"]),
            int(opts["proj_dim"]),
            queue_size,
            float(opts["momentum"]),
            float(opts["temperature"]),
            int(opts["bn_splits"]),
            bool(opts["cosine_momentum"]),
            generator,
        )
        return model, notes
