"""Deprecated: ``sweep.inputs`` is now :mod:`sweep.plan.placements` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.inputs", "sweep.plan.placements")
