import sys
import textwrap

import pytest

from chexbench.spec.registry import BACKBONES, DATASETS, STRATEGIES, Registry, RegistryError


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
        textwrap.dedent(
            """
            def register(registry):
                registry.add("plugin_strategy", object(), "a strategy from a plugin")
            """
        )
    )
    dist = tmp_path / "cxr_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cxr-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[chexbench.test_plugins]\nmine = cxr_plugin_mod:register\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reg: Registry = Registry("strategy", (), "chexbench.test_plugins")
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
