"""The plan layer: a config and the plugins turned into units of rows (memory maps, placements,
tags). It imports :mod:`sweep.model`, :mod:`sweep.formats` and :mod:`sweep.core`."""

from sweep._moved import forward

# ``sweep.plan`` was the module of ``Plan`` and ``make_plan`` before 0.2.
__getattr__ = forward(
    "sweep.plan", "sweep.plan.units", frozenset({"Plan", "Unit", "make_plan", "ALGORITHM_VERSION"})
)
