"""One generic registry for strategies, backbones, datasets, protocols and grids.

Built-in entries are *declared*, not imported: each component package's ``__init__`` says
``STRATEGIES.declare("simclr", "chexbench.strategies.simclr:SimCLR", "SimCLR (Chen et al. …")``
— name, where the object lives, description — and the module is imported on the first
:meth:`Registry.get` / :meth:`Registry.entry` of that name (a class is instantiated once). So
``chexbench list`` and ``--help`` import no component (no torch, no timm), and a description is
written once, in its declaration. The registry names no package above it: the package root
(``chexbench/__init__.py``) imports the component packages, whose declarations fill the
registries before anything can read them.

Third-party packages add entries through Python entry points in the groups
``chexbench.strategies``, ``chexbench.backbones`` and ``chexbench.datasets``, loaded the first
time a registry is read. An entry point may point at a module (importing it registers its
entries: ``@STRATEGIES.register`` on a class registers one instance under its ``name``, described
by its ``description`` attribute, else its docstring's first line) or at a callable that is
called with the registry (``add(name, obj, description)``).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from chexbench.core.errors import ChexbenchError

T = TypeVar("T")


class RegistryError(ChexbenchError):
    """Duplicate or unknown registry names."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    description: str
    source: str  # "builtin" or the entry point's distribution/name
    distribution: str = ""  # a plugin's distribution name ("" for built-ins)
    version: str = ""  # that distribution's version

    @property
    def is_plugin(self) -> bool:
        return bool(self.distribution)

    @property
    def display_name(self) -> str:
        """The name a figure or a table shows: the component's ``display_name``, else its registry name."""
        return str(getattr(self.obj, "display_name", "") or self.name)


@dataclass(frozen=True)
class Declared:
    """A built-in entry as its package declares it: where it lives (``"module:attribute"``), what it is."""

    target: str
    description: str


class Registry(Generic[T]):
    """A named collection of objects with did-you-mean lookup, lazy built-ins and entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self._group = entry_point_group
        self._declared: dict[str, Declared] = {}  # built-ins, as declared
        self._entries: dict[str, Entry[T]] = {}  # plugins, and the built-ins looked up so far
        self._aliases: dict[str, str] = {}
        self._loaded = False
        self._loading = False
        self._source = "builtin"
        self._dist: tuple[str, str] = ("", "")

    # -- registration -------------------------------------------------------------------
    def declare(self, name: str, target: str, description: str) -> None:
        """Declare the built-in entry ``name`` without importing it: ``target`` is ``"module:attribute"``,
        imported on the first lookup of ``name`` (a class is instantiated once, and its ``name``
        attribute must be ``name``); ``description`` is what ``chexbench list`` shows."""
        module, _, attr = target.partition(":")
        if not module or not attr or not description:
            raise RegistryError(
                f"{self.kind} '{name}': declare(name, \"module:attribute\", description), "
                f"got {target!r}, {description!r}"
            )
        self._check_new(name)
        self._declared[name] = Declared(target, description)

    def register(self, target: Any, description: str = "") -> Any:
        """Class decorator ``@REGISTRY.register``: register ``cls()`` under ``cls.name``, described by
        ``cls.description`` (else its docstring's first line). ``@REGISTRY.register("name", "description")``
        registers the decorated object itself under an explicit name (a function, a class used as is).
        A second registration of a name is an error."""
        if isinstance(target, str):

            def deco(obj: T) -> T:
                self.add(target, obj, description)
                return obj

            return deco
        if not isinstance(target, type):
            raise RegistryError(f"{self.kind}: register decorates a class, or takes a name (got {target!r})")
        name = getattr(target, "name", None)
        if not isinstance(name, str) or not name:
            raise RegistryError(
                f"{self.kind} class {target.__qualname__} has no `name` attribute to register it under"
            )
        self.add(name, target(), str(getattr(target, "description", "") or ""))
        return target

    def add(self, name: str, obj: T, description: str = "") -> None:
        self._check_new(name)
        if not description:
            doc = getattr(obj, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, obj, description, self._source, *self._dist)

    def _check_new(self, name: str) -> None:
        if name in self._entries or name in self._declared:
            first = "builtin" if name in self._declared else self._entries[name].source
            raise RegistryError(
                f"{self.kind} '{name}' is registered twice (first by {first}, again by {self._source})"
            )

    def alias(self, name: str, target: str) -> None:
        """Let ``name`` resolve to the entry ``target`` (e.g. a named checkpoint → ``checkpoint``).

        Aliases come from a grid (they are not listed by :meth:`names`); an alias may be set
        again to the same target, never shadow an entry or point elsewhere.
        """
        self._ensure_loaded()
        if (name in self._entries or name in self._declared) and name != target:
            raise RegistryError(f"{self.kind} '{name}' is already registered; an alias cannot shadow it")
        if self._aliases.get(name, target) != target:
            raise RegistryError(
                f"{self.kind} alias '{name}' already stands for '{self._aliases[name]}', not '{target}'"
            )
        self.entry(target)
        if name != target:
            self._aliases[name] = target

    # -- loading ------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        """Load the plugins (entry points) once; the built-ins are declared already."""
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            if self._group:
                for ep in entry_points(group=self._group):
                    self._source = f"plugin {ep.value}"
                    dist = getattr(ep, "dist", None)
                    self._dist = (
                        (str(dist.name), str(dist.version)) if dist is not None else (ep.value, "unknown")
                    )
                    try:
                        loaded = ep.load()
                        if callable(loaded) and not isinstance(loaded, type):
                            loaded(self)
                    finally:
                        self._source = "builtin"
                        self._dist = ("", "")
            self._loaded = True
        finally:
            self._loading = False

    def _import(self, name: str) -> Entry[T]:
        """Import the declared built-in ``name`` (once) and make it an entry."""
        declared = self._declared[name]
        module, _, attr = declared.target.partition(":")
        obj = getattr(importlib.import_module(module), attr)
        if isinstance(obj, type):
            obj = obj()
        if getattr(obj, "name", name) != name:
            raise RegistryError(
                f"{self.kind} '{name}' is declared as {declared.target}, whose name is {obj.name!r}"
            )
        entry: Entry[T] = Entry(name, obj, declared.description, "builtin")
        self._entries[name] = entry
        return entry

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        target = self._aliases.get(name, name)
        if target in self._entries:
            return self._entries[target]
        if target in self._declared:
            return self._import(target)
        raise RegistryError(self.unknown_message(name))

    def unknown_message(self, name: str) -> str:
        known = list({**self._declared, **self._entries})
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(sorted(known))})"

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries or name in self._declared or name in self._aliases

    def names(self, pattern: str = "*") -> list[str]:
        """Every entry's name matching ``pattern`` (built-ins are not imported)."""
        self._ensure_loaded()
        return sorted(n for n in {**self._declared, **self._entries} if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry[T]]:
        """Every entry, each object loaded (imports every built-in module)."""
        return [self.entry(n) for n in self.names()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def declarations(self) -> dict[str, Declared]:
        """The built-in entries as their packages declare them (name → target, description)."""
        return dict(self._declared)

    def plugin_version(self, name: str) -> str | None:
        """``"distribution==version"`` of a plugin component; None for a built-in one."""
        e = self.entry(name)
        return f"{e.distribution}=={e.version}" if e.is_plugin else None

    def listing(self) -> list[tuple[str, str, str]]:
        """``(name, description, source)`` of every entry, for ``chexbench list``: a built-in not
        looked up yet is listed from its declaration, without importing it (no torch, no timm)."""
        self._ensure_loaded()
        rows = {n: (n, d.description, "builtin") for n, d in self._declared.items()}
        rows.update({n: (n, e.description, e.source) for n, e in self._entries.items()})
        return [rows[n] for n in sorted(rows)]


STRATEGIES: Registry[Any] = Registry("strategy", "chexbench.strategies")
BACKBONES: Registry[Any] = Registry("backbone", "chexbench.backbones")
DATASETS: Registry[Any] = Registry("dataset", "chexbench.datasets")
PROTOCOLS: Registry[Any] = Registry("protocol")
GRIDS: Registry[Any] = Registry("grid")

REGISTRIES: dict[str, Registry[Any]] = {
    "strategies": STRATEGIES,
    "backbones": BACKBONES,
    "datasets": DATASETS,
    "protocols": PROTOCOLS,
    "grids": GRIDS,
}
