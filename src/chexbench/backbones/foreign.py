"""Foreign checkpoints (MoCo, Lightning, torchvision, timm, safetensors) mapped onto our backbones.

Reading never runs code from the file: ``.safetensors`` holds tensors only, and torch files
are read with ``torch.load(weights_only=True)``. Training checkpoints often carry pickled
objects beside the weights (Lightning's hyper-parameter ``AttributeDict``, an
``argparse.Namespace``, a ``PosixPath``); each such class is replaced by an inert placeholder
of our own (an empty ``OrderedDict``) before torch's restricted unpickler sees it, so the
tensors can be read while nothing from the foreign class is imported or called. NumPy
scalars and arrays (a best score) are rebuilt from NumPy's fixed data-only functions.

A checkpoint's layout decides which keys are the encoder:

- ``moco``: facebookresearch/moco (``main_moco.py``: ``{"epoch", "arch", "state_dict",
  "optimizer"}``, a DistributedDataParallel ``state_dict`` with ``module.encoder_q.*`` (the
  query encoder, kept), ``module.encoder_k.*`` (momentum encoder), ``module.queue`` and
  ``module.queue_ptr``, all dropped) and MoCo-CXR, which shares it; MoCo v3
  (``module.base_encoder.*`` kept, ``module.momentum_encoder.*`` and ``module.predictor.*``
  dropped).
- ``lightning``: ``{"state_dict": {"<attribute>.<key>": …}, "epoch", "global_step", …}``; the
  attribute prefix (``model.``, ``backbone.``, ``encoder.`` …) is found by matching the keys
  against the target architecture.
- ``torchvision``: ResNet names (``conv1``, ``bn1``, ``layer1.0.conv1`` … ``fc``) are timm's
  ResNet names, key for key, so they load unchanged.
- ``timm`` / ``state_dict``: the keys are already the architecture's.
- ``auto``: any of the above, decided from the keys: the key prefix under which most of the
  architecture's keys are found. When two prefixes hold a full encoder, MoCo's query/base
  encoder wins, then the one that is not a momentum/EMA/target copy (lightly's
  ``backbone_momentum``, BYOL's ``target``); any other tie asks for ``prefix``.

``prefix`` (e.g. ``module.encoder_q.``) overrides the search: only keys under it are the
encoder. After the prefix is stripped, the backbone's own adaptations apply (3-channel first
convolution summed, ViT position embeddings resampled, classifier/projection head dropped)
and every other key must load strictly (:func:`chexbench.backbones.base.audit_checkpoint`).
"""

from __future__ import annotations

import collections
import hashlib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from chexbench.core.errors import WeightsError

FORMATS = (
    "auto",
    "timm",
    "torchvision",
    "moco",
    "lightning",
    "state_dict",
    "torchxrayvision",
    "hf_transformers",
    "open_clip",
    "openai_clip",
    "mae",
)

#: encoder prefixes of MoCo checkpoints, preferred in this order (the query / base encoder)
MOCO_ENCODER_PREFIXES = ("module.encoder_q.", "encoder_q.", "module.base_encoder.", "base_encoder.")
#: a key prefix naming a momentum / EMA / target copy of an encoder (the trained one is the other)
MOMENTUM_COPY = re.compile(r"(^|[._])(momentum|encoder_k|ema|target|key_encoder)([._]|$)")
#: wrappers around the state dict in training checkpoints, tried in this order
STATE_WRAPPERS = ("state_dict", "model", "model_state_dict", "module", "net", "teacher", "student")


@dataclass
class ForeignState:
    """The encoder's tensors found in a checkpoint, and how they were found."""

    state: dict[str, torch.Tensor]
    layout: str  # moco | lightning | torchvision | timm | state_dict
    prefix: str  # stripped from every kept key ("" if none)
    wrapper: str  # the container key the state dict was under ("" if the file is the state dict)
    outside: list[str] = field(
        default_factory=list
    )  # keys of the file's state dict not under the prefix (dropped)
    notes: list[str] = field(default_factory=list)
    dropped_reasons: dict[str, str] = field(
        default_factory=dict
    )  # file key → why it was dropped (published layouts)


_CHECKED: dict[str, str | None] = {}


def check_once(path: Path, context: Any, check: Callable[[], None]) -> None:
    """Run a pre-run ``check`` of the file ``path`` once per (file state, ``context``) in this process.

    A :class:`WeightsError` it raised is remembered and raised again for the same inputs, so a
    check over many cells reads each file once.
    """
    st = path.stat()
    key = repr((str(path.resolve()), st.st_size, st.st_mtime_ns, context))
    if key not in _CHECKED:
        try:
            check()
            _CHECKED[key] = None
        except WeightsError as e:
            _CHECKED[key] = str(e)
    if _CHECKED[key]:
        raise WeightsError(_CHECKED[key])


_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex), computed once per (path, size, mtime) in this process."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        _SHA256[key] = _sha256(path)
    return _SHA256[key]


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inert_class(full_name: str) -> type:
    module, _, name = full_name.rpartition(".")

    def __new__(cls, *args: Any, **kwargs: Any) -> collections.OrderedDict:  # noqa: N807
        return (
            collections.OrderedDict()
        )  # a placeholder torch's unpickler can fill and build; no foreign code

    return type(name, (), {"__new__": __new__, "__module__": module, "__qualname__": name})


def _numpy_data_global(full_name: str) -> Any | None:
    """NumPy's array/scalar reconstruction (data only, the set torch's docs allow-list), else None.

    Training checkpoints often hold a NumPy scalar (a best score) or array beside the weights;
    these are rebuilt for real. Only the fixed names below are resolved — never an arbitrary one.
    """
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:  # NumPy 1
        multiarray = importlib.import_module("numpy.core.multiarray")
    fixed = {"numpy.ndarray": np.ndarray, "numpy.dtype": np.dtype}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        fixed[f"{module}._reconstruct"] = multiarray._reconstruct
        fixed[f"{module}.scalar"] = multiarray.scalar
    if full_name in fixed:
        return fixed[full_name]
    module, _, name = full_name.rpartition(".")
    if module == "numpy.dtypes" and name.endswith("DType") and hasattr(np, "dtypes"):
        return getattr(np.dtypes, name, None)
    return None


def _foreign_globals(path: Path) -> list[tuple[Any, str]]:
    """For each global the restricted unpickler refuses: NumPy data types as themselves, the rest inert."""
    out: list[tuple[Any, str]] = []
    for name in torch.serialization.get_unsafe_globals_in_checkpoint(str(path)):
        obj = _numpy_data_global(name)
        out.append((obj if obj is not None else _inert_class(name), name))
    if any(name == "numpy.dtype" for _, name in out) and hasattr(np, "dtypes"):
        # a rebuilt dtype is an instance of its DType class: BUILD needs that class allowed too
        out += [
            (cls, f"numpy.dtypes.{cls.__name__}")
            for cls in vars(np.dtypes).values()
            if isinstance(cls, type) and cls.__name__.endswith("DType")
        ]
    return out


def checkpoint_path_problem(path: Path) -> str:
    """Why ``path`` cannot be a checkpoint file ("" when it can be read as one): missing, or a folder."""
    if path.is_dir():
        inside = sorted(
            p.name for p in path.iterdir() if p.suffix in (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
        )
        hint = f" (it holds {', '.join(inside[:4])}{', …' if len(inside) > 4 else ''})" if inside else ""
        return f"{path} is a folder, not a checkpoint file: give the weights file inside it{hint}"
    if not path.exists():
        return f"checkpoint file not found: {path}"
    return ""


def _format_problem(path: Path) -> str:
    """Why ``path`` is no PyTorch file at all ("" when it looks like one: a zip archive or a pickle)."""
    with open(path, "rb") as f:
        head = f.read(64)
    if (
        head[:4] == b"PK\x03\x04" or head[:1] == b"\x80"
    ):  # torch.save's zip archive / the legacy pickle format
        return ""
    if not head:
        return "the file is empty"
    text = head.decode("utf-8", errors="replace").splitlines()[0][:32] if head.strip() else ""
    what = f"it starts with {text!r}, a text file?" if text.isprintable() and text else "unknown format"
    return f"not a PyTorch checkpoint (.pt/.pth: a zip archive or pickle) nor safetensors ({what})"


def load_torch_file(path: Path) -> Any:
    """``torch.load(weights_only=True)``; foreign pickled classes become inert placeholders."""
    if problem := checkpoint_path_problem(path):
        raise WeightsError(problem)
    if problem := _format_problem(path):
        raise WeightsError(f"cannot read weights file {path}: {problem}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except Exception as first:
        try:
            foreign = _foreign_globals(path)
        except Exception:
            foreign = []
        if not foreign and not _refused_global(first):
            raise WeightsError(
                f"cannot read weights file {path}: {type(first).__name__}: {_first_line(first)}"
            ) from None
        # a file in torch's legacy (non-zip) format cannot be listed up front: each global the
        # unpickler refuses is named in its error, made inert, and the read tried again
        for _ in range(256):
            try:
                with torch.serialization.safe_globals(foreign):
                    return torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
            except Exception as e:
                name = _refused_global(e)
                if "persistent_load" in str(e):  # torch < 1.6 pickled a whole module with its source code
                    raise WeightsError(
                        f"cannot read weights file {path}: a whole model pickled in torch's legacy format"
                        " (with its source code) cannot be read without running it; load it with its library"
                        " and save model.state_dict()"
                    ) from None
                if not name or any(n == name for _, n in foreign):
                    raise WeightsError(
                        f"cannot read weights file {path}: {type(e).__name__}: {_first_line(e)}"
                    ) from None
                obj = _numpy_data_global(name)
                foreign.append((obj if obj is not None else _inert_class(name), name))
        raise WeightsError(f"cannot read weights file {path}: too many foreign classes") from None


def _refused_global(e: BaseException) -> str | None:
    """The global torch's restricted unpickler refused (``Unsupported global: GLOBAL a.b.C``), if that was the
    error."""
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
    return m[1] if m else None


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _first_line(e: BaseException) -> str:
    """One line of an exception's text: torch's unpickler reason when there is one."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    for i, line in enumerate(lines):
        if "WeightsUnpickler error" in line:
            rest = line.split("WeightsUnpickler error:", 1)[-1].strip()
            return _without_unsafe_advice(rest or (lines[i + 1] if i + 1 < len(lines) else line))
    if lines and lines[0].startswith(
        "Weights only load failed"
    ):  # torch's refusal: its reason, never its advice
        reason = next((x for x in lines[1:] if "GLOBAL" in x or "Unsupported" in x), "")
        return (
            "it holds pickled Python objects that chexbench will not"
            f" run{f' ({reason.rstrip(chr(46))})' if reason else ''}; save the weights alone:"
            " torch.save(model.state_dict(), PATH), or safetensors"
        )
    return _without_unsafe_advice(lines[0]) if lines else type(e).__name__


def _without_unsafe_advice(text: str) -> str:
    """``text`` without torch's sentences advising ``weights_only=False`` (that would run the file's code)."""
    kept = [x for x in re.split(r"(?<=[.!?])\s+", text) if "weights_only" not in x]
    return " ".join(kept) or "it holds pickled Python objects that chexbench will not run"


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The flat tensor mapping of a checkpoint file and the wrapper key it was under."""
    path = Path(path)
    if problem := checkpoint_path_problem(path):
        raise WeightsError(problem)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path)), ""
        except Exception as e:
            raise WeightsError(
                f"cannot read weights file {path}: {type(e).__name__}: {_first_line(e)}"
            ) from None
    obj = load_torch_file(path)
    pickled = _pickled_module_state(obj)
    if pickled:
        return pickled, "pickled module"
    wrapper = ""
    for key in STATE_WRAPPERS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict) and _tensor_values(obj[key]):
            obj, wrapper = obj[key], key
            break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(
            f"{path} does not hold a state dict of tensors (a pickled model object? save model.state_dict()"
            " instead)"
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(
            f"{path} holds no tensors at the top level (keys: {', '.join(map(str, list(obj)[:6]))}); "
            "save the model's state_dict, or a dict with it under 'state_dict'"
        )
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others and not wrapper:
        raise WeightsError(
            f"{path}: entries that are not tensors beside the weights: {', '.join(others[:6])}"
        )
    return tensors, wrapper


def _pickled_module_state(obj: Any) -> dict[str, torch.Tensor] | None:
    """The state dict of a whole pickled ``nn.Module`` (``torch.save(model)``, torchxrayvision's zoo).

    Its classes were replaced by inert placeholders (:func:`load_torch_file`), which keep the
    module's attributes: ``_parameters``, persistent ``_buffers`` and ``_modules`` are walked as
    ``state_dict()`` would; nothing of the module's own code runs. None if ``obj`` is no module.
    """

    def attrs(m: Any) -> dict[str, Any] | None:
        d = getattr(m, "__dict__", None)
        return (
            d
            if isinstance(d, dict)
            and isinstance(d.get("_parameters"), dict)
            and isinstance(d.get("_modules"), dict)
            else None
        )

    if attrs(obj) is None:
        return None
    out: dict[str, torch.Tensor] = {}

    def walk(m: Any, prefix: str) -> None:
        d = attrs(m) or {}
        for name, p in d.get("_parameters", {}).items():
            if isinstance(p, torch.Tensor):
                out[prefix + name] = p.detach()
        skip = d.get("_non_persistent_buffers_set") or set()
        for name, b in (d.get("_buffers") or {}).items():
            if isinstance(b, torch.Tensor) and name not in skip:
                out[prefix + name] = b
        for name, child in d.get("_modules", {}).items():
            if child is not None:
                walk(child, f"{prefix}{name}.")

    walk(obj, "")
    return out


def _tensor_values(d: dict) -> bool:
    return any(isinstance(v, torch.Tensor) for v in d.values())


def _candidate_prefixes(keys: list[str]) -> set[str]:
    out = {""}
    for k in keys:
        parts = k.split(".")
        for i in range(1, len(parts)):
            out.add(".".join(parts[:i]) + ".")
    return out


def _coverage(keys: set[str], prefix: str, target: list[str]) -> int:
    return sum(prefix + t in keys for t in target)


def find_encoder(
    tensors: dict[str, torch.Tensor],
    target_keys: list[str],
    *,
    fmt: str = "auto",
    prefix: str | None = None,
    wrapper: str = "",
    source: str = "",
) -> ForeignState:
    """Pick the encoder's keys out of ``tensors`` for a model whose keys are ``target_keys``.

    ``prefix`` given: exactly the keys under it. Otherwise the layout ``fmt`` decides (MoCo:
    the query/base encoder), and ``auto``/``lightning`` take the key prefix under which most of
    the target's keys are found — a tie between two full encoders (a momentum encoder beside
    its query encoder) is resolved by MoCo's convention, any other tie is an error.
    """
    if fmt not in FORMATS:
        raise WeightsError(f"{source}: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    keys = list(tensors)
    keyset = set(keys)
    if prefix and not prefix.endswith("."):
        prefix += "."  # "module.encoder_q" means the module, not a partial key
    if prefix is None or prefix == "":
        if fmt == "moco":
            found = [p for p in MOCO_ENCODER_PREFIXES if any(k.startswith(p) for k in keys)]
            if not found:
                raise WeightsError(
                    f"{source}: format 'moco' expects keys under {' or '.join(MOCO_ENCODER_PREFIXES)}; "
                    f"found {_first(keys)}"
                )
            prefix = found[0]
        elif fmt in ("timm", "torchvision", "state_dict"):
            prefix = ""
        else:
            prefix = _best_prefix(keyset, target_keys, source)
            if fmt == "lightning" and prefix == "" and wrapper != "state_dict":
                raise WeightsError(
                    f"{source}: format 'lightning' expects a 'state_dict' entry whose keys carry a module"
                    " prefix"
                )
    kept = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not kept:
        raise WeightsError(f"{source}: no key starts with prefix '{prefix}' (first keys: {_first(keys)})")
    outside = sorted(k for k in keys if not k.startswith(prefix))
    layout = _layout_name(fmt, prefix, wrapper)
    notes = [f"layout {layout}" + (f", keys under '{prefix}' (prefix stripped)" if prefix else "")]
    if outside:
        notes.append(f"dropped outside the encoder: {_group_summary(outside)}")
    return ForeignState(kept, layout, prefix, wrapper, outside, notes)


def _best_prefix(keyset: set[str], target_keys: list[str], source: str) -> str:
    scores = {p: _coverage(keyset, p, target_keys) for p in _candidate_prefixes(list(keyset))}
    best = max(scores.values())
    if best == 0:
        raise WeightsError(
            f"{source}: no key matches the architecture under any prefix (first keys:"
            f" {_first(sorted(keyset))}; expected keys such as {_first(target_keys)})"
        )
    tops = sorted(p for p, s in scores.items() if s == best)
    if len(tops) == 1:
        return tops[0]
    preferred = [
        p for p in tops if _is_moco_encoder(p)
    ]  # MoCo's query (v1/v2) or base (v3) encoder, wherever it sits
    if len(preferred) == 1:
        return preferred[0]
    online = [
        p for p in tops if not MOMENTUM_COPY.search(p)
    ]  # lightly's backbone vs backbone_momentum, BYOL's online vs target
    if len(online) == 1:
        return online[0]
    raise WeightsError(
        f"{source}: several key prefixes each hold a matching encoder"
        f' ({", ".join(repr(p) for p in tops[:4])}); set prefix = "…" to choose one'
    )


def _is_moco_encoder(prefix: str) -> bool:
    return (
        prefix == "encoder_q."
        or prefix == "base_encoder."
        or prefix.endswith((".encoder_q.", ".base_encoder."))
    )


def _layout_name(fmt: str, prefix: str, wrapper: str) -> str:
    if fmt != "auto":
        return fmt
    if _is_moco_encoder(prefix):
        return "moco"
    if prefix and wrapper == "state_dict":
        return "lightning"
    return "state_dict"


def _first(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (", …" if len(keys) > n else "") if keys else "(none)"


def _group_summary(keys: list[str]) -> str:
    """``module.encoder_k.* (320 keys), module.queue, module.queue_ptr``: keys grouped two levels deep."""
    groups: dict[str, list[str]] = {}
    for k in keys:
        parts = k.split(".")
        g = ".".join(parts[:2]) if len(parts) > 2 else k
        groups.setdefault(g, []).append(k)
    return ", ".join(g if len(v) == 1 and v[0] == g else f"{g}.* ({len(v)} keys)" for g, v in groups.items())
