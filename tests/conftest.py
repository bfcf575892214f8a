"""Shared fixtures: ``compute`` runs one configuration through the reference or the builder;
``add_plugin`` registers a test plugin for one test (the one way tests add plugins), and
``one_tree_registered`` the what-if layout ``high-only-merged`` for a fixture's sweep."""

from __future__ import annotations

import json
import signal
import subprocess
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sweep import hookimpl
from sweep.api import build_row
from sweep.core.eras import ERAS
from sweep.core.memmap import MemoryMap
from sweep.model.layout import LayoutBatch, LayoutResult
from sweep.model.reference import compute_row
from sweep.plan import plugins as sweep_plugins
from sweep.plan.plugins import get_layouts

# Ctrl-C as Python handles it, whatever the test run inherited: a shell runs a background job
# with SIGINT ignored, and an ignored signal stays ignored in every sweep a test starts (the
# Ctrl-C and lost-lease tests would then see no interrupt).
signal.signal(signal.SIGINT, signal.default_int_handler)

ERA_NAMES = [era.name for era in ERAS]
"""Every kernel era's name, oldest first (``sweep.core.eras``)."""


@dataclass(frozen=True)
class HighOnlyOneTree:
    """A what-if for the tests of section 5's tree rules: 4.6's alias (``HYP_PAGE_OFFSET_MASK``,
    the top half of VA_BITS) with the idmap and the runtime in one merged tree. 4.6 itself
    kept two trees (``linux-4.6``); this layout lets hand-worked merged trees use its simple
    ``delta = 2^(V-1) - PHYS_OFFSET``."""

    name: str = "high-only-merged"
    source: str = "tests: arch/arm64/include/asm/kvm_mmu.h HYP_PAGE_OFFSET_MASK, one tree"
    description: str = "the linear map's top half, masked to VA_BITS, in one merged tree"

    def memstart_align(self, granule: int) -> int:
        return 1 << 30

    def compute(self, batch: LayoutBatch) -> LayoutResult:
        half = np.left_shift(1, batch.va_bits - 1, dtype=np.int64)
        n = len(batch.idmap_pa)
        return LayoutResult(
            *(np.broadcast_to(x, (n,)) for x in (half - batch.phys_offset, half, 2 * half - 1)),
            tree_va_bits=np.maximum(batch.idmap_va_bits, batch.va_bits),
        )


HIGH_ONLY_ONE_TREE = HighOnlyOneTree()


@contextmanager
def one_tree_registered():
    """``HIGH_ONLY_ONE_TREE`` as a registered layout while the ``with`` block runs, for sweeps
    run by module- or session-scoped fixtures (``add_plugin`` serves one test); fork workers
    inherit the registry."""
    name = "tests-high-only-merged"
    plugin = types.ModuleType(name)
    plugin.register_layouts = hookimpl(lambda register: register(HIGH_ONLY_ONE_TREE))
    sweep_plugins.pm.register(plugin, name=name)
    sweep_plugins.reset()
    try:
        yield HIGH_ONLY_ONE_TREE
    finally:
        sweep_plugins.pm.unregister(name=name)
        sweep_plugins.reset()


def _via_reference(memory_map: MemoryMap, **config) -> dict:
    if config.get("layout") == HIGH_ONLY_ONE_TREE.name:
        return compute_row(memory_map, **config, layout_plugin=HIGH_ONLY_ONE_TREE)
    return compute_row(memory_map, **config)


def _via_builder(memory_map: MemoryMap, **config) -> dict:
    if config.get("layout") == HIGH_ONLY_ONE_TREE.name:
        layouts = {**get_layouts(), HIGH_ONLY_ONE_TREE.name: HIGH_ONLY_ONE_TREE}
        return build_row(memory_map, **config, layouts=layouts)
    return build_row(memory_map, **config)


@pytest.fixture(params=["reference", "builder"])
def compute(request):
    """``compute(memory_map, granule=, va_bits=, layout=, block_mappings=, idmap_pa=)`` -> row."""
    return {"reference": _via_reference, "builder": _via_builder}[request.param]


@pytest.fixture
def add_plugin():
    """``add_plugin(name, plugin=None, **hooks)`` registers a plugin for one test: an object
    whose hooks are marked ``@hookimpl``, or plain hook functions by hook name (``add_plugin("x",
    register_layouts=lambda register: register(layout))``). The registry is rebuilt at once (a
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


KERNEL_PGTABLE = Path(__file__).resolve().parents[1] / "tools" / "kernel-pgtable" / "build"


def kernel_oracles(oracles: str, kernels: str) -> dict:
    """``tools/kernel-pgtable/build --json-all``: the kernel's own code compiled in userspace,
    ``{oracle: {kernel: ...}}``; the test skips only where a system tool is missing (exit 3: its
    message names the Debian package)."""
    result = subprocess.run(
        [str(KERNEL_PGTABLE), "--json-all", "--oracles", oracles, "--kernels", kernels],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode == 3:
        pytest.skip(result.stderr.strip().splitlines()[-1])
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)
