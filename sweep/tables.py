"""MODEL.md section 5: level counts and the merged tree's tables, counted without building it.

Every row has its own granule, tree size, block setting, ``delta`` and banks (``(banks, rows)``
arrays of runtime VA ranges, sorted and disjoint, a bank that clipping emptied has
``end <= start``), so the loops here run over levels only; each step is numpy over all rows.

How the tree is counted: an entry at level ``l < 3`` touched by a runtime range is a table
unless it is a block; a non-block entry's ancestors are all non-blocks (coverage, alignment and
block levels only grow downwards), so every such entry is reached. Tables at level ``l + 1`` are
therefore the distinct non-block entries touched at level ``l``; ranges are sorted and disjoint,
so two ranges can only share their boundary entries, and distinct = sum - adjacent duplicates.
The idmap's walk (``hyp_map_walker``) goes down through tables; a page stops it; a block at level
``l``, or an empty entry, makes it create one table at each level ``l + 1`` to 3.
"""

from __future__ import annotations

import numpy as np

I64 = np.int64
NEVER = 9  # a level past 3: "the idmap creates no table"


def page_shift(granule: np.ndarray) -> np.ndarray:
    """``g = log2(granule)`` (exact: granules are powers of two)."""
    return (np.frexp(granule.astype(np.float64))[1] - 1).astype(I64)


def bit_length(values: np.ndarray) -> np.ndarray:
    """``int.bit_length`` of non-negative int64 values below 2^53 (exact through float64)."""
    return np.frexp(values.astype(np.float64))[1].astype(I64)


def levels(input_bits: np.ndarray, granule: np.ndarray) -> np.ndarray:
    """``ARM64_HW_PGTABLE_LEVELS(input_bits)``: ``(x - 4) // b``, ``b = g - 3``."""
    return (input_bits - 4) // (page_shift(granule) - 3)


def level_columns(
    va_bits: np.ndarray, idmap_va_bits: np.ndarray, tree_va_bits: np.ndarray, granule
) -> dict[str, np.ndarray]:
    """``levels_runtime``, ``levels_idmap``, ``levels``, ``extra_levels``, ``idmap_extended``."""
    levels_runtime = levels(va_bits, granule)
    n_levels = levels(tree_va_bits, granule)
    return {
        "idmap_extended": idmap_va_bits > va_bits,
        "levels_runtime": levels_runtime,
        "levels_idmap": levels(np.maximum(va_bits, idmap_va_bits), granule),
        "levels": n_levels,
        "extra_levels": n_levels - levels_runtime,
    }


def table_columns(
    va_start: np.ndarray,
    va_end: np.ndarray,
    valid: np.ndarray,
    delta: np.ndarray,
    idmap_pa: np.ndarray,
    granule: np.ndarray,
    tree_va_bits: np.ndarray,
    block_mappings: np.ndarray,
) -> dict[str, np.ndarray]:
    """``tables_lm1`` .. ``tables_l3``, ``table_pages``, ``table_bytes``, ``shared_tables``."""
    g = page_shift(granule)
    b = g - 3
    root = 4 - (tree_va_bits - 4) // b
    min_block = np.where(g == 12, 1, 2)  # KVM_PGTABLE_MIN_BLOCK_LEVEL
    runtime = {}  # level -> tables of that level's descriptors the runtime ranges need
    first_new = np.full(len(idmap_pa), NEVER, dtype=I64)  # the idmap's tables go below this
    walking = np.ones(len(idmap_pa), dtype=bool)
    for level in range(int(root.min()), 3):
        active = level >= root
        shift = np.minimum(g + (3 - level) * b, 63)  # above the root, every VA is in entry 0
        first = va_start >> shift
        last = (va_end - 1) >> shift
        index = idmap_pa >> shift
        # Whole entries of a range are blocks when blocks are on here and PA is aligned too.
        blocks = active & block_mappings & (level >= min_block) & (delta & ((1 << shift) - 1) == 0)
        full_lo = (va_start + ((1 << shift) - 1)) >> shift
        full_hi = va_end >> shift
        count = last - first + 1 - np.where(blocks, np.maximum(full_hi - full_lo, 0), 0)
        first_table = np.where(blocks & (first >= full_lo), last, first)
        last_table = np.where(blocks & (last < full_hi), first, last)
        has = valid & (count > 0)
        shared = has[1:] & has[:-1] & (first_table[1:] == last_table[:-1])
        runtime[level + 1] = np.where(has, count, 0).sum(axis=0) - shared.sum(axis=0)

        hit = valid & (first <= index) & (index <= last)
        block = blocks & (hit & (full_lo <= index) & (index < full_hi)).any(axis=0)
        stops = walking & active & (block | ~hit.any(axis=0))
        first_new[stops] = level
        walking &= ~stops

    tables = {}
    for level in range(-1, 4):
        below_root = runtime.get(level, 0) + (first_new < level)
        tables[level] = np.where(level == root, 1, np.where(level > root, below_root, 0))
    table_pages = sum(tables.values())
    runtime_pages = 1 + sum(np.where(level > root, n, 0) for level, n in runtime.items())
    root_entries = np.left_shift(1, tree_va_bits - (g + (3 - root) * b), dtype=I64)
    return {
        "tables_lm1": tables[-1],
        "tables_l0": tables[0],
        "tables_l1": tables[1],
        "tables_l2": tables[2],
        "tables_l3": tables[3],
        "table_pages": table_pages,
        "table_bytes": root_entries * 8 + (table_pages - 1) * granule,
        "shared_tables": runtime_pages + (4 - root) - table_pages,
    }
