"""The readers' public API, as the README uses it: ``from sweep import results``.

It is :mod:`sweep.read.results` under its documented name: ``load``, the sweep's status and the
named queries. Importing it loads no module of the model, plan or run layers.
"""

from sweep.read.queries import (
    QUERIES,
    boards,
    extra_levels,
    level_counts,
    margin_distribution,
    overlaps,
    overlaps_by_config,
    table_bytes_by_board,
    table_size,
    unrunnable,
    unrunnable_4x,
    worst_cases,
    worst_configurations,
)
from sweep.read.results import load, metadata, partitions, problems

__all__ = [
    "QUERIES",
    "boards",
    "extra_levels",
    "level_counts",
    "load",
    "margin_distribution",
    "metadata",
    "overlaps",
    "overlaps_by_config",
    "partitions",
    "problems",
    "table_bytes_by_board",
    "table_size",
    "unrunnable",
    "unrunnable_4x",
    "worst_cases",
    "worst_configurations",
]
