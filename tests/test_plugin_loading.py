"""Plugin loading has one owner (``sweep.plan.plugins``): a hook name no hookspec knows is
named, a warning by default and an error in strict mode (pluggy's ``check_pending`` refuses the
same), and ``load_exactly`` loads a worker's plugins without touching its environment."""

from __future__ import annotations

import logging
import os
import types

import pytest

from sweep import hookimpl
from sweep.core.errors import PluginError
from sweep.plan import plugins


@pytest.fixture
def typo_plugin():
    plugin = types.ModuleType("typo")
    plugin.register_memory_mapz = hookimpl(lambda register: None)
    plugins.pm.register(plugin, name="test-typo")
    plugins.reset()
    yield plugin
    plugins.pm.unregister(name="test-typo")
    plugins.reset()


def test_a_hook_name_with_a_typo_is_a_warning_naming_plugin_and_hook(typo_plugin, caplog):
    caplog.set_level(logging.WARNING, logger="sweep.plan.plugins")
    reg = plugins.registry()
    assert "register_memory_mapz" in reg.errors["test-typo"]
    assert any("test-typo" in r.message and "register_memory_mapz" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert "register_layouts" in reg.errors["test-typo"]  # the hooks there are, to fix it


def test_a_hook_name_with_a_typo_is_an_error_in_strict_mode(typo_plugin, monkeypatch):
    monkeypatch.setenv(plugins.ENV_STRICT, "1")
    with pytest.raises(PluginError, match=r"plugin 'test-typo': .*register_memory_mapz"):
        plugins.registry()


def test_load_exactly_loads_those_plugins_and_leaves_the_environment_alone(monkeypatch):
    monkeypatch.delenv(plugins.ENV_PLUGINS, raising=False)
    try:
        missing = plugins.load_exactly(["sweep_plugins.layouts", "no-such-plugin"])
        assert missing == ["no-such-plugin"]
        assert "sweep_plugins.layouts" in plugins.loaded()
        assert "sweep_plugins.boards" not in plugins.loaded()
        assert plugins.ENV_PLUGINS not in os.environ
    finally:
        plugins.reset()
        plugins.registry()
    assert "sweep_plugins.boards" in plugins.loaded()
