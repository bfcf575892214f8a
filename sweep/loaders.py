"""Deprecated: ``sweep.loaders`` is now :mod:`sweep.formats.loaders` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.loaders", "sweep.formats.loaders")
