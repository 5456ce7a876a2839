"""Breaking a stale lock never leaves two holders; try_acquire does not wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from chexbench.core import lock as lock_module
from chexbench.core.lock import FileLock


def _dead_pid() -> int:
    out = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def _plant_stale(path, token="stale") -> None:
    import socket

    path.write_text(json.dumps({"host": socket.gethostname(), "pid": _dead_pid(), "token": token}))


def test_a_waiter_acting_on_an_outdated_look_never_makes_two_holders(tmp_path, monkeypatch):
    """B saw the stale lock; A broke it and took a fresh one; when B breaks on its old look,
    a third process C takes the path at that very moment. Exactly one of A and C may hold."""
    path = tmp_path / "x.lck"
    _plant_stale(path)
    b = FileLock(path, poll_s=0.01)
    seen = b._stale_owner()
    assert seen is not None and seen["token"] == "stale"
    a = FileLock(path, poll_s=0.01, timeout_s=2)
    a.acquire()  # breaks the stale lock, takes a fresh one
    c = FileLock(path, poll_s=0.01)
    c_took = []
    real_link = os.link

    def third_process_takes_the_path(src, dst, *args, **kwargs):  # C creates the lock right then
        c_took.append(c.try_acquire())
        return real_link(src, dst, *args, **kwargs)

    monkeypatch.setattr(lock_module.os, "link", third_process_takes_the_path)
    b._break_stale(seen)
    if not c_took:
        c_took.append(c.try_acquire())
    believers = [x for x in (a, c) if x._depth > 0]
    assert len(believers) == 1, "two processes believe they hold the lock"
    assert believers[0].held()  # and the one that believes it, does
    assert believers[0] is a and b.broken_stale == []
    a.release()
    c.release()


def test_try_acquire_takes_a_free_or_stale_lock_and_never_waits(tmp_path):
    path = tmp_path / "x.lck"
    first, second = FileLock(path), FileLock(path)
    assert first.try_acquire()
    t0 = time.monotonic()
    assert not second.try_acquire()
    assert time.monotonic() - t0 < 1.0
    first.release()
    assert second.try_acquire() and second.held()
    second.release()
    _plant_stale(path)
    third = FileLock(path)
    assert third.try_acquire() and third.broken_stale[0]["token"] == "stale"
    third.release()
    assert not path.exists()


def test_three_processes_racing_to_break_one_stale_lock_hold_it_one_at_a_time(tmp_path):
    path, inside, go = tmp_path / "x.lck", tmp_path / "inside", tmp_path / "go"
    _plant_stale(path)
    code = (
        "import json, os, sys, time\n"
        "from chexbench.core.lock import FileLock\n"
        f"path, inside, go = {str(path)!r}, {str(inside)!r}, {str(go)!r}\n"
        "while not os.path.exists(go): time.sleep(0.001)\n"
        "lock = FileLock(path, poll_s=0.001, timeout_s=30)\n"
        "with lock:\n"
        "    fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # fails if another holds it too\n"
        "    time.sleep(0.2)\n"
        "    os.close(fd); os.unlink(inside)\n"
        "print(json.dumps(len(lock.broken_stale)))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(3)
    ]
    time.sleep(1.5)  # all three are polling for the go file
    go.write_text("")
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-500:] for o in outs]
    assert sum(json.loads(o[0]) for o in outs) == 1  # the stale lock was broken once
    assert not path.exists() and not path.with_name("x.lck.break").exists()
