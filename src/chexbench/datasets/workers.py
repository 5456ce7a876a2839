"""Worker processes that do not outlive their parent.

A process pool's workers block on their task queue; when the parent is killed with SIGKILL
(a cluster job killed, ``kill -9``) nothing tells them, and they wait forever. On Linux,
:func:`die_with_parent` (a pool initializer) asks the kernel to send the worker SIGKILL when
its parent dies (``prctl(PR_SET_PDEATHSIG)``), and exits at once if the parent is already
gone. Elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker when the process ``parent_pid`` that started it dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # no libc with prctl: keep the default behaviour
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)
