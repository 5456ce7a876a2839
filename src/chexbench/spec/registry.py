"""One generic registry for strategies, backbones, datasets and grids.

Registration is by decorator on the component's class: ``@STRATEGIES.register`` registers one
instance of the class under its ``name`` attribute, described by its ``description`` attribute
(else the first line of its docstring). ``add(name, obj, description)`` registers an object that
is not a class of its own (the phantom datasets made per layout, the grid files). Third-party packages add entries through Python entry points in the groups
``chexbench.strategies``, ``chexbench.backbones`` and ``chexbench.datasets``. An entry point
may point at a module (importing it registers its entries) or at a callable that is called
with the registry. Built-in modules are imported lazily the first time a registry is read,
so ``import chexbench`` stays cheap.
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import importlib.util
import pkgutil
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from chexbench.spec._builtin_index_data import INDEX
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


class Registry(Generic[T]):
    """A named collection of objects with did-you-mean lookup and entry-point plugins."""

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = (), entry_point_group: str | None = None):
        self.kind = kind
        self._builtin_modules = builtin_modules
        self._group = entry_point_group
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}
        self._loaded = False
        self._loading = False
        self._source = "builtin"
        self._dist: tuple[str, str] = ("", "")

    # -- registration -------------------------------------------------------------------
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
            raise RegistryError(f"{self.kind} class {target.__qualname__} has no `name` attribute to register it under")
        self.add(name, target(), str(getattr(target, "description", "") or ""))
        return target

    def add(self, name: str, obj: T, description: str = "") -> None:
        if name in self._entries:
            prev = self._entries[name]
            raise RegistryError(
                f"{self.kind} '{name}' is registered twice (first by {prev.source}, again by {self._source})"
            )
        if not description:
            doc = getattr(obj, "__doc__", None) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        self._entries[name] = Entry(name, obj, description, self._source, *self._dist)

    def alias(self, name: str, target: str) -> None:
        """Let ``name`` resolve to the entry ``target`` (e.g. a named checkpoint → ``checkpoint``).

        Aliases come from a grid (they are not listed by :meth:`names`); an alias may be set
        again to the same target, never shadow an entry or point elsewhere.
        """
        self._ensure_loaded()
        if name in self._entries and name != target:
            raise RegistryError(f"{self.kind} '{name}' is already registered; an alias cannot shadow it")
        if self._aliases.get(name, target) != target:
            raise RegistryError(f"{self.kind} alias '{name}' already stands for '{self._aliases[name]}', not '{target}'")
        self.entry(target)
        if name != target:
            self._aliases[name] = target

    # -- loading ------------------------------------------------------------------------
    def _ensure_loaded(self) -> None:
        if self._loaded or self._loading:
            return
        self._loading = True
        try:
            for mod in self._builtin_modules:
                importlib.import_module(mod)
            if self._group:
                for ep in entry_points(group=self._group):
                    self._source = f"plugin {ep.value}"
                    dist = getattr(ep, "dist", None)
                    self._dist = (str(dist.name), str(dist.version)) if dist is not None else (ep.value, "unknown")
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

    # -- lookup -------------------------------------------------------------------------
    def get(self, name: str) -> T:
        return self.entry(name).obj

    def entry(self, name: str) -> Entry[T]:
        self._ensure_loaded()
        try:
            return self._entries[self._aliases.get(name, name)]
        except KeyError:
            raise RegistryError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} '{name}'{hint} (known: {', '.join(sorted(self._entries))})"

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._entries or name in self._aliases

    def names(self, pattern: str = "*") -> list[str]:
        self._ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def entries(self) -> list[Entry[T]]:
        self._ensure_loaded()
        return [self._entries[n] for n in sorted(self._entries)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def plugin_version(self, name: str) -> str | None:
        """``"distribution==version"`` of a plugin component; None for a built-in one."""
        e = self.entry(name)
        return f"{e.distribution}=={e.version}" if e.is_plugin else None

    def has_plugins(self) -> bool:
        """Whether any installed distribution declares an entry point of this registry (cheap: metadata only)."""
        return bool(self._group) and bool(list(entry_points(group=self._group)))

    def listing(self) -> list[tuple[str, str, str]]:
        """``(name, description, source)`` of every entry, for ``chexbench list``.

        Without plugins and with an up-to-date index of the built-ins (see
        :mod:`chexbench.spec.builtin_index`) this imports nothing heavy (no torch, no timm), so
        ``chexbench list`` answers at once; otherwise it loads the registry.
        """
        if not self._loaded and not self.has_plugins():
            rows = cached_listing(self.kind, self._builtin_modules)
            if rows is not None:
                return rows
        return [(e.name, e.description, e.source) for e in self.entries()]


def builtin_module_names(packages: tuple[str, ...]) -> list[str]:
    """Module names inside the built-in packages, found without importing them."""
    names: list[str] = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            continue
        names += sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(list(spec.submodule_search_locations)))
    return names


def cached_listing(kind: str, packages: tuple[str, ...]) -> list[tuple[str, str, str]] | None:
    """The indexed ``(name, description, "builtin")`` rows of registry ``kind``, or None when stale."""
    entry = INDEX.get(kind)
    if entry is None or entry["modules"] != builtin_module_names(packages):
        return None
    return [(name, description, "builtin") for name, description in entry["entries"]]


STRATEGIES: Registry[Any] = Registry(
    "strategy", ("chexbench.strategies",), "chexbench.strategies"
)
BACKBONES: Registry[Any] = Registry("backbone", ("chexbench.backbones",), "chexbench.backbones")
DATASETS: Registry[Any] = Registry("dataset", ("chexbench.datasets",), "chexbench.datasets")
PROTOCOLS: Registry[Any] = Registry("protocol", ("chexbench.bench.protocols",))
GRIDS: Registry[Any] = Registry("grid", ("chexbench.spec.grids",))

REGISTRIES: dict[str, Registry[Any]] = {
    "strategies": STRATEGIES,
    "backbones": BACKBONES,
    "datasets": DATASETS,
    "protocols": PROTOCOLS,
    "grids": GRIDS,
}
