"""The intervals of an every-page group (:mod:`sweep.model.runs`): where they may start, and
the table of their runs (joined in :mod:`sweep.model.windows`).

Breakpoints are computed from the banks and the layout's ``delta`` (docs/model.md sections 2
to 5), never by walking pages: bank and window edges, the aliases of the runtime ranges, entry
boundaries at each level, powers of two, multiples of ``2^(V-1)`` and, above the clip threshold,
of ``ARM64_MEMSTART_ALIGN``. Each state the pages are in (``States``) brings its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS, RUN_COLUMNS
from sweep.core.memmap import level_shift, min_block_level
from sweep.model.bootrows import MAPPING_SETS as SETS
from sweep.model.builder import CODED

I64 = np.int64
CHUNK_RUNS = 1 << 18
"""Runs of a streamed table (:func:`tables`): about 56 MiB of Arrow columns, and a row group of
the part they are written to."""
AFFINE = ("margin", "clipped_bytes", "hyp_dram_last")
"""Outputs that change by the same amount from page to page along a run."""
OUTPUTS = [c for c in ROW_COLUMNS if c not in INPUT_COLUMNS]
CONSTANT = [c for c in OUTPUTS if c not in AFFINE]


class States:
    """The states intervals are in (delta, from the last DRAM byte's alias; window; tree size;
    PHYS_OFFSET; kernel high or low): each new one brings its own breakpoints."""

    def __init__(self, starts, ends, g, va_bits, blocks, high) -> None:
        self.starts, self.ends, self.g, self.blocks, self.high = starts, ends, g, blocks, high
        self.va_bits = va_bits
        self.seen: set[tuple] = set()

    def new_points(self, first, end, a) -> np.ndarray:
        """Breakpoints of the states first seen among intervals ``[first, end)`` (``a``: the
        outputs at each first page); a state's span is the pages of all its intervals."""
        keys = self.keys(first, a)
        n = len(first)
        if not n:
            return np.zeros(0, dtype=I64)
        # Neighbours mostly share a state: unique over the runs of equal keys, not every row.
        heads = np.flatnonzero(np.append(True, (keys[1:] != keys[:-1]).any(axis=1)))
        # The distinct states, each with its first head and span: a stable sort of the heads'
        # keys, not np.unique(axis=0), whose structured view costs more than a small group.
        order = np.lexsort(keys[heads].T[::-1])
        ordered = keys[heads[order]]
        cut = np.flatnonzero(np.append(True, (ordered[1:] != ordered[:-1]).any(axis=1)))
        where = order[cut]  # the first head of each state: the sort is stable
        span_lo = np.minimum.reduceat(np.minimum.reduceat(first, heads)[order], cut)
        span_hi = np.maximum.reduceat(np.maximum.reduceat(end, heads)[order], cut)
        points = [np.zeros(0, dtype=I64)]
        for k, i in enumerate(heads[where].tolist()):
            key = tuple(keys[i].tolist())
            if key in self.seen:
                continue
            self.seen.add(key)
            span = (int(span_lo[k]), int(span_hi[k]))
            points.append(_within_piece(self, keys[i], int(first[i]), span))
        return np.concatenate(points)

    def keys(self, first, a) -> np.ndarray:
        """Each interval's state, one row of six integers."""
        is_high = first >= self.high
        dram_last = np.where(
            is_high, first + self.g - 1, _low_dram_last(self.starts, self.ends, self.high)
        )
        n = len(first)
        return np.stack(
            [
                diff(dram_last, np.broadcast_to(a["hyp_dram_last"], (n,))),
                np.broadcast_to(a["hyp_va_min"].view(I64), (n,)),
                np.broadcast_to(a["hyp_va_max"].view(I64), (n,)),
                np.broadcast_to(a["levels"].astype(I64), (n,)),
                np.broadcast_to(a["phys_offset"].view(I64), (n,)),
                is_high.astype(I64),
            ],
            axis=1,
        )


def _low_dram_last(starts, ends, high) -> int:
    """The last DRAM byte kept while the kernel sits low: DRAM is clipped at ``high``."""
    kept = starts < high
    return int(min(int(ends[kept][-1]), high)) - 1


def structural(starts, ends, g, va_bits, align, high) -> np.ndarray:
    """Pages where delta, the window, the tree size or the clip may change, in the banks."""
    lo, hi = int(starts[0]), int(ends[-1])
    points = [starts, ends]
    points.append(np.array([1 << k for k in range(g.bit_length() - 1, 53)], dtype=I64))
    points.append(_multiples(lo, hi, 1 << (va_bits - 1)))
    if high < hi:
        points.append(_multiples(max(high, lo), hi, align))
        points.append(np.array([high], dtype=I64))
    return np.concatenate(points)


def _within_piece(state: States, key, page, span) -> np.ndarray:
    """Breakpoints that depend on a state's delta: aliases, window, entries per level; those
    that repeat along the clipped region only within ``span``, the pages of that state."""
    starts, ends, g, blocks, high = state.starts, state.ends, state.g, state.blocks, state.high
    delta, va_min, va_max, levels, phys_offset, is_high = (int(x) for x in key)
    limit = page + g if is_high else high
    s, e = np.maximum(starts, phys_offset), np.minimum(ends, limit)
    keep = s < e
    lo, hi = s[keep] + delta, e[keep] + delta
    points = [lo - g, lo, hi, (hi[:-1] + lo[1:] - g) // 2]  # the nearest alias changes
    points.append(np.array([w for w in (va_min, va_max + 1) if abs(w) < 1 << 62], dtype=I64))
    if is_high and len(lo):  # tagged's tag_lsb grows with the last DRAM byte (section 3)
        points.append(_tag_lsb_steps(int(s[keep][0]), phys_offset, state.va_bits, g, span))
    for level in range(4 - levels, 4):
        shift = level_shift(level, g)
        chunk = 1 << shift
        points += [lo >> shift << shift, ((hi - 1 >> shift) + 1) << shift]
        if blocks and min_block_level(g) <= level < 3:
            points += [(lo + chunk - 1) >> shift << shift, hi >> shift << shift]
        if is_high and level < 3:  # the last alias ends with the idmap page: every entry edge
            edges = _multiples(span[0], span[1] + chunk, chunk)
            moving = edges - (g + delta) % chunk  # where the last alias ends on an edge
            points += [edges, moving, moving + g]
    return np.concatenate([np.asarray(p, dtype=I64).ravel() for p in points])


def _tag_lsb_steps(dram_first: int, phys_offset: int, va_bits: int, g: int, span) -> np.ndarray:
    """Pages where ``bit_length(lin(first DRAM byte) ^ lin(last DRAM byte))`` may change as the
    last byte (the idmap page's end) moves up: where ``lin(last)`` first reaches the next
    multiple of ``2^k`` above ``lin(first)``, for each ``k``."""
    a = ((1 << 64) - (1 << (va_bits - 1)) + dram_first - phys_offset) % (1 << 64)
    pages = []
    for k in range(g.bit_length() - 1, 64):
        last = dram_first + ((((a >> k) + 1) << k) - a)  # the DRAM byte whose lin() is that
        page = last - g + 1
        if page >= span[1]:  # and so for every larger k: the next multiple only moves up
            break
        if span[0] <= page:
            pages.append(page)
    return np.array(pages, dtype=I64)


def _multiples(lo: int, hi: int, step: int) -> np.ndarray:
    """Multiples of ``step`` in ``[lo, hi]`` (at most a few million)."""
    first = -(-lo // step)
    return np.arange(first, hi // step + 1, dtype=I64) * step


def _inside(points: np.ndarray, starts, ends, g) -> np.ndarray:
    """Distinct page addresses among ``points`` that lie in a bank, with every bank start."""
    points = np.sort(np.concatenate([points // g * g, starts]))  # a sort: no hash table
    points = points[np.append(True, points[1:] != points[:-1])]
    bank = np.searchsorted(ends, points, side="right")
    ok = bank < len(ends)
    ok[ok] = starts[bank[ok]] <= points[ok]
    return points[ok]


def _ends_for(first, starts, ends, g) -> np.ndarray:
    """Each interval's end: the next interval's first page or its bank's end."""
    bank = np.searchsorted(ends, first, side="right")
    return np.minimum(np.append(first[1:], ends[-1]), ends[bank])


def intervals(points, starts, ends, g):
    """Intervals of pages starting at each breakpoint (and bank start) inside a bank."""
    first = _inside(-(-points // g) * g, starts, ends, g)  # the first page at or above
    return first, _ends_for(first, starts, ends, g)


def diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y - x`` as int64 (wrapping uint64 arithmetic: the differences are small)."""
    return (y.astype(np.uint64) - x.astype(np.uint64)).view(I64)


def take(columns: dict, rows) -> dict:
    """``columns`` at ``rows``."""
    return {name: values[rows] for name, values in columns.items()}


def tables(pieces: Iterable[tuple[Any, dict[str, np.ndarray]]]) -> Iterator[pa.Table]:
    """Tables of ``CHUNK_RUNS`` runs (the last fewer) from pieces ``(group, runs)`` in order (a
    window's runs each: ``sweep.model.windows.join``): a piece is cut where a table ends, and
    small ones share a table (an Arrow table costs more than the runs of a small group)."""
    held, rows = [], 0
    for group, runs in pieces:
        n, start = len(runs["pages"]), 0
        while True:
            size = min(n - start, CHUNK_RUNS - rows)  # what fits in this table
            part = runs if size == n else {k: v[start : start + size] for k, v in runs.items()}
            held.append((group, part))
            rows, start = rows + size, start + size
            if rows == CHUNK_RUNS:
                yield table([x for x, _ in held], [[x] for _, x in held])
                held, rows = [], 0
            if start == n:
                break
    if held:
        yield table([x for x, _ in held], [[x] for _, x in held])


def table(groups, runs: list[list[dict[str, np.ndarray]]]) -> pa.Table:
    """One table of the run rows of several groups (for each, its runs as numpy columns a window:
    ``sweep.model.windows.join``), in order: inputs, the first page's outputs, the run columns.
    One table, a chunk a column, for many groups: building and joining Arrow tables cost more
    than the runs of a small group, and the store reads one-chunk columns without a copy. The
    windows' columns are joined a column at a time, each window's going as it is joined (Arrow
    takes numpy's integer columns as they are). A unit's part is written from :func:`tables`,
    at most ``CHUNK_RUNS`` runs each, so that no table holds a big group's runs whole."""
    pieces = [(group, x) for group, windows in zip(groups, runs, strict=True) for x in windows]
    sizes = np.array([len(x["pages"]) for _, x in pieces], dtype=I64)
    total = int(sizes.sum())
    of = [group for group, _ in pieces]  # each piece's group

    def per_row(values, dtype) -> np.ndarray:
        if not any(values):  # zeros that take no memory until read (calloc)
            return np.zeros(total, dtype=dtype)
        return np.repeat(np.array(values, dtype=dtype), sizes)

    def names(values: list[str], pieces_values: list[str]) -> pa.DictionaryArray:
        dictionary = list(dict.fromkeys(values))
        codes = per_row([dictionary.index(v) for v in pieces_values], np.int32)
        return pa.DictionaryArray.from_arrays(codes, pa.array(dictionary, pa.string()))

    def constant(values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(np.zeros(total, np.int32), pa.array(values))

    columns = {
        "memory_map": names([x.memory_map.name for x in groups], [x.memory_map.name for x in of]),
        "granule": per_row([x.granule for x in of], np.int32),
        "va_bits": per_row([x.va_bits for x in of], np.int8),
        "layout": names([x.layout.name for x in groups], [x.layout.name for x in of]),
        "block_mappings": per_row([bool(x.blocks) for x in of], bool),
        "tag_random": np.zeros(total, dtype=np.uint64),
        "mappings": constant(list(SETS)),
        "cpus": np.zeros(total, dtype=np.int16),
        "kernel": constant([""]),
    }
    for col in list(pieces[0][1]):  # each piece's columns go as they are joined
        parts = [x.pop(col) for _, x in pieces]
        columns[col] = parts[0] if len(parts) == 1 else np.concatenate(parts)
    for col, coded in CODED.items():
        columns[col] = pa.DictionaryArray.from_arrays(
            pa.array(columns[col].astype(np.int32)), pa.array(list(coded))
        )
    schema = {**ROW_COLUMNS, **RUN_COLUMNS}
    arrays = [
        columns[col]
        if isinstance(columns[col], pa.Array)
        else pa.array(np.ascontiguousarray(columns[col], dtype=schema[col]))
        for col in schema
    ]
    return pa.Table.from_arrays(arrays, names=list(schema))
