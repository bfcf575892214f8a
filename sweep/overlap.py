"""MODEL.md section 4: overlap, window and margin of the idmap page, for every row at once.

The runtime mappings are ``[start + delta, end + delta)`` for every clipped bank (``(banks,
rows)`` arrays, a bank that clipping emptied has ``end <= start``), the idmap page
``[idmap_pa, idmap_pa + granule)`` with VA == PA.
"""

from __future__ import annotations

import numpy as np

I64 = np.int64


def margin(
    va_start: np.ndarray, va_end: np.ndarray, valid: np.ndarray, idmap_pa: np.ndarray, granule
) -> np.ndarray:
    """The smallest VA gap between the idmap page and any runtime mapping (0 when they touch
    or intersect)."""
    gap = np.maximum(np.maximum(va_start - (idmap_pa + granule), idmap_pa - va_end), 0)
    return np.where(valid, gap, np.iinfo(I64).max).min(axis=0)


def overlap(
    va_start: np.ndarray, va_end: np.ndarray, valid: np.ndarray, idmap_pa: np.ndarray, delta
) -> np.ndarray:
    """A runtime mapping with another PA (``delta != 0``) claims a VA of the idmap page.

    Ranges are granule-aligned, so "claims a VA of the page" is "holds the page's first byte".
    """
    inside = (valid & (va_start <= idmap_pa) & (idmap_pa < va_end)).any(axis=0)
    return inside & (delta != 0)


def idmap_in_window(idmap_pa: np.ndarray, hyp_va_min, hyp_va_max) -> np.ndarray:
    """4.8's ``kvm_mmu_init`` check: "IDMAP intersecting with HYP VA"."""
    return (hyp_va_min <= idmap_pa) & (idmap_pa <= hyp_va_max)
