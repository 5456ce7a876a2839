"""A cached phantom is generated once when several callers need it at once (two shards, two test
workers): the others wait under its lock and read the same folder; a killed generator's lock does not
block the next caller."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

from chexbench.datasets.phantom import generate as G

OPTIONS = {"patients": 6, "size": 16, "seed": 0}


def test_concurrent_callers_generate_a_phantom_once_and_share_its_folder(tmp_path, monkeypatch):
    calls: list[str] = []
    real = G.write_site

    def slow_write_site(out, *args, **kwargs):
        calls.append(str(out))
        time.sleep(0.5)  # both callers are past the first "already generated?" look by now
        return real(out, *args, **kwargs)

    monkeypatch.setattr(G, "write_site", slow_write_site)
    start = threading.Barrier(3)
    roots: list = []

    def call() -> None:
        start.wait()
        roots.append(G.cached_site(tmp_path, "chexpert", OPTIONS))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(roots) == 3 and len(set(roots)) == 1
    assert len(calls) == 1, calls  # one generation; without the lock each caller rendered the site
    assert (roots[0] / "phantom_manifest.json").is_file()
    assert not list((tmp_path / "phantom").glob(".*.tmp-*"))  # no discarded copy left behind
    assert not list((tmp_path / "phantom").glob(".*.lck"))  # the lock is released


def test_the_lock_of_a_killed_generator_does_not_block_the_next_one(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    final = tmp_path / "phantom" / f"nih-{G.options_key('nih', OPTIONS)}"
    final.parent.mkdir(parents=True)
    lock = final.parent / f".{final.name}.lck"
    owner = {"host": socket.gethostname(), "pid": dead.pid, "token": "killed", "since": time.time()}
    lock.write_text(json.dumps(owner))  # fresh (just touched), but its owner is gone
    assert not os.path.exists(f"/proc/{dead.pid}")
    assert G.cached_site(tmp_path, "nih", OPTIONS) == final
    assert (final / "phantom_manifest.json").is_file()
    assert not lock.exists()
