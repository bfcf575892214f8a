"""va-sweep: which arm64 kernel configurations put KVM's EL2 idmap on its runtime mappings.

This module is the plugin API, whole: a plugin imports what it needs from ``sweep`` alone.
"""

import importlib

from sweep.core.errors import PluginError, SweepError, ValidationError
from sweep.core.memmap import Bank, MemoryMap

__version__ = "0.1.0"

# Lazy, so that importing sweep (a plugin, or the readers) loads no layer it does not use:
# ``import sweep.results`` loads no module of the model, plan or run layers.
_LAZY = {
    "hookimpl": "sweep.plan.hookspecs",
    "build": "sweep.api",
    "load_memory_map": "sweep.formats.loaders",
    "Layout": "sweep.model.layout",
    "LayoutBatch": "sweep.model.layout",
    "LayoutResult": "sweep.model.layout",
    "Progression": "sweep.plan.placements",
}

__all__ = [
    "Bank",
    "Layout",
    "LayoutBatch",
    "LayoutResult",
    "MemoryMap",
    "PluginError",
    "Progression",
    "SweepError",
    "ValidationError",
    "build",
    "hookimpl",
    "load_memory_map",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
