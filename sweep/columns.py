"""Deprecated: ``sweep.columns`` is now :mod:`sweep.core.columns` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.columns", "sweep.core.columns")
