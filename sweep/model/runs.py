"""Every page, exactly, as runs: ``placement.kind = "every-page"``.

A row per page would be 2^18 rows per GiB of DRAM and configuration, yet outputs change only
where the idmap page crosses something: a bank or window edge, a runtime range's alias, an
entry boundary of the runtime tree at some level (block or table), a power of two
(``idmap_va_bits``, the tree size), a multiple of ``2^(V-1)`` (the layouts' tag bit and
``merged``'s half), the clip threshold ``PHYS_OFFSET + 2^(V-1)`` and, above it, each
``ARM64_MEMSTART_ALIGN`` step of the moved PHYS_OFFSET. Those *breakpoints* are computed from the
banks and the layout's ``delta`` (docs/model.md sections 2 to 5), never by walking pages; the
builder then evaluates each interval between breakpoints at its first, middle and last page, and an
interval whose samples disagree is halved until they agree (a safety net for a monotone change
the list missed). Adjacent intervals with equal outputs are merged into maximal runs.

Within a run, every output is the same on every page except the *affine* ones, which change by
the same amount from page to page: ``margin`` (the gap to the nearest alias) and, where the kernel
sits high and DRAM is clipped at the idmap page, ``clipped_bytes`` and ``hyp_dram_last``. A run
row holds the first page's values and ``idmap_pa_last``, ``pages`` and ``<column>_last`` for the
affine ones (``sweep.core.columns.RUN_COLUMNS``); page ``k`` of a run has
``first + k * (last - first) / (pages - 1)``. Runs need ``tag_random = 0``, so the plan refuses a
``[tag] seed`` with every-page.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS, RUN_COLUMNS
from sweep.core.errors import ValidationError
from sweep.core.memmap import MAX_BANKS, MemoryMap, level_shift, min_block_level
from sweep.model.bootrows import MAPPING_SETS as SETS
from sweep.model.builder import CODED, build_table
from sweep.model.layout import Layout

I64 = np.int64
AFFINE = ("margin", "clipped_bytes", "hyp_dram_last")
OUTPUTS = [c for c in ROW_COLUMNS if c not in INPUT_COLUMNS]
CONSTANT = [c for c in OUTPUTS if c not in AFFINE]
MAX_ROUNDS = 64
BATCH = 1 << 17
"""Pages the builder evaluates at once (its scratch memory stays near 130 MiB)."""
BATCH_CELLS = 1 << 27
"""Pages x banks the builder evaluates at once: its scratch arrays hold one element per page
and bank (``sweep.model.banks.Banks.per_row``), so a map of many banks gets fewer pages per
call and a worker's memory stays under about 1 GiB however many banks a map has (measured: 30k
banks took 5.3 GB with ``BATCH`` pages a call, 0.5 GB so, in 20 s)."""


def group_runs(
    memory_map: MemoryMap, granule: int, va_bits: int, layout: Layout, blocks: bool
) -> pa.Table:
    """The runs of one (memory map, granule, VA_BITS, layout, block setting), every page."""
    g = granule
    banks = memory_map.trimmed(g)
    check_banks(memory_map.name, len(banks))
    starts = np.array([s for s, _ in banks], dtype=I64)
    ends = np.array([e for _, e in banks], dtype=I64)
    evaluate = _Evaluator(memory_map, g, va_bits, layout, blocks)
    align = layout.memstart_align(g)
    high = int(starts[0]) // align * align + (1 << (va_bits - 1))  # docs/model.md section 2

    first, end = _intervals(_structural(starts, ends, g, va_bits, align, high), starts, ends, g)
    states = _States(starts, ends, g, va_bits, blocks, high)
    points = states.new_points(first, end, evaluate(first))
    known = None
    while True:
        first, end = _intervals(np.concatenate([first, points]), starts, ends, g)
        first, end, a, c = _refine(evaluate, first, end, g, known)
        known = (first, end, a, c)
        points = states.new_points(first, end, a)
        if not len(points):
            return _merge(memory_map.name, g, va_bits, layout.name, blocks, first, end, a, c)


def check_banks(name: str, banks: int) -> None:
    """Refuse, in one line, a map with more banks than a sweep takes (``MAX_BANKS``)."""
    if banks > MAX_BANKS:
        raise ValidationError(
            f"memory map {name!r}: {banks:,} banks after trimming; a sweep takes up to"
            f" {MAX_BANKS:,} per map (each row's cost grows with its map's banks): merge"
            " adjacent banks or split the map"
        )


class _States:
    """The states intervals are in (delta, from the last DRAM byte's alias; window; tree size;
    PHYS_OFFSET; kernel high or low): each new one brings its own breakpoints."""

    def __init__(self, starts, ends, g, va_bits, blocks, high) -> None:
        self.starts, self.ends, self.g, self.blocks, self.high = starts, ends, g, blocks, high
        self.va_bits = va_bits
        self.seen: set[tuple] = set()

    def new_points(self, first, end, a) -> np.ndarray:
        g = self.g
        is_high = first >= self.high
        dram_last = np.where(
            is_high, first + g - 1, _low_dram_last(self.starts, self.ends, self.high)
        )
        keys = np.stack(
            [
                _diff(dram_last, a["hyp_dram_last"]),
                a["hyp_va_min"].view(I64),
                a["hyp_va_max"].view(I64),
                a["levels"].astype(I64),
                a["phys_offset"].view(I64),
                is_high.astype(I64),
            ],
            axis=1,
        )
        _, where, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.ravel()
        span_lo = np.full(len(where), np.iinfo(I64).max)
        span_hi = np.zeros(len(where), dtype=I64)
        np.minimum.at(span_lo, inverse, first)
        np.maximum.at(span_hi, inverse, end)
        points = [np.zeros(0, dtype=I64)]
        for k, i in enumerate(where.tolist()):
            key = tuple(keys[i].tolist())
            if key in self.seen:
                continue
            self.seen.add(key)
            span = (int(span_lo[k]), int(span_hi[k]))
            points.append(_within_piece(self, keys[i], int(first[i]), span))
        return np.concatenate(points)


def _low_dram_last(starts, ends, high) -> int:
    """The last DRAM byte kept while the kernel sits low: DRAM is clipped at ``high``."""
    kept = starts < high
    return int(min(int(ends[kept][-1]), high)) - 1


def _refine(evaluate, first, end, g, known=None):
    """Evaluate each interval at its first, middle and last page and halve those whose samples
    do not fit one run, until all do; intervals in ``known`` (an earlier result) are reused."""
    n = len(first)
    have = np.zeros(n, dtype=bool)
    a = c = None
    if known is not None:
        kf, ke, ka, kc = known
        idx = np.minimum(np.searchsorted(kf, first), len(kf) - 1)
        have = (kf[idx] == first) & (ke[idx] == end)
        a = {k: v[idx] for k, v in ka.items()}
        c = {k: v[idx] for k, v in kc.items()}
    for _ in range(MAX_ROUNDS):
        todo = np.flatnonzero(~have)
        if not len(todo):
            return first, end, a, c
        f, e = first[todo], end[todo]
        pages = (e - f) // g
        mid = f + pages // 2 * g
        values = evaluate(np.concatenate([f, mid, e - g]))
        m = len(todo)
        ta, tb, tc = ({k: v[i * m : (i + 1) * m] for k, v in values.items()} for i in range(3))
        if a is None:
            a = {k: np.empty(len(first), v.dtype) for k, v in ta.items()}
            c = {k: np.empty(len(first), v.dtype) for k, v in tc.items()}
        for k in ta:
            a[k][todo], c[k][todo] = ta[k], tc[k]
        ok = _agree(ta, tb, tc, pages)
        have[todo] = ok
        bad = todo[~ok]
        if not len(bad):
            return first, end, a, c
        order = np.argsort(np.concatenate([first, mid[~ok]]), kind="stable")
        first = np.concatenate([first, mid[~ok]])[order]
        end = np.concatenate([end, end[bad]])[order]
        end = np.minimum(end, np.append(first[1:], end[-1]))
        have = np.concatenate([have, np.zeros(len(bad), dtype=bool)])[order]
        a = {k: np.concatenate([v, v[bad]])[order] for k, v in a.items()}
        c = {k: np.concatenate([v, v[bad]])[order] for k, v in c.items()}
    raise RuntimeError("every-page: intervals did not converge")  # pragma: no cover


class _Evaluator:
    """The builder's outputs at given pages of one group, as numpy columns."""

    def __init__(self, memory_map, granule, va_bits, layout, blocks) -> None:
        self.args = (memory_map, granule, va_bits, layout, blocks)
        self.pages = max(1, min(BATCH, BATCH_CELLS // max(1, len(memory_map.banks))))

    def __call__(self, pages: np.ndarray) -> dict[str, np.ndarray]:
        step = self.pages
        parts = [self.batch(pages[k : k + step]) for k in range(0, len(pages), step)]
        if len(parts) == 1:
            return parts[0]
        return {name: np.concatenate([p[name] for p in parts]) for name in OUTPUTS}

    def batch(self, pages: np.ndarray) -> dict[str, np.ndarray]:
        memory_map, granule, va_bits, layout, blocks = self.args
        table = build_table(
            [memory_map], 0, granule, va_bits, (layout,), 0, blocks, pages.astype(np.uint64)
        )
        return {name: _values(table.column(name)) for name in OUTPUTS}


def _values(column: pa.ChunkedArray) -> np.ndarray:
    """A column as numpy: a coded category (``builder.CODED``) as its codes."""
    if pa.types.is_dictionary(column.type):
        return column.combine_chunks().indices.to_numpy().astype(np.int8)
    return column.to_numpy()


def _structural(starts, ends, g, va_bits, align, high) -> np.ndarray:
    """Pages where delta, the window, the tree size or the clip may change, in the banks."""
    lo, hi = int(starts[0]), int(ends[-1])
    points = [starts, ends]
    points.append(np.array([1 << k for k in range(g.bit_length() - 1, 53)], dtype=I64))
    points.append(_multiples(lo, hi, 1 << (va_bits - 1)))
    if high < hi:
        points.append(_multiples(max(high, lo), hi, align))
        points.append(np.array([high], dtype=I64))
    return np.concatenate(points)


def _within_piece(state: _States, key, page, span) -> np.ndarray:
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
        if span[0] <= page < span[1]:
            pages.append(page)
    return np.array(pages, dtype=I64)


def _multiples(lo: int, hi: int, step: int) -> np.ndarray:
    """Multiples of ``step`` in ``[lo, hi]`` (at most a few million)."""
    first = -(-lo // step)
    return np.arange(first, hi // step + 1, dtype=I64) * step


def _inside(points: np.ndarray, starts, ends, g) -> np.ndarray:
    """Distinct page addresses among ``points`` that lie in a bank, with every bank start."""
    points = np.unique(np.concatenate([points // g * g, starts]))
    bank = np.searchsorted(ends, points, side="right")
    ok = bank < len(ends)
    ok[ok] = starts[bank[ok]] <= points[ok]
    return points[ok]


def _ends_for(first, starts, ends, g) -> np.ndarray:
    """Each interval's end: the next interval's first page or its bank's end."""
    bank = np.searchsorted(ends, first, side="right")
    return np.minimum(np.append(first[1:], ends[-1]), ends[bank])


def _intervals(points, starts, ends, g):
    """Intervals of pages starting at each breakpoint (and bank start) inside a bank."""
    first = _inside(-(-points // g) * g, starts, ends, g)  # the first page at or above
    return first, _ends_for(first, starts, ends, g)


def _diff(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``y - x`` as int64 (wrapping uint64 arithmetic: the differences are small)."""
    return (y.astype(np.uint64) - x.astype(np.uint64)).view(I64)


def _agree(a, b, c, pages) -> np.ndarray:
    """Whether the samples at first (a), middle (b) and last (c) page fit one run."""
    ok = np.ones(len(pages), dtype=bool)
    for name in CONSTANT:
        ok &= (a[name] == b[name]) & (a[name] == c[name])
    k = pages // 2
    span = np.maximum(pages - 1, 1)
    for name in AFFINE:
        total = _diff(a[name], c[name])
        slope = total // span
        ok &= (total == slope * span) & (_diff(a[name], b[name]) == slope * k)
    return ok


def _merge(name, g, va_bits, layout, blocks, first, end, a, c) -> pa.Table:
    """Maximal runs of intervals with equal outputs and one slope per affine column."""
    pages = (end - first) // g
    n = len(first)
    cut = np.ones(max(n - 1, 0), dtype=bool)
    if n > 1:
        cut = first[1:] != end[:-1]
        for col in CONSTANT:
            cut |= a[col][1:] != a[col][:-1]
        span = np.maximum(pages - 1, 1)
        slope = {col: _diff(a[col], c[col]) // span for col in AFFINE}
        join = {col: _diff(c[col][:-1], a[col][1:]) for col in AFFINE}
        for col in AFFINE:
            cut |= (pages[:-1] > 1) & (slope[col][:-1] != join[col])
            cut |= (pages[1:] > 1) & (join[col] != slope[col][1:])
        single = np.flatnonzero((pages[1:-1] == 1) & ~cut[:-1] & ~cut[1:])
        for col in AFFINE:  # a one-page interval between two joins of other slopes
            wrong = join[col][single] != join[col][single + 1]
            cut[single[wrong] + 1] = True
    head = np.concatenate([[0], np.flatnonzero(cut) + 1])
    tail = np.append(head[1:] - 1, n - 1)
    runs = len(head)
    columns = {
        "memory_map": pa.DictionaryArray.from_arrays(np.zeros(runs, np.int32), pa.array([name])),
        "granule": np.full(runs, g, dtype=np.int32),
        "va_bits": np.full(runs, va_bits, dtype=np.int8),
        "layout": pa.DictionaryArray.from_arrays(np.zeros(runs, np.int32), pa.array([layout])),
        "block_mappings": np.full(runs, bool(blocks)),
        "idmap_pa": first[head].astype(np.uint64),
        "tag_random": np.zeros(runs, dtype=np.uint64),
        "mappings": pa.DictionaryArray.from_arrays(np.zeros(runs, np.int32), pa.array(SETS)),
        "cpus": np.zeros(runs, dtype=np.int16),
        "kernel": pa.DictionaryArray.from_arrays(np.zeros(runs, np.int32), pa.array([""])),
        **{col: a[col][head] for col in OUTPUTS},
        "idmap_pa_last": (end[tail] - g).astype(np.uint64),
        "pages": np.add.reduceat(pages, head) if n else np.zeros(0, I64),
        **{f"{col}_last": c[col][tail] for col in AFFINE},
    }
    for col, names in CODED.items():
        columns[col] = pa.DictionaryArray.from_arrays(
            pa.array(columns[col].astype(np.int32)), pa.array(list(names))
        )
    schema = {**ROW_COLUMNS, **RUN_COLUMNS}
    arrays = [
        columns[col]
        if isinstance(columns[col], pa.Array)
        else pa.array(np.ascontiguousarray(columns[col], dtype=schema[col]))
        for col in schema
    ]
    return pa.Table.from_arrays(arrays, names=list(schema))


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
        slope = _diff(first, out[f"{col}_last"].to_numpy()) // span
        out[col] = (first.astype(np.uint64) + (slope * k).astype(np.uint64)).astype(first.dtype)
    return pd.DataFrame({col: out[col] for col in ROW_COLUMNS})
