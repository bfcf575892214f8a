"""docs/model.md section 5: level counts and the merged tree's tables, counted without building it.

Every row has its own granule, tree size, block setting, ``delta`` and runtime VA ranges
(``(banks, rows)`` arrays, sorted and disjoint; a bank that clipping emptied has
``end <= start``), so the loops here run over levels only; each step is numpy over all rows.

The runtime ranges: an entry at level ``l < 3`` they touch is a table unless it is a block; a
non-block entry's ancestors are all non-blocks (coverage, alignment and block levels only grow
downwards), so every such entry is reached. Tables at level ``l + 1`` are therefore the distinct
non-block entries touched at level ``l``; ranges are sorted and disjoint, so two ranges can only
share their boundary entries, and distinct = sum - adjacent duplicates.

The idmap page then walks down from the root (``hyp_map_walker``): through tables; a page stops
it; a block at level ``l`` (replaced by an empty table) or an empty entry makes it create one
table at each level ``l + 1`` to 3. Only the runtime ranges nearest the page can touch its
entries (``sweep.model.overlap.Nearest``).
"""

from __future__ import annotations

import numpy as np

from sweep.core.kconfig import bit_length, levels, min_block_level, page_shift
from sweep.model.overlap import Nearest

I64 = np.int64
NEVER = 9  # a level past 3: "the idmap creates no table"


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


def _shift(level, g: np.ndarray) -> np.ndarray:
    """``shift(l) = g + (3 - l) * b`` per row (``g`` the page shift), at most 63: above a
    row's root, all VAs (below 2^52) are in entry 0."""
    return np.minimum(g + (3 - level) * (g - 3), 63)


def _blocks(level: int, min_block, shift, delta, block_mappings) -> np.ndarray:
    """Whether level ``level`` may hold blocks of these rows' runtime ranges: blocks on, a block
    level (``min_block``: ``min_block_level`` of each row's granule), PA aligned as VA is."""
    aligned = (delta & ((np.int64(1) << shift) - 1)) == 0
    return block_mappings & (level >= min_block) & (level < 3) & aligned


def runtime_tables(
    start: np.ndarray,
    end: np.ndarray,
    valid: np.ndarray,
    delta: np.ndarray,
    granule: np.ndarray,
    root: np.ndarray,
    block_mappings: np.ndarray,
) -> dict[int, np.ndarray]:
    """Level -> tables of that level's descriptors the runtime ranges ``[start + delta,
    end + delta)`` need below the root."""
    va_start = start + delta
    va_last = end + delta
    va_last -= 1
    tables = {}
    g, min_block = page_shift(granule), min_block_level(granule)
    some_blocks = bool(np.any(block_mappings))
    one_root = root.size == 1
    for level in range(int(root.min(initial=3)), 3):
        shift = _shift(level, g)
        first = va_start >> shift
        last = va_last >> shift
        count = last - first
        count += 1  # at least 1 for a valid range: its last byte is not below its first
        first_table, last_table, has = first, last, valid
        blocks = None
        if some_blocks:
            blocks = _blocks(level, min_block, shift, delta, block_mappings) & (level >= root)
        if blocks is not None and blocks.any():  # whole entries are blocks: no table below
            full_lo = (va_start + ((np.int64(1) << shift) - 1)) >> shift
            full_hi = (va_last + 1) >> shift
            count -= np.where(blocks, np.maximum(full_hi - full_lo, 0), 0)
            first_table = np.where(blocks & (first >= full_lo), last, first)
            last_table = np.where(blocks & (last < full_hi), first, last)
            has = valid & (count > 0)
        count = count * has if has.shape != count.shape else np.multiply(count, has, out=count)
        distinct = count.sum(axis=0) if len(count) > 1 else count[0]
        for k in range(1, len(has)):  # neighbours that share a boundary entry count it once
            distinct -= has[k] & has[k - 1] & (first_table[k] == last_table[k - 1])
        if not one_root:
            distinct = np.where(level >= root, distinct, 0)
        elif level < int(root.reshape(-1)[0]):
            distinct = np.zeros_like(distinct)
        tables[level + 1] = distinct
    return tables


def runtime_delta(delta: np.ndarray, root: np.ndarray, granule: np.ndarray) -> np.ndarray:
    """The part of ``delta`` the runtime tables depend on: ``delta mod 2^shift(root)``.

    Moving every range by a multiple of ``2^shift(l)`` moves it by whole entries at level
    ``l`` and at every level below: the same counts, the same block alignment. So rows whose
    deltas differ only in bits at or above the root's shift (random tag bits, most often)
    share their runtime tree.
    """
    return delta & ((np.int64(1) << _shift(root, page_shift(granule))) - 1)


def idmap_walk(
    near: Nearest,
    idmap_pa: np.ndarray,
    delta: np.ndarray,
    granule: np.ndarray,
    root: np.ndarray,
    block_mappings: np.ndarray,
) -> np.ndarray:
    """The level below which the idmap page creates one table per level (``NEVER``: none)."""
    first_new = np.asarray(NEVER, dtype=I64)
    walking = np.asarray(True)
    g, min_block = page_shift(granule), min_block_level(granule)
    for level in range(int(root.min(initial=3)), 3):
        shift = _shift(level, g)
        entry_start = idmap_pa & -(np.int64(1) << shift)
        entry_end = entry_start + (np.int64(1) << shift)
        stops = (near.below_end <= entry_start) & (near.above_start >= entry_end)  # untouched
        blocks = _blocks(level, min_block, shift, delta, block_mappings)
        if blocks.any():  # else no row meets a block at this level
            stops |= blocks & (near.below_start <= entry_start) & (entry_end <= near.below_end)
        stops &= walking & (level >= root)
        first_new = np.where(stops, level, first_new)
        walking = walking & ~stops
        if not walking.any():
            break
    return np.broadcast_to(first_new, np.shape(idmap_pa))


def table_columns(
    runtime: dict[int, np.ndarray],
    first_new: np.ndarray,
    root: np.ndarray,
    granule: np.ndarray,
    tree_va_bits: np.ndarray,
) -> dict[str, np.ndarray]:
    """``tables_lm1`` .. ``tables_l3``, ``table_pages``, ``table_bytes``, ``shared_tables``."""
    # runtime counts are 0 at and above the root; the idmap creates tables below it only, one
    # at each level from first_new + 1 to 3 (none for NEVER).
    tables = {
        level: runtime.get(level, 0) + (first_new < level) + (level == root)
        for level in range(-1, 4)
    }
    runtime_pages = 1 + sum(runtime.values())
    table_pages = runtime_pages + np.maximum(3 - first_new, 0)
    return {
        "tables_lm1": tables[-1],
        "tables_l0": tables[0],
        "tables_l1": tables[1],
        "tables_l2": tables[2],
        "tables_l3": tables[3],
        "table_pages": table_pages,
        "table_bytes": table_pages * granule,  # every table is a whole page, the root too
        "shared_tables": runtime_pages + (4 - root) - table_pages,
    }


def two_tree_columns(
    runtime: dict[int, np.ndarray],
    delta: np.ndarray,
    granule: np.ndarray,
    va_bits: np.ndarray,
    idmap_pa: np.ndarray,
    idmap_va_bits: np.ndarray,
    block_mappings: np.ndarray,
    near_trampoline: Nearest,
) -> dict[str, np.ndarray]:
    """4.6-4.7 (``arch/arm/kvm/mmu.c`` ``kvm_mmu_init``): the runtime tree ``hyp_pgd`` and the
    boot tree ``boot_hyp_pgd``, each of ``VA_BITS``, each holding the idmap page again at
    ``TRAMPOLINE_VA = 2^V - granule``; an idmap above ``VA_BITS`` instead gets one more root,
    ``merged_hyp_pgd``, over both (no trampoline). The table columns of that pair.

    ``runtime``: ``runtime_tables`` of the runtime alone in a tree of ``VA_BITS``. In ``hyp_pgd``
    the trampoline page is mapped after the runtime, as the idmap page is in the merged tree
    (``idmap_walk``; ``near_trampoline``: the runtime ranges nearest its VA)."""
    n = np.broadcast(idmap_pa, va_bits, delta).shape
    root = 4 - levels(va_bits, granule)
    top = np.left_shift(1, va_bits, dtype=I64) - granule
    extended = idmap_va_bits > va_bits
    at = np.broadcast_to(top, np.broadcast(top, near_trampoline.below_end, delta).shape)
    walk = idmap_walk(near_trampoline, at, delta, granule, root, block_mappings)
    g = page_shift(granule)
    # boot_hyp_pgd: the idmap page and the trampoline share the tables above the first level
    # where their entries differ, the highest bit in which they differ says where.
    if extended.any():
        boot_page = np.where(extended, idmap_pa & (top + granule - 1), idmap_pa)
        differ = np.where(extended, 0, bit_length(boot_page ^ top))
        merged_root = np.where(extended, 4 - levels(idmap_va_bits, granule), NEVER)
        walk = np.where(extended, NEVER, walk)  # no trampoline with merged_hyp_pgd
    else:
        differ, merged_root = bit_length(idmap_pa ^ top), NEVER
    tables = {}
    for level in range(-1, 4):
        if level < root.min(initial=3):  # above every row's root: no table
            tables[level] = runtime.get(level, 0) + (merged_root == level)
            continue
        below_root = level > root  # the roots of hyp_pgd and boot_hyp_pgd are at level root
        # hyp_pgd's trampoline path, and boot_hyp_pgd's idmap page and trampoline paths
        own = (walk < level) + 1 + (differ > _shift(level - 1, g))
        tables[level] = runtime.get(level, 0) + np.where(below_root, own, 2 * (level == root))
        if merged_root is not NEVER:
            tables[level] = tables[level] + (merged_root == level)
    table_pages = sum(tables.values())
    return {
        **{f"tables_l{'m1' if level < 0 else level}": tables[level] for level in tables},
        "table_pages": table_pages,
        "table_bytes": table_pages * granule,
        "shared_tables": np.zeros(n, dtype=I64),
    }


def root_level(tree_va_bits: np.ndarray, granule: np.ndarray) -> np.ndarray:
    """The root's level ``s = 4 - levels(tree_va_bits)``."""
    return 4 - levels(tree_va_bits, granule)
