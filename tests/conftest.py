"""Shared fixtures: ``compute`` runs one configuration through the reference or the builder;
``add_plugin`` registers a test plugin for one test (the one way tests add plugins)."""

from __future__ import annotations

import types

import pytest

from sweep import hookimpl
from sweep.api import build_row
from sweep.core.memmap import MemoryMap
from sweep.model.reference import compute_row
from sweep.plan import plugins as sweep_plugins


def _via_reference(memory_map: MemoryMap, **config) -> dict:
    return compute_row(memory_map, **config)


def _via_builder(memory_map: MemoryMap, **config) -> dict:
    return build_row(memory_map, **config)


@pytest.fixture(params=["reference", "builder"])
def compute(request):
    """``compute(memory_map, granule=, va_bits=, layout=, block_mappings=, idmap_pa=)`` -> row."""
    return {"reference": _via_reference, "builder": _via_builder}[request.param]


@pytest.fixture
def add_plugin():
    """``add_plugin(name, plugin=None, **hooks)`` registers a plugin for one test: an object
    whose hooks are marked ``@hookimpl``, or plain hook functions by hook name (``add_plugin("x",
    register_granules=lambda register: register(4096))``). The registry is rebuilt at once (a
    fork pool's workers inherit it), and every plugin added is removed after the test."""
    added = []

    def add(name: str, plugin: object = None, **hooks):
        if plugin is None:
            plugin = types.ModuleType(name)
            for hook_name, fn in hooks.items():
                setattr(plugin, hook_name, hookimpl(fn))
        sweep_plugins.pm.register(plugin, name=name)
        added.append(name)
        sweep_plugins.reset()
        return plugin

    yield add
    for name in added:
        if sweep_plugins.pm.get_plugin(name) is not None:
            sweep_plugins.pm.unregister(name=name)
    sweep_plugins.reset()
