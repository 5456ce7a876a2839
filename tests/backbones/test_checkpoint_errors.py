"""Checkpoint files of the wrong kind: one line that says what the path is and what to give instead."""

from __future__ import annotations

import os

import pytest
import torch

from chexbench.backbones.foreign import read_checkpoint
from chexbench.core.errors import WeightsError


def _message(path) -> str:
    with pytest.raises(WeightsError) as e:
        read_checkpoint(path)
    text = str(e.value)
    assert "\n" not in text and "weights_only" not in text  # never torch's advice to load unsafely
    return text


def test_a_folder_is_named_as_a_folder(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    text = _message(tmp_path)
    assert (
        "is a folder" in text and "model.pt" in text and "not found" not in text
    )  # was "checkpoint file not found"


@pytest.mark.parametrize("content", [b"epoch,loss\n1,0.5\n", b"eeee", b"\x00\x01\x02garbage"])
def test_a_file_of_another_kind_is_named(tmp_path, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    text = _message(path)
    assert (
        "not a PyTorch checkpoint" in text and str(path) in text and "KeyError" not in text
    )  # was "KeyError: 101"


def test_a_pickled_payload_is_refused_without_unsafe_advice(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save(
        {"call": os.system, "w": torch.zeros(1)}, path
    )  # a reference to a function of a blocked module
    text = _message(path)
    assert "pickled Python objects" in text and "state_dict()" in text


def test_missing_file(tmp_path):
    assert "not found" in _message(tmp_path / "none.pt")
