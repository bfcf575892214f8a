"""The vectorized builder: every column of docs/model.md sections 1 to 6 for a batch of rows.

Each row may have its own memory map, granule, VA_BITS, layout and block setting: the banks of
all maps are flat arrays plus offsets (``sweep.model.banks``), each row reads its own, and every
step is numpy over all rows at once (loops run over levels, bank slots and layouts, never over rows
or groups). So thousands of one-row groups cost what one group of as many rows costs. Rows in
long runs of one map, granule, VA_BITS, layout and block setting (a work unit) are computed run
by run with those values shared (``Rows.run``): then only what depends on the idmap page is per
row, through the same functions.

Where each column is computed (one function per docs/model.md section):

| columns | section | function |
|---|---|---|
| inputs (``idmap_pa`` aligned down) | 1 | ``build_table`` (``_rows``) |
| trimmed banks, ``idmap_pa`` inside one | 1 | ``sweep.model.banks.TrimmedBanks`` |
| ``phys_offset``, ``clipped_bytes`` | 2 | ``sweep.model.clip.clip_dram`` |
| ``idmap_va_bits`` | 2 | ``_Unblocked`` (``bit_length``) |
| ``hyp_va_min``, ``hyp_va_max`` (and ``delta``, ``tree_va_bits``) | 3 | ``_layouts`` |
| ``hyp_dram_last`` | 3 | ``_Unblocked`` |
| ``overlap``, ``idmap_in_window``, ``margin`` | 4 | ``sweep.model.overlap`` |
| ``levels*``, ``extra_levels``, ``idmap_extended`` | 5 | ``tables.level_columns`` |
| ``tables_*``, ``table_pages``, ``table_bytes``, ``shared_tables`` | 5 | ``tables.table_columns`` |
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.core.eras import REASONS, unrunnable
from sweep.core.errors import ValidationError
from sweep.core.kconfig import bit_length
from sweep.core.memmap import GRANULES, MemoryMap
from sweep.model import overlap, tables
from sweep.model.banks import TrimmedBanks, granule_codes
from sweep.model.bootrows import MAPPING_SETS, BootKernel, boot_tables
from sweep.model.clip import clip_dram
from sweep.model.constants import arrow, dictionary
from sweep.model.grouping import grouping
from sweep.model.layout import Layout, LayoutBatch, compute_layouts
from sweep.model.reserve_rows import reserve_rows
from sweep.model.rows import Rows, full, per_distinct, shared_if_equal

I64 = np.int64
CODED = {"unrunnable": REASONS}
"""Category outputs, computed as int8 codes into these names (the row holds the names)."""
NUMPY_DTYPES = {name: "int8" if name in CODED else dtype for name, dtype in ROW_COLUMNS.items()}
CHUNK_ROWS = 1 << 17
"""Rows computed together: big enough for numpy to amortise its calls, small enough that a
batch's temporaries stay in cache and its memory flat however many rows it has."""


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
    *,
    mappings: np.ndarray | int = 0,
    cpus: np.ndarray | int = 0,
    kernels: Sequence[BootKernel] = (),
    kernel_index: np.ndarray | int = -1,
) -> pa.Table:
    """Every column of ``sweep.core.columns.ROW_COLUMNS``, one row per ``idmap_pa``, in input order.

    Row ``i`` uses ``memory_maps[map_index[i]]``, ``layouts[layout_index[i]]`` and (a boot
    mapping set, ``mappings`` 1 or 2) ``kernels[kernel_index[i]]``; every argument but the
    sequences is one value per row or one value for all rows. ``memory_map``, ``layout``,
    ``mappings`` and ``kernel`` come back as dictionary arrays of names.
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
        mappings=mappings,
        cpus=cpus,
        kernels=kernels,
        kernel_index=kernel_index,
    )
    columns = compute_columns(TrimmedBanks.of(memory_maps), layouts, rows, kernels, shared=True)
    n = len(rows)
    arrays = {
        **_input_arrays(rows, n, memory_maps, layouts, kernels),
        **{
            name: arrow(v, n, NUMPY_DTYPES[name])
            for name, v in columns.items()
            if name not in CODED
        },
        **{name: dictionary(columns[name], n, list(names)) for name, names in CODED.items()},
    }
    return pa.Table.from_arrays([arrays[name] for name in ROW_COLUMNS], names=list(ROW_COLUMNS))


def _input_arrays(rows: Rows, n: int, memory_maps, layouts, kernels) -> dict[str, pa.Array]:
    """The section 1 columns of ``n`` rows as Arrow arrays (names as dictionary arrays)."""
    return {
        "memory_map": dictionary(
            rows.map_index, n, _unique_names("memory map", [m.name for m in memory_maps])
        ),
        "granule": arrow(rows.granule, n, np.int32),
        "va_bits": arrow(rows.va_bits, n, np.int8),
        "layout": dictionary(
            rows.layout_index, n, _unique_names("layout", [x.name for x in layouts])
        ),
        "block_mappings": arrow(rows.block_mappings, n, bool),
        "idmap_pa": arrow(rows.idmap_pa, n, np.uint64),
        "tag_random": arrow(rows.tag_random, n, np.uint64),
        "mappings": dictionary(rows.mappings, n, list(MAPPING_SETS)),
        "cpus": arrow(rows.cpus, n, np.int16),
        "kernel": dictionary(rows.kernel_index + 1, n, ["", *(k.name for k in kernels)]),
    }


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


def compute_columns(
    banks: TrimmedBanks,
    layouts: Sequence[Layout],
    rows: Rows,
    kernels: Sequence[BootKernel] = (),
    *,
    shared: bool = False,
) -> dict:
    """The section 2-6 columns of validated rows, as numpy arrays in their ``ROW_COLUMNS``
    dtypes, computed ``CHUNK_ROWS`` rows at a time (run by run when rows come in runs, or fall
    in few groups: then group by group, each value put back in its row's place). With
    ``shared``, a column that holds one value in every row is that value alone (one element),
    for ``sweep.model.constants`` to make once."""
    n = len(rows)
    names = [name for name in ROW_COLUMNS if name not in INPUT_COLUMNS]
    align = _memstart_align(layouts)
    groups = grouping(rows)
    pieces, last = [], None
    for group, part, piece in _pieces(rows, groups):
        if last is None or not _same_but_blocks(last.rows, piece):
            last = _Unblocked(banks, layouts, align, piece, last)
        pieces.append((group, part, _columns(layouts, kernels, piece, last)))
    out = {}
    for name in names:
        dtype = NUMPY_DTYPES[name]
        values = [shared_if_equal(np.asarray(columns[name]).reshape(-1)) for *_, columns in pieces]
        if all(v.size == 1 for v in values) and all(v[0] == values[0][0] for v in values):
            one = values[0].astype(dtype, copy=False)
            out[name] = one if shared else full(one, n, dtype)
        elif groups is not None and groups.order is not None:
            out[name] = groups.put_back([(g, part) for g, part, _ in pieces], values, n, dtype)
        elif len(values) == 1:
            out[name] = full(values[0], n, dtype)
        else:
            column = np.empty(n, dtype=dtype)
            for (_, part, _), v in zip(pieces, values, strict=True):  # in input order: slices
                column[part] = v
            out[name] = column
    return out


def _pieces(rows: Rows, groups):
    """``(group, slice, Rows)`` of at most ``CHUNK_ROWS`` rows each, the slice in computing
    order (``sweep.model.grouping.Groups``), every piece inside a run of equal ``RUN_FIELDS``
    (those values shared) when the rows come in runs or few groups; else per row (group -1)."""
    n = len(rows)
    if groups is None:
        for start in range(0, n, CHUNK_ROWS):
            part = slice(start, min(start + CHUNK_ROWS, n))
            yield -1, part, rows[part]
        return
    for group, lo, hi, run in groups.runs(rows):
        for start in range(lo, hi, CHUNK_ROWS):
            end = min(start + CHUNK_ROWS, hi)
            piece = run if end - start == hi - lo else run[start - lo : end - lo]
            yield group, slice(start, end), piece


class _Unblocked:
    """What a piece's columns owe to everything but its block setting (sections 1-4 and 9, the
    level counts, whether it can run): computed once for the pieces of a unit of many boards
    that differ only in it (one layout's two block settings: the same maps and pages). Each
    row's banks, and its clipping where VA_BITS and alignment agree, are ``before``'s (the
    previous layout's) when its rows hold the same maps and pages."""

    def __init__(
        self, banks: TrimmedBanks, layouts, align: np.ndarray, rows: Rows, before: _Unblocked | None
    ) -> None:
        granule, va_bits, idmap = rows.granule, rows.va_bits, rows.idmap_pa
        self.rows, self.code = rows, granule_codes(granule)
        self.align = align[rows.layout_index, self.code]
        if before is not None and _same(before.rows, rows, ("map_index", "granule", "idmap_pa")):
            # the previous layout's rows (a unit of many boards): the same banks and pages
            self.idmap_va_bits, self.banks = before.idmap_va_bits, before.banks
        else:
            self.idmap_va_bits = bit_length(idmap + (granule - 1))
            self.banks = banks.per_row(rows.map_index, self.code)  # section 1
            banks.check_inside(*self.banks, idmap, rows.map_index, granule)
        if self.banks is getattr(before, "banks", None) and _same_values(
            (before.rows.va_bits, before.align), (va_bits, self.align)
        ):  # and the same VA_BITS and alignment: the same clipping (section 2)
            dram = before.dram
        else:
            dram = clip_dram(*self.banks, idmap, granule, va_bits, self.align)
        self.dram = dram
        self.layout = layout = _layouts(layouts, rows, self.idmap_va_bits, dram)  # section 3
        self.delta, self.tree_va_bits = (
            shared_if_equal(layout.delta),
            shared_if_equal(layout.tree_va_bits),
        )
        self.near = overlap.nearest(dram.start, dram.end, dram.valid, self.delta, idmap)  # 4
        self.levels = tables.level_columns(va_bits, self.idmap_va_bits, self.tree_va_bits, granule)
        self.reserve = reserve_rows(layouts, rows, self.code, granule, dram)  # section 9
        self.unrunnable = _unrunnable(
            layouts, rows.layout_index, granule, va_bits, self.idmap_va_bits, self.levels
        )
        self.outputs = {  # sections 2-4 and 9's columns
            "phys_offset": dram.phys_offset,
            "clipped_bytes": dram.clipped_bytes,
            "hyp_va_min": layout.hyp_va_min,
            "hyp_va_max": layout.hyp_va_max,
            "hyp_dram_last": dram.dram_last + self.delta,
            "idmap_va_bits": self.idmap_va_bits,
            "idmap_in_window": overlap.idmap_in_window(idmap, layout.hyp_va_min, layout.hyp_va_max),
            "margin": overlap.margin(self.near, idmap, granule),
            **self.levels,
            "runnable": self.unrunnable == 0,
            "unrunnable": self.unrunnable,
            "pkvm_reserve_bytes": self.reserve["reserve_bytes"],
            "pkvm_reserve_base": self.reserve["reserve_base"],
        }


def _same_but_blocks(a: Rows, b: Rows) -> bool:
    """Whether two pieces hold the same rows but for their block setting (so the same
    ``_Unblocked``): a unit of many boards computes each layout's two block settings in turn."""
    return _same(a, b, [name for name in vars(a) if name != "block_mappings"])


def _same(a: Rows, b: Rows, names) -> bool:
    """Whether two pieces' rows hold equal ``names`` fields."""
    return _same_values([getattr(a, n) for n in names], [getattr(b, n) for n in names])


def _same_values(xs, ys) -> bool:
    for x, y in zip(xs, ys, strict=True):
        if x is not y and (x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y)):
            return False
    return True


def _columns(layouts, kernels, rows: Rows, part: _Unblocked) -> dict:
    """Every section 2-6 column of one piece of rows, section by section (module docstring)."""
    granule, idmap = rows.granule, rows.idmap_pa
    dram, delta, near = part.dram, part.delta, part.near
    tree_va_bits, idmap_va_bits, code = part.tree_va_bits, part.idmap_va_bits, part.code
    boot = shared_if_equal(np.broadcast_to(rows.mappings != 0, (len(rows),)))
    if not boot.any():
        table, crossing = _table_section(
            layouts, rows, code, dram, near, delta, tree_va_bits, idmap_va_bits
        )
    else:
        table = boot_tables(layouts, kernels, rows, dram, delta, tree_va_bits, part.reserve)
        crossing = overlap.overlap(near, idmap, granule, delta)
        if not boot.all():
            dram_table, dram_crossing = _table_section(
                layouts, rows, code, dram, near, delta, tree_va_bits, idmap_va_bits
            )
            table = {name: np.where(boot, table[name], v) for name, v in dram_table.items()}
            crossing = np.where(boot, crossing, dram_crossing)
    return {**part.outputs, "overlap": crossing, **table}


def _table_section(layouts, rows: Rows, code, dram, near, delta, tree_va_bits, idmap_va_bits):
    """Section 5's table columns and section 4's ``overlap``: one merged tree, or for 4.6-4.7
    rows (``linux-4.6``) the idmap and the runtime in trees of their own. A piece of one layout
    (a work unit's run) computes only the kind its layout has."""
    granule, va_bits, idmap, blocks = rows.granule, rows.va_bits, rows.idmap_pa, rows.block_mappings
    two = _era_rows(layouts, rows.layout_index, lambda era: era.two_trees)
    table, crossing = {}, np.zeros(1, dtype=bool)
    if two is None or not two.all():
        root = tables.root_level(tree_va_bits, granule)
        runtime = _runtime_tables(rows, code, dram, delta, root)
        walk = shared_if_equal(tables.idmap_walk(near, idmap, delta, granule, root, blocks))
        table = tables.table_columns(runtime, walk, root, granule, tree_va_bits)
        crossing = overlap.overlap(near, idmap, granule, delta)
    if two is not None and two.any():
        trampoline = np.left_shift(1, va_bits, dtype=I64) - granule  # TRAMPOLINE_VA
        runtime = _runtime_tables(rows, code, dram, delta, tables.root_level(va_bits, granule))
        pair = tables.two_tree_columns(
            runtime, delta, granule, va_bits, idmap, idmap_va_bits, blocks,
            overlap.nearest(dram.start, dram.end, dram.valid, delta, trampoline),
        )  # fmt: skip
        if not table:
            return pair, np.zeros(1, dtype=bool)
        table = {name: np.where(two, pair[name], values) for name, values in table.items()}
        crossing = crossing & ~two
    return table, crossing


def _layouts(layouts: Sequence[Layout], rows: Rows, idmap_va_bits: np.ndarray, dram):
    """Section 3: each row's layout (``delta``, window, ``tree_va_bits``) from its inputs and
    clipped DRAM, every layout over the rows that use it (``compute_layouts``)."""
    batch = LayoutBatch(
        granule=rows.granule,
        va_bits=rows.va_bits,
        idmap_pa=rows.idmap_pa,
        idmap_va_bits=shared_if_equal(idmap_va_bits),
        phys_offset=dram.phys_offset,
        dram_first=dram.dram_first,
        dram_last=dram.dram_last,
        tag_random=rows.tag_random,
    )
    return compute_layouts(layouts, rows.layout_index, batch)


def _runtime_tables(rows: Rows, code: np.ndarray, dram, delta, root) -> dict:
    """Section 5: the runtime tree's tables per level (``tables.runtime_tables``), counted once
    per distinct runtime tree (``_per_runtime_tree``: its keys are what the tree depends on)."""
    granule, blocks = rows.granule, rows.block_mappings
    keys = (
        rows.map_index * 3 + code,
        blocks,
        root,
        tables.runtime_delta(delta, root, granule),
        dram.dram_first,
        dram.dram_last,
    )
    arrays = (dram.start, dram.end, dram.valid, delta, granule, root, blocks)
    return per_distinct(len(rows), tables.runtime_tables, keys, arrays)


def _era_rows(layouts: Sequence[Layout], layout_index: np.ndarray, test) -> np.ndarray | None:
    """Rows whose layout is an era (``sweep.core.eras``) for which ``test(era)`` holds, or None
    when there are none (a plugin layout without an era never matches)."""
    chosen = [k for k, x in enumerate(layouts) if getattr(x, "era", None) and test(x.era)]
    if not chosen:
        return None
    return np.isin(layout_index, chosen)


def _unrunnable(layouts, layout_index, granule, va_bits, idmap_va_bits, levels) -> np.ndarray:
    """``sweep.core.eras.REASONS`` code per row: whether a kernel of the row's era could run it
    (0 for plugin layouts, which name no era)."""
    extra = shared_if_equal(np.asarray(levels["extra_levels"]).reshape(-1))
    idmap_va_bits = shared_if_equal(np.asarray(idmap_va_bits).reshape(-1))
    shape = np.broadcast(layout_index, granule, va_bits, idmap_va_bits, extra).shape
    code = np.zeros(1, dtype=np.int8)
    for k, layout in enumerate(layouts):
        era = getattr(layout, "era", None)
        if era is not None:
            mine = shared_if_equal(np.broadcast_to(layout_index == k, shape))
            if mine.any():
                codes = unrunnable(era, granule, va_bits, idmap_va_bits, extra)
                code = codes if mine.all() else np.where(mine, codes, code)
    return code


def _memstart_align(layouts: Sequence[Layout]) -> np.ndarray:
    """``ARM64_MEMSTART_ALIGN`` by (layout, granule code)."""
    return np.array([[x.memstart_align(g) for g in GRANULES] for x in layouts], dtype=I64)


def _unique_names(what: str, names: list[str]) -> list[str]:
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise ValidationError(f"{what} {twice!r}: given twice")
    return names
