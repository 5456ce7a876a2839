"""A cross-process, cross-host file lock with stale-lock recovery.

Shards of one grid may run on different nodes that share a filesystem (SLURM), where
``flock`` is unreliable (NFS, Lustre without ``-o flock``) and a killed job's lock must
not block the others forever. So the lock is a file created atomically (``O_CREAT |
O_EXCL``) holding the owner's host, pid and a token; while held, a heartbeat thread
touches it every ``heartbeat_s`` seconds. A waiter breaks the lock when it is *stale*:

- its mtime is older than ``stale_after_s`` (the owner stopped beating: killed, node lost), or
- the owner is on this host and its pid no longer exists (killed a moment ago).

Breaking happens under a second, short-lived lock (``<lock>.break``, same O_EXCL file):
the breaker looks again at the lock, and removes it only if it is still the very stale lock
it saw (same token). A waiter acting on an outdated look therefore never removes a fresh
lock another waiter has taken since. (An earlier version renamed the lock away and put a
fresh one back with ``os.link``, which failed silently when a third process had taken the
path meanwhile: two holders.) The guarantee assumes what the heartbeat makes true: a lock
judged stale belongs to a dead owner. Only the holder whose token is in the file removes
it; ``held()`` tells a holder whether its lock is still its own.

Why not ``filelock``: its ``FileLock`` is ``flock``-based, which NFS and Lustre (without
``-o flock``) do not make reliable across nodes; its soft locks are file-existence locks
like this one. This module keeps its own because the torchrun ranks read the owner's
``info`` (the job) from the file, and the tests read which stale owners were broken.

Used by the shared pretraining cache, the prepared-data cache and the phantom cache (the last two
through :func:`folder_lock`), so concurrent shards do the work once and the others wait, then reuse
the result.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from chexbench.core.atomic import pid_alive
from chexbench.core.errors import ChexbenchError

#: seconds between heartbeats of a held lock
HEARTBEAT_S = 10.0
#: a lock whose file was not touched for this long is stale
STALE_AFTER_S = 120.0


class LockTimeout(ChexbenchError):
    """Waited longer than the caller's timeout for a live lock."""


class FileLock:
    """Exclusive lock on ``path`` (the lock file itself); re-entrant within one thread.

    ``with FileLock(p): ...`` waits (polling every ``poll_s``) until the lock is free or
    stale, holds it with a heartbeat, and releases it on exit — also on exceptions.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        heartbeat_s: float = HEARTBEAT_S,
        stale_after_s: float = STALE_AFTER_S,
        poll_s: float = 0.2,
        timeout_s: float | None = None,
        info: dict | None = None,
    ):
        if stale_after_s <= heartbeat_s:
            raise ValueError(f"stale_after_s ({stale_after_s}) must exceed heartbeat_s ({heartbeat_s})")
        self.path = Path(path)
        self.heartbeat_s, self.stale_after_s, self.poll_s, self.timeout_s = (
            heartbeat_s,
            stale_after_s,
            poll_s,
            timeout_s,
        )
        self.info = dict(info or {})  # extra fields written into the lock file (e.g. the torchrun job)
        self.token = ""
        self._depth = 0
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.broken_stale: list[dict] = []  # owners of stale locks this instance broke (for logs/tests)

    # -- acquiring ----------------------------------------------------------------------
    def _try_create(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(
                {
                    **self.info,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "token": token,
                    "since": time.time(),
                },
                f,
            )
        self.token = token
        return True

    def owner(self) -> dict | None:
        """The current owner's ``{host, pid, token, since}``; None if unlocked (or unreadable)."""
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, OSError):
            return None

    def is_stale(self) -> bool:
        return self._stale_owner() is not None

    def _stale_owner(self) -> dict | None:
        """The owner record (``{}`` if unreadable) when the lock is stale, else None."""
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        owner = self.owner()
        if age > self.stale_after_s:
            return owner or {}
        if owner is None:  # being written right now, or garbage: only the age can tell
            return None
        if owner.get("host") == socket.gethostname() and not pid_alive(int(owner.get("pid", -1))):
            return owner
        return None

    def _break_stale(self, seen: dict) -> None:
        """Remove the lock file if it still holds the stale lock ``seen`` (under ``<lock>.break``)."""
        breaker = self.path.with_name(f"{self.path.name}.break")
        if not self._take_breaker(breaker):
            return  # another waiter is breaking it right now; look again later
        try:
            now = self._stale_owner()
            if now is None or now.get("token") != seen.get("token"):
                return  # taken or released since we looked: not ours to break
            self.path.unlink(missing_ok=True)
            self.broken_stale.append(seen)
        finally:
            breaker.unlink(missing_ok=True)

    def _take_breaker(self, breaker: Path) -> bool:
        """Create ``breaker`` exclusively; a breaker left by a dead waiter is removed first."""
        for _ in range(2):
            try:
                fd = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                try:
                    age = time.time() - breaker.stat().st_mtime
                except FileNotFoundError:
                    continue
                other = _read_json(breaker) or {}
                dead = other.get("host") == socket.gethostname() and not pid_alive(int(other.get("pid", -1)))
                if not (dead or age > self.stale_after_s):
                    return False
                breaker.unlink(missing_ok=True)  # breaking takes milliseconds: this one's owner died
                continue
            with os.fdopen(fd, "w") as f:
                json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
            return True
        return False

    def _attempt(self) -> bool:
        """One try: create the lock, or break a stale one and create it."""
        if self._try_create():
            return True
        stale = self._stale_owner()
        if stale is None:
            return False
        self._break_stale(stale)
        return self._try_create()

    def try_acquire(self) -> bool:
        """Take the lock if it is free or stale, without waiting; True if now held."""
        if self._depth:
            self._depth += 1
            return True
        if not self._attempt():
            return False
        self._start_heartbeat()
        return True

    def acquire(self) -> None:
        if self._depth:
            self._depth += 1
            return
        start = time.monotonic()
        while not self._attempt():
            if self.timeout_s is not None and time.monotonic() - start > self.timeout_s:
                raise LockTimeout(
                    f"lock {self.path} is held by {self.owner()} for longer than {self.timeout_s:g}s"
                )
            time.sleep(self.poll_s)
        self._start_heartbeat()

    def _start_heartbeat(self) -> None:
        self._depth = 1
        self._stop.clear()
        self._beat = threading.Thread(
            target=self._heartbeat, name=f"lock-heartbeat {self.path.name}", daemon=True
        )
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    def held(self) -> bool:
        """True if the lock file exists and carries this instance's token."""
        owner = self.owner()
        return bool(self.token) and owner is not None and owner.get("token") == self.token

    def release(self) -> None:
        if self._depth > 1:
            self._depth -= 1
            return
        if self._depth == 0:
            return
        self._depth = 0
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if self.held():
            self.path.unlink(missing_ok=True)
        self.token = ""

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Exclusive lock on a cache folder that is made once (``.<name>.lck`` beside it; the parent is
    created), so concurrent runs (shards, workers) make it only once: the others wait, then reuse it."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(folder.parent / f".{folder.name}.lck"):
        yield


@contextlib.contextmanager
def locked(path: str | Path, **kwargs: float) -> Iterator[FileLock]:
    """``with locked(folder / ".lock"):`` — the :class:`FileLock` as a context manager."""
    lock = FileLock(path, **kwargs)  # type: ignore[arg-type]
    with lock:
        yield lock
