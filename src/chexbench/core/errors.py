"""Domain errors. The CLI turns these into one clear line and a non-zero exit."""

import errno


class ChexbenchError(Exception):
    """Base class of every error a user can cause (bad input, bad config, missing files)."""


class ConfigError(ChexbenchError):
    """A grid or config file is invalid."""


class DataError(ChexbenchError):
    """A dataset root, label file or image is missing or malformed."""


class WeightsError(ChexbenchError):
    """Pretrained weights are missing or do not match the architecture."""


class SkipCell(ChexbenchError):
    """A cell cannot run here for a reason that is not a failure (e.g. no ImageNet weights)."""


class LeakageError(ChexbenchError):
    """Test patients would leak into training or pretraining."""


#: a note in a cell record (e.g. the protocol's ``head_notes``) that starts with this is a warning:
#: the cell ran, but a reader of its number must know something (listed in the report's "Warnings")
RECORD_WARNING_PREFIX = "warning: "


def os_error_line(error: OSError) -> str:
    """One line for a filesystem fault: the path, what happened, what to do (no traceback).

    Read-only folders, permissions, a full disk and missing folders are the user's machine, not
    a bug: the CLI prints this line and exits non-zero (atomic writes leave nothing partial)."""
    path = error.filename if error.filename is not None else None
    if error.filename2 is not None:
        path = f"{error.filename} → {error.filename2}"
    what = error.strerror or str(error) or type(error).__name__
    advice = {
        errno.ENOSPC: "free some space there or point chexbench at another disk (--results, CHEXBENCH_CACHE)",
        errno.EDQUOT: "your disk quota is used up: free some space or point chexbench at another disk",
        errno.EROFS: "the file system is read-only: choose a writable folder (--results, CHEXBENCH_CACHE)",
        errno.EACCES: (
            "check its permissions (ls -ld), or choose a folder you can write to (--results, CHEXBENCH_CACHE)"
        ),
        errno.EPERM: (
            "check its permissions (ls -ld), or choose a folder you can write to (--results, CHEXBENCH_CACHE)"
        ),
        errno.ENOENT: "check the path; a parent folder may be missing",
        errno.ENOTDIR: "a part of the path is a file, not a folder: check the path",
        errno.EISDIR: "it is a folder: give a file",
    }.get(error.errno or -1, "check the path and the disk")
    where = f"{path}: " if path else ""
    return f"{where}{what} — {advice}"


#: errno values that are the machine's fault, not a cell's: a run stops on them instead of
#: recording every following cell as failed (each would fail the same way)
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
