"""A phantom generation killed midway leaves a temporary folder; the next run removes it (issue 16 item 9)."""

import os
import signal
import subprocess
import sys
import time

from chexbench.datasets.phantom import generate as G
from chexbench.datasets.phantom.generate import STALE_AFTER_SECONDS, cached_site, remove_stale_temporaries

OPTIONS = {"patients": 6, "size": 16, "seed": 0}


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


def test_a_sigkill_during_generation_leaves_nothing_after_the_next_run(tmp_path):
    cache = tmp_path / "cache"
    code = (
        "import sys; from pathlib import Path; from chexbench.datasets.phantom.generate import cached_site; "
        "cached_site(Path(sys.argv[1]), 'chexpert', {'patients': 3000, 'size': 64, 'seed': 0})"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", code, str(cache)], env=env, start_new_session=True)
    phantom = cache / "phantom"
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not next(phantom.glob(".chexpert-*.tmp-*/**/*.jpg"), None):
            time.sleep(0.2)  # the rendering workers are writing images
        proc.send_signal(signal.SIGKILL)  # the generator only: its workers must not outlive it
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _processes_mentioning(str(cache)):
            time.sleep(0.2)
        assert not _processes_mentioning(str(cache)), "rendering workers outlived the killed generator"
    finally:
        if proc.poll() is None or _processes_mentioning(str(cache)):
            os.killpg(proc.pid, signal.SIGKILL)
    left = list(phantom.glob(".chexpert-*.tmp-*"))
    assert left, "the kill came too late to test anything"
    cached_site(cache, "nih", OPTIONS)  # the next generation in the same cache
    assert not list(phantom.glob(".*.tmp-*"))
    assert (phantom / f"nih-{G.options_key('nih', OPTIONS)}" / "phantom_manifest.json").is_file()


def test_only_dead_or_long_untouched_temporaries_are_removed(tmp_path):
    host = G._host()
    dead = tmp_path / f".chexpert-aaa.tmp-{host}-{_dead_pid()}-x1y2z3"
    live = tmp_path / f".chexpert-bbb.tmp-{host}-{os.getppid()}-x1y2z3"  # our parent: alive
    other_host = tmp_path / ".chexpert-ccc.tmp-otherhost-1-x1y2z3"
    old_legacy = tmp_path / ".nih-ddd.tmp-k2j3h4_x"
    new_legacy = tmp_path / ".nih-eee.tmp-abc123xy"
    unrelated = tmp_path / ".cache-notes"
    for d in (dead, live, other_host, old_legacy, new_legacy, unrelated):
        (d / "sub").mkdir(parents=True)
        (d / "sub" / "f.png").write_bytes(b"x")
    old = time.time() - STALE_AFTER_SECONDS - 60
    for path in (old_legacy, old_legacy / "sub", old_legacy / "sub" / "f.png"):
        os.utime(path, (old, old))
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([dead, old_legacy])
    assert live.is_dir() and other_host.is_dir() and new_legacy.is_dir() and unrelated.is_dir()
    # a foreign host's folder goes once nothing in it changed for the safe age
    assert (
        remove_stale_temporaries(tmp_path, now=time.time() + STALE_AFTER_SECONDS + 60).count(other_host) == 1
    )
    assert not remove_stale_temporaries(
        tmp_path, final_name="nih-zzz", now=time.time() + 2 * STALE_AFTER_SECONDS
    )
