"""The vectorized builder: every column of MODEL.md sections 2 to 6 for a whole batch at once.

Rows of one group share memory map, granule, VA_BITS, layout and block setting and differ only
in ``idmap_pa`` and ``tag_random``. What depends only on what they share (the trimmed banks, the
clip when the kernel is not placed high, the runtime tree when ``delta`` is common) is computed
once; the rest is numpy over rows, with Python loops only over banks and levels.

How the merged tree is counted without building it (MODEL.md section 5): an entry at level
``l < 3`` touched by a runtime range is a table unless it is a block; a non-block entry's
ancestors are all non-blocks (coverage, alignment and block levels only grow downwards), so
every such entry is reached. Tables at level ``l + 1`` are therefore the distinct non-block
entries touched at level ``l``; ranges are sorted and disjoint, so two ranges can only share
their boundary entries, and distinct = sum - adjacent duplicates. The idmap walk stops at the
first leaf on its path or creates one table per level below the first empty entry.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from sweep.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.errors import ValidationError
from sweep.layouts import Layout, LayoutBatch
from sweep.model import (
    GRANULES,
    PA_LIMIT,
    VA_BITS_MAX,
    VA_BITS_MIN,
    MemoryMap,
    granule_name,
    level_shift,
    min_block_level,
)

I64 = np.int64
NO_LEVEL = 9  # "never": a level past 3
_MAX_SHARED_DELTAS = 16  # above this many distinct deltas, the runtime tree is built per row


def _bit_length(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values below 2^53 (exact through float64)."""
    return np.frexp(values.astype(np.float64))[1].astype(I64)


def _levels(bits: np.ndarray, granule: int) -> np.ndarray:
    return (bits - 4) // (granule.bit_length() - 4)


def _resolve_layouts(layouts: Mapping[str, Layout] | None) -> Mapping[str, Layout]:
    if layouts is not None:
        return layouts
    from sweep.plugins import get_layouts

    return get_layouts()


def build_group(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: Layout,
    block_mappings: bool,
    idmap_pa: np.ndarray,
    tag_random: np.ndarray,
) -> dict[str, np.ndarray]:
    """The section 2-6 columns (numpy arrays) of rows sharing everything but idmap and tag.

    ``idmap_pa`` is uint64 or int64, already aligned down to ``granule``; ``tag_random`` uint64.
    """
    n = len(idmap_pa)
    g = granule
    trimmed = memory_map.trimmed(g)
    starts = np.array([s for s, _ in trimmed], dtype=I64)
    ends = np.array([e for _, e in trimmed], dtype=I64)
    idmap = np.asarray(idmap_pa).astype(I64, copy=False)
    _check_inside(memory_map, g, idmap, starts, ends)

    # Section 2: PHYS_OFFSET and clipping (arm64_memblock_init).
    align = layout.memstart_align(g)
    linear = I64(1) << (va_bits - 1)
    phys_offset0 = starts[0] // align * align
    kernel_high = idmap + g > phys_offset0 + linear
    out: dict[str, np.ndarray] = {}
    for name, dtype in ROW_COLUMNS.items():
        if name not in INPUT_COLUMNS:
            out[name] = np.empty(n, dtype=np.dtype(dtype))

    def emit(rows, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            if rows is None:
                out[name][:] = value
            else:
                out[name][rows] = value

    if not kernel_high.any():
        _shared_clip(None, idmap, tag_random, starts, ends, phys_offset0, linear, align, g,
                     va_bits, layout, block_mappings, emit)
    else:
        low_rows = np.flatnonzero(~kernel_high)
        if len(low_rows):
            _shared_clip(low_rows, idmap[low_rows], tag_random[low_rows], starts, ends,
                         phys_offset0, linear, align, g, va_bits, layout, block_mappings, emit)
        high_rows = np.flatnonzero(kernel_high)
        _per_row_clip(high_rows, idmap[high_rows], tag_random[high_rows], starts, ends,
                      phys_offset0, linear, align, g, va_bits, layout, block_mappings, emit)
    return out


def _check_inside(memory_map, g, idmap, starts, ends) -> None:
    k = np.searchsorted(ends, idmap, side="right")
    inside = k < len(ends)
    inside[inside] = starts[k[inside]] <= idmap[inside]
    if not inside.all():
        bad = int(idmap[np.flatnonzero(~inside)[0]])
        raise ValidationError(
            f"memory map {memory_map.name!r}: idmap_pa {bad:#x} is outside every "
            f"{granule_name(g)}-trimmed bank"
        )


def _shared_clip(rows, idmap, tag_random, starts, ends, phys_offset0, linear, align, g,
                 va_bits, layout, block_mappings, emit) -> None:
    """Rows whose kernel ends at or below PHYS_OFFSET + L: one clip serves them all.

    Step 1 cuts DRAM at PHYS_OFFSET + L, so step 2 (the kernel sits high) never applies.
    """
    limit = phys_offset0 + linear
    keep = starts < limit
    s_c, e_c = starts[keep], np.minimum(ends[keep], limit)
    clipped = int((ends - starts).sum() - (e_c - s_c).sum())
    n = len(idmap)
    _with_banks(rows, idmap, tag_random, s_c[:, None], e_c[:, None],
                np.full(n, phys_offset0, dtype=I64), np.full(n, clipped, dtype=I64),
                g, va_bits, layout, block_mappings, emit)


def _per_row_clip(rows, idmap, tag_random, starts, ends, phys_offset0, linear, align, g,
                  va_bits, layout, block_mappings, emit) -> None:
    """Rows whose kernel sits high: each row clips DRAM at its own idmap page."""
    limit = np.maximum(phys_offset0 + linear, idmap + g)  # step 1
    s = starts[:, None]
    e = np.minimum(ends[:, None], limit[None, :])
    dram_end = np.where(s < limit[None, :], e, 0).max(axis=0)
    high = dram_end > phys_offset0 + linear  # step 2
    phys_offset = np.where(high, -((linear - dram_end) // align) * align, phys_offset0)
    s = np.maximum(s, phys_offset[None, :])
    total = int((ends - starts).sum())
    kept = np.maximum(e - s, 0).sum(axis=0)
    _with_banks(rows, idmap, tag_random, s, e, phys_offset, total - kept,
                g, va_bits, layout, block_mappings, emit)


def _with_banks(rows, idmap, tag_random, s, e, phys_offset, clipped, g, va_bits, layout,
                block_mappings, emit) -> None:
    """Rows with clipped banks ``[s, e)`` (shape (banks, 1) shared, or (banks, rows))."""
    n = len(idmap)
    valid = e > s
    first_bank = np.argmax(valid, axis=0)
    last_bank = valid.shape[0] - 1 - np.argmax(valid[::-1], axis=0)
    cols = np.arange(s.shape[1])
    dram_first = np.broadcast_to(s[first_bank, cols], (n,))
    dram_last = np.broadcast_to(e[last_bank, cols] - 1, (n,))
    idmap_va_bits = _bit_length(idmap + (g - 1))
    res = layout.compute(
        LayoutBatch(
            granule=g, va_bits=va_bits, idmap_pa=idmap, idmap_va_bits=idmap_va_bits,
            phys_offset=phys_offset, dram_first=dram_first, dram_last=dram_last,
            tag_random=tag_random,
        )
    )
    delta = np.asarray(res.delta, dtype=I64)
    common = {
        "phys_offset": phys_offset,
        "clipped_bytes": clipped,
        "hyp_va_min": res.hyp_va_min,
        "hyp_va_max": res.hyp_va_max,
        "hyp_dram_last": dram_last + delta,
        "idmap_va_bits": idmap_va_bits,
        "idmap_extended": idmap_va_bits > va_bits,
        "idmap_in_window": (res.hyp_va_min <= idmap) & (idmap <= res.hyp_va_max),
    }
    levels_runtime = _levels(np.int64(va_bits), g)
    common["levels_runtime"] = np.full(n, levels_runtime, dtype=np.int8)
    common["levels_idmap"] = _levels(np.maximum(idmap_va_bits, va_bits), g)
    tree_bits = np.asarray(res.tree_va_bits, dtype=I64)
    n_levels = _levels(tree_bits, g)
    common["levels"] = n_levels
    common["extra_levels"] = n_levels - levels_runtime
    emit(rows, common)

    # The runtime tree depends on the banks and delta only: share it when both are shared.
    if s.shape[1] == 1:
        values, inverse = _few_unique(delta)
        if values is not None:
            for k, d in enumerate(values):
                sel = None if len(values) == 1 else np.flatnonzero(inverse == k)
                part = slice(None) if sel is None else sel
                _tree(_subrows(rows, sel), idmap[part], s, e, np.array([d]), tree_bits[part],
                      g, block_mappings, emit)
            return
        s, e = np.broadcast_to(s, (s.shape[0], n)), np.broadcast_to(e, (e.shape[0], n))
    _tree(rows, idmap, s, e, delta, tree_bits, g, block_mappings, emit)


def _subrows(rows, sel):
    if sel is None:
        return rows
    return sel if rows is None else rows[sel]


def _few_unique(delta: np.ndarray):
    """The distinct values of ``delta`` and each row's index among them, when there are few."""
    first = delta[:1]
    if (delta == first).all():
        return first, None
    values, inverse = np.unique(delta, return_inverse=True)
    if len(values) > _MAX_SHARED_DELTAS:
        return None, None
    return values, inverse


def _tree(rows, idmap, s, e, delta, tree_bits, g, block_mappings, emit) -> None:
    """Overlap, margin and the merged tree for rows whose banks ``[s, e)`` and ``delta`` are
    either shared (one column, one delta) or per row."""
    n = len(idmap)
    valid = e > s
    va_lo = s + delta  # runtime ranges [va_lo, va_hi), sorted and disjoint in VA
    va_hi = e + delta
    nbanks = s.shape[0]
    idmap_end = idmap + g

    # Section 4: overlap and margin.
    big = np.iinfo(I64).max
    margin = np.full(n, big, dtype=I64)
    inside_any = np.zeros(n, dtype=bool)
    for b in range(nbanks):
        lo, hi, ok = va_lo[b], va_hi[b], valid[b]
        gap = np.where(lo >= idmap_end, lo - idmap_end, np.where(hi <= idmap, idmap - hi, 0))
        margin = np.minimum(margin, np.where(ok, gap, big))
        inside_any |= ok & (lo <= idmap) & (idmap < hi)  # ranges are granule-aligned
    overlap = inside_any & (delta != 0)

    # Section 5: distinct table entries of the runtime ranges per level, and the idmap walk.
    root = 4 - _levels(tree_bits, g)
    top = int(root.min())
    min_block = min_block_level(g)
    distinct = {}  # level -> tables at level + 1 made by the runtime ranges
    walk_done = np.zeros(n, dtype=bool)
    first_empty = np.full(n, NO_LEVEL, dtype=I64)
    for level in range(top, 4):
        shift = level_shift(level, g)
        chunk = I64(1) << shift
        first = va_lo >> shift
        last = (va_hi - 1) >> shift
        blocks = block_mappings and min_block <= level < 3
        if blocks:
            eligible = (delta & (chunk - 1)) == 0  # PA aligned as well as VA
            full_lo = (va_lo + (chunk - 1)) >> shift
            full_hi = va_hi >> shift
            full = np.where(eligible, np.maximum(full_hi - full_lo, 0), 0)
        if level < 3:
            count = last - first + 1
            first_tab, last_tab = first, last
            if blocks:
                count = count - full
                first_tab = np.where(~eligible | (first < full_lo), first, last)
                last_tab = np.where(~eligible | (last >= full_hi), last, first)
            has = valid & (count > 0)
            total = np.zeros(np.broadcast_shapes(count.shape[1:], delta.shape), dtype=I64)
            prev_last = np.full_like(total, -1)
            for b in range(nbanks):
                total += np.where(has[b], count[b] - (first_tab[b] == prev_last), 0)
                prev_last = np.where(has[b], last_tab[b], prev_last)
            distinct[level] = total

        # The idmap's walk at this level: a leaf stops it, an empty entry starts new tables.
        index = idmap >> shift
        touched = np.zeros(n, dtype=bool)
        leaf = np.zeros(n, dtype=bool)
        for b in range(nbanks):
            hit = valid[b] & (first[b] <= index) & (index <= last[b])
            touched |= hit
            if level == 3:
                leaf |= hit
            elif blocks:
                leaf |= hit & eligible & (full_lo[b] <= index) & (index < full_hi[b])
        active = (level >= root) & ~walk_done
        stop = active & (leaf | ~touched)
        first_empty = np.where(active & ~leaf & ~touched, level, first_empty)
        walk_done |= stop

    n_levels = 4 - root
    counts = {}
    runtime_pages = np.ones(n, dtype=I64)
    for level in range(-1, 4):
        made_by_runtime = distinct.get(level - 1, 0)
        if level - 1 >= top:
            runtime_pages = runtime_pages + np.where(level > root, made_by_runtime, 0)
        counts[level] = np.where(
            level == root, 1,
            np.where(level > root, made_by_runtime + (first_empty < level), 0),
        )
    table_pages = sum(counts.values())
    root_entries = I64(1) << (tree_bits - (g.bit_length() - 1 + (3 - root) * (g.bit_length() - 4)))
    emit(rows, {
        "overlap": overlap,
        "margin": margin,
        "tables_lm1": counts[-1],
        "tables_l0": counts[0],
        "tables_l1": counts[1],
        "tables_l2": counts[2],
        "tables_l3": counts[3],
        "table_pages": table_pages,
        "table_bytes": root_entries * 8 + (table_pages - 1) * g,
        "shared_tables": runtime_pages + n_levels - table_pages,
    })


# --- The public entry points -----------------------------------------------------------------


def build_unit(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: np.ndarray,
    tag_random: np.ndarray | None = None,
    layouts: Mapping[str, Layout] | None = None,
) -> pa.Table:
    """One work unit as an Arrow table with every column of ``sweep.columns.ROW_COLUMNS``."""
    layout_obj = _lookup_layout(layout, _resolve_layouts(layouts))
    _check_scalars(granule, va_bits)
    idmap = _aligned_idmap(np.asarray(idmap_pa), granule)
    n = len(idmap)
    tags = _tags(tag_random, n)
    columns = build_group(memory_map, granule, va_bits, layout_obj, bool(block_mappings),
                          idmap, tags)
    inputs = {
        "memory_map": pa.DictionaryArray.from_arrays(
            np.zeros(n, dtype=np.int32), pa.array([memory_map.name])),
        "granule": np.full(n, granule, dtype=np.int32),
        "va_bits": np.full(n, va_bits, dtype=np.int8),
        "layout": pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array([layout])),
        "block_mappings": np.full(n, bool(block_mappings)),
        "idmap_pa": idmap.astype(np.uint64),
        "tag_random": tags,
    }
    arrays = []
    for name, dtype in ROW_COLUMNS.items():
        value = inputs[name] if name in inputs else columns[name].astype(dtype, copy=False)
        arrays.append(value if isinstance(value, pa.Array) else pa.array(value))
    return pa.Table.from_arrays(arrays, names=list(ROW_COLUMNS))


def build(
    configs: pd.DataFrame,
    memory_maps: Mapping[str, MemoryMap],
    layouts: Mapping[str, Layout] | None = None,
) -> pd.DataFrame:
    """One result row per configuration row, same order and index (MODEL.md section 8)."""
    missing = [c for c in INPUT_COLUMNS if c not in configs.columns and c != "tag_random"]
    if missing:
        raise ValidationError(f"configs: missing column(s) {', '.join(missing)}")
    layouts = _resolve_layouts(layouts)
    n = len(configs)
    idmap_raw = _int_column(configs, "idmap_pa")
    tags = _tags(_int_column(configs, "tag_random", unsigned64=True)
                 if "tag_random" in configs else None, n)
    granules = _int_column(configs, "granule")
    va_bits = _int_column(configs, "va_bits")
    blocks = configs["block_mappings"].to_numpy()
    if blocks.dtype != bool:
        if not np.isin(blocks, [0, 1]).all():
            raise ValidationError("block_mappings: values must be true/false (or 0/1)")
        blocks = blocks.astype(bool)
    map_names = configs["memory_map"].astype(str).to_numpy()
    layout_names = configs["layout"].astype(str).to_numpy()

    out = {name: np.empty(n, dtype=np.dtype(dt)) for name, dt in ROW_COLUMNS.items()
           if dt != "category"}
    keys = pd.DataFrame({"m": map_names, "g": granules, "v": va_bits, "l": layout_names,
                         "b": blocks})
    for (m, g, v, lay, b), positions in keys.groupby(
        ["m", "g", "v", "l", "b"], sort=False
    ).indices.items():
        if m not in memory_maps:
            raise ValidationError(f"memory_map: {m!r} is not among the memory maps given")
        g, v = int(g), int(v)
        layout_obj = _lookup_layout(lay, layouts)
        _check_scalars(g, v)
        idmap = _aligned_idmap(idmap_raw[positions], g)
        columns = build_group(memory_maps[m], g, v, layout_obj, bool(b), idmap, tags[positions])
        out["idmap_pa"][positions] = idmap
        for name, value in columns.items():
            out[name][positions] = value
    out["granule"][:] = granules
    out["va_bits"][:] = va_bits
    out["block_mappings"][:] = blocks
    out["tag_random"][:] = tags
    frame = {
        "memory_map": pd.Categorical(map_names),
        "layout": pd.Categorical(layout_names),
        **out,
    }
    return pd.DataFrame({name: frame[name] for name in ROW_COLUMNS}, index=configs.index)


def _lookup_layout(name: str, layouts: Mapping[str, Layout]) -> Layout:
    if name not in layouts:
        raise ValidationError(f"layout: {name!r} is not one of {', '.join(sorted(layouts))}")
    return layouts[name]


def _check_scalars(granule: int, va_bits: int) -> None:
    if granule not in GRANULES:
        raise ValidationError(f"granule: {granule!r} is not one of 4096, 16384, 65536")
    if not VA_BITS_MIN <= va_bits <= VA_BITS_MAX:
        raise ValidationError(f"va_bits: {va_bits!r} is outside {VA_BITS_MIN}..{VA_BITS_MAX}")


def _aligned_idmap(idmap: np.ndarray, granule: int) -> np.ndarray:
    if idmap.dtype.kind not in "iu":
        raise ValidationError(f"idmap_pa: expected integers, got dtype {idmap.dtype}")
    if idmap.dtype.kind == "i" and (idmap < 0).any():
        raise ValidationError(f"idmap_pa: {int(idmap[idmap < 0][0])} is negative")
    wide = idmap.astype(np.uint64, copy=False)
    if (wide >= PA_LIMIT).any():
        raise ValidationError(f"idmap_pa: {int(wide[wide >= PA_LIMIT][0]):#x} is not below 2^52")
    return (wide.astype(I64) // granule) * granule


def _tags(tag_random, n: int) -> np.ndarray:
    if tag_random is None:
        return np.zeros(n, dtype=np.uint64)
    tags = np.asarray(tag_random)
    if tags.dtype.kind == "i" and (tags < 0).any():
        raise ValidationError("tag_random: values must not be negative")
    return tags.astype(np.uint64, copy=False)


def _int_column(configs: pd.DataFrame, name: str, unsigned64: bool = False) -> np.ndarray:
    col = configs[name]
    values = col.to_numpy()
    if values.dtype.kind in "iu":
        return values
    try:
        return np.array([int(x) for x in values], dtype=np.uint64 if unsigned64 else None)
    except (TypeError, ValueError, OverflowError):
        raise ValidationError(f"{name}: expected integers, got dtype {col.dtype}") from None
