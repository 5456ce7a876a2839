"""`make install`'s installer (scripts/pip-install): uv with pip's settings translated, and pip wherever a
setting has no translation."""

from __future__ import annotations

from script_module import load_script


def test_pip_settings_are_translated_and_an_index_in_the_arguments_wins():
    m = load_script("pip-install")
    settings = {"find-links": "/opt/a /opt/b", "index-url": "https://mirror/simple", "timeout": "180"}
    cmd, env = m.uv_command("uv", "/venv/bin/python", settings, [])
    assert cmd.count("--find-links") == 2 and "/opt/b" in cmd
    assert cmd[cmd.index("--index-url") + 1] == "https://mirror/simple"
    assert env["UV_HTTP_TIMEOUT"] == "180"
    cmd, _ = m.uv_command("uv", "/venv/bin/python", settings, ["--index-url", "https://other/simple"])
    assert "https://mirror/simple" not in cmd


def test_a_setting_without_a_translation_is_named_and_pip_installs():
    reason = load_script("pip-install").uv_command("uv", "/venv/bin/python", {"trusted-host": "mirror"}, [])
    assert isinstance(reason, str) and "trusted-host" in reason
