"""docs/model.md section 2: PHYS_OFFSET and the DRAM the linear map keeps, for every row at once.

Each row has its own banks (``(banks, rows)`` arrays, padded with empty banks), granule, VA_BITS,
``ARM64_MEMSTART_ALIGN`` and idmap page, so one call clips rows of any number of memory maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

I64 = np.int64


@dataclass(frozen=True)
class ClippedDram:
    """Per row: PHYS_OFFSET, the bytes dropped, and the clipped banks (``(banks, rows)``;
    a bank that clipping emptied has ``end <= start``)."""

    phys_offset: np.ndarray
    clipped_bytes: np.ndarray
    start: np.ndarray
    end: np.ndarray
    valid: np.ndarray
    dram_first: np.ndarray
    """Lowest clipped DRAM byte (``memblock_start_of_DRAM()``)."""
    dram_last: np.ndarray
    """Highest clipped DRAM byte (``high_memory - 1``)."""


def clip_dram(
    start: np.ndarray,
    end: np.ndarray,
    idmap_pa: np.ndarray,
    granule: np.ndarray,
    va_bits: np.ndarray,
    align: np.ndarray,
) -> ClippedDram:
    """``arm64_memblock_init`` (4.6 to 5.3) on trimmed banks ``[start, end)``, sorted by base.

    The kernel image (taken to end at ``idmap_pa + granule``) is never dropped. DRAM ends
    above ``PHYS_OFFSET + L`` after step 1 exactly when the kernel image does (``high``); when
    no row's does, the rows share one clip (arrays of one column) whatever their idmap.
    """
    linear = np.left_shift(1, va_bits - 1, dtype=I64)
    total = (end - start).sum(axis=0)
    phys_offset = start[0] // align * align  # the lowest bank comes first
    high = idmap_pa + granule > phys_offset + linear
    # 1. drop all DRAM at or above max(PHYS_OFFSET + L, end of the kernel image)
    limit = phys_offset + linear
    if high.any():
        limit = np.maximum(limit, idmap_pa + granule)
    end = np.minimum(end, limit)
    dram_end = np.where(end > start, end, 0).max(axis=0)
    # 2. DRAM still ends above PHYS_OFFSET + L (the kernel sits high): move PHYS_OFFSET up to
    # round_up(end of DRAM - L, align) and drop what lies below it.
    if high.any():
        phys_offset = np.where(high, -((linear - dram_end) // align) * align, phys_offset)
    start = np.maximum(start, phys_offset)
    valid = end > start
    kept = np.maximum(end - start, 0).sum(axis=0)
    return ClippedDram(
        phys_offset,
        total - kept,
        start,
        end,
        valid,
        np.where(valid, start, np.iinfo(I64).max).min(axis=0),
        dram_end - 1,  # step 2 keeps the bank that ends there: it moves PHYS_OFFSET below it
    )
