"""Deprecated: ``sweep.hookspecs`` is now :mod:`sweep.plan.hookspecs` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.hookspecs", "sweep.plan.hookspecs")
