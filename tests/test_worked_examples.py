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


JUNO = MemoryMap("juno-like", [(0x8000_0000, 2 * G)])


def test_example_7_linux_7_0_moves_the_tag_to_bit_47(compute):
    """docs/model.md 7.7: 4K, V = 39, example 1's board. 6.9 keeps the region bit at V - 1 = 38;
    7.0 at kvm_hyp_va_bits() - 1 = 47. Both trees are 48 bits (root level 0): under 6.9 the
    runtime and the idmap share level-0 entry 0 (1/1/3/1025); under 7.0 the runtime sits in
    entry 256 (2^47 / 2^39), a level-1 table of its own (1/2/3/1025)."""
    expected = {
        "linux-6.9": (0x40_0000_0000, 0x40_7FFF_FFFF, (1, 1, 3, 1025), 1030),
        "linux-7.0": (0x8000_0000_0000, 0x8000_7FFF_FFFF, (1, 2, 3, 1025), 1031),
    }
    for layout, (lo, last, tables, pages) in expected.items():
        row = compute(JUNO, granule=4096, va_bits=39, layout=layout, block_mappings=False,
                      idmap_pa=0x8008_0000)  # fmt: skip
        assert (row["hyp_va_min"], row["hyp_dram_last"]) == (lo, last)
        assert tuple(row[c] for c in COUNT_COLUMNS[:4]) == tables
        assert (row["table_pages"], row["table_bytes"]) == (pages, pages * 4096)
        assert row["levels"] == 4 and row["runnable"]


def test_example_8_64k_alignment_is_512m_from_5_12(compute):
    """docs/model.md 7.8: 0x6000_0000 + 2 GiB at 64K, V = 48. 1 GiB alignment (4.17-5.11) puts
    PHYS_OFFSET at 0x4000_0000, linear offsets 0x2000_0000-0x9fff_ffff, tag_lsb 32; 512 MiB
    (5.12+) at 0x6000_0000, offsets 0-0x7fff_ffff, tag_lsb 31: END 0x8000_7fff_ffff."""
    board = MemoryMap("a", [(0x6000_0000, 2 * G)])
    for layout, phys_offset, last in (
        ("linux-4.17", 0x4000_0000, 0x8000_9FFF_FFFF),
        ("linux-5.12", 0x6000_0000, 0x8000_7FFF_FFFF),
    ):
        row = compute(board, granule=65536, va_bits=48, layout=layout, block_mappings=False,
                      idmap_pa=0x6008_0000)  # fmt: skip
        assert (row["phys_offset"], row["hyp_va_min"], row["hyp_dram_last"]) == (
            phys_offset, 0x8000_0000_0000, last
        )  # fmt: skip


def test_example_9_52_bits_at_64k_before_6_2(compute):
    """docs/model.md 7.9: VA_BITS 52 at 64K runs from 6.2 only; at 4K from 6.9 (LPA2)."""
    board = MemoryMap("a", [(0x6000_0000, 2 * G)])
    want = {
        ("linux-5.12", 65536): "KVM init fails",
        ("linux-6.2", 65536): "",
        ("linux-6.2", 4096): "no kernel of this era runs this VA_BITS",
        ("linux-6.9", 4096): "",
    }
    for (layout, granule), reason in want.items():
        row = compute(board, granule=granule, va_bits=52, layout=layout, block_mappings=False,
                      idmap_pa=0x6008_0000)  # fmt: skip
        assert row["runnable"] == (reason == "")
        assert row["unrunnable"].startswith(reason)


def test_example_10_what_pkvm_reserves(compute):
    """docs/model.md 7.10: one 2 GiB bank at 0x8000_0000, 4K. By hand, per era: 3110, 3630
    and 4142 pages, each aligned up to 2 MiB: 14, 16 and 18 MiB; before pKVM, nothing."""
    for layout, mib in (("linux-4.17", 0), ("linux-5.12", 14), ("linux-6.9", 16),
                        ("linux-7.0", 18)):  # fmt: skip
        row = compute(JUNO, granule=4096, va_bits=48, layout=layout, block_mappings=False,
                      idmap_pa=0x8008_0000)  # fmt: skip
        assert row["pkvm_reserve_bytes"] == mib << 20, layout
