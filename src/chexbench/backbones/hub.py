"""``hf-hub:ORG/NAME[@REVISION][:FILE]``: a checkpoint on the Hugging Face Hub, read from the local cache
only.

A grid run never downloads: a reference resolves through ``huggingface_hub``'s cache layout
(``models--ORG--NAME/refs/<branch>`` → ``snapshots/<commit>/<file>``) as with
``HF_HUB_OFFLINE=1``, and an absent one is one line naming the command that fetches it.
``chexbench weights fetch hf-hub:…`` is the only place that downloads (:func:`fetch`): the weights
file and the model's small configuration files (``config.json``, ``preprocessor_config.json``,
``open_clip_config.json``: the input normalization is read from them), into the same cache.

Without ``:FILE`` the weights file is the first present of :data:`WEIGHT_FILES`. The resolved
commit and the file's sha256 go into the cell's record. The cache is the one ``huggingface_hub``
uses (``HF_HUB_CACHE``, else ``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read when a
reference is resolved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from chexbench.core.errors import WeightsError

PREFIX = "hf-hub:"
#: the weights file of a model repo, in order: transformers / timm, open_clip, then their pickled forms
WEIGHT_FILES = (
    "model.safetensors",
    "open_clip_model.safetensors",
    "pytorch_model.bin",
    "open_clip_pytorch_model.bin",
)
#: small files fetched beside the weights (the model's configuration and preprocessing)
CONFIG_FILES = ("config.json", "preprocessor_config.json", "open_clip_config.json")
_REF = re.compile(
    r"^hf-hub:(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+?)(?:@(?P<rev>[^:@\s]+))?(?::(?P<file>[^:\s]+))?$"
)


@dataclass(frozen=True)
class HubRef:
    repo: str
    revision: str | None = None  # a branch, tag or commit; None: main
    filename: str | None = None  # None: the first of WEIGHT_FILES present

    def __str__(self) -> str:
        return (
            f"{PREFIX}{self.repo}"
            + (f"@{self.revision}" if self.revision else "")
            + (f":{self.filename}" if self.filename else "")
        )

    @property
    def fetch_command(self) -> str:
        return f"chexbench weights fetch {self}"


@dataclass(frozen=True)
class Resolved:
    """A reference found in the local cache."""

    ref: HubRef
    path: Path  # the file in the snapshot folder
    commit: str  # the snapshot's commit hash
    filename: str


def is_hub_ref(text: str) -> bool:
    return str(text).startswith(PREFIX)


def parse(text: str) -> HubRef:
    """``hf-hub:ORG/NAME[@REVISION][:FILE]`` → :class:`HubRef`; a malformed one is a WeightsError."""
    m = _REF.match(str(text).strip())
    if not m:
        raise WeightsError(f"malformed hub reference {text!r}: expected hf-hub:ORG/NAME[@REVISION][:FILE]")
    return HubRef(m["repo"], m["rev"], m["file"])


def hub_cache_dir() -> Path:
    """huggingface_hub's cache folder, from the environment as it is now."""
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if env.get("HF_HOME"):
        return Path(env["HF_HOME"]).expanduser() / "hub"
    return Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface" / "hub"


def resolve_cached(ref: HubRef, what: str = "") -> Resolved:
    """The file ``ref`` names in the local cache (no network); absent: one line naming the fetch command."""
    from huggingface_hub import try_to_load_from_cache

    cache = hub_cache_dir()
    names = [ref.filename] if ref.filename else list(WEIGHT_FILES)
    for name in names:
        try:
            found = try_to_load_from_cache(ref.repo, name, cache_dir=cache, revision=ref.revision)
        except Exception as e:  # a malformed repo id or revision
            raise WeightsError(
                f"{what}{ref}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            ) from None
        if isinstance(found, str) and Path(found).is_file():
            path = Path(found)
            snapshots = cache / f"models--{ref.repo.replace('/', '--')}" / "snapshots"
            commit = path.relative_to(snapshots).parts[0] if path.is_relative_to(snapshots) else ""
            return Resolved(ref, path, commit, name)
    wanted = ref.filename or " or ".join(WEIGHT_FILES)
    raise WeightsError(
        f"{what}{ref} is not in the local Hugging Face cache ({cache}; {wanted}); "
        f"on a machine with network run: {ref.fetch_command}"
    )


def fetch(ref: HubRef) -> Resolved:
    """Download the weights file of ``ref`` (and its configuration files) into the cache. Network: yes."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.utils import logging as hf_logging

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise WeightsError(f"cannot download {ref}: HF_HUB_OFFLINE is set")
    hf_logging.set_verbosity_error()
    cache = hub_cache_dir()
    try:
        info = huggingface_hub.HfApi().model_info(ref.repo, revision=ref.revision)
    except Exception as e:  # unreachable hub, unknown repo or revision, gated repo
        raise WeightsError(f"cannot download {ref}: {type(e).__name__}: {_one_line(e)}") from None
    present = {s.rfilename for s in info.siblings or []}
    names = [ref.filename] if ref.filename else [n for n in WEIGHT_FILES if n in present][:1]
    if not names or names[0] not in present:
        raise WeightsError(
            f"cannot download {ref}: the repo at {info.sha} has none of"
            f" {ref.filename or ', '.join(WEIGHT_FILES)}"
        )
    for name in [*names, *(c for c in CONFIG_FILES if c in present)]:
        try:
            huggingface_hub.hf_hub_download(ref.repo, name, revision=info.sha, cache_dir=cache)
        except Exception as e:
            raise WeightsError(
                f"cannot download {ref} ({name}): {type(e).__name__}: {_one_line(e)}"
            ) from None
    if ref.revision is None or ref.revision != info.sha:  # resolving the ref later finds this commit
        _write_ref(cache, ref, info.sha)
    return resolve_cached(HubRef(ref.repo, info.sha, names[0]))


def _write_ref(cache: Path, ref: HubRef, commit: str) -> None:
    from chexbench.core.atomic import atomic_write_text

    if ref.revision and re.fullmatch(r"[0-9a-f]{40}", ref.revision):
        return
    path = cache / f"models--{ref.repo.replace('/', '--')}" / "refs" / (ref.revision or "main")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(commit, path)


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__
