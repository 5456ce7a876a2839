"""DDP on CPU with gloo, 2 processes: losses and gradients across ranks equal the single-process
ones on the concatenated batch (SimCLR negatives, MoCo keys and queue with shuffle-BN,
fine-tuning's masked BCE), and gathers restore the global order.

One spawn of two workers runs every check (process start-up dominates on a small CPU); each
worker saves its tensors, and the test compares them with references computed here.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from chexbench.core import distributed as D
from chexbench.core import training as T
from chexbench.core.inference import extract_features, predict_probs
from chexbench.strategies.losses import nt_xent, nt_xent_across_ranks
from chexbench.strategies.mocov2 import MoCoModel

WORLD, B, DIM = 2, 8, 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embeddings() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(B, DIM, generator=g), torch.randn(B, DIM, generator=g)


def _encoder() -> nn.Module:
    """A small conv encoder with BatchNorm (the case where shuffle-BN matters)."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


def _moco() -> MoCoModel:
    return MoCoModel(
        _encoder(),
        8,
        16,
        DIM,
        queue_size=12,
        momentum=0.9,
        temperature=0.2,
        bn_splits=2,
        generator=torch.Generator().manual_seed(2),
    )


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(B, 1, 12, 12, generator=g), torch.randn(B, 1, 12, 12, generator=g)


def _bce_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(B, 5, generator=g)
    y = (torch.rand(B, 3, generator=g) < 0.5).float()
    y[torch.rand(B, 3, generator=g) < 0.4] = float("nan")  # masked entries, unevenly spread over ranks
    return x, y


def _feature_net() -> nn.Module:
    torch.manual_seed(9)
    net = nn.Sequential(nn.Flatten(), nn.Linear(36, 4))
    net.num_features = 4
    return net


def _bn_net() -> nn.Module:
    torch.manual_seed(10)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    net.num_features = 2
    return net


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    res: dict[str, object] = {"rank": rank, "world": D.world_size()}
    lo, hi = D.rank_range(B)

    # SimCLR: negatives gathered with gradient
    z1, z2 = (z[lo:hi].clone().requires_grad_(True) for z in _embeddings())
    loss = nt_xent_across_ranks(z1, z2, 0.1)
    loss.backward()
    res.update(simclr_loss=loss.item(), simclr_g1=z1.grad, simclr_g2=z2.grad)

    # MoCo: one DDP step, keys from both ranks, cross-rank shuffle-BN
    model = _moco()
    ddp = D.wrap_ddp(D.LossForward(model), torch.device("cpu"))
    v1, v2 = _views()
    loss = ddp(v1, v2, 0.0, torch.Generator().manual_seed(5))
    loss.backward()
    model.flush_queue()  # the step's keys enter the queue once backward is done with it
    res.update(
        moco_loss=loss.item(),
        moco_queue=model.queue.keys.clone(),
        moco_ptr=int(model.queue.ptr),
        moco_grads={n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
    )

    # fine-tuning loss share: DDP gradient = global masked BCE gradient
    torch.manual_seed(6)
    head = nn.Linear(5, 3)
    ddp_head = D.wrap_ddp(head, torch.device("cpu"))
    x, y = _bce_batch()
    T.masked_bce_share(ddp_head(x[lo:hi]), y[lo:hi], y, D.world_size()).backward()
    res.update(bce_grad=head.weight.grad.clone())

    # gathers: uneven rows, predictions in global order
    res["gathered"] = D.all_gather_rows(torch.arange(rank * 10, rank * 10 + rank + 1, dtype=torch.float32))
    probs_model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    torch.manual_seed(7)
    for p in probs_model.parameters():
        nn.init.normal_(p)
    images = np.random.default_rng(8).integers(0, 255, (7, 6, 6), dtype=np.uint8)
    res["probs"] = predict_probs(probs_model, images, 3, torch.device("cpu"))
    res["features"] = extract_features(_feature_net(), images, 2, torch.device("cpu"), (0.5, 0.25), False)
    res["mean_over_ranks"] = D.mean_over_ranks(torch.tensor(float(rank))).item()

    # BatchNorm statistics differ per rank after data-parallel training without SyncBN (CPU): every slice
    # of the predictions must still come from one model, rank 0's (the one saved)
    bn_model = _bn_net()
    with torch.no_grad():
        bn_model[1].running_mean.fill_(float(rank))
        bn_model[1].running_var.fill_(1.0 + rank)
    res["bn_probs"] = predict_probs(bn_model, images, 3, torch.device("cpu"))
    res["bn_features"] = extract_features(bn_model, images, 2, torch.device("cpu"), (0.5, 0.25), False)
    torch.save(res, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_simclr_negatives_across_ranks_equal_the_concatenated_batch(ranks):
    z1, z2 = (z.clone().requires_grad_(True) for z in _embeddings())
    ref = nt_xent(z1, z2, 0.1)
    ref.backward()
    assert np.mean([r["simclr_loss"] for r in ranks]) == pytest.approx(ref.item(), rel=1e-6)
    # each rank's input gradient, averaged as DDP does, is the global loss's gradient
    g1 = torch.cat([r["simclr_g1"] for r in ranks]) / WORLD
    g2 = torch.cat([r["simclr_g2"] for r in ranks]) / WORLD
    torch.testing.assert_close(g1, z1.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2, z2.grad, rtol=1e-5, atol=1e-7)
    assert ranks[0]["simclr_loss"] != pytest.approx(
        ranks[1]["simclr_loss"]
    )  # the ranks did hold different pairs


def test_moco_step_across_ranks_equals_single_process(ranks):
    model = _moco()
    v1, v2 = _views()
    ref = model.loss(v1, v2, 0.0, torch.Generator().manual_seed(5))
    ref.backward()
    model.flush_queue()
    assert np.mean([r["moco_loss"] for r in ranks]) == pytest.approx(ref.item(), rel=1e-5)
    for r in ranks:  # one queue, identical on every rank, holding both ranks' keys in order
        torch.testing.assert_close(r["moco_queue"], model.queue.keys, rtol=1e-5, atol=1e-6)
        assert r["moco_ptr"] == int(model.queue.ptr) == B
        grads = r["moco_grads"]
        assert set(grads) == {n for n, p in model.named_parameters() if p.grad is not None}
        for name, p in model.named_parameters():
            if p.grad is not None:
                torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_finetune_loss_share_gives_the_global_gradient(ranks):
    torch.manual_seed(6)
    head = nn.Linear(5, 3)
    x, y = _bce_batch()
    T.masked_bce(head(x), y).backward()
    for r in ranks:
        torch.testing.assert_close(r["bce_grad"], head.weight.grad, rtol=1e-5, atol=1e-7)


def test_gathers_restore_global_order(ranks):
    for r in ranks:
        assert r["world"] == WORLD and r["mean_over_ranks"] == 0.5
        assert r["gathered"].tolist() == [0.0, 10.0, 11.0]  # uneven parts, rank order
    probs_model = nn.Sequential(nn.Flatten(), nn.Linear(36, 2))
    torch.manual_seed(7)
    for p in probs_model.parameters():
        nn.init.normal_(p)
    images = np.random.default_rng(8).integers(0, 255, (7, 6, 6), dtype=np.uint8)
    ref = predict_probs(probs_model, images, 3, torch.device("cpu"))
    feats = extract_features(_feature_net(), images, 2, torch.device("cpu"), (0.5, 0.25), False)
    for r in ranks:
        np.testing.assert_allclose(r["probs"], ref, rtol=1e-6)
        torch.testing.assert_close(r["features"], feats)  # linear probe: slices per rank, gathered in order


def test_helpers_are_the_identity_in_one_process():
    x = torch.arange(6.0)
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main()
    assert D.local_rows(x) is x and D.all_gather_rows(x) is x and D.gather_with_grad(x) is x
    assert D.rank_range(10, 1, 3) == (3, 6) and D.rank_range(10, 2, 3) == (6, 10)
    assert D.broadcast_object({"a": 1}) == {"a": 1}
    z1, z2 = _embeddings()
    assert nt_xent_across_ranks(z1, z2, 0.1).item() == pytest.approx(nt_xent(z1, z2, 0.1).item())
    m = nn.Linear(2, 2)
    assert D.wrap_ddp(m, torch.device("cpu")) is m


def test_predictions_split_over_ranks_all_come_from_rank_0s_model(ranks):
    images = np.random.default_rng(8).integers(0, 255, (7, 6, 6), dtype=np.uint8)
    rank0 = _bn_net()
    with torch.no_grad():
        rank0[1].running_mean.fill_(0.0)
        rank0[1].running_var.fill_(1.0)
    ref = predict_probs(rank0, images, 3, torch.device("cpu"))
    feats = extract_features(rank0, images, 2, torch.device("cpu"), (0.5, 0.25), False)
    for r in ranks:  # rank 1 predicted rows 4-6 with rank 0's statistics, not its own
        np.testing.assert_allclose(r["bn_probs"], ref, rtol=1e-6)
        torch.testing.assert_close(r["bn_features"], feats)
