"""`make install`'s choice of torch index (scripts/torch-index): the CPU build where no GPU is, never a
stall on an index that does not answer, and the user's TORCH_INDEX as given."""

from __future__ import annotations

import time
import urllib.error

import pytest
from script_module import load_script


def _run(monkeypatch, capsys, *, env: str | None, gpu: bool, reachable: bool) -> tuple[str, str]:
    m = load_script("torch-index")
    if env is None:
        monkeypatch.delenv("TORCH_INDEX", raising=False)
    else:
        monkeypatch.setenv("TORCH_INDEX", env)
    monkeypatch.setattr(
        m.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if gpu and name == "nvidia-smi" else None
    )
    asked = []

    class _Answer:
        def close(self):
            pass

    def urlopen(url, timeout):
        asked.append(timeout)
        if not reachable:
            raise urllib.error.URLError("Name or service not known")
        return _Answer()

    monkeypatch.setattr(m.urllib.request, "urlopen", urlopen)
    assert m.main() == 0
    assert all(t <= 5 for t in asked)  # a probe never waits longer than a few seconds
    out = capsys.readouterr()
    return out.out.strip(), out.err


def test_cpu_machine_gets_the_cpu_index(monkeypatch, capsys):
    index, _ = _run(monkeypatch, capsys, env=None, gpu=False, reachable=True)
    assert index == "https://download.pytorch.org/whl/cpu"


def test_unreachable_index_falls_back_and_says_so(monkeypatch, capsys):
    index, err = _run(monkeypatch, capsys, env="auto", gpu=False, reachable=False)
    assert index == "" and "not reachable" in err and "TORCH_INDEX" in err


@pytest.mark.parametrize(
    ("env", "expected"), [("", ""), ("https://mirror.example/simple", "https://mirror.example/simple")]
)
def test_the_users_choice_wins(monkeypatch, capsys, env, expected):
    assert _run(monkeypatch, capsys, env=env, gpu=False, reachable=True)[0] == expected


def test_gpu_machine_keeps_the_default(monkeypatch, capsys):
    assert _run(monkeypatch, capsys, env=None, gpu=True, reachable=True)[0] == ""


def test_a_hanging_index_is_abandoned_after_the_timeout(monkeypatch):
    """A name lookup that hangs (no DNS) is not bounded by urlopen's timeout: the probe gives up anyway."""
    m = load_script("torch-index")
    monkeypatch.setattr(m, "PROBE_TIMEOUT_S", 0.3)
    monkeypatch.setattr(m.urllib.request, "urlopen", lambda url, timeout: time.sleep(30))
    t0 = time.perf_counter()
    assert "no answer" in m.probe("https://download.pytorch.org/whl/cpu/torch/")
    assert time.perf_counter() - t0 < 2
