"""ImageNet weights on this machine: where ``imagenet`` looks, and ``chexbench weights fetch``.

A backbone declares the timm checkpoint that fits it (``BackboneSpec.imagenet_weights``, e.g.
``resnet50.a1_in1k``). The ``imagenet`` strategy reads local files only, in this order:
``<cache>/weights/<timm name>.safetensors`` (what :func:`fetch` writes), ``….pth``, then the
local Hugging Face cache that timm fills. Nothing here is called by a grid run: only
``chexbench weights fetch`` touches the network.

:func:`fetch` downloads the checkpoint timm's pretrained config names (the Hugging Face hub
repo, or timm's URL), checks it strictly against our one-channel model (as a load would:
every key but the classifier head must fit), and moves it into place atomically beside a
small JSON record of its source and sha256. A failed download or check leaves nothing.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import huggingface_hub
import torch
from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from huggingface_hub.utils import logging as hf_logging
from safetensors.torch import save_file
from timm.models import get_pretrained_cfg

from chexbench.backbones.base import audit_checkpoint
from chexbench.backbones.foreign import file_sha256, read_checkpoint
from chexbench.core.atomic import atomic_path
from chexbench.core.errors import WeightsError
from chexbench.core.paths import cache_dir
from chexbench.spec.registry import BACKBONES

HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class WeightsFile:
    """One ImageNet weights file present for a backbone."""

    backbone: str
    timm_name: str
    path: Path
    source: str  # where it came from: a hub URL, timm's URL, "Hugging Face cache", or "placed by hand"
    sha256: str


def weights_dir() -> Path:
    return cache_dir() / "weights"


def local_candidates(timm_name: str) -> list[Path]:
    """Where a fetched or hand-placed file for ``timm_name`` is looked for, in order."""
    return [weights_dir() / f"{timm_name}{ext}" for ext in (".safetensors", ".pth")]


def record_path(timm_name: str) -> Path:
    return weights_dir() / f"{timm_name}.json"


def hf_cached_file(timm_name: str) -> Path | None:
    """The checkpoint in the local Hugging Face cache (what timm downloads), if any. No network."""
    for filename in HUB_FILES:
        found = try_to_load_from_cache(f"timm/{timm_name}", filename)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def find_local(timm_name: str) -> Path | None:
    """The first local weights file for ``timm_name`` (our cache, then the HF cache), or None."""
    for path in local_candidates(timm_name):
        if path.is_file():
            return path
    return hf_cached_file(timm_name)


def present(backbone: str) -> list[WeightsFile]:
    """Every ImageNet weights file on this machine for ``backbone`` (empty if none or none declared)."""
    spec = BACKBONES.get(backbone)
    if not spec.has_imagenet_weights:
        return []
    name = spec.imagenet_weights
    record = _read_record(name)
    out = []
    for path in [*local_candidates(name), hf_cached_file(name)]:
        if path is None or not path.is_file():
            continue
        if record and Path(record.get("path", "")) == path:
            source, sha = record["source"], record["sha256"]
        else:
            source = "Hugging Face cache" if weights_dir() not in path.parents else "placed by hand"
            sha = file_sha256(path)
        out.append(WeightsFile(backbone, name, path, source, sha))
    return out


def _read_record(timm_name: str) -> dict[str, Any] | None:
    path = record_path(timm_name)
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def fetched(backbone: str) -> WeightsFile | None:
    """The weights :func:`fetch` stored for ``backbone``, if they are still there."""
    spec = BACKBONES.get(backbone)
    if not spec.has_imagenet_weights:
        return None
    record = _read_record(spec.imagenet_weights)
    if not record or not Path(record.get("path", "")).is_file():
        return None
    return WeightsFile(
        backbone, spec.imagenet_weights, Path(record["path"]), record["source"], record["sha256"]
    )


# -- fetch ----------------------------------------------------------------------------------
def fetch(backbone: str) -> WeightsFile:
    """Download, verify and store the ImageNet weights ``backbone`` declares. Network: yes."""
    spec = BACKBONES.get(backbone)
    if not spec.has_imagenet_weights:
        raise WeightsError(
            f"{backbone} has no ImageNet weights to fetch (the imagenet strategy does not apply to it)"
        )
    name = spec.imagenet_weights
    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise WeightsError(f"timm has no pretrained config '{name}' (declared by {backbone})")
    target = weights_dir() / f"{name}.safetensors"
    with tempfile.TemporaryDirectory(
        prefix="chexbench-fetch-"
    ) as tmp:  # nothing under the cache until verified
        downloaded, origin = _download(cfg, Path(tmp), backbone)
        state, _ = read_checkpoint(downloaded)
        with torch.device("meta"):
            model = spec.build(224)
        report, _ = audit_checkpoint(
            model.model,
            state,
            spec,
            source=f"{origin} (for {backbone})",
            declared_unexpected=spec.head_prefixes,
        )
        if downloaded.suffix != ".safetensors":  # store tensors only: later reads never unpickle
            converted = Path(tmp) / "converted.safetensors"
            save_file({k: v.contiguous() for k, v in state.items()}, str(converted))
            downloaded = converted
        sha = file_sha256(downloaded)
        record = {
            "backbone": backbone,
            "timm_name": name,
            "path": str(target),
            "source": origin,
            "sha256": sha,
            "bytes": downloaded.stat().st_size,
            "fetched_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "loaded_keys": report.loaded_keys,
            "dropped_keys": report.dropped_keys,
            "notes": report.notes,
        }
        with atomic_path(record_path(name)) as tmp_record:  # the record first: a weights file never lacks one
            Path(tmp_record).write_text(json.dumps(record, indent=1) + "\n")
        with atomic_path(target) as tmp_target:
            shutil.move(str(downloaded), tmp_target)
    return WeightsFile(backbone, name, target, origin, sha)


def _download(cfg: Any, into: Path, backbone: str) -> tuple[Path, str]:
    """The checkpoint file timm's config ``cfg`` names, downloaded into ``into``; and its origin."""
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id
        what = f"ImageNet weights of {backbone} ({repo})"
        if constants.HF_HUB_OFFLINE:
            raise WeightsError(f"cannot download {what}: HF_HUB_OFFLINE is set")
        _require_reachable(constants.ENDPOINT, what)
        hf_logging.set_verbosity_error()  # no retry chatter: one line on failure
        for filename in HUB_FILES:
            try:
                path = huggingface_hub.hf_hub_download(repo, filename, local_dir=into)
            except LocalEntryNotFoundError as e:
                raise WeightsError(f"cannot download {what}: hub unreachable ({_one_line(e)})") from None
            except EntryNotFoundError:
                continue
            except Exception as e:  # network, HTTP, disk
                raise WeightsError(f"cannot download {what}: {type(e).__name__}: {_one_line(e)}") from None
            return Path(path), f"{constants.ENDPOINT.rstrip('/')}/{repo}/{filename}"
        raise WeightsError(f"cannot download {what}: the repo has none of {', '.join(HUB_FILES)}")
    if cfg.url:
        what = f"ImageNet weights of {backbone} ({cfg.url})"
        _require_reachable(cfg.url, what)
        dest = into / Path(urlparse(cfg.url).path).name
        try:
            torch.hub.download_url_to_file(cfg.url, str(dest), progress=False)
        except Exception as e:
            raise WeightsError(f"cannot download {what}: {type(e).__name__}: {_one_line(e)}") from None
        return dest, cfg.url
    raise WeightsError(f"timm's config {cfg.architecture}.{cfg.tag} names no download location")


def _require_reachable(url: str, what: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, when the host cannot be reached (instead of minutes of retries)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise WeightsError(
            f"cannot download {what}: {host}:{port} is unreachable (offline? {e.__class__.__name__}: {e})"
        ) from None


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else e.__class__.__name__
