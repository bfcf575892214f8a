"""Deprecated: ``sweep.plugins`` is now :mod:`sweep.plan.plugins` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.plugins", "sweep.plan.plugins")
