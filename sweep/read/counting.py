"""How the named queries count configurations in the rows' summaries: each configuration once
whatever its mapping sets (``once``), sums of summary ``rows``.

Shared by :mod:`sweep.read.queries` and :mod:`sweep.read.worst`.
"""

from __future__ import annotations

import weakref
from pathlib import Path

import pandas as pd

from sweep.read.engine import Results, quote

Source = Results | str | Path | pd.DataFrame


SET_ORDER = ("nvhe-boot", "pkvm-boot", "all-dram")
"""Mapping sets (``sweep.core.columns.MAPPING_SETS``) in the order figures show them: what
kernels map at boot first, then the limit, all of DRAM."""
SET_RANK = {name: k for k, name in enumerate(SET_ORDER)}


def when(condition: str) -> str:
    """Configurations (summary ``rows``) where ``condition`` holds."""
    return f"CAST(sum(CASE WHEN {condition} THEN rows ELSE 0 END) AS BIGINT)"


ROWS = "CAST(sum(rows) AS BIGINT)"


def once(r: Results) -> str:
    """A SQL predicate that keeps each configuration's rows once: all of DRAM's when the rows
    have them (every cell does), else the first boot set's at its fewest CPUs.

    What most queries count (overlap, window, levels, margin, runnable) does not depend on the
    mapping set or the CPUs a boot set maps, and a sweep of three sets holds each configuration
    three times; cells with no kernel build have no boot rows, so counting every row would also
    weigh the eras unevenly. The table-size queries keep every set (each answers its own
    question). Found once per ``Results`` (the report asks it of one for every query)."""
    if r not in _ONCE:
        sets = r.frame(f"SELECT mappings, min(cpus) AS cpus FROM {r.summary} GROUP BY ALL")
        present = dict(zip(sets["mappings"].astype(str), sets["cpus"], strict=True))
        if not present or "all-dram" in present:
            _ONCE[r] = "mappings = 'all-dram'"
        else:
            first = min(present, key=lambda m: (SET_RANK.get(m, len(SET_RANK)), m))
            _ONCE[r] = f"mappings = {quote(first)} AND cpus = {int(present[first])}"
    return _ONCE[r]


_ONCE: weakref.WeakKeyDictionary[Results, str] = weakref.WeakKeyDictionary()
"""``once``'s answer per open ``Results`` (held no longer than it is)."""
