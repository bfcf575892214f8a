"""An every-page group cut into windows of pages, and its intervals joined into runs across the
windows' edges (:mod:`sweep.model.runs`), so that a group of any size is refined in bounded memory.

A run is taken page by page from a bank's first page: it goes on while the next page has the same
outputs and its affine ones step by the run's slope (by anything, after the run's first page);
the first page that does not fit starts the next run. These greedy runs are the fewest a bank can
be cut into, and they depend only on the pages' outputs: not on where intervals start nor on where
windows cut, so any window size gives the same rows. Only the run open at a window's end goes on
into the next window, carried as an interval of its own: where a run ends depends only on where
it starts.

Joining intervals without walking pages: the steps between adjacent pages come in *segments* of
equal steps (an interval's inner steps, the step from one interval into the next), and a run
started at a segment's first step takes the whole segment and ends on the next segment's first
step. A segment whose first step ends a run is *cut*; one whose first step is a run's first is
*fresh*: the first segment of a bank is fresh, a segment after a fresh one is cut, one after a cut
segment of one step is fresh, one after a cut segment of several steps is cut again. Pages whose
outputs other than the affine ones differ never join (a *hard* step, as between banks), and the
segment after one is fresh.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sweep.core.columns import ROW_COLUMNS
from sweep.model.intervals import AFFINE, CONSTANT, OUTPUTS, diff

I64 = np.int64
WINDOW_PAGES = 1 << 24
"""Pages of a window (64 GiB of 4K pages, 1 TiB of 64K ones): its intervals and their samples
are what a group holds while refined (about 200 bytes each, some 100k for the densest 4K groups:
runs of 256 pages)."""

Intervals = tuple[np.ndarray, np.ndarray, dict, dict]
"""``first, end, a, c``: intervals ``[first, end)``, the outputs at each first page (``a``) and
the affine ones at each last page (``c``)."""


def windows(
    starts: np.ndarray, ends: np.ndarray, g: int, high: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The banks ``[starts, ends)`` of each window, in order: those below the clip threshold
    ``high`` in one (their breakpoints are a few per bank, whatever their size), those above it
    cut every ``WINDOW_PAGES`` pages counted across the banks (the kernel sits high and DRAM is
    clipped at the idmap page: every entry edge of the runtime tree is a breakpoint)."""
    low = starts < high
    cut = [(starts[low], np.minimum(ends[low], high))] if low.any() else []
    above = ends > high
    starts, ends = np.maximum(starts[above], high), ends[above]
    pages = (ends - starts) // g
    offset = np.cumsum(pages) - pages  # each bank's first page, counted across the banks
    first, last = offset // WINDOW_PAGES, (offset + pages - 1) // WINDOW_PAGES
    count = last - first + 1
    bank = np.repeat(np.arange(len(starts)), count)
    k = first[bank] + np.arange(len(bank)) - np.repeat(np.cumsum(count) - count, count)
    lo = np.maximum(offset[bank], k * WINDOW_PAGES) - offset[bank]
    hi = np.minimum(offset[bank] + pages[bank], (k + 1) * WINDOW_PAGES) - offset[bank]
    lo, hi = starts[bank] + lo * g, starts[bank] + hi * g
    edges = [0, *(np.flatnonzero(k[1:] != k[:-1]) + 1).tolist(), len(k)]
    return cut + [(lo[x:y], hi[x:y]) for x, y in zip(edges[:-1], edges[1:], strict=True) if y > x]


def join(
    intervals: Intervals, g: int, carry: Intervals | None, last: bool
) -> tuple[dict[str, np.ndarray], Intervals | None]:
    """The runs of a window's intervals after the run ``carry`` left open by the window before
    (``None`` for the first): the runs it ends, as numpy columns (the outputs, ``idmap_pa``,
    ``idmap_pa_last``, ``pages`` and ``<affine>_last``: ``sweep.model.intervals.table``), and
    the run still open at its end, to carry on (all of them, and ``None``, when ``last``)."""
    if carry is not None:
        intervals = _joined(carry, intervals)
    first, end, a, c = intervals
    n = len(first)
    pages = (end - first) // g
    step = {col: diff(a[col], c[col]) // np.maximum(pages - 1, 1) for col in AFFINE}
    # Steps in order, as slots: 2i the step into interval i (none into the first), 2i + 1 its
    # pages - 1 inner steps.
    count = np.zeros(2 * n, dtype=I64)
    count[2::2], count[1::2] = 1, pages - 1
    hard = np.zeros(2 * n, dtype=bool)
    hard[2::2] = first[1:] != end[:-1]
    for col in CONSTANT:
        hard[2::2] |= a[col][1:] != a[col][:-1]
    slot = np.flatnonzero(count)
    new = np.ones(len(slot), dtype=bool)
    new[1:] = hard[slot[1:]] | hard[slot[:-1]]
    for col in AFFINE:
        value = np.empty(2 * n, dtype=I64)
        value[2::2], value[1::2] = diff(c[col][:-1], a[col][1:]), step[col]
        new[1:] |= value[slot[1:]] != value[slot[:-1]]
    head = slot[new]  # each segment's first slot
    length = np.add.reduceat(count[slot], np.flatnonzero(new)) if len(slot) else count[:0]
    seg_hard = hard[head]
    # Fresh or cut, from the last segment before that is hard or of several steps (``before``):
    # after a hard one (or none) fresh, cut, fresh... ; after one of several steps cut, fresh...
    index = np.arange(len(head))
    breaks = np.maximum.accumulate(np.where(seg_hard | (length > 1), index, -1))
    before = np.concatenate([[-1], breaks])[:-1]
    odd = (index - before - 1) % 2 == 1
    reset = (before < 0) | seg_hard[np.maximum(before, 0)]
    cut = head[seg_hard | (odd == reset)]
    at, inner = cut // 2, cut % 2 == 1  # where a run starts: an interval's first or second page
    start = np.concatenate([[0], at])
    second = np.concatenate([[False], inner])
    stop = np.append(np.where(inner, at, at - 1), n - 1)
    on_first = np.append(inner, False)  # a run that ends on an interval's first page
    runs = {
        "idmap_pa": (first[start] + second * g).astype(np.uint64),
        **{col: a[col][start] for col in OUTPUTS},
        "idmap_pa_last": np.where(on_first, first[stop], end[stop] - g).astype(np.uint64),
    }
    for col in AFFINE:
        runs[col] = runs[col] + (second * step[col][start]).astype(np.uint64)
        runs[f"{col}_last"] = np.where(on_first, a[col][stop], c[col][stop])
    runs["pages"] = ((runs["idmap_pa_last"] - runs["idmap_pa"]) // np.uint64(g)).astype(I64) + 1
    if last:
        return _order(runs), None
    rest = {name: v[:-1] for name, v in runs.items()}
    open_run = (
        runs["idmap_pa"][-1:].astype(I64),
        runs["idmap_pa_last"][-1:].astype(I64) + g,
        {col: runs[col][-1:] for col in OUTPUTS},
        {col: runs[f"{col}_last"][-1:] for col in AFFINE},
    )
    return _order(rest), open_run


def _joined(carry: Intervals, intervals: Intervals) -> Intervals:
    """The carried run before a window's intervals, as the first of them."""
    first, end, a, c = intervals
    return (
        np.concatenate([carry[0], first]),
        np.concatenate([carry[1], end]),
        {col: np.concatenate([carry[2][col], a[col]]) for col in a},
        {col: np.concatenate([carry[3][col], c[col]]) for col in c},
    )


def _order(runs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run columns in table order: ``idmap_pa``, the outputs, then the run columns."""
    names = ["idmap_pa", *OUTPUTS, "idmap_pa_last", "pages", *(f"{c}_last" for c in AFFINE)]
    return {name: runs[name] for name in names}


def expand(runs: pa.Table | object) -> object:
    """Runs back to one row per page (a pandas DataFrame with ``ROW_COLUMNS``), for checking."""
    import pandas as pd  # lazy: pandas only to check runs

    df = runs.to_pandas() if isinstance(runs, pa.Table) else runs
    pages = df["pages"].to_numpy().astype(I64)
    index = np.repeat(np.arange(len(df)), pages)
    k = np.arange(len(index)) - np.repeat(np.cumsum(pages) - pages, pages)
    out = df.iloc[index].reset_index(drop=True)
    g = out["granule"].to_numpy().astype(np.uint64)
    out["idmap_pa"] = out["idmap_pa"].to_numpy() + k.astype(np.uint64) * g
    span = np.maximum(out["pages"].to_numpy().astype(I64) - 1, 1)
    for col in AFFINE:
        first = out[col].to_numpy()
        slope = diff(first, out[f"{col}_last"].to_numpy()) // span
        out[col] = (first.astype(np.uint64) + (slope * k).astype(np.uint64)).astype(first.dtype)
    return pd.DataFrame({col: out[col] for col in ROW_COLUMNS})
