"""va-sweep: which arm64 kernel configurations put KVM's EL2 idmap on its runtime mappings."""

from sweep.errors import PluginError, SweepError, ValidationError
from sweep.hookspecs import hookimpl
from sweep.model import Bank, MemoryMap

__version__ = "0.1.0"

__all__ = [
    "Bank",
    "MemoryMap",
    "PluginError",
    "SweepError",
    "ValidationError",
    "build",
    "hookimpl",
    "load_memory_map",
]


def __getattr__(name: str):
    # Lazy, so that importing sweep (e.g. in a plugin) does not import pandas and the builder.
    if name == "build":
        from sweep.api import build  # lazy: importing sweep does not import pandas

        return build
    if name == "load_memory_map":
        from sweep.loaders import load_memory_map  # lazy: as build

        return load_memory_map
    raise AttributeError(f"module 'sweep' has no attribute {name!r}")
