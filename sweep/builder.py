"""The vectorized builder: every column of docs/model.md sections 1 to 6 for a batch of rows.

Each row may have its own memory map, granule, VA_BITS, layout and block setting: the banks of
all maps are flat arrays plus offsets (``sweep.banks``), each row reads its own, and every step
is numpy over all rows at once (loops run over levels, bank slots and layouts, never over rows
or groups). So thousands of one-row groups cost what one group of as many rows costs. Rows in
long runs of one map, granule, VA_BITS, layout and block setting (a work unit) are computed run
by run with those values shared (``Rows.run``): then only what depends on the idmap page is per
row, through the same functions.

Where each column is computed (one function per docs/model.md section):

| columns | section | function |
|---|---|---|
| inputs (``idmap_pa`` aligned down) | 1 | ``build_table`` (``_rows``) |
| trimmed banks, ``idmap_pa`` inside one | 1 | ``sweep.banks.TrimmedBanks`` |
| ``phys_offset``, ``clipped_bytes`` | 2 | ``sweep.clip.clip_dram`` |
| ``idmap_va_bits`` | 2 | ``_columns`` (``bit_length``) |
| ``hyp_va_min``, ``hyp_va_max`` (and ``delta``, ``tree_va_bits``) | 3 | ``compute_layouts`` |
| ``hyp_dram_last`` | 3 | ``_columns`` |
| ``overlap``, ``idmap_in_window``, ``margin`` | 4 | ``sweep.overlap`` |
| ``levels*``, ``extra_levels``, ``idmap_extended`` | 5 | ``tables.level_columns`` |
| ``tables_*``, ``table_pages``, ``table_bytes``, ``shared_tables`` | 5 | ``tables.table_columns`` |
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from sweep import overlap, tables
from sweep.banks import TrimmedBanks, granule_codes
from sweep.clip import clip_dram
from sweep.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.errors import ValidationError
from sweep.kconfig import bit_length
from sweep.layouts import Layout, LayoutBatch, compute_layouts
from sweep.model import GRANULES, PA_LIMIT, VA_BITS_MAX, VA_BITS_MIN, MemoryMap

I64 = np.int64
CHUNK_ROWS = 1 << 17
"""Rows computed together: big enough for numpy to amortise its calls, small enough that a
batch's temporaries stay in cache and its memory flat however many rows it has."""
RUN_FIELDS = ("map_index", "granule", "va_bits", "layout_index", "block_mappings")
"""What a work unit's rows share in runs (a segment): map, granule, VA_BITS, layout, blocks."""
MIN_RUN_ROWS = 1024
"""Rows a run of equal ``RUN_FIELDS`` must hold on average for a batch to be computed run by
run, each run's values shared (one element): then banks, clipping, layouts and the runtime tree
are one element too and only what depends on the idmap page is per row. Shorter runs (a board
corpus, a shuffled batch) are computed per row, which costs the same for any mix."""


@dataclass(frozen=True)
class Rows:
    """A checked batch of ``len(idmap_pa)`` rows. Every other array holds one element per row
    or a single element that all rows share: numpy broadcasting does the rest, so a value
    shared by a work unit costs one element, and no function here asks which it is."""

    map_index: np.ndarray
    granule: np.ndarray
    va_bits: np.ndarray
    layout_index: np.ndarray
    block_mappings: np.ndarray
    idmap_pa: np.ndarray
    """int64, aligned down to the row's granule."""
    tag_random: np.ndarray
    """uint64."""

    @classmethod
    def of(
        cls,
        memory_maps: Sequence[MemoryMap],
        map_index,
        granule,
        va_bits,
        layouts: Sequence[Layout],
        layout_index,
        block_mappings,
        idmap_pa,
        tag_random=None,
    ) -> Rows:
        """Check a batch (docs/model.md section 1): each argument one value or one per row."""
        idmap = np.asarray(idmap_pa).reshape(-1)
        n = len(idmap)
        granule = _column("granule", granule, n)
        code = granule_codes(granule)
        va_bits = _column("va_bits", va_bits, n)
        bad = (va_bits < VA_BITS_MIN) | (va_bits > VA_BITS_MAX)
        if bad.any():
            value = int(va_bits[np.flatnonzero(bad)[0]])
            raise ValidationError(f"va_bits: {value} is outside {VA_BITS_MIN}..{VA_BITS_MAX}")
        blocks = np.asarray(block_mappings)
        if blocks.dtype != bool:
            if not np.isin(blocks, [0, 1]).all():
                raise ValidationError("block_mappings: values must be true/false (or 0/1)")
            blocks = blocks.astype(bool)
        return cls(
            map_index=_index("memory map", map_index, n, len(memory_maps)),
            granule=granule,
            va_bits=va_bits,
            layout_index=_index("layout", layout_index, n, len(layouts)),
            block_mappings=_column("block_mappings", blocks, n, bool),
            idmap_pa=_aligned_idmap(idmap, np.asarray(GRANULES, dtype=I64)[code]),
            tag_random=_tags(tag_random, n),
        )

    def __len__(self) -> int:
        return len(self.idmap_pa)

    def __getitem__(self, part: slice) -> Rows:
        return Rows(**{name: _take(values, part) for name, values in vars(self).items()})

    def run(self, part: slice) -> Rows:
        """Rows ``part``, all in one run of equal ``RUN_FIELDS``, with those values shared."""
        rows = vars(self[part])
        shared = {name: _take(rows[name], slice(0, 1)) for name in RUN_FIELDS}
        return Rows(**{**rows, **shared})

    def runs(self) -> list[int] | None:
        """Where runs of equal ``RUN_FIELDS`` start (and the end), or None when they are
        shorter than ``MIN_RUN_ROWS`` on average."""
        n = len(self)
        differs = np.zeros(max(n - 1, 0), dtype=bool)
        for name in RUN_FIELDS:
            values = getattr(self, name)
            if values.shape[-1] > 1:
                differs |= values[1:] != values[:-1]
        starts = np.flatnonzero(differs) + 1
        if (len(starts) + 1) * MIN_RUN_ROWS > max(n, MIN_RUN_ROWS):
            return None
        return [0, *starts.tolist(), n]


def _take(values: np.ndarray, rows) -> np.ndarray:
    """``values[..., rows]``, or ``values`` when its one element (last axis) is shared."""
    return values if values.shape[-1] == 1 else values[..., rows]


def full(values: np.ndarray, n: int, dtype) -> np.ndarray:
    """A column of ``n`` rows in ``dtype``: shared values repeated, the same dtype's reused."""
    values = np.asarray(values)
    if values.shape == (n,) and values.dtype == np.dtype(dtype):
        return values
    if values.size == 1:  # a fill, which numpy does without a cast per element
        return np.full(n, values.reshape(-1)[0], dtype=dtype)
    if values.shape == (n,) and values.dtype.kind in "iu" and np.dtype(dtype).kind in "iu":
        if values.dtype.itemsize == np.dtype(dtype).itemsize:
            return values.view(dtype)  # int64 <-> uint64: the model's values are below 2^63
    return np.broadcast_to(values, (n,)).astype(dtype)


def build_table(
    memory_maps: Sequence[MemoryMap],
    map_index: np.ndarray | int,
    granule: np.ndarray | int,
    va_bits: np.ndarray | int,
    layouts: Sequence[Layout],
    layout_index: np.ndarray | int,
    block_mappings: np.ndarray | bool,
    idmap_pa: np.ndarray,
    tag_random: np.ndarray | None = None,
) -> pa.Table:
    """Every column of ``sweep.columns.ROW_COLUMNS``, one row per ``idmap_pa``, in input order.

    Row ``i`` uses ``memory_maps[map_index[i]]`` and ``layouts[layout_index[i]]``; every argument
    but the two sequences is one value per row or one value for all rows. ``memory_map`` and
    ``layout`` come back as dictionary arrays of the maps' and layouts' names.
    """
    rows = Rows.of(
        memory_maps,
        map_index,
        granule,
        va_bits,
        layouts,
        layout_index,
        block_mappings,
        idmap_pa,
        tag_random,
    )
    columns = compute_columns(TrimmedBanks.of(memory_maps), layouts, rows)
    n = len(rows)
    names = _unique_names("memory map", [m.name for m in memory_maps])
    arrays = {
        "memory_map": _dictionary(full(rows.map_index, n, np.int32), names),
        "granule": pa.array(full(rows.granule, n, np.int32)),
        "va_bits": pa.array(full(rows.va_bits, n, np.int8)),
        "layout": _dictionary(
            full(rows.layout_index, n, np.int32), _unique_names("layout", [x.name for x in layouts])
        ),
        "block_mappings": pa.array(full(rows.block_mappings, n, bool)),
        "idmap_pa": pa.array(rows.idmap_pa.view(np.uint64)),
        "tag_random": pa.array(full(rows.tag_random, n, np.uint64)),
        **{name: pa.array(values) for name, values in columns.items()},
    }
    return pa.Table.from_arrays([arrays[name] for name in ROW_COLUMNS], names=list(ROW_COLUMNS))


def build_unit(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: Layout,
    block_mappings: bool,
    idmap_pa: np.ndarray,
    tag_random: np.ndarray | None = None,
) -> pa.Table:
    """Rows that share map, granule, VA_BITS, layout and block setting (a work unit)."""
    return build_table(
        [memory_map], 0, granule, va_bits, [layout], 0, block_mappings, idmap_pa, tag_random
    )


def compute_columns(banks: TrimmedBanks, layouts: Sequence[Layout], rows: Rows) -> dict:
    """The section 2-6 columns of validated rows, as numpy arrays in their ``ROW_COLUMNS``
    dtypes, computed ``CHUNK_ROWS`` rows at a time (run by run when rows come in runs)."""
    n = len(rows)
    names = [name for name in ROW_COLUMNS if name not in INPUT_COLUMNS]
    align = _memstart_align(layouts)
    pieces = list(_pieces(rows))
    if len(pieces) == 1:
        columns = _columns(banks, layouts, align, pieces[0][1])
        return {name: full(columns[name], n, ROW_COLUMNS[name]) for name in names}
    out = {name: np.empty(n, dtype=ROW_COLUMNS[name]) for name in names}
    for part, piece in pieces:
        for name, values in _columns(banks, layouts, align, piece).items():
            out[name][part] = values
    return out


def _pieces(rows: Rows):
    """``(slice, Rows)`` of at most ``CHUNK_ROWS`` rows each, every one inside a run of equal
    ``RUN_FIELDS`` (with those values shared) when the rows come in long runs."""
    n = len(rows)
    cuts = rows.runs()
    if cuts is None:
        for start in range(0, n, CHUNK_ROWS):
            part = slice(start, min(start + CHUNK_ROWS, n))
            yield part, rows[part]
        return
    for lo, hi in zip(cuts, cuts[1:], strict=False):
        for start in range(lo, hi, CHUNK_ROWS):
            part = slice(start, min(start + CHUNK_ROWS, hi))
            yield part, rows.run(part)


def _columns(banks: TrimmedBanks, layouts, align: np.ndarray, rows: Rows) -> dict:
    granule, va_bits, idmap = rows.granule, rows.va_bits, rows.idmap_pa
    code = granule_codes(granule)
    start, end = banks.per_row(rows.map_index, code)  # section 1
    banks.check_inside(start, end, idmap, rows.map_index, granule)
    dram = clip_dram(start, end, idmap, granule, va_bits, align[rows.layout_index, code])
    idmap_va_bits = bit_length(idmap + (granule - 1))
    layout = compute_layouts(  # section 3
        layouts,
        rows.layout_index,
        LayoutBatch(
            granule=granule,
            va_bits=va_bits,
            idmap_pa=idmap,
            idmap_va_bits=_shared_if_equal(idmap_va_bits),
            phys_offset=dram.phys_offset,
            dram_first=dram.dram_first,
            dram_last=dram.dram_last,
            tag_random=rows.tag_random,
        ),
    )
    delta, tree_va_bits = _shared_if_equal(layout.delta), _shared_if_equal(layout.tree_va_bits)
    near = overlap.nearest(dram.start, dram.end, dram.valid, delta, idmap)  # section 4
    root = tables.root_level(tree_va_bits, granule)  # section 5
    runtime = _per_runtime_tree(
        len(rows),
        tables.runtime_tables,
        (
            rows.map_index * 3 + code,
            rows.block_mappings,
            root,
            tables.runtime_delta(delta, root, granule),
            dram.dram_first,
            dram.dram_last,
        ),
        (dram.start, dram.end, dram.valid, delta, granule, root, rows.block_mappings),
    )
    walk = _shared_if_equal(
        tables.idmap_walk(near, idmap, delta, granule, root, rows.block_mappings)
    )
    return {
        "phys_offset": dram.phys_offset,
        "clipped_bytes": dram.clipped_bytes,
        "hyp_va_min": layout.hyp_va_min,
        "hyp_va_max": layout.hyp_va_max,
        "hyp_dram_last": dram.dram_last + delta,
        "idmap_va_bits": idmap_va_bits,
        "overlap": overlap.overlap(near, idmap, granule, delta),
        "idmap_in_window": overlap.idmap_in_window(idmap, layout.hyp_va_min, layout.hyp_va_max),
        "margin": overlap.margin(near, idmap, granule),
        **tables.level_columns(va_bits, idmap_va_bits, tree_va_bits, granule),
        **tables.table_columns(runtime, walk, root, granule, tree_va_bits),
    }


def _shared_if_equal(values: np.ndarray) -> np.ndarray:
    """One element when every row holds the same value (the tree size of a unit whose idmap
    pages all fit in VA_BITS, the alias offset of an untagged layout, the level where pages far
    from every mapping stop their walk): what follows from it is then computed once."""
    if values.shape[-1] > 1 and (values.strides[-1] == 0 or values.min() == values.max()):
        return values[..., :1]
    return values


def _per_runtime_tree(n: int, count, keys: tuple, arrays: tuple) -> dict:
    """``count(*arrays)`` (arrays whose last axis is the rows) computed once per distinct
    runtime tree: rows with equal ``keys`` (map and granule, blocks, root level, clipped DRAM,
    ``delta`` modulo the root's entry size) have the same runtime tables, so a work unit or a
    board corpus counts each tree once.

    Rows are told apart by a 64-bit hash of their keys, then checked equal to their
    representative key by key; when most rows differ (random tags), all rows are counted.
    """
    keys = [key for key in keys if len(key) > 1 and (key != key[0]).any()]  # shared: no help
    if not keys:  # one runtime tree for all rows (a work unit without random tags)
        return count(*(values[..., :1] for values in arrays))
    mixed = np.zeros(n, dtype=np.uint64)
    for key in keys:
        mixed ^= key.astype(I64, copy=False).view(np.uint64)
        mixed *= np.uint64(0x9E37_79B9_7F4A_7C15)
        mixed ^= mixed >> np.uint64(29)
    inverse, distinct = pd.factorize(mixed)
    if 2 * len(distinct) > n:
        return count(*arrays)
    first = np.empty(len(distinct), dtype=I64)
    first[inverse[::-1]] = np.arange(n - 1, -1, -1)
    if not all((key[first][inverse] == key).all() for key in keys):
        return count(*arrays)  # a hash collision: never seen, but then count every row
    counts = count(*(_take(values, first) for values in arrays))
    return {level: _take(values, inverse) for level, values in counts.items()}


# --- Checking the inputs (section 1) ----------------------------------------------------------


def _column(name: str, values, n: int, dtype=I64) -> np.ndarray:
    """One value per row, or one value (shape ``(1,)``) shared by all rows."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in ("b" if dtype is bool else "iu"):
        raise ValidationError(f"{name}: expected integers, got dtype {values.dtype}")
    if len(values) not in (1, n):
        raise ValidationError(f"{name}: {len(values)} values for {n} rows")
    return values.astype(dtype, copy=False)


def _index(what: str, index, n: int, count: int) -> np.ndarray:
    index = _column(f"{what} index", index, n)
    if count == 0 or index.min(initial=0) < 0 or index.max(initial=0) >= count:
        raise ValidationError(f"{what} index: values must lie in 0..{count - 1}")
    return index


def _aligned_idmap(idmap: np.ndarray, granule: np.ndarray) -> np.ndarray:
    if idmap.dtype.kind not in "iu":
        raise ValidationError(f"idmap_pa: expected integers, got dtype {idmap.dtype}")
    if idmap.dtype.kind == "i" and (idmap < 0).any():
        raise ValidationError(f"idmap_pa: {int(idmap[idmap < 0][0])} is negative")
    wide = idmap.astype(np.uint64, copy=False)
    if (wide >= PA_LIMIT).any():
        raise ValidationError(f"idmap_pa: {int(wide[wide >= PA_LIMIT][0]):#x} is not below 2^52")
    return wide.view(I64) & -granule  # granules are powers of two


def _tags(tag_random, n: int) -> np.ndarray:
    if tag_random is None:
        return np.zeros(1, dtype=np.uint64)
    tags = _column("tag_random", tag_random, n, np.asarray(tag_random).dtype)
    if tags.dtype.kind == "i" and (tags < 0).any():
        raise ValidationError("tag_random: values must not be negative")
    return tags.astype(np.uint64, copy=False)


def _memstart_align(layouts: Sequence[Layout]) -> np.ndarray:
    """``ARM64_MEMSTART_ALIGN`` by (layout, granule code)."""
    return np.array([[x.memstart_align(g) for g in GRANULES] for x in layouts], dtype=I64)


def _unique_names(what: str, names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ValidationError(f"{what} {twice!r}: given twice")
    return names


def _dictionary(codes: np.ndarray, names: list[str]) -> pa.DictionaryArray:
    return pa.DictionaryArray.from_arrays(
        pa.array(codes.astype(np.int32)), pa.array(names, type=pa.string())
    )
