"""The key queue is FIFO and wraps; the momentum update is exact; the schedule ends at 1."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from chexbench.strategies.momentum import KeyQueue, cosine_momentum, momentum_update


def test_queue_is_fifo_and_wraps() -> None:
    q = KeyQueue(size=5, dim=2)
    batches = [torch.full((2, 2), float(i)) for i in range(1, 5)]  # keys 1,1,2,2,3,3,4,4
    for b in batches:
        q.enqueue(b)
    # 8 keys through a ring of 5: slots 0..2 were overwritten by keys 6..8 (3,4,4), 3..4 hold keys 4..5 (2,3)
    assert q.keys[:, 0].tolist() == [3.0, 4.0, 4.0, 2.0, 3.0]
    assert int(q.ptr) == 8 % 5
    assert int(q.total_enqueued) == 8
    # the oldest surviving keys are the next to go
    q.enqueue(torch.full((1, 2), 9.0))
    assert q.keys[:, 0].tolist() == [3.0, 4.0, 4.0, 9.0, 3.0]


def test_queue_batch_larger_than_queue_keeps_the_last_keys_in_order() -> None:
    q = KeyQueue(size=3, dim=1)
    q.enqueue(torch.arange(1.0, 3.0).view(-1, 1))  # ptr → 2
    q.enqueue(torch.arange(10.0, 17.0).view(-1, 1))  # 7 keys into 3 slots: 14, 15, 16 survive
    assert sorted(q.keys[:, 0].tolist()) == [14.0, 15.0, 16.0]
    assert int(q.ptr) == (2 + 7) % 3
    # the next write replaces the oldest of the survivors (14)
    q.enqueue(torch.tensor([[99.0]]))
    assert sorted(q.keys[:, 0].tolist()) == [15.0, 16.0, 99.0]


def test_queue_state_round_trips_through_state_dict() -> None:
    q = KeyQueue(4, 3)
    q.enqueue(torch.randn(3, 3))
    r = KeyQueue(4, 3)
    r.load_state_dict(q.state_dict())
    assert torch.equal(r.keys, q.keys) and int(r.ptr) == 3


def test_momentum_update_is_exact() -> None:
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    target = copy.deepcopy(online)
    for p in target.parameters():
        p.data.normal_()
    target.get_buffer("1.running_mean").fill_(7.0)
    before = [p.detach().clone() for p in target.parameters()]
    m = 0.9
    momentum_update(online, target, m)
    for p_t, p_0, p_o in zip(target.parameters(), before, online.parameters(), strict=True):
        assert torch.allclose(p_t, m * p_0 + (1 - m) * p_o, rtol=0, atol=1e-7)
    assert torch.all(target.get_buffer("1.running_mean") == 7.0)  # buffers are not averaged
    momentum_update(online, target, 0.0)  # m = 0 copies
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        assert torch.equal(p_t, p_o)


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0.0, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(1.0, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(0.5, 0.99) == pytest.approx(0.995)
    values = [cosine_momentum(p / 10, 0.9) for p in range(11)]
    assert values == sorted(values)
