"""Deprecated: ``sweep.kconfig`` is now :mod:`sweep.core.kconfig` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.kconfig", "sweep.core.kconfig")
