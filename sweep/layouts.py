"""Deprecated: ``sweep.layouts`` is now :mod:`sweep.model.layout` (kept for one release)."""

from sweep._moved import forward

__getattr__ = forward("sweep.layouts", "sweep.model.layout")
