"""docs/model.md section 4: overlap, window and margin of the idmap page, for every row at once.

The runtime mappings are ``[start + delta, end + delta)`` for every clipped bank (``(banks,
rows)`` arrays; a bank that clipping emptied has ``end <= start``), sorted and disjoint in VA
since one ``delta`` moves them all; the idmap page is ``[idmap_pa, idmap_pa + granule)``, VA == PA.
Only the two mappings nearest the page matter: the last that starts at or below it and the
first that starts above it (any other is further away, behind one of them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

I64 = np.int64
NONE_BELOW = -(1 << 62)
"""Where the mapping below is when there is none: further than any VA (all are below 2^52),
moved by ``delta`` or not (``|delta| < 2^52``)."""
NONE_ABOVE = 1 << 62


@dataclass(frozen=True)
class Nearest:
    """Per row: the runtime mapping that starts at or below the idmap page (``below_start``,
    ``below_end``) and the start of the first one above it."""

    below_start: np.ndarray
    below_end: np.ndarray
    above_start: np.ndarray


def nearest(
    start: np.ndarray, end: np.ndarray, valid: np.ndarray, delta: np.ndarray, idmap_pa
) -> Nearest:
    """The runtime mappings ``[start + delta, end + delta)`` nearest the idmap page.

    A mapping starts at or below the page exactly when its PA start is at or below
    ``idmap_pa - delta``. When every row has the same clipped banks (a work unit's segment),
    the banks at or below are counted and the nearest read from a table of a few entries;
    otherwise each row's banks are compared in place.
    """
    if start.shape[-1] == 1 and valid.shape[-1] == 1:  # one set of banks for every row
        kept = valid[:, 0]
        first, last = start[kept, 0], end[kept, 0]  # sorted, disjoint, at least one
        seen = idmap_pa - delta
        count = np.zeros(np.shape(seen), dtype=np.intp)
        for bank_start in first.tolist():
            count += seen >= bank_start
        if count.size > 1 and count.min() == count.max():  # all between the same two banks
            count = count[:1]
        return Nearest(
            np.concatenate([[NONE_BELOW], first]).take(count) + delta,
            np.concatenate([[NONE_BELOW], last]).take(count) + delta,
            np.concatenate([first, [NONE_ABOVE]]).take(count) + delta,
        )
    va_start, va_end = start + delta, end + delta
    at_or_below = valid & (va_start <= idmap_pa)
    above = valid & ~at_or_below
    return Nearest(
        np.where(at_or_below, va_start, NONE_BELOW).max(axis=0),
        np.where(at_or_below, va_end, NONE_BELOW).max(axis=0),  # ends are sorted as starts are
        np.where(above, va_start, NONE_ABOVE).min(axis=0),
    )


def margin(near: Nearest, idmap_pa: np.ndarray, granule: np.ndarray) -> np.ndarray:
    """The smallest VA gap between the idmap page and any runtime mapping (0 when they touch
    or intersect)."""
    below = idmap_pa - near.below_end
    above = near.above_start - (idmap_pa + granule)
    return np.maximum(np.minimum(below, above), 0)


def overlap(near: Nearest, idmap_pa, granule, delta: np.ndarray) -> np.ndarray:
    """A runtime mapping with another PA (``delta != 0``) claims a VA of the idmap page."""
    meets = (near.below_end > idmap_pa) | (near.above_start < idmap_pa + granule)
    return meets & (delta != 0)


def idmap_in_window(idmap_pa: np.ndarray, hyp_va_min, hyp_va_max) -> np.ndarray:
    """4.8's ``kvm_mmu_init`` check: "IDMAP intersecting with HYP VA"."""
    return (hyp_va_min <= idmap_pa) & (idmap_pa <= hyp_va_max)
