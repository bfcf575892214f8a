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
their boundary entries, and distinct = sum - adjacent duplicates. The idmap walk stops at a
page on its path or creates one table per level below the first empty entry or block (a block
is replaced by a table, as the kernel's ``hyp_map_walker`` does).
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
    MemoryMap,
    check_va_bits,
    granule_name,
    level_shift,
    min_block_level,
)

I64 = np.int64
NO_LEVEL = 9  # "never": a level past 3
_MAX_SHARED_DELTAS = 16  # above this many distinct deltas, the runtime tree is built per row


_POWERS_OF_TWO = np.array([1 << k for k in range(63)], dtype=I64)


def _bit_length(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values, elementwise."""
    return np.searchsorted(_POWERS_OF_TWO, values, side="right").astype(I64)


def _levels(bits, granule: int):
    """``ARM64_HW_PGTABLE_LEVELS(bits)`` for scalars or arrays."""
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
    Arrays come back in the row order given; some may be read-only broadcast views.
    """
    group = _Group(memory_map, granule, va_bits, layout, bool(block_mappings), len(idmap_pa))
    idmap = np.asarray(idmap_pa).astype(I64, copy=False)
    group.check_inside(idmap)
    kernel_high = idmap + granule > group.phys_offset0 + group.linear
    if not kernel_high.any():
        group.clip_shared(None, idmap, tag_random)
    else:
        low_rows = np.flatnonzero(~kernel_high)
        if len(low_rows):
            group.clip_shared(low_rows, idmap[low_rows], tag_random[low_rows])
        high_rows = np.flatnonzero(kernel_high)
        group.clip_per_row(high_rows, idmap[high_rows], tag_random[high_rows])
    return group.out


class _Group:
    """The state rows of one group share, and the output columns being filled.

    Rows are handled in parts (kernel low or high; runs of equal ``delta``; equal tree
    sizes): ``rows`` is ``None`` for "all rows, in order" or the row positions of a part.
    """

    def __init__(self, memory_map, granule, va_bits, layout, block_mappings, n) -> None:
        self.memory_map = memory_map
        self.g = granule
        self.va_bits = va_bits
        self.layout = layout
        self.blocks = block_mappings
        self.n = n
        trimmed = memory_map.trimmed(granule)
        self.starts = np.array([s for s, _ in trimmed], dtype=I64)
        self.ends = np.array([e for _, e in trimmed], dtype=I64)
        # Section 2: PHYS_OFFSET before clipping (arm64_memblock_init).
        self.align = layout.memstart_align(granule)
        self.linear = 1 << (va_bits - 1)
        self.phys_offset0 = int(self.starts[0]) // self.align * self.align
        self.out: dict[str, np.ndarray] = {}

    def emit(self, rows, values: dict[str, np.ndarray]) -> None:
        for name, value in values.items():
            if rows is None:
                if np.shape(value) != (self.n,):
                    value = np.broadcast_to(value, (self.n,))
                self.out[name] = value
                continue
            if name not in self.out:
                self.out[name] = np.empty(self.n, dtype=np.dtype(ROW_COLUMNS[name]))
            self.out[name][rows] = value

    def check_inside(self, idmap: np.ndarray) -> None:
        k = np.searchsorted(self.ends, idmap, side="right")
        inside = k < len(self.ends)
        inside[inside] = self.starts[k[inside]] <= idmap[inside]
        if not inside.all():
            bad = int(idmap[np.flatnonzero(~inside)[0]])
            raise ValidationError(
                f"memory map {self.memory_map.name!r}: idmap_pa {bad:#x} is outside every "
                f"{granule_name(self.g)}-trimmed bank"
            )

    def clip_shared(self, rows, idmap, tag_random) -> None:
        """Rows whose kernel ends at or below PHYS_OFFSET + L: one clip serves them all.

        Step 1 cuts DRAM at PHYS_OFFSET + L, so step 2 (the kernel sits high) never applies.
        """
        limit = self.phys_offset0 + self.linear
        keep = self.starts < limit
        s, e = self.starts[keep], np.minimum(self.ends[keep], limit)
        clipped = int((self.ends - self.starts).sum() - (e - s).sum())
        self.with_banks(
            rows,
            idmap,
            tag_random,
            s[:, None],
            e[:, None],
            np.array([self.phys_offset0], dtype=I64),
            clipped,
        )

    def clip_per_row(self, rows, idmap, tag_random) -> None:
        """Rows whose kernel sits high: each row clips DRAM at its own idmap page."""
        limit = np.maximum(self.phys_offset0 + self.linear, idmap + self.g)  # step 1
        s = self.starts[:, None]
        e = np.minimum(self.ends[:, None], limit[None, :])
        dram_end = np.where(s < limit[None, :], e, 0).max(axis=0)
        high = dram_end > self.phys_offset0 + self.linear  # step 2: move PHYS_OFFSET up
        round_up = -((self.linear - dram_end) // self.align) * self.align
        phys_offset = np.where(high, round_up, self.phys_offset0)
        s = np.maximum(s, phys_offset[None, :])
        kept = np.maximum(e - s, 0).sum(axis=0)
        clipped = int((self.ends - self.starts).sum()) - kept
        self.with_banks(rows, idmap, tag_random, s, e, phys_offset, clipped)

    def with_banks(self, rows, idmap, tag_random, s, e, phys_offset, clipped) -> None:
        """Rows with clipped banks ``[s, e)``: shape (banks, 1) if shared, (banks, rows) if not.

        ``phys_offset`` has one element per column of ``s``.
        """
        g, v = self.g, self.va_bits
        valid = e > s
        columns = np.arange(s.shape[1])
        dram_first = s[np.argmax(valid, axis=0), columns]
        dram_last = e[valid.shape[0] - 1 - np.argmax(valid[::-1], axis=0), columns] - 1
        idmap_va_bits = _bit_length(idmap + (g - 1))
        res = self.layout.compute(
            LayoutBatch(
                granule=g,
                va_bits=v,
                idmap_pa=idmap,
                idmap_va_bits=idmap_va_bits,
                phys_offset=phys_offset,
                dram_first=dram_first,
                dram_last=dram_last,
                tag_random=tag_random,
            )
        )
        delta = np.asarray(res.delta, dtype=I64)
        tree_bits = np.asarray(res.tree_va_bits, dtype=I64)
        levels_runtime = _levels(v, g)
        n_levels = _levels(tree_bits, g)
        self.emit(
            rows,
            {
                "phys_offset": phys_offset,
                "clipped_bytes": clipped,
                "hyp_va_min": res.hyp_va_min,
                "hyp_va_max": res.hyp_va_max,
                "hyp_dram_last": dram_last + delta,
                "idmap_va_bits": idmap_va_bits,
                "idmap_extended": idmap_va_bits > v,
                "idmap_in_window": (res.hyp_va_min <= idmap) & (idmap <= res.hyp_va_max),
                "levels_runtime": levels_runtime,
                "levels_idmap": _levels(np.maximum(idmap_va_bits, v), g),
                "levels": n_levels,
                "extra_levels": n_levels - levels_runtime,
            },
        )
        # The runtime tree depends on the banks and delta only: share it when both are.
        if s.shape[1] == 1:
            values, inverse = _few_unique(delta)
            if values is not None:
                for k, d in enumerate(values):
                    sel = None if inverse is None else np.flatnonzero(inverse == k)
                    self.by_tree_size(rows, sel, idmap, s, e, np.array([d]), tree_bits)
                return
            s = np.broadcast_to(s, (s.shape[0], len(idmap)))
            e = np.broadcast_to(e, (e.shape[0], len(idmap)))
        self.by_tree_size(rows, None, idmap, s, e, delta, tree_bits)

    def by_tree_size(self, rows, sel, idmap, s, e, delta, tree_bits) -> None:
        """Split ``rows[sel]`` by tree size, so that each part has one root level."""
        if sel is not None:
            rows = sel if rows is None else rows[sel]
            idmap, tree_bits = idmap[sel], tree_bits[sel]
            if s.shape[1] > 1:
                s, e, delta = s[:, sel], e[:, sel], delta[sel]
        bits = int(tree_bits[0])
        if (tree_bits == bits).all():
            self.tree(rows, idmap, s, e, delta, bits)
            return
        for bits in np.unique(tree_bits):
            part = np.flatnonzero(tree_bits == bits)
            shared = s.shape[1] == 1
            self.tree(
                part if rows is None else rows[part],
                idmap[part],
                s if shared else s[:, part],
                e if shared else e[:, part],
                delta if shared else delta[part],
                int(bits),
            )

    def tree(self, rows, idmap, s, e, delta, tree_bits: int) -> None:
        """Overlap, margin and the merged tree of rows with one tree size, whose banks ``[s, e)``
        and ``delta`` are shared (one column, one delta) or given per row."""
        g = self.g
        n = len(idmap)
        valid = e > s
        va_lo = s + delta  # runtime ranges [va_lo, va_hi), sorted and disjoint in VA
        va_hi = e + delta
        nbanks = s.shape[0]
        idmap_end = idmap + g

        # Section 4: overlap and margin.
        big = np.iinfo(I64).max
        margin = np.full(n, big, dtype=I64)
        inside = np.zeros(n, dtype=bool)
        for b in range(nbanks):
            lo, hi, ok = va_lo[b], va_hi[b], valid[b]
            gap = np.maximum(np.maximum(lo - idmap_end, idmap - hi), 0)
            margin = np.minimum(margin, np.where(ok, gap, big))
            inside |= ok & (lo <= idmap) & (idmap < hi)  # ranges are granule-aligned
        overlap = inside & (delta != 0)

        # Section 5: the runtime ranges' distinct table entries per level; the idmap's walk.
        root = 4 - _levels(tree_bits, g)
        min_block = min_block_level(g)
        tables = {root: 1}  # level -> tables whose entries are that level's descriptors
        runtime_pages = 1
        walking = np.ones(n, dtype=bool)
        first_empty = np.full(n, NO_LEVEL, dtype=I64)
        for level in range(root, 4):
            shift = level_shift(level, g)
            chunk = 1 << shift
            first = va_lo >> shift
            last = (va_hi - 1) >> shift
            blocks = self.blocks and min_block <= level < 3
            if blocks:
                eligible = (delta & (chunk - 1)) == 0  # PA aligned as well as VA
                full_lo = (va_lo + (chunk - 1)) >> shift
                full_hi = va_hi >> shift
            if level < 3:
                count = last - first + 1
                first_tab, last_tab = first, last
                if blocks:
                    count = count - np.where(eligible, np.maximum(full_hi - full_lo, 0), 0)
                    first_tab = np.where(eligible & (first >= full_lo), last, first)
                    last_tab = np.where(eligible & (last < full_hi), first, last)
                has = valid & (count > 0)
                distinct = 0
                prev_last = -1
                for b in range(nbanks):
                    distinct = distinct + np.where(
                        has[b], count[b] - (first_tab[b] == prev_last), 0
                    )
                    prev_last = np.where(has[b], last_tab[b], prev_last)
                tables[level + 1] = distinct
                runtime_pages = runtime_pages + distinct

            # The idmap's walk: a page stops it; an empty entry, or a block (replaced by an
            # empty table, as hyp_map_walker does), starts one new table per level below.
            index = idmap >> shift
            touched = np.zeros(n, dtype=bool)
            leaf = np.zeros(n, dtype=bool)
            block = np.zeros(n, dtype=bool)
            for b in range(nbanks):
                hit = valid[b] & (first[b] <= index) & (index <= last[b])
                touched |= hit
                if level == 3:
                    leaf |= hit
                elif blocks:
                    block |= hit & eligible & (full_lo[b] <= index) & (index < full_hi[b])
            first_empty[walking & (~touched | block)] = level
            walking &= touched & ~leaf & ~block

        counts = {level: 0 for level in range(-1, 4)}
        for level, made in tables.items():
            counts[level] = made + (first_empty < level) if level > root else made
        table_pages = sum(counts.values())
        root_entries = 1 << (tree_bits - level_shift(root, g))
        self.emit(
            rows,
            {
                "overlap": overlap,
                "margin": margin,
                "tables_lm1": counts[-1],
                "tables_l0": counts[0],
                "tables_l1": counts[1],
                "tables_l2": counts[2],
                "tables_l3": counts[3],
                "table_pages": table_pages,
                "table_bytes": root_entries * 8 + (table_pages - 1) * g,
                "shared_tables": runtime_pages + (4 - root) - table_pages,
            },
        )


def _few_unique(delta: np.ndarray):
    """The distinct values of ``delta`` and each row's index among them, when there are few
    (``inverse`` is None when there is one)."""
    if (delta == delta[0]).all():
        return delta[:1], None
    if len(np.unique(delta[:4096])) > _MAX_SHARED_DELTAS:
        return None, None
    values, inverse = np.unique(delta, return_inverse=True)
    if len(values) > _MAX_SHARED_DELTAS:
        return None, None
    return values, inverse


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
    columns = build_group(
        memory_map, granule, va_bits, layout_obj, bool(block_mappings), idmap, tags
    )
    inputs = {
        "memory_map": pa.DictionaryArray.from_arrays(
            np.zeros(n, dtype=np.int32), pa.array([memory_map.name])
        ),
        "granule": np.full(n, granule, dtype=np.int32),
        "va_bits": np.full(n, va_bits, dtype=np.int8),
        "layout": pa.DictionaryArray.from_arrays(np.zeros(n, dtype=np.int32), pa.array([layout])),
        "block_mappings": np.full(n, bool(block_mappings)),
        "idmap_pa": idmap.astype(np.uint64),
        "tag_random": tags,
    }
    arrays = []
    for name, dtype in ROW_COLUMNS.items():
        value = inputs[name] if name in inputs else np.ascontiguousarray(columns[name], dtype)
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
    tags = _tags(
        _int_column(configs, "tag_random", unsigned64=True) if "tag_random" in configs else None, n
    )
    granules = _int_column(configs, "granule")
    va_bits = _int_column(configs, "va_bits")
    blocks = configs["block_mappings"].to_numpy()
    if blocks.dtype != bool:
        if not np.isin(blocks, [0, 1]).all():
            raise ValidationError("block_mappings: values must be true/false (or 0/1)")
        blocks = blocks.astype(bool)
    map_names = configs["memory_map"].astype(str).to_numpy()
    layout_names = configs["layout"].astype(str).to_numpy()

    out = {
        name: np.empty(n, dtype=np.dtype(dt))
        for name, dt in ROW_COLUMNS.items()
        if dt != "category"
    }
    keys = pd.DataFrame(
        {"m": map_names, "g": granules, "v": va_bits, "l": layout_names, "b": blocks}
    )
    for (m, g, v, lay, b), positions in keys.groupby(
        ["m", "g", "v", "l", "b"], sort=False
    ).indices.items():
        if m not in memory_maps:
            raise ValidationError(f"memory_map: {m!r} is not among the memory maps given")
        g, v = int(g), int(v)
        layout_obj = _lookup_layout(lay, layouts)
        _check_scalars(g, v)
        idmap = _aligned_idmap(idmap_raw[positions], g)
        memory_map = memory_maps[m]
        if not isinstance(memory_map, MemoryMap):  # plain banks: [(base, size), ...]
            memory_map = MemoryMap(m, memory_map)
        columns = build_group(memory_map, g, v, layout_obj, bool(b), idmap, tags[positions])
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


def build_row(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: str,
    block_mappings: bool,
    idmap_pa: int,
    tag_random: int = 0,
) -> dict:
    """One configuration through ``build``, as plain Python values (for explain, verify-boot)."""
    config = pd.DataFrame(
        [
            {
                "memory_map": memory_map.name,
                "granule": granule,
                "va_bits": va_bits,
                "layout": layout,
                "block_mappings": block_mappings,
                "idmap_pa": idmap_pa,
                "tag_random": tag_random,
            }
        ]
    ).astype({"idmap_pa": "uint64", "tag_random": "uint64"})
    out = build(config, {memory_map.name: memory_map})
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.iloc[0].items()}


def _lookup_layout(name: str, layouts: Mapping[str, Layout]) -> Layout:
    if name not in layouts:
        raise ValidationError(f"layout: {name!r} is not one of {', '.join(sorted(layouts))}")
    return layouts[name]


def _check_scalars(granule: int, va_bits: int) -> None:
    if granule not in GRANULES:
        raise ValidationError(f"granule: {granule!r} is not one of 4096, 16384, 65536")
    check_va_bits(int(va_bits))


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
