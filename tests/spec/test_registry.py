import importlib
import inspect
import pkgutil
import sys
import textwrap

import pytest

import chexbench.backbones
import chexbench.bench.protocols
import chexbench.datasets
import chexbench.strategies
from chexbench.backbones.base import BackboneSpec
from chexbench.bench.protocols.base import EvaluationProtocol
from chexbench.datasets.base import Dataset
from chexbench.spec.registry import BACKBONES, DATASETS, PROTOCOLS, STRATEGIES, Registry, RegistryError
from chexbench.strategies.base import Strategy


def test_decorator_registration_and_lookup():
    reg: Registry = Registry("thing")

    @reg.register("alpha", "the first")
    class Alpha:
        pass

    assert reg.get("alpha") is Alpha
    assert reg.entry("alpha").description == "the first"
    assert reg.names() == ["alpha"]
    assert "alpha" in reg and "beta" not in reg


def test_duplicate_name_is_an_error():
    reg: Registry = Registry("thing")
    reg.add("alpha", object())
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add("alpha", object())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RegistryError) as e:
        STRATEGIES.get("scrach")
    assert "did you mean 'scratch'" in str(e.value)
    with pytest.raises(RegistryError, match="unknown backbone 'vit_b61'.*vit_b16"):
        BACKBONES.get("vit_b61")


def test_wildcard_listing():
    assert set(BACKBONES.names("vit_*")) >= {"vit_b16", "vit_tiny"}
    assert "resnet50" not in BACKBONES.names("vit_*")


def test_builtins_registered():
    assert {"scratch", "imagenet"} <= set(STRATEGIES.names())
    assert {"resnet50", "vit_b16"} <= set(BACKBONES.names())
    assert "chexpert" in DATASETS


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    """A third-party distribution's entry point registers a strategy without touching chexbench."""
    pkg = tmp_path / "cxr_plugin_mod.py"
    pkg.write_text(
        textwrap.dedent("""
            def register(registry):
                registry.add("plugin_strategy", object(), "a strategy from a plugin")
            """)
    )
    dist = tmp_path / "cxr_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cxr-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[chexbench.test_plugins]\nmine = cxr_plugin_mod:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("strategy", "chexbench.test_plugins")
    assert reg.names() == ["plugin_strategy"]
    assert reg.entry("plugin_strategy").source.startswith("plugin")
    sys.modules.pop("cxr_plugin_mod", None)


def test_class_decorator_registers_one_instance_under_the_class_name():
    reg: Registry = Registry("thing")

    @reg.register
    class Beta:
        name = "beta"
        description = "the second"

    assert isinstance(reg.get("beta"), Beta)
    assert reg.entry("beta").description == "the second"
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register(Beta)


def test_class_decorator_needs_a_name_attribute():
    reg: Registry = Registry("thing")
    with pytest.raises(RegistryError, match="no `name` attribute"):

        @reg.register
        class Nameless:
            pass


@pytest.fixture
def lazy_module(tmp_path, monkeypatch):
    """A module ``cxr_lazy_mod`` on the path, not imported yet, with a class named ``gamma``."""
    (tmp_path / "cxr_lazy_mod.py").write_text(
        textwrap.dedent("""
            class Gamma:
                name = "gamma"
            """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("cxr_lazy_mod", None)
    yield "cxr_lazy_mod"
    sys.modules.pop("cxr_lazy_mod", None)


def test_a_declared_entry_is_listed_without_import_and_imported_once_on_lookup(lazy_module):
    reg: Registry = Registry("thing")
    reg.declare("gamma", f"{lazy_module}:Gamma", "the third")
    assert reg.names() == ["gamma"] and "gamma" in reg
    assert reg.listing() == [("gamma", "the third", "builtin")]
    assert lazy_module not in sys.modules  # listed, looked up by name: nothing imported
    obj = reg.get("gamma")
    assert lazy_module in sys.modules and type(obj).__name__ == "Gamma"
    assert reg.get("gamma") is obj  # one instance
    assert reg.entry("gamma").description == "the third" and reg.entry("gamma").source == "builtin"
    assert reg.listing() == [("gamma", "the third", "builtin")]


def test_a_declaration_must_match_the_name_of_what_it_points_at(lazy_module):
    reg: Registry = Registry("thing")
    reg.declare("gama", f"{lazy_module}:Gamma", "a typo")
    message = "'gama' is declared as cxr_lazy_mod:Gamma, whose name is 'gamma'$"
    with pytest.raises(RegistryError, match=message):
        reg.get("gama")


def test_a_declared_name_is_taken():
    reg: Registry = Registry("thing")
    reg.declare("gamma", "nowhere:Gamma", "the third")
    with pytest.raises(RegistryError, match="'gamma' is registered twice"):
        reg.add("gamma", object(), "again")
    with pytest.raises(RegistryError, match="'gamma' is registered twice"):
        reg.declare("gamma", "elsewhere:Gamma", "again")
    with pytest.raises(RegistryError, match="cannot shadow"):
        reg.alias("gamma", "other")
    with pytest.raises(RegistryError, match="did you mean 'gamma'"):
        reg.get("gamm")


def test_a_declaration_needs_a_target_and_a_description():
    reg: Registry = Registry("thing")
    with pytest.raises(RegistryError, match="module:attribute"):
        reg.declare("gamma", "cxr_lazy_mod.Gamma", "no colon")
    with pytest.raises(RegistryError, match="module:attribute"):
        reg.declare("gamma", "cxr_lazy_mod:Gamma", "")


COMPONENT_PACKAGES = [
    (STRATEGIES, chexbench.strategies, Strategy),
    (BACKBONES, chexbench.backbones, BackboneSpec),
    (DATASETS, chexbench.datasets, Dataset),
    (PROTOCOLS, chexbench.bench.protocols, EvaluationProtocol),
]


@pytest.mark.parametrize(
    "registry,package,base", COMPONENT_PACKAGES, ids=["strategies", "backbones", "datasets", "protocols"]
)
def test_every_named_component_of_a_package_is_declared(registry, package, base):
    """A component class with a ``name`` of its own in a built-in package is declared under that name in
    the package's ``__init__`` (not registered when its module happens to be imported: ``list`` would miss
    it), and the registry gives an instance of it."""
    found = {}
    for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, base) and cls.__dict__.get("name"):
                found[cls.__dict__["name"]] = cls
    assert found and sorted(found) == sorted(registry.declarations())
    for name, cls in found.items():
        assert type(registry.get(name)) is cls
