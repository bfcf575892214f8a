"""Deprecated: ``sweep.errors`` is now :mod:`sweep.core.errors` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.errors", "sweep.core.errors")
