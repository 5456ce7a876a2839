"""Atomic file writes: everything chexbench writes goes through :func:`atomic_path`.

The content is flushed to disk (``fsync``) before the rename, so after a crash or power loss a
final name holds either the old content or the complete new one, never an empty file.

Temporary files and folders are created with the modes an ordinary ``open`` / ``mkdir``
would give them (``0o666`` / ``0o777`` less the umask), so a group-shared results folder
stays readable by the group (``tempfile.mkstemp`` would make every file ``0o600``).

A temporary file's or folder's name carries its writer (``.<name>.<random>.<pid>@<host>.tmp``),
so a later run can tell a leftover of a killed writer from one still being written:
:func:`clean_stale_temporaries` removes the first kind only (a report's staged figures, a
gallery, a checkpoint, a record).
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

#: a temporary file untouched for this long is a leftover whatever its writer (other hosts' writers
#: cannot be asked whether they live); a writer appends to its file, so a live one keeps it fresh
STALE_TEMP_AGE_S = 6 * 3600.0

_TEMP_NAME = re.compile(r"^\..+\.(?P<rand>[0-9a-f]{8})\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9._-]+)\.tmp$")


def _host() -> str:
    """This host's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname())[:64] or "host"


def _create_temp_file(path: Path) -> Path:
    """Create an empty temporary file beside ``path`` (mode ``0o666`` less the umask)."""
    for _ in range(100):
        tmp = path.with_name(temp_name(path.name))
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file beside {path}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; rename it into place when the block ends.

    If the block raises (or is interrupted), the temporary file is removed and ``path`` keeps
    its previous content: a killed run never leaves a half-written file under a final name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp_file(path)
    try:
        yield str(tmp)
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a writer (pyarrow, torch) that does not say which file: name it
            code = e.errno if e.errno is not None else _errno_in(str(e))
            text = e.strerror or (os.strerror(code) if code else str(e))
            raise OSError(code, text, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _errno_in(message: str) -> int | None:
    """The errno a library quoted in its message ("... [errno 28] No space left on device"), if any."""
    m = re.search(r"\[errno (\d+)\]", message, re.IGNORECASE)
    return int(m.group(1)) if m else None


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Persist a rename (the folder's entry); not every platform or file system allows it."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(text: str, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def atomic_write_parquet(
    df: pd.DataFrame, path: str | Path, footer: dict[bytes, bytes] | None = None
) -> None:
    """Write ``df`` to ``path`` (pages with CRC checksums); ``footer`` entries go into the file's
    key-value metadata beside pandas' own."""
    # lazy: keeps chexbench --help fast (the CLI imports this module; pandas/pyarrow ≈ 0.4 s)
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not footer:
        with atomic_path(path) as tmp:
            df.to_parquet(tmp, index=False, write_page_checksum=True)
        return
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **footer})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, write_page_checksum=True)


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_path` (torch is imported here, not at module level,
    so that the foundation stays importable without it for ``chexbench --help``)."""
    import torch  # lazy: keeps chexbench --help fast (the CLI imports this module)

    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except (
        RuntimeError
    ) as e:  # torch's writer reports a full disk as "PytorchStreamWriter failed writing file …"
        if "writ" not in str(e).lower():
            raise
        try:
            full = shutil.disk_usage(Path(path).parent).free < 256 * 2**20
        except OSError:
            full = False
        code = errno.ENOSPC if full else errno.EIO
        text = os.strerror(code) if full else f"cannot write: {str(e).splitlines()[0]}"
        raise OSError(code, text, str(path)) from e


def temp_name(name: str) -> str:
    """``.<name>.<random>.<pid>@<host>.tmp``: a temporary sibling of ``name`` that names its writer."""
    return f".{name[:120]}.{secrets.token_hex(4)}.{os.getpid()}@{_host()}.tmp"


def make_temp_dir(parent: str | Path, name: str, *, prefix: str | None = None) -> Path:
    """A new empty folder ``parent/.<name>.<random>.<pid>@<host>.tmp`` to be renamed to ``name``
    (mode ``0o777`` less the umask, as ``mkdir`` gives); a leftover of a killed writer is removed
    by :func:`clean_stale_temporaries`. ``prefix``: ``parent/<prefix><random>`` instead, for a
    caller that names and cleans its folders itself (the phantom cache)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        tmp = parent / (temp_name(name) if prefix is None else f"{prefix}{secrets.token_hex(4)}")
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary folder in {parent}")


def pid_alive(pid: object) -> bool:
    """Whether process ``pid`` exists on this host (anything but a positive int: no — ``os.kill``
    would signal a process group for 0 or a negative number)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # gone / larger than any pid
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def last_change(path: Path) -> float:
    """The newest modification time of ``path`` and, for a folder, of everything under it."""
    newest = path.stat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
                except OSError:
                    continue
    return newest


def clean_stale_temporaries(
    folder: str | Path, max_age_s: float = STALE_TEMP_AGE_S, recursive: bool = True
) -> list[Path]:
    """Remove the temporary files and folders of :func:`atomic_path` / :func:`make_temp_dir` in
    ``folder`` whose writer is gone.

    A temporary is stale when its writer ran on this host and that process no longer exists,
    or when nothing in it has been modified for ``max_age_s`` seconds. Those of live writers
    (this process's too), and entries that are not ours, are left alone. Returns the removed paths.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    host, now, removed = _host(), time.time(), []
    candidates = list(folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"))
    for tmp in candidates:
        m = _TEMP_NAME.match(tmp.name)
        if m is None or tmp.is_symlink() or not (tmp.is_file() or tmp.is_dir()):
            continue
        mine = m["host"] == host
        if mine and int(m["pid"]) == os.getpid():
            continue
        try:
            stale = (mine and not pid_alive(int(m["pid"]))) or now - last_change(tmp) > max_age_s
        except FileNotFoundError:  # removed meanwhile by another cleaner, or inside a folder removed above
            continue
        if not stale:
            continue
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            try:
                tmp.unlink()
            except FileNotFoundError:
                continue
        removed.append(tmp)
    return removed
