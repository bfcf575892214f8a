"""Every page, exactly, as runs: ``placement.kind = "every-page"``.

A row per page would be 2^18 rows per GiB of DRAM and configuration, yet outputs change only
where the idmap page crosses something: a bank or window edge, a runtime range's alias, an
entry boundary of the runtime tree at some level (block or table), a power of two
(``idmap_va_bits``, the tree size), a multiple of ``2^(V-1)`` (the layouts' tag bit and
``merged``'s half), the clip threshold ``PHYS_OFFSET + 2^(V-1)`` and, above it, each
``ARM64_MEMSTART_ALIGN`` step of the moved PHYS_OFFSET. Those *breakpoints* are computed from the
banks and the layout's ``delta`` (docs/model.md sections 2 to 5, :mod:`sweep.model.intervals`),
never by walking pages; the builder then evaluates each interval between breakpoints at its first,
middle and last page, and an interval whose samples disagree is halved until they agree (a safety
net for a monotone change the list missed). Intervals are joined into runs, each as long as it
goes page by page from its first (:mod:`sweep.model.windows`).

Within a run, every output is the same on every page except the *affine* ones, which change by
the same amount from page to page: ``margin`` (the gap to the nearest alias) and, where the kernel
sits high and DRAM is clipped at the idmap page, ``clipped_bytes`` and ``hyp_dram_last``. A run
row holds the first page's values and ``idmap_pa_last``, ``pages`` and ``<column>_last`` for the
affine ones (``sweep.core.columns.RUN_COLUMNS``); page ``k`` of a run has
``first + k * (last - first) / (pages - 1)``. Runs need ``tag_random = 0``, so the plan refuses a
``[tag] seed`` with every-page.

Cost: the groups of a unit advance together, so that the pages they ask for at once share
builder calls of up to ``BATCH`` pages (:func:`runs_table`: a call costs milliseconds whatever
its rows); a group samples its intervals ``WINDOW`` at a time, each page once, and keeps per
interval only the first page's outputs and the last page's affine ones (about 200 bytes); groups
that would hold more than ``HELD`` intervals together wait their turn. A group is refined a
window of pages at a time (:mod:`sweep.model.windows`), so that it holds its runs and one
window's intervals, whatever its size. Units are cut between groups (:mod:`sweep.plan.units`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from sweep.core.errors import ValidationError
from sweep.core.memmap import MAX_BANKS, MemoryMap
from sweep.model import intervals as iv
from sweep.model.banks import TrimmedBanks
from sweep.model.builder import NUMPY_DTYPES, compute_columns
from sweep.model.intervals import AFFINE, OUTPUTS, States, diff, intervals, structural, take
from sweep.model.layout import Layout
from sweep.model.rows import Rows
from sweep.model.windows import expand, join, windows

__all__ = ["Group", "expand", "group_runs", "groups_runs", "runs_table"]

I64 = np.int64
MAX_ROUNDS = 64
BATCH = 1 << 17
"""Pages the builder evaluates at once (its scratch memory stays near 130 MiB)."""
BATCH_CELLS = 1 << 27
"""Pages x banks the builder evaluates at once: its scratch arrays hold one element per page
and bank (``sweep.model.banks.Banks.per_row``), so a map of many banks gets fewer pages per
call and a worker's memory stays under about 1 GiB however many banks a map has (measured: 30k
banks took 5.3 GB with ``BATCH`` pages a call, 0.5 GB so, in 20 s)."""
WINDOW = BATCH // 3
"""Intervals sampled at once (three pages each at most): one builder call's worth."""
HELD = 1 << 19
"""Intervals the groups being refined may hold together (about 200 bytes each); a group that
would pass it waits, holding only its breakpoints, unless no other is being refined."""

Asks = Generator["np.ndarray | int", "dict | None", Any]
"""A group's work: it yields pages to evaluate (and is sent their outputs) or, once a window, how
many intervals it is about to hold (and is sent None when there is room); it returns its runs,
numpy columns a window (``sweep.model.windows.join``)."""


@dataclass(frozen=True)
class Group:
    """One (memory map, granule, VA_BITS, layout, block setting): its runs are one table."""

    memory_map: MemoryMap
    granule: int
    va_bits: int
    layout: Layout
    blocks: bool


def group_runs(
    memory_map: MemoryMap, granule: int, va_bits: int, layout: Layout, blocks: bool
) -> pa.Table:
    """The runs of one (memory map, granule, VA_BITS, layout, block setting), every page."""
    return groups_runs([Group(memory_map, granule, va_bits, layout, blocks)])[0]


def groups_runs(groups: Sequence[Group]) -> list[pa.Table]:
    """The runs of each group, in order, a table each (:func:`runs_table` joins them)."""
    return [iv.table([x], [r]) for x, r in zip(groups, _Together(groups).run(), strict=True)]


def runs_table(groups: Sequence[Group]) -> pa.Table:
    """The runs of every group, in order, as one table. The groups advance together, so that
    the pages they ask for share builder calls: a unit of many small maps costs a few calls a
    round, not a few a group (each call costs milliseconds whatever its rows)."""
    return iv.table(groups, _Together(groups).run())


class _Together:
    """Groups advancing together: each asks for pages (or for room), the pages of several go
    to one builder call, and a group that would pass ``HELD`` waits for room."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups, self.builder = groups, _Builder(groups)
        self.tables: list = [None] * len(groups)
        self.waiting, self.running = deque(range(len(groups))), {}
        self.asks: dict[int, np.ndarray] = {}
        self.parked: deque[tuple[int, int]] = deque()
        self.held: dict[int, int] = {}
        self.pending = self.parking = self.holding = 0  # pages asked, intervals parked, held

    def run(self) -> list[dict[str, np.ndarray]]:
        while self.waiting or self.running:
            while self.parked and (not self.held or self.holding + self.parked[0][1] <= HELD):
                i, size = self.parked.popleft()
                self.parking -= size
                self.held[i] = size
                self.holding += size
                self.advance(i, None)
            while self.waiting and self.pending < BATCH and self.parking < HELD:
                i = self.waiting.popleft()
                self.running[i] = _runs(self.groups[i])
                self.advance(i, None)
            chosen = _choose(self.asks)
            asks = [(i, self.asks.pop(i)) for i in chosen]
            self.pending -= sum(len(pages) for _, pages in asks)
            for i, values in zip(chosen, self.builder(asks) if asks else [], strict=True):
                self.advance(i, values)
        return self.tables

    def advance(self, i: int, value) -> None:
        """Send group ``i`` what it waited for; note what it asks next, or its runs."""
        try:
            got = self.running[i].send(value)
        except StopIteration as stop:
            self.tables[i] = stop.value
            del self.running[i]
            self.holding -= self.held.pop(i, 0)
            return
        if isinstance(got, int):  # a new window: what the last one held goes
            self.holding -= self.held.pop(i, 0)
            self.parked.append((i, got))
            self.parking += got
        else:
            self.asks[i] = got
            self.pending += len(got)


def _choose(asks: dict[int, np.ndarray]) -> list[int]:
    """Groups whose pages go to the next builder call: in order, about ``BATCH`` pages."""
    chosen, rows = [], 0
    for i in sorted(asks):
        if chosen and rows + len(asks[i]) > BATCH:
            break
        chosen.append(i)
        rows += len(asks[i])
    return chosen


def check_banks(name: str, banks: int) -> None:
    """Refuse, in one line, a map with more banks than a sweep takes (``MAX_BANKS``)."""
    if banks > MAX_BANKS:
        raise ValidationError(
            f"memory map {name!r}: {banks:,} banks after trimming; a sweep takes up to"
            f" {MAX_BANKS:,} per map (each row's cost grows with its map's banks): merge"
            " adjacent banks or split the map"
        )


def _runs(group: Group) -> Asks:
    """One group's runs, window by window (:mod:`sweep.model.windows`): in each, breakpoints,
    then intervals refined until every state's breakpoints are in, then joined into runs."""
    g, va_bits, layout = group.granule, group.va_bits, group.layout
    banks = group.memory_map.trimmed(g)
    check_banks(group.memory_map.name, len(banks))
    starts = np.array([s for s, _ in banks], dtype=I64)
    ends = np.array([e for _, e in banks], dtype=I64)
    align = layout.memstart_align(g)
    high = int(starts[0]) // align * align + (1 << (va_bits - 1))  # docs/model.md section 2
    cut = windows(starts, ends, g, high)
    chunks, carry = [], None
    for k, (lo, hi) in enumerate(cut):
        states = States(starts, ends, g, va_bits, group.blocks, high)  # the whole map's banks
        points = structural(lo, hi, g, va_bits, align, high)
        runs, carry = join((yield from _window(lo, hi, points, states, g)), g, carry,
                           last=k == len(cut) - 1)  # fmt: skip
        chunks.append(runs)
    return chunks


def _window(starts, ends, points, states: States, g: int) -> Asks:
    """The intervals of a window's banks ``[starts, ends)`` (``first, end, a, c``), refined until
    every state's breakpoints are in: a state's span is the window's pages in that state."""
    first, end = intervals(points, starts, ends, g)
    points = np.concatenate([first, states.new_points(first, end, (yield first))])
    del first, end
    yield len(points)  # wait for room to hold about as many intervals
    known = None
    while True:
        first, end = intervals(points, starts, ends, g)
        if known is not None and _same(known, first, end):
            return known  # no new interval: no new state either
        first, end, a, c = yield from _refine(first, end, g, known)
        points = states.new_points(first, end, a)
        if not len(points):
            return first, end, a, c
        known = (first, end, a, c)
        points = np.concatenate([first, points])


def _same(known, first, end) -> bool:
    return len(known[0]) == len(first) and (known[0] == first).all() and (known[1] == end).all()


def _refine(first, end, g, known=None) -> Asks:
    """Evaluate each interval at its first, middle and last page and halve those whose samples
    do not fit one run, until all do; intervals in ``known`` (an earlier result) are reused."""
    n = len(first)
    if known is None:
        have = np.zeros(n, dtype=bool)
        a, c = _empty(OUTPUTS, n), _empty(AFFINE, n)
    else:
        kf, ke, a, c = known
        idx = np.minimum(np.searchsorted(kf, first), len(kf) - 1)
        have = (kf[idx] == first) & (ke[idx] == end)
        for columns in (a, c):
            for name in columns:  # one column at a time: the old one goes at once
                columns[name] = columns[name][idx]
    todo = np.flatnonzero(~have)
    bad = [np.zeros(0, dtype=I64)]
    for start in range(0, len(todo), WINDOW):
        rows = todo[start : start + WINDOW]
        ok = yield from _sample(first[rows], end[rows], g, a, c, rows)
        bad.append(rows[~ok])
    bad = np.concatenate(bad)
    if not len(bad):
        return first, end, a, c
    pieces = yield from _halve(first[bad], end[bad], g)
    # Each bad interval's pieces take its place: one gather a column.
    count = np.ones(n, dtype=I64)
    count[bad] = np.diff(np.searchsorted(pieces[0], np.append(first[bad], end[bad][-1])))
    source = np.repeat(np.arange(n), count)
    source[np.repeat(count > 1, count)] = n + np.arange(len(pieces[0]))
    first = np.concatenate([first, pieces[0]])[source]
    end = np.concatenate([end, pieces[1]])[source]
    for columns, more in ((a, pieces[2]), (c, pieces[3])):
        for name in columns:
            columns[name] = np.concatenate([columns[name], more[name]])[source]
    return first, end, a, c


def _halve(first, end, g) -> Asks:
    """Intervals whose samples disagree, halved round after round until every piece's agree:
    the pieces, in order, with their samples (``first, end, a, c``)."""
    done = []
    for _ in range(MAX_ROUNDS - 1):
        mid = first + (end - first) // g // 2 * g
        first, end = np.concatenate([first, mid]), np.concatenate([mid, end])
        order = np.argsort(first, kind="stable")
        first, end = first[order], end[order]
        n = len(first)
        a, c = _empty(OUTPUTS, n), _empty(AFFINE, n)
        ok = np.ones(n, dtype=bool)
        for start in range(0, n, WINDOW):
            rows = np.arange(start, min(start + WINDOW, n))
            ok[rows] = yield from _sample(first[rows], end[rows], g, a, c, rows)
        done.append((first[ok], end[ok], take(a, ok), take(c, ok)))
        first, end = first[~ok], end[~ok]
        if not len(first):
            first, end, a, c = zip(*done, strict=True)
            order = np.argsort(np.concatenate(first), kind="stable")
            a, c = (
                {name: np.concatenate([x[name] for x in y])[order] for name in y[0]} for y in (a, c)
            )
            return np.concatenate(first)[order], np.concatenate(end)[order], a, c
    raise RuntimeError("every-page: intervals did not converge")  # pragma: no cover


def _sample(first, end, g, a, c, rows) -> Asks:
    """Evaluate intervals at their first, middle and last page (each page once: a one-page
    interval is one sample, a two-page one two), store the first page's outputs in ``a`` and
    the last page's affine ones in ``c`` at ``rows``; whether each interval fits one run."""
    pages = (end - first) // g
    by_size = [np.flatnonzero(pages == 1), np.flatnonzero(pages == 2), np.flatnonzero(pages > 2)]
    one, two, more = (len(k) for k in by_size)
    order = np.concatenate(by_size)  # so that each kind's samples are slices
    f, e, pages = first[order], end[order], pages[order]
    values = yield np.concatenate([f, e[one:] - g, f[one + two :] + pages[one + two :] // 2 * g])
    n = len(f)
    head, tail = slice(0, n), slice(n, n + two + more)  # first pages; last pages but of one
    mid = slice(n + two + more, n + two + 2 * more)
    ok = np.ones(n, dtype=bool)
    where = rows[order]
    for name in OUTPUTS:
        v = values[name]
        if v.size == 1:  # one value at every sample: they agree
            a[name][where] = v[0]
            if name in c:
                c[name][where] = v[0]
            continue
        a[name][where] = v[head]
        if name not in c:
            ok[one:] &= v[one:n] == v[tail]
            ok[one + two :] &= v[one + two : n] == v[mid]
            continue
        last = np.concatenate([v[:one], v[tail]])
        c[name][where] = last
        total = diff(v[:n], last)
        span = np.maximum(pages - 1, 1)
        slope = total // span
        ok &= total == slope * span
        ok[one + two :] &= diff(v[one + two : n], v[mid]) == slope[one + two :] * (
            pages[one + two :] // 2
        )
    back = np.empty(n, dtype=bool)
    back[order] = ok
    return back


def _empty(names, n: int) -> dict[str, np.ndarray]:
    return {name: np.empty(n, dtype=NUMPY_DTYPES[name]) for name in names}


class _Builder:
    """The builder's outputs at pages of any of some groups (``compute_columns``, no Arrow),
    as numpy columns: one element for a column that holds one value in every row."""

    def __init__(self, groups: Sequence[Group]) -> None:
        maps: dict[int, int] = {}
        layouts: dict[int, int] = {}
        for group in groups:
            maps.setdefault(id(group.memory_map), len(maps))
            layouts.setdefault(id(group.layout), len(layouts))
        self.maps = list({id(x.memory_map): x.memory_map for x in groups}.values())
        self.layouts = list({id(x.layout): x.layout for x in groups}.values())
        self.banks = TrimmedBanks.of(self.maps) if groups else None
        self.of = {
            "map_index": np.array([maps[id(x.memory_map)] for x in groups], dtype=I64),
            "layout_index": np.array([layouts[id(x.layout)] for x in groups], dtype=I64),
            "granule": np.array([x.granule for x in groups], dtype=I64),
            "va_bits": np.array([x.va_bits for x in groups], dtype=I64),
            "block_mappings": np.array([bool(x.blocks) for x in groups], dtype=bool),
        }
        self.bank_count = np.array([len(x.memory_map.banks) for x in groups], dtype=I64)

    def __call__(self, asks: list[tuple[int, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        """The outputs at each ``(group, pages)``, in order."""
        sizes = [len(pages) for _, pages in asks]
        if not sum(sizes):
            return [{name: np.zeros(0, NUMPY_DTYPES[name]) for name in OUTPUTS} for _ in asks]
        index = np.repeat(np.array([i for i, _ in asks], dtype=I64), sizes)
        pages = np.concatenate([p for _, p in asks])
        step = max(1, min(BATCH, BATCH_CELLS // max(1, int(self.bank_count[index].max(initial=1)))))
        parts = [
            (self._columns(index[k : k + step], pages[k : k + step]), len(pages[k : k + step]))
            for k in range(0, len(pages), step)
        ]
        columns = {name: _join([(p[name], n) for p, n in parts]) for name in OUTPUTS}
        bounds = np.cumsum([0, *sizes])
        return [
            {name: v if v.size == 1 else v[lo:hi] for name, v in columns.items()}
            for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True)
        ]

    def _columns(self, index: np.ndarray, pages: np.ndarray) -> dict[str, np.ndarray]:
        one = index[:1] if (index == index[0]).all() else index  # one group: shared inputs
        given = {name: values[one] for name, values in self.of.items()}
        rows = Rows.of(self.maps, layouts=self.layouts, idmap_pa=pages.astype(np.uint64), **given)
        return compute_columns(self.banks, self.layouts, rows, shared=True)


def _join(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """One column from the parts of several builder calls (``(values, rows)``)."""
    if len(parts) == 1 or all(v.size == 1 and v[0] == parts[0][0][0] for v, _ in parts):
        return parts[0][0]
    return np.concatenate([np.broadcast_to(v, (n,)) for v, n in parts])


class _Evaluator:
    """The builder's outputs at given pages of one group, as numpy columns (one per page)."""

    def __init__(self, memory_map, granule, va_bits, layout, blocks) -> None:
        self.builder = _Builder([Group(memory_map, granule, va_bits, layout, blocks)])

    def __call__(self, pages: np.ndarray) -> dict[str, np.ndarray]:
        (values,) = self.builder([(0, np.asarray(pages))])
        return {name: np.broadcast_to(v, (len(pages),)).copy() for name, v in values.items()}
