"""docs/model.md section 7: every worked example, column by column, in reference and builder."""

from __future__ import annotations

import pytest

from sweep.core.memmap import MemoryMap

G = 1 << 30

# (name, banks, idmap_pa, layout, expected common columns, off counts, on counts)
# counts: (tables_l0, tables_l1, tables_l2, tables_l3, table_pages, table_bytes, shared_tables)
EXAMPLES = [
    (
        "1-juno-merged",
        [(0x8000_0000, 2 * G)],
        0x8008_0000,
        "merged",
        dict(
            phys_offset=0x8000_0000,
            hyp_va_min=0x40_0000_0000,
            hyp_va_max=0x7F_FFFF_FFFF,
            idmap_va_bits=32,
            levels=3,
            idmap_extended=False,
            extra_levels=0,
            overlap=False,
            idmap_in_window=False,
            margin=0x3F_7FF7_F000,
            clipped_bytes=0,
        ),
        (0, 1, 3, 1025, 1029, 4_214_784, 1),
        (0, 1, 1, 1, 3, 12_288, 1),
    ),
    (
        "2-seattle-merged",
        [(0x80_0000_0000, 8 * G)],
        0x80_0008_0000,
        "merged",
        dict(
            phys_offset=0x80_0000_0000,
            hyp_va_min=0,
            hyp_va_max=0x3F_FFFF_FFFF,
            idmap_va_bits=40,
            idmap_extended=True,
            levels=4,
            levels_runtime=3,
            levels_idmap=4,
            extra_levels=1,
            overlap=False,
            idmap_in_window=False,
            margin=0x7E_0008_0000,
        ),
        (1, 2, 9, 4097, 4109, 16_830_464, 1),  # every table a 4 KiB page, the 2-entry root too
        (1, 2, 1, 1, 5, 20_480, 1),
    ),
    (
        "3-two-banks-linux-4.6",
        [(0x8000_0000, 2 * G), (0x40_0000_0000, 2 * G)],
        0x40_0008_0000,
        "linux-4.6",
        # Two trees: the idmap is in boot_hyp_pgd, so its VA on a runtime alias is no collision.
        dict(phys_offset=0x8000_0000, overlap=False, idmap_in_window=True, margin=0, levels=3),
        # hyp_pgd: 1 + 4 + 2048 (the trampoline's page is the last alias's: nothing added);
        # boot_hyp_pgd: root, 2 level-2 tables (entries 256, 511), 2 page tables.
        (0, 2, 6, 2050, 2058, 8_429_568, 0),
        # On: four 1 GiB blocks; the trampoline splits entry 511's (1 + 1 + 1), boot tree 5.
        (0, 2, 3, 3, 8, 32_768, 0),
    ),
    (
        "3-two-banks-merged",
        [(0x8000_0000, 2 * G), (0x40_0000_0000, 2 * G)],
        0x40_0008_0000,
        "merged",
        dict(
            phys_offset=0x8000_0000,
            hyp_va_min=0,
            hyp_va_max=0x3F_FFFF_FFFF,
            overlap=False,
            idmap_in_window=False,
            margin=0x8_0000,
        ),
        (0, 1, 5, 2049, 2055, 8_417_280, 1),
        (0, 1, 1, 1, 3, 12_288, 1),
    ),
    (
        "4-delta-zero-linux-4.6",
        [(0x40_0000_0000, 2 * G)],
        0x40_0008_0000,
        "linux-4.6",
        dict(phys_offset=1 << 38, overlap=False, idmap_in_window=True, margin=0),
        # hyp_pgd: 1 + 2 + 1024, and the trampoline (entry 511) 1 + 1; boot_hyp_pgd: 1 + 2 + 2.
        (0, 2, 5, 1027, 1034, 4_235_264, 0),
        # On: two 1 GiB blocks, the trampoline's path 1 + 1; boot_hyp_pgd 5.
        (0, 2, 3, 3, 8, 32_768, 0),
    ),
]

COUNT_COLUMNS = (
    "tables_l0",
    "tables_l1",
    "tables_l2",
    "tables_l3",
    "table_pages",
    "table_bytes",
    "shared_tables",
)


@pytest.mark.parametrize("block_mappings", [False, True], ids=["blocks-off", "blocks-on"])
@pytest.mark.parametrize("example", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_worked_example(compute, example, block_mappings):
    name, banks, idmap_pa, layout, common, off, on = example
    row = compute(
        MemoryMap(name, banks),
        granule=4096,
        va_bits=39,
        layout=layout,
        block_mappings=block_mappings,
        idmap_pa=idmap_pa,
    )
    for column, value in common.items():
        assert row[column] == value, column
    counts = on if block_mappings else off
    assert tuple(row[c] for c in COUNT_COLUMNS) == counts
    assert row["tables_lm1"] == 0


def test_example_5_lx2160a_tagged(compute):
    """NXP LX2160A: tag_lsb = 38 = V - 1, so no random bits even with tag_random set."""
    lx2160a = MemoryMap(
        "lx2160a",
        [
            (0x8000_0000, 0xFBDF_FFFF - 0x8000_0000 + 1),
            (0x20_8000_0000, 0x23_7FFF_FFFF - 0x20_8000_0000 + 1),
        ],
    )
    for tag_random in (0, (1 << 64) - 1):
        row = compute(
            lx2160a,
            granule=4096,
            va_bits=39,
            layout="tagged",
            block_mappings=False,
            idmap_pa=0x81A2_4000,
            tag_random=tag_random,
        )
        assert row["hyp_va_min"] == 0x40_0000_0000
        assert row["hyp_dram_last"] == 0x62_FFFF_FFFF
        assert row["overlap"] is False or row["overlap"] == 0
