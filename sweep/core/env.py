"""Settings read from the environment, checked: a bad value is one line naming the variable,
never a traceback on every command (``SWEEP_MEMORY_LIMIT=lots``)."""

from __future__ import annotations

import os
import re

from sweep.core.errors import SweepError

_DUCKDB_SIZE = re.compile(r"^\s*\d{1,15}(\.\d{1,6})?\s*(B|[KMGT]i?B|%)?\s*$", re.IGNORECASE)


def env_bytes(name: str, default: int) -> int:
    """A byte count from ``name``: an integer, or ``2G``-style (``K``, ``M``, ``G``, ``T``)."""
    from sweep.core.memmap import parse_size  # lazy: memmap imports kconfig tables

    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = parse_size(value if not value.isdigit() else int(value[:40]), name)
    except (SweepError, ValueError):
        number = -1
    if number < 0 or len(value) > 40:
        raise SweepError(f"{name}={value[:40]!r}: expected a byte count such as 2G or 2147483648")
    return number


def env_duckdb_memory(name: str, default: str) -> str:
    """A DuckDB ``memory_limit`` from ``name``: ``1GB``, ``512MiB``, ``80%``."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not _DUCKDB_SIZE.match(value):
        raise SweepError(
            f"{name}={value[:40]!r}: expected a memory size such as 1GB, 512MiB or 50%"
        )
    return value
