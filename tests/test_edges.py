"""Hand-computed cases at the edges: every granule, 48- and 52-bit VA, both block settings,
banks straddling blocks or sharing tables, delta == 0, clipping from the top and the bottom,
and the idmap at 2^(V-1), 2^V and 2^52. Each figure is worked out in the comments from
docs/model.md; ``compute`` runs it through the scalar reference and the vectorized builder.
"""

from __future__ import annotations

import pytest

from sweep.core.memmap import MemoryMap

K, M, G = 1 << 10, 1 << 20, 1 << 30
COUNTS = (
    "tables_lm1",
    "tables_l0",
    "tables_l1",
    "tables_l2",
    "tables_l3",
    "table_pages",
    "table_bytes",
    "shared_tables",
)


def check(row: dict, expected: dict) -> None:
    # every table is a whole page, the root too (kvm_pgtable_hyp_init: one zeroed page)
    assert row["table_bytes"] == row["table_pages"] * row["granule"]
    for column, value in expected.items():
        if column == "table_bytes":
            continue  # the figures below keep root_entries * 8 + ..., the used part of the root
        assert row[column] == value, f"{column}: {row[column]!r} != {value!r}"


def counts(*values: int) -> dict:
    return dict(zip(COUNTS, values, strict=True))


CASES = {
    # 16K, V=36: b=11, levels(36) = 32//11 = 2, root level 2 (32 MiB entries), 2^(36-25) = 2048
    # root entries. merged, idmap below 2^35: high half, delta = 2^35 - 2^31.
    # Off: 1 GiB / 32 MiB = 32 level-3 tables, + 1 for the idmap (root entry 64, empty).
    # On: 32 MiB blocks (delta aligned), only the idmap's level-3 table.
    "16K-V36-merged": dict(
        banks=[(0x8000_0000, 1 * G)],
        granule=16 * K,
        va_bits=36,
        layout="merged",
        idmap_pa=0x8008_0000,
        common=dict(
            levels=2,
            levels_runtime=2,
            hyp_va_min=1 << 35,
            hyp_va_max=(1 << 36) - 1,
            margin=(1 << 35) - (0x8008_0000 + 16 * K),
            overlap=False,
            idmap_in_window=False,
            idmap_va_bits=32,
        ),
        off=counts(0, 0, 0, 1, 33, 34, 2048 * 8 + 33 * 16 * K, 1),
        on=counts(0, 0, 0, 1, 1, 2, 2048 * 8 + 16 * K, 1),
    ),
    # 64K, V=42: b=13, 2 levels, root level 2 (512 MiB entries), 2^13 root entries.
    # One bank of 512 MiB + 64 KiB straddles a block boundary. high-only: delta = 2^41 - 2^31.
    # Off: runtime touches root entries 4096 and 4097 -> 2 level-3 tables, idmap (entry 4) +1.
    # On: 4096 is a whole aligned block, 4097 a partial one -> 1 table, idmap +1.
    "64K-V42-straddle": dict(
        banks=[(0x8000_0000, 512 * M + 64 * K)],
        granule=64 * K,
        va_bits=42,
        layout="high-only-merged",
        idmap_pa=0x8008_0000,
        common=dict(levels=2, phys_offset=0x8000_0000, hyp_va_min=1 << 41),
        off=counts(0, 0, 0, 1, 3, 4, 8192 * 8 + 3 * 64 * K, 1),
        on=counts(0, 0, 0, 1, 2, 3, 8192 * 8 + 2 * 64 * K, 1),
    ),
    # 4K, V=48: 4 levels, root level 0, 512 entries. Two banks in one 1 GiB region: 1 MiB at
    # 0x4000_0000 and 2 MiB at 0x4020_0000. tagged, tag_random 0: tag_lsb =
    # bit_length(0x3f_ffff) = 22, msb = 2^47 -- but kern_hyp_va inserts only tag bits 22..45
    # (two 12-bit add immediates, va_layout.c), so the tag is 0: the aliases are [0, 4 MiB),
    # delta = -2^30, window [0, 2^22). The banks share level-0 entry 0 and level-1 entry 0 (one
    # level-1 and one level-2 table); at level 2 they touch entries 0 and 1: 2 level-3 tables.
    # Runtime 1 + 1 + 1 + 2 = 5; the idmap 0x4028_0000 (level-1 entry 1, empty) adds a level-2
    # and a level-3 table. On: bank 2 is one whole 2 MiB block, so its level-3 table goes.
    "4K-V48-shared-tables": dict(
        banks=[(0x4000_0000, 1 * M), (0x4020_0000, 2 * M)],
        granule=4 * K,
        va_bits=48,
        layout="tagged",
        idmap_pa=0x4028_0000,
        common=dict(
            levels=4,
            hyp_va_min=0,
            hyp_va_max=(1 << 22) - 1,
            hyp_dram_last=0x3F_FFFF,
            margin=0x4028_0000 - 0x40_0000,
            overlap=False,
            idmap_in_window=False,
        ),
        off=counts(0, 1, 1, 2, 3, 7, 0, 2),
        on=counts(0, 1, 1, 2, 2, 6, 0, 2),
    ),
    # 4K, V=52 (LPA2): levels(52) = 48//9 = 5, root level -1 (2^48 per entry), 16 entries.
    # tagged-48, 2 GiB at 0x8000_0000: tag_lsb 31, tag = 2^51, delta = 2^51 - 2^31.
    # Off: runtime 1 (root) + 1 + 1 + 2 + 1024 = 1029; idmap (root entry 0, empty) adds 4.
    # On: two 1 GiB blocks at level 1: runtime 3 tables; idmap adds 4.
    "4K-V52-five-levels": dict(
        banks=[(0x8000_0000, 2 * G)],
        granule=4 * K,
        va_bits=52,
        layout="tagged-48",
        idmap_pa=0x8008_0000,
        common=dict(
            levels=5,
            levels_runtime=5,
            levels_idmap=5,
            extra_levels=0,
            hyp_va_min=1 << 51,
            hyp_va_max=(1 << 51) + (1 << 31) - 1,
        ),
        off=counts(1, 2, 2, 3, 1025, 1033, 16 * 8 + 1032 * 4 * K, 1),
        on=counts(1, 2, 2, 1, 1, 7, 16 * 8 + 6 * 4 * K, 1),
    ),
    # delta == 0 at 16K: PHYS_OFFSET = 2^35 = 2^(V-1) under high-only. The idmap page is mapped
    # to itself by the runtime: no overlap, margin 0, in the window, and it adds no table.
    # Off: 64 MiB = 2 root entries -> 2 level-3 tables; the idmap meets its page. Shared:
    # 3 + 2 - 3 = 2. On: two 32 MiB blocks at level 2; the idmap meets one, which becomes a
    # table (docs/model.md 5): 3 - 2 = 1 new level-3 table. T(runtime) 1, T(idmap) 2, T(both) 2:
    # shared 1 + 2 - 2 = 1.
    "16K-delta-zero": dict(
        banks=[(1 << 35, 64 * M)],
        granule=16 * K,
        va_bits=36,
        layout="high-only-merged",
        idmap_pa=(1 << 35) + 0x8_0000,
        common=dict(phys_offset=1 << 35, overlap=False, margin=0, idmap_in_window=True),
        off=counts(0, 0, 0, 1, 2, 3, 2048 * 8 + 2 * 16 * K, 2),
        on=counts(0, 0, 0, 1, 1, 2, 2048 * 8 + 16 * K, 1),
    ),
    # Clipping from the top: 4K V=39, L = 2^38, PHYS_OFFSET 0x8000_0000; the second bank
    # [2^38, 2^38 + 4 GiB) is cut at PHYS_OFFSET + L = 0x40_8000_0000: 2 GiB dropped. merged,
    # high half, delta = 2^38 - 2^31: aliases [2^38, +2G) and [0x7f_8000_0000, 2^39).
    # Off: 4 level-1 entries -> 4 + 1 level-2 tables, 2048 + 1 level-3. On: 4 blocks.
    "4K-clip-top": dict(
        banks=[(0x8000_0000, 2 * G), (1 << 38, 4 * G)],
        granule=4 * K,
        va_bits=39,
        layout="merged",
        idmap_pa=0x8008_0000,
        common=dict(clipped_bytes=2 * G, phys_offset=0x8000_0000, hyp_dram_last=(1 << 39) - 1),
        off=counts(0, 0, 1, 5, 2049, 2055, 4 * K + 2054 * 4 * K, 1),
        on=counts(0, 0, 1, 1, 1, 3, 3 * 4 * K, 1),
    ),
    # The kernel placed high (clipping from the bottom): idmap at 0x80_0008_0000, above
    # PHYS_OFFSET + L. Step 1 keeps DRAM below the kernel's end 0x80_0008_1000; step 2 moves
    # PHYS_OFFSET to round_up(0x80_0008_1000 - 2^38, 1G) = 0x40_4000_0000 and drops the low bank.
    # Kept: 0x8_1000 bytes of 4 GiB. idmap_va_bits 40: 4 levels, root level 0 (2 entries).
    # merged, low half: delta = -0x40_4000_0000, alias [0x3f_c000_0000, 0x3f_c008_1000).
    # Runtime 1 + 1 + 1 + 1 tables; the idmap (level-0 entry 1, empty) adds 3. No whole block.
    "4K-kernel-high": dict(
        banks=[(0x8000_0000, 2 * G), (0x80_0000_0000, 2 * G)],
        granule=4 * K,
        va_bits=39,
        layout="merged",
        idmap_pa=0x80_0008_0000,
        common=dict(
            phys_offset=0x40_4000_0000,
            clipped_bytes=4 * G - 0x8_1000,
            idmap_va_bits=40,
            idmap_extended=True,
            levels_runtime=3,
            levels_idmap=4,
            levels=4,
            extra_levels=1,
            hyp_va_min=0,
            hyp_va_max=(1 << 38) - 1,
            margin=0x80_0008_0000 - 0x3F_C008_1000,
            overlap=False,
            idmap_in_window=False,
        ),
        off=counts(0, 1, 2, 2, 2, 7, 2 * 8 + 6 * 4 * K, 1),
        on=counts(0, 1, 2, 2, 2, 7, 2 * 8 + 6 * 4 * K, 1),
    ),
    # 2^52: a 64K bank ending at 2^52, idmap on its last page, tagged-48, V=52. PHYS_OFFSET
    # 2^52 - 2^30 (512 MiB aligned at 64K under tagged-48), tag_lsb 30, the idmap has bit 51 so
    # msb = 0 and tag = 0: aliases [0, 2^30). 64K at 52 bits: 3 levels, root level 1 (2^42
    # per entry), 1024 entries. Off: runtime 1 + 1 + 2, idmap (root entry 1023) + 2.
    # On: two 512 MiB blocks at level 2: runtime 2, idmap + 2.
    "64K-top-of-2^52": dict(
        banks=[((1 << 52) - G, G)],
        granule=64 * K,
        va_bits=52,
        layout="tagged-48",
        idmap_pa=(1 << 52) - 64 * K,
        common=dict(
            phys_offset=(1 << 52) - G,
            idmap_va_bits=52,
            idmap_extended=False,
            levels=3,
            hyp_va_min=0,
            hyp_va_max=G - 1,
            margin=0xF_FFFF_BFFF_0000,
            idmap_in_window=False,
            overlap=False,
        ),
        off=counts(0, 0, 1, 2, 3, 6, 1024 * 8 + 5 * 64 * K, 1),
        on=counts(0, 0, 1, 2, 1, 4, 1024 * 8 + 3 * 64 * K, 1),
    ),
    # --- The idmap meets a runtime block (docs/model.md section 5, as hyp_map_walker does): the
    # block becomes a new, empty table and the walk goes down, creating 3 - l tables (block at level
    # l). A page stops the walk. All high-only (delta = 2^(V-1) - PHYS_OFFSET, window
    # [2^(V-1), 2^V - 1], in it), margin 0. T(idmap) = levels. Blocks at level 1 exist at 4K
    # only (16K and 64K: KVM_PGTABLE_MIN_BLOCK_LEVEL is 2).
    #
    # 4K, V=48, block at level 1, delta == 0: 4 levels, root L0 (512 entries). One bank
    # [2^47, 2^47 + 1G), PHYS_OFFSET = 2^47 so delta = 0; idmap 2^47 + 2M.
    # On: L0 entry 256 -> 1 L1 table; its entry is a whole aligned 1G block. Runtime 2 tables.
    # The idmap replaces the block: + 1 L2 + 1 L3 table -> 1/1/1/1 = 4 pages; shared 2 + 4 - 4.
    # Off: 1 L1, 1 L2, 512 L3 -> 515; the idmap meets its own page: 515; shared 515 + 4 - 515.
    "4K-L1-block-delta-zero": dict(
        banks=[(1 << 47, 1 * G)],
        granule=4 * K,
        va_bits=48,
        layout="high-only-merged",
        idmap_pa=(1 << 47) + 2 * M,
        common=dict(phys_offset=1 << 47, overlap=False, margin=0, idmap_in_window=True),
        off=counts(0, 1, 1, 1, 512, 515, 512 * 8 + 514 * 4 * K, 4),
        on=counts(0, 1, 1, 1, 1, 4, 512 * 8 + 3 * 4 * K, 2),
    ),
    # 4K, V=48, block at level 1, overlap: banks [1G, 2G) and [2^47, 2^47 + 512M); PHYS_OFFSET
    # 1G, delta = 2^47 - 1G: aliases [2^47, 2^47 + 1G) (PA 1G) and [2^48 - 1G, 2^48 - 512M)
    # (PA 2^47). The idmap 2^47 + 2M lies in bank 0's alias with PA 1G + 2M: overlap.
    # On: bank 0: L0 entry 256 -> L1 table, one 1G block. bank 1: L0 entry 511 -> L1 table,
    # partial 1G -> L2 table, 256 2M blocks. Runtime 1 + 2 + 1 = 4. The idmap replaces bank 0's
    # block: + 1 L2 + 1 L3 -> 0/1/2/2/1 = 6; shared 4 + 4 - 6 = 2.
    # Off: bank 0: L1, L2, 512 L3; bank 1: L1, L2, 256 L3 -> 1 + 2 + 2 + 768 = 773; the idmap
    # meets bank 0's page (another PA) and stops: 773; shared 773 + 4 - 773 = 4.
    "4K-L1-block-overlap": dict(
        banks=[(1 * G, 1 * G), (1 << 47, 512 * M)],
        granule=4 * K,
        va_bits=48,
        layout="high-only-merged",
        idmap_pa=(1 << 47) + 2 * M,
        common=dict(phys_offset=1 * G, overlap=True, margin=0, idmap_in_window=True),
        off=counts(0, 1, 2, 2, 768, 773, 773 * 4 * K, 4),
        on=counts(0, 1, 2, 2, 1, 6, 6 * 4 * K, 2),
    ),
    # 4K, V=39, block at level 2, delta == 0: 3 levels, root L1. Bank [2^38 + 2M, 2^38 + 8M),
    # PHYS_OFFSET = 2^38 (rounded down to 1G), delta 0; idmap 2^38 + 4M + 4K.
    # On: L1 entry 256 is partial -> 1 L2 table; L2 entries 1..3 are 2M blocks. Runtime 2. The
    # idmap replaces block 2: + 1 L3 -> 1/1/1 = 3; shared 2 + 3 - 3 = 2.
    # Off: 1 L2, 3 L3 -> 5; the idmap meets its page: 5; shared 5 + 3 - 5 = 3.
    "4K-L2-block-delta-zero": dict(
        banks=[((1 << 38) + 2 * M, 6 * M)],
        granule=4 * K,
        va_bits=39,
        layout="high-only-merged",
        idmap_pa=(1 << 38) + 4 * M + 4 * K,
        common=dict(phys_offset=1 << 38, overlap=False, margin=0, idmap_in_window=True),
        off=counts(0, 0, 1, 1, 3, 5, 5 * 4 * K, 3),
        on=counts(0, 0, 1, 1, 1, 3, 3 * 4 * K, 2),
    ),
    # 4K, V=39, block at level 2, overlap: banks [2G, 2G + 6M) and [2^38, 2^38 + 8M);
    # PHYS_OFFSET 2G, delta = 2^38 - 2G: aliases [2^38, 2^38 + 6M) (PA 2G) and
    # [2^39 - 2G, 2^39 - 2G + 8M) (PA 2^38). The idmap 2^38 + 2M + 4K is in bank 0's alias.
    # On: 2 L2 tables (L1 entries 256, 510), 3 + 4 2M blocks. Runtime 3. The idmap replaces
    # bank 0's second block: + 1 L3 -> 1/2/1 = 4; shared 3 + 3 - 4 = 2.
    # Off: 2 L2, 3 + 4 L3 -> 10; the idmap meets a page and stops: 10; shared 10 + 3 - 10 = 3.
    "4K-L2-block-overlap": dict(
        banks=[(2 * G, 6 * M), (1 << 38, 8 * M)],
        granule=4 * K,
        va_bits=39,
        layout="high-only-merged",
        idmap_pa=(1 << 38) + 2 * M + 4 * K,
        common=dict(phys_offset=2 * G, overlap=True, margin=0, idmap_in_window=True),
        off=counts(0, 0, 1, 2, 7, 10, 10 * 4 * K, 3),
        on=counts(0, 0, 1, 2, 1, 4, 4 * 4 * K, 2),
    ),
    # 16K, V=47, block at level 2, delta == 0: levels(47) = 43//11 = 3, root L1 with
    # 2^(47-36) = 2048 entries (64G each), L2 entries 32M. Bank [2^46, 2^46 + 64M), PHYS_OFFSET
    # 2^46, delta 0; idmap 2^46 + 32M + 16K.
    # On: L1 entry 1024 -> 1 L2 table, 2 blocks. Runtime 2. The idmap replaces block 1: + 1 L3
    # -> 1/1/1 = 3; table_bytes 2048 * 8 + 2 * 16K; shared 2 + 3 - 3 = 2.
    # Off: 1 L2, 2 L3 (32M each) -> 4; the idmap meets its page; shared 4 + 3 - 4 = 3.
    "16K-L2-block-delta-zero": dict(
        banks=[(1 << 46, 64 * M)],
        granule=16 * K,
        va_bits=47,
        layout="high-only-merged",
        idmap_pa=(1 << 46) + 32 * M + 16 * K,
        common=dict(phys_offset=1 << 46, overlap=False, margin=0, idmap_in_window=True),
        off=counts(0, 0, 1, 1, 2, 4, 2048 * 8 + 3 * 16 * K, 3),
        on=counts(0, 0, 1, 1, 1, 3, 2048 * 8 + 2 * 16 * K, 2),
    ),
    # 16K, V=36, block at level 2, overlap: 2 levels, root L2 (2048 entries of 32M). Banks
    # [2G, 2G + 64M) and [2^35, 2^35 + 64M); PHYS_OFFSET 2G, delta 2^35 - 2G: aliases
    # [2^35, 2^35 + 64M) (PA 2G) and [2^36 - 2G, +64M) (PA 2^35). idmap 2^35 + 32M + 16K lies
    # in bank 0's alias (PA 2G + 32M + 16K): overlap.
    # On: 2 + 2 root blocks, runtime 1 (the root). The idmap replaces a root block: + 1 L3 ->
    # 1/1 = 2, table_bytes 2048 * 8 + 16K; shared 1 + 2 - 2 = 1.
    # Off: 4 L3 tables -> 5; the idmap meets a page: 5; shared 5 + 2 - 5 = 2.
    "16K-L2-block-overlap": dict(
        banks=[(2 * G, 64 * M), (1 << 35, 64 * M)],
        granule=16 * K,
        va_bits=36,
        layout="high-only-merged",
        idmap_pa=(1 << 35) + 32 * M + 16 * K,
        common=dict(phys_offset=2 * G, overlap=True, margin=0, idmap_in_window=True),
        off=counts(0, 0, 0, 1, 4, 5, 2048 * 8 + 4 * 16 * K, 2),
        on=counts(0, 0, 0, 1, 1, 2, 2048 * 8 + 16 * K, 1),
    ),
    # 64K, V=48, block at level 2, delta == 0: levels(48) = 44//13 = 3, root L1 with
    # 2^(48-42) = 64 entries, L2 entries 512M. Bank [2^47, 2^47 + 1G), PHYS_OFFSET 2^47 (1G
    # aligned: high-only), delta 0; idmap 2^47 + 512M + 64K.
    # On: L1 entry 32 -> 1 L2 table, 2 blocks: runtime 2. The idmap replaces block 1: + 1 L3 ->
    # 1/1/1 = 3, table_bytes 64 * 8 + 2 * 64K; shared 2 + 3 - 3 = 2.
    # Off: 1 L2, 2 L3 -> 4; the idmap meets its page; shared 4 + 3 - 4 = 3.
    "64K-L2-block-delta-zero": dict(
        banks=[(1 << 47, 1 * G)],
        granule=64 * K,
        va_bits=48,
        layout="high-only-merged",
        idmap_pa=(1 << 47) + 512 * M + 64 * K,
        common=dict(phys_offset=1 << 47, overlap=False, margin=0, idmap_in_window=True),
        off=counts(0, 0, 1, 1, 2, 4, 64 * 8 + 3 * 64 * K, 3),
        on=counts(0, 0, 1, 1, 1, 3, 64 * 8 + 2 * 64 * K, 2),
    ),
    # 64K, V=42, block at level 2, overlap: 2 levels, root L2 (8192 entries of 512M). Banks
    # [2G, 3G) and [2^41, 2^41 + 1G); PHYS_OFFSET 2G, delta 2^41 - 2G: aliases [2^41, 2^41 + 1G)
    # (PA 2G) and [2^42 - 2G, 2^42 - 1G) (PA 2^41). idmap 2^41 + 512M + 64K is in bank 0's
    # alias (PA 2G + 512M + 64K): overlap.
    # On: 2 + 2 root blocks, runtime 1. The idmap replaces one: + 1 L3 -> 1/1 = 2,
    # table_bytes 8192 * 8 + 64K; shared 1 + 2 - 2 = 1.
    # Off: 4 L3 -> 5, the idmap meets a page: 5; shared 5 + 2 - 5 = 2.
    "64K-L2-block-overlap": dict(
        banks=[(2 * G, 1 * G), (1 << 41, 1 * G)],
        granule=64 * K,
        va_bits=42,
        layout="high-only-merged",
        idmap_pa=(1 << 41) + 512 * M + 64 * K,
        common=dict(phys_offset=2 * G, overlap=True, margin=0, idmap_in_window=True),
        off=counts(0, 0, 0, 1, 4, 5, 8192 * 8 + 4 * 64 * K, 2),
        on=counts(0, 0, 0, 1, 1, 2, 8192 * 8 + 64 * K, 1),
    ),
}


@pytest.mark.parametrize("block_mappings", [False, True], ids=["off", "on"])
@pytest.mark.parametrize("name", list(CASES))
def test_hand_computed(compute, name, block_mappings):
    case = CASES[name]
    row = compute(
        MemoryMap(name, case["banks"]),
        granule=case["granule"],
        va_bits=case["va_bits"],
        layout=case["layout"],
        block_mappings=block_mappings,
        idmap_pa=case["idmap_pa"],
    )
    check(row, case["common"])
    check(row, case["on" if block_mappings else "off"])


# The window halves at 2^(V-1): 4K, V=39, one bank [0x3f_c000_0000, 0x40_4000_0000) across
# 2^38, PHYS_OFFSET 0x3f_c000_0000.
ACROSS_HALF = MemoryMap("across-2^38", [(0x3F_C000_0000, 2 * G)])


def test_merged_idmap_just_below_half(compute):
    # idmap 2^38 - 4K is not above 2^38 - 1: high half, delta = 2^38 - PHYS_OFFSET = 1 GiB,
    # aliases [2^38, 2^38 + 2G). The idmap page ends exactly where they start: touching.
    row = compute(
        ACROSS_HALF,
        granule=4096,
        va_bits=39,
        layout="merged",
        block_mappings=False,
        idmap_pa=(1 << 38) - 4096,
    )
    check(row, dict(hyp_va_min=1 << 38, overlap=False, idmap_in_window=False, margin=0))


def test_merged_idmap_at_half(compute):
    # idmap 2^38 is above 2^38 - 1: low half, delta = -PHYS_OFFSET, aliases [0, 2G).
    row = compute(
        ACROSS_HALF,
        granule=4096,
        va_bits=39,
        layout="merged",
        block_mappings=False,
        idmap_pa=1 << 38,
    )
    check(
        row,
        dict(
            hyp_va_min=0,
            hyp_va_max=(1 << 38) - 1,
            overlap=False,
            idmap_in_window=False,
            margin=(1 << 38) - 2 * G,
        ),
    )


def test_high_only_idmap_at_half_overlaps(compute):
    # high-only keeps the high half: VA 2^38 is the alias of PA 0x3f_c000_0000, not the idmap's.
    # In one tree that would collide; 4.6-4.7 (linux-4.6) kept the idmap in a tree of its own.
    row = compute(
        ACROSS_HALF,
        granule=4096,
        va_bits=39,
        layout="high-only-merged",
        block_mappings=False,
        idmap_pa=1 << 38,
    )
    check(row, dict(overlap=True, idmap_in_window=True, margin=0))
    row = compute(
        ACROSS_HALF, granule=4096, va_bits=39, layout="linux-4.6", block_mappings=False,
        idmap_pa=1 << 38,
    )  # fmt: skip
    check(row, dict(overlap=False, idmap_in_window=True, margin=0, shared_tables=0))


@pytest.mark.parametrize(
    ("idmap_pa", "bits", "extended", "n_levels"),
    [((1 << 39) - 4096, 39, False, 3), (1 << 39, 40, True, 4)],
    ids=["2^V-page", "2^V"],
)
def test_extra_level_at_2_pow_v(compute, idmap_pa, bits, extended, n_levels):
    mm = MemoryMap("across-2^39", [(0x7F_C000_0000, 2 * G)])
    row = compute(
        mm, granule=4096, va_bits=39, layout="merged", block_mappings=True, idmap_pa=idmap_pa
    )
    check(
        row,
        dict(
            idmap_va_bits=bits, idmap_extended=extended, levels=n_levels, extra_levels=n_levels - 3
        ),
    )


def test_idmap_is_aligned_down_to_the_granule(compute):
    mm = MemoryMap("one", [(0x8000_0000, 2 * G)])
    row = compute(
        mm, granule=65536, va_bits=48, layout="tagged", block_mappings=False, idmap_pa=0x8008_1234
    )
    assert row["idmap_pa"] == 0x8008_0000
