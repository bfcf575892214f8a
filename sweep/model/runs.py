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
builder calls of up to ``BATCH`` pages (a call costs milliseconds whatever its rows); a group
samples its intervals ``refine.WINDOW`` at a time, each page once, and keeps per interval only
the first page's outputs and the last page's affine ones (about 200 bytes); groups that would
hold more than ``HELD`` intervals together wait their turn. A group is refined a window of pages
at a time (:mod:`sweep.model.windows`) and each window's runs go out as soon as they are joined,
in group order (a later group's runs wait, ``BUFFERED`` at most, for the earlier ones'), as
tables of ``intervals.CHUNK_RUNS`` runs (:func:`runs_tables`) that the store encodes and
summarizes one at a time: a unit holds one window's intervals and a chunk or two of runs,
whatever its size (a 4 TiB map's 3.9 M runs: 213 MiB a worker, was 985 MiB as one table).
Units are cut between groups (:mod:`sweep.plan.units`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sweep.core.errors import ValidationError
from sweep.core.memmap import MAX_BANKS, MemoryMap
from sweep.model import intervals as iv
from sweep.model.banks import TrimmedBanks
from sweep.model.builder import NUMPY_DTYPES, compute_columns
from sweep.model.intervals import OUTPUTS, States, intervals, structural
from sweep.model.layout import Layout
from sweep.model.refine import BATCH, Asks, refine
from sweep.model.rows import Rows
from sweep.model.windows import expand, join, windows

__all__ = ["Group", "expand", "group_runs", "groups_runs", "runs_table", "runs_tables"]

I64 = np.int64
BATCH_CELLS = 1 << 27
"""Pages x banks the builder evaluates at once: its scratch arrays hold one element per page
and bank (``sweep.model.banks.Banks.per_row``), so a map of many banks gets fewer pages per
call and a worker's memory stays under about 1 GiB however many banks a map has (measured: 30k
banks took 5.3 GB with ``BATCH`` pages a call, 0.5 GB so, in 20 s)."""
BUFFERED = 1 << 18
"""Runs that later groups may hold, finished, while an earlier one is still refined."""
HELD = 1 << 19
"""Intervals the groups being refined may hold together (about 200 bytes each); a group that
would pass it waits, holding only its breakpoints, unless no other is being refined."""


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
    return [iv.table([x], [r]) for x, r in zip(groups, _collect(groups), strict=True)]


def runs_table(groups: Sequence[Group]) -> pa.Table:
    """The runs of every group, in order, as one table. The groups advance together, so that
    the pages they ask for share builder calls: a unit of many small maps costs a few calls a
    round, not a few a group (each call costs milliseconds whatever its rows)."""
    return iv.table(groups, _collect(groups))


def runs_tables(groups: Sequence[Group]) -> Iterator[pa.Table]:
    """The rows of :func:`runs_table`, in order, as tables of at most ``iv.CHUNK_RUNS`` runs,
    each made as soon as its runs are: a unit of any size is never held whole."""
    return iv.tables((groups[i], runs) for i, runs in _Together(groups).run())


def _collect(groups: Sequence[Group]) -> list[list[dict[str, np.ndarray]]]:
    """Each group's runs, a numpy dict a window."""
    runs: list[list] = [[] for _ in groups]
    for i, x in _Together(groups).run():
        runs[i].append(x)
    return runs


class _Together:
    """Groups advancing together: each asks for pages (or for room), the pages of several go
    to one builder call, and a group that would pass ``HELD`` waits for room. Runs come out in
    group order: a later group's wait for the earlier ones' (``out``), and once ``BUFFERED``
    runs wait no group starts and a later group that finishes a window waits its turn."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups, self.builder = groups, _Builder(groups)
        self.out: list[deque] = [deque() for _ in groups]
        self.head, self.done, self.blocked = 0, [False] * len(groups), set()
        self.buffered = 0  # runs waiting in ``out``
        self.waiting, self.running = deque(range(len(groups))), {}
        self.asks: dict[int, np.ndarray] = {}
        self.parked: deque[tuple[int, int]] = deque()
        self.held: dict[int, int] = {}
        self.pending = self.parking = self.holding = 0  # pages asked, intervals parked, held

    def run(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Each group's runs, a window at a time, in order: ``(group index, runs)``."""
        while self.waiting or self.running:
            while self.parked and (not self.held or self.holding + self.parked[0][1] <= HELD):
                i, size = self.parked.popleft()
                self.parking -= size
                self.held[i] = size
                self.holding += size
                self.advance(i, None)
            while (
                self.waiting
                and self.pending < BATCH
                and self.parking < HELD
                and self.buffered < BUFFERED
            ):
                i = self.waiting.popleft()
                self.running[i] = _runs(self.groups[i])
                self.advance(i, None)
            chosen = _choose(self.asks)
            asks = [(i, self.asks.pop(i)) for i in chosen]
            self.pending -= sum(len(pages) for _, pages in asks)
            for i, values in zip(chosen, self.builder(asks) if asks else [], strict=True):
                self.advance(i, values)
            yield from self.flush()
        yield from self.flush()

    def flush(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """The runs of the groups at the head, in order; a group that waited its turn goes on."""
        while self.head < len(self.groups):
            i = self.head
            while self.out[i]:
                runs = self.out[i].popleft()
                self.buffered -= len(runs["pages"])
                yield i, runs
            if i in self.blocked:
                self.blocked.discard(i)
                self.advance(i, None)
                continue
            if not self.done[i]:
                return
            self.head += 1

    def advance(self, i: int, value) -> None:
        """Send group ``i`` what it waited for; note what it asks next, or its runs."""
        while True:
            try:
                got = self.running[i].send(value)
            except StopIteration:
                self.done[i] = True
                del self.running[i]
                self.holding -= self.held.pop(i, 0)
                return
            if not isinstance(got, dict):
                break
            self.holding -= self.held.pop(i, 0)  # its window's intervals are joined: gone
            self.out[i].append(got)
            self.buffered += len(got["pages"])
            if i != self.head and self.buffered >= BUFFERED:
                self.blocked.add(i)  # to go on once its runs are next out (``flush``)
                return
            value = None
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
    carry = None
    for k, (lo, hi) in enumerate(cut):
        states = States(starts, ends, g, va_bits, group.blocks, high)  # the whole map's banks
        points = structural(lo, hi, g, va_bits, align, high)
        runs, carry = join((yield from _window(lo, hi, points, states, g)), g, carry,
                           last=k == len(cut) - 1)  # fmt: skip
        yield runs


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
        first, end, a, c = yield from refine(first, end, g, known)
        points = states.new_points(first, end, a)
        if not len(points):
            return first, end, a, c
        known = (first, end, a, c)
        points = np.concatenate([first, points])


def _same(known, first, end) -> bool:
    return len(known[0]) == len(first) and (known[0] == first).all() and (known[1] == end).all()


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
