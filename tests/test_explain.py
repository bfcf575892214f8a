"""sweep.explain: the ptdump-style tree (scalar reference) and the row (builder) agree."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import HIGH_ONLY_ONE_TREE

from sweep.cli import main
from sweep.core.columns import OUTPUT_COLUMNS, TABLE_COLUMNS
from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap, level_shift
from sweep.explain import explain, render, size_text, tree_lines
from sweep.model.reference import compute_row

G = 1 << 30
JUNO = MemoryMap("juno", [(0x8000_0000, 2 * G)])
SEATTLE = MemoryMap("seattle", [(0x80_0000_0000, 8 * G)])
TWO_BANKS = MemoryMap("two-banks", [(0x8000_0000, 2 * G), (0x40_0000_0000, 2 * G)])
FAR = MemoryMap("far", [(0x8000_0000, 2 * G), (1 << 48, 4 * G)])
LX2160A = MemoryMap(
    "lx2160a",
    [
        (0x8000_0000, 0xFBDF_FFFF - 0x8000_0000 + 1),
        (0x20_8000_0000, 0x23_7FFF_FFFF - 0x20_8000_0000 + 1),
    ],
)

CASES = [
    (JUNO, "4K", 39, "merged", 0x8008_0000, 0),
    (SEATTLE, "4K", 39, "merged", 0x80_0008_0000, 0),
    (TWO_BANKS, "4K", 39, "high-only-merged", 0x40_0008_0000, 0),
    (TWO_BANKS, "4K", 39, "linux-4.6", 0x40_0008_0000, 0),
    (TWO_BANKS, "4K", 39, "merged", 0x40_0008_0000, 0),
    (TWO_BANKS, "16K", 47, "tagged", 0x40_0008_0000, 0x1234_5678_9ABC_DEF0),
    (LX2160A, "4K", 48, "tagged-48", 0x81A2_4000, 0xFFFF_FFFF_FFFF_FFFF),
    (LX2160A, "64K", 42, "tagged", 0x22_0000_0000, 0x5555_5555_5555_5555),
    (FAR, "4K", 52, "tagged", (1 << 48) + 0x8_0000, 0),
    (FAR, "16K", 36, "merged", (1 << 48) + 0x8_0000, 0),
    (FAR, "64K", 52, "high-only-merged", 0x8008_0000, 0),
]
IDS = [f"{m.name}-{g}-{v}-{lay}" for m, g, v, lay, _i, _t in CASES]
LEVEL_COLUMNS = TABLE_COLUMNS


@pytest.fixture(autouse=True)
def high_only_one_tree(add_plugin):
    """4.6's alias in one merged tree (tests/conftest.py), to draw overlaps and split blocks."""
    add_plugin(
        "test-high-only-merged", register_layouts=lambda register: register(HIGH_ONLY_ONE_TREE)
    )


@pytest.mark.parametrize("blocks", [False, True], ids=["blocks-off", "blocks-on"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_explain_row_is_the_builders_and_the_tree_agrees(case, blocks):
    memory_map, granule, va_bits, layout, idmap_pa, tag_random = case
    e = explain(memory_map, granule, va_bits, layout, blocks, idmap_pa, tag_random)
    # The row explain prints is the builder's; the independent scalar reference must agree with
    # it on every output column (docs/model.md section 6), and the printed tree is the reference's.
    plugin = HIGH_ONLY_ONE_TREE if layout == HIGH_ONLY_ONE_TREE.name else None
    reference = compute_row(
        memory_map, granule, va_bits, layout, blocks, idmap_pa, tag_random, plugin
    )
    for column in OUTPUT_COLUMNS:
        assert e.row[column] == reference[column], column
    counts = e.tables_per_level()
    for level, column in LEVEL_COLUMNS.items():
        assert counts[level] == reference[column] == e.row[column], column
    text = render(e)
    assert text.rstrip().endswith("as the builder's row says")
    # Each level's header counts its tables (one tree; linux-4.6 prints two, each its own).
    for level, n in counts.items():
        if n and e.boot is None:
            assert f"=== L{level}: {n} table{'s' if n != 1 else ''} ===" in text


@pytest.mark.parametrize("blocks", [False, True], ids=["blocks-off", "blocks-on"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_every_table_is_covered_by_its_runs(case, blocks):
    """Runs tile each printed table's VA range exactly, and leaves cover every mapping once."""
    memory_map, granule, va_bits, layout, idmap_pa, tag_random = case
    e = explain(memory_map, granule, va_bits, layout, blocks, idmap_pa, tag_random)
    header = re.compile(r"---\[ .* 0x([0-9a-f]{16})-0x([0-9a-f]{16}) \]---")
    run = re.compile(r"0x([0-9a-f]{16})-0x([0-9a-f]{16}) +\d+[KMGTPE] L(-?\d) +(\S+)")
    cursor = expected_end = None
    leaf_bytes = 0
    for line in tree_lines(e) + ["---[ end 0x0000000000000000-0x0000000000000000 ]---"]:
        if m := header.match(line):
            assert expected_end is None or expected_end == cursor, line
            cursor, expected_end = int(m.group(1), 16), int(m.group(2), 16)
        elif m := run.match(line):
            lo, hi, kind = int(m.group(1), 16), int(m.group(2), 16), m.group(4)
            assert lo == cursor < hi <= expected_end, line
            cursor = hi
            if kind in ("BLK", "PAGE"):
                leaf_bytes += hi - lo
    # Every runtime byte sits under exactly one leaf; the idmap page adds its own page only when
    # no runtime page already covers its VA (a page stops its walk, docs/model.md 5); a runtime
    # block it meets is replaced by a table: that block's bytes are no longer mapped.
    runtime = e.mappings[:-1]
    covered = any(m.va <= e.config.idmap_pa < m.va_end for m in runtime)
    split = sum(1 << level_shift(level, e.config.granule) for level, _i in e.tree.split)
    expected = sum(m.va_end - m.va for m in runtime) - split
    expected += e.config.granule if split or not covered else 0
    assert leaf_bytes == expected


def test_juno_blocks_on_prints_model_example_1():
    """docs/model.md 7.1, blocks on: two 1 GiB blocks for the runtime alias at 0x40_0000_0000, and
    the idmap page 0x8008_0000 through one L2 and one L3 table: 0/1/1/1."""
    lines = tree_lines(explain(JUNO, "4K", 39, "merged", True, 0x8008_0000))
    assert lines == [
        "=== L1: 1 table ===",
        "---[ root table 0x0000000000000000-0x0000008000000000 ]---",
        "0x0000000000000000-0x0000000080000000         2G L1  invalid",
        "0x0000000080000000-0x00000000c0000000         1G L1  TABLE  1 x L2 table: "
        "idmap page (VA == PA)",
        "0x00000000c0000000-0x0000004000000000       253G L1  invalid",
        "0x0000004000000000-0x0000004080000000         2G L1  BLK    PA 0x80000000: "
        "runtime bank 0 (PA 0x80000000-0xffffffff)",
        "0x0000004080000000-0x0000008000000000       254G L1  invalid",
        "=== L2: 1 table ===",
        "---[ L2 table 0x0000000080000000-0x00000000c0000000 ]---",
        "0x0000000080000000-0x0000000080200000         2M L2  TABLE  1 x L3 table: "
        "idmap page (VA == PA)",
        "0x0000000080200000-0x00000000c0000000      1022M L2  invalid",
        "=== L3: 1 table ===",
        "---[ L3 table 0x0000000080000000-0x0000000080200000 ]---",
        "0x0000000080000000-0x0000000080080000       512K L3  invalid",
        "0x0000000080080000-0x0000000080081000         4K L3  PAGE   PA 0x80080000: "
        "idmap page (VA == PA)",
        "0x0000000080081000-0x0000000080200000      1532K L3  invalid",
    ]


def test_overlap_is_shown_on_the_leaf():
    """docs/model.md 7.3 high-only: the idmap VA is a page of bank 0 (PA 0x8008_0000): overlap."""
    text = "\n".join(
        tree_lines(explain(TWO_BANKS, "4K", 39, "high-only-merged", False, 0x40_0008_0000))
    )
    assert (
        "0x0000004000080000-0x0000004000081000         4K L3  PAGE   PA 0x80080000: "
        "runtime bank 0 (PA 0x80000000-0xffffffff); also holds the idmap page (VA == PA) "
        "(OVERLAP)"
    ) in text
    # 1024 L3 tables of bank 1 are alike: printed once, as ptdump collapses a run.
    assert "---[ 1024 alike L3 tables 0x0000007f80000000-0x0000008000000000 ]---" in text


def test_delta_zero_is_not_an_overlap():
    """docs/model.md 7.4: PHYS_OFFSET = 2^38 under high-only maps the idmap page to itself."""
    one = MemoryMap("one", [(0x40_0000_0000, 2 * G)])
    text = "\n".join(tree_lines(explain(one, "4K", 39, "high-only-merged", False, 0x40_0008_0000)))
    assert "PAGE   PA 0x4000080000: runtime bank 0" in text
    assert "(same PA)" in text and "OVERLAP" not in text
    # Blocks on: the idmap meets the block of its own PA and still replaces it (7.4).
    text = "\n".join(tree_lines(explain(one, "4K", 39, "high-only-merged", True, 0x40_0008_0000)))
    assert "TABLE  1 x L2 table: idmap page (VA == PA); replaces the BLK of runtime bank 0" in text


def test_a_block_met_by_the_idmap_is_drawn_replaced_by_a_table():
    """docs/model.md 7.3 high-only, blocks on: the idmap VA 0x40_0008_0000 lies in bank 0's 1 GiB
    block at L1; the kernel replaces it with an empty table and walks down: 0/1/1/1."""
    lines = tree_lines(explain(TWO_BANKS, "4K", 39, "high-only-merged", True, 0x40_0008_0000))
    text = "\n".join(lines)
    assert (
        "0x0000004000000000-0x0000004040000000         1G L1  TABLE  1 x L2 table: idmap page "
        "(VA == PA); replaces the BLK of runtime bank 0 (PA 0x80000000-0xffffffff), whose other "
        "pages are no longer mapped"
    ) in text
    # The rest of bank 0 (its second GiB) is still a block.
    assert (
        "0x0000004040000000-0x0000004080000000         1G L1  BLK    PA 0xc0000000: "
        "runtime bank 0 (PA 0x80000000-0xffffffff)"
    ) in text
    assert "=== L2: 1 table ===" in text and "=== L3: 1 table ===" in text
    # Below the replaced block only the idmap's page is mapped, with its own PA.
    assert (
        "0x0000004000080000-0x0000004000081000         4K L3  PAGE   PA 0x4000080000: "
        "idmap page (VA == PA)"
    ) in text
    assert "0x0000004000000000-0x0000004000200000         2M L2  TABLE  1 x L3 table: " in text


def test_size_text_is_ptdumps():
    assert size_text(4096) == "        4K"
    assert size_text(2 << 20) == "        2M"
    assert size_text(1532 << 10) == "     1532K"
    assert size_text(1 << 47) == "      128T"
    assert level_shift(1, 4096) == 30


def test_errors():
    with pytest.raises(ValidationError, match="not a layout"):
        explain(JUNO, "4K", 39, "no-such-layout", False, 0x8008_0000)
    with pytest.raises(ValidationError, match="outside every 4K-trimmed bank"):
        explain(JUNO, "4K", 39, "merged", False, 0x1_0000_0000)
    with pytest.raises(ValidationError, match="granule"):
        explain(JUNO, "8K", 39, "merged", False, 0x8008_0000)


def test_cli_explain_reads_a_memory_map_file(tmp_path):
    toml = tmp_path / "board.toml"
    toml.write_text('name = "board"\n[[banks]]\nbase = 0x8000_0000\nsize = "2G"\n')
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "explain",
            "--map",
            str(toml),
            "--granule",
            "4K",
            "--va-bits",
            "39",
            "--layout",
            "merged",
            "--blocks",
            "--idmap",
            "0x8008_0000",
        ],
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"table_bytes +12288", result.output)
    assert "agrees: the tree above has 3 tables" in result.output
    bad = runner.invoke(
        main,
        [
            "explain",
            "--map",
            str(tmp_path / "missing.toml"),
            "--granule",
            "4K",
            "--va-bits",
            "39",
            "--layout",
            "merged",
            "--idmap",
            "0x8008_0000",
        ],
    )
    assert bad.exit_code == 2
    assert "missing.toml" in bad.output and "--map: " in bad.output
    assert "Traceback" not in bad.output


def test_cli_explain_built_in_board():
    """The built-in Juno (2 GiB - 16 MiB at 2 GiB, 6 GiB at 34 GiB), docs/model.md 7.1's layout."""
    result = CliRunner().invoke(
        main,
        [
            "explain",
            "--map",
            "juno",
            "--granule",
            "4K",
            "--va-bits",
            "39",
            "--layout",
            "merged",
            "--idmap",
            "0x8008_0000",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "runtime bank 1 (PA 0x880000000-0x9ffffffff)" in result.output
    assert "agrees: the tree above has" in result.output


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_built_in_layouts_through_the_plugin_path(case):
    """The plugin path (a LayoutBatch of one row) gives what the reference's formulas give."""
    from sweep.model.reference import prepare
    from sweep.plan.plugins import get_layouts

    memory_map, granule, va_bits, layout, idmap_pa, tag_random = case
    for name in ("linux-4.6", "linux-4.8", "linux-4.17", "linux-6.9", "linux-7.0"):
        args = (memory_map, granule, va_bits, name, False, idmap_pa, tag_random)
        assert prepare(*args, layout_plugin=get_layouts()[name]) == prepare(*args)


class LowAlways:
    """A test layout: always the low half [0, 2^(V-1)), aliases p - PHYS_OFFSET."""

    name = "test-low-always"
    source = "tests/test_explain.py (not a kernel's)"
    description = "low half, always"

    def memstart_align(self, granule):
        return 1 << 30

    def compute(self, batch):
        from sweep.model.layout import LayoutResult

        n = len(batch.idmap_pa)
        half = 1 << (batch.va_bits - 1)
        return LayoutResult(
            delta=-batch.phys_offset * np.ones(n, dtype=np.int64),
            hyp_va_min=np.zeros(n, dtype=np.int64),
            hyp_va_max=np.full(n, half - 1, dtype=np.int64),
            tree_va_bits=np.maximum(batch.idmap_va_bits, batch.va_bits),
        )


@pytest.fixture
def low_always(add_plugin):
    add_plugin("test-explain-layouts", register_layouts=lambda register: register(LowAlways()))


@pytest.mark.parametrize("blocks", [False, True], ids=["blocks-off", "blocks-on"])
def test_a_plugin_layout_is_explained(low_always, blocks):
    """docs/model.md 7.3: with the kernel in the high bank, merged takes the low half, so a layout
    that always does must draw the same tree; its row is the builder's."""
    mine = explain(TWO_BANKS, "4K", 39, "test-low-always", blocks, 0x40_0008_0000)
    merged = explain(TWO_BANKS, "4K", 39, "merged", blocks, 0x40_0008_0000)
    assert tree_lines(mine) == tree_lines(merged)
    reference = compute_row(TWO_BANKS, "4K", 39, "merged", blocks, 0x40_0008_0000)
    for column in OUTPUT_COLUMNS:
        assert mine.row[column] == reference[column], column
    assert render(mine).rstrip().endswith("as the builder's row says")
    with pytest.raises(ValidationError, match="not a layout"):
        explain(TWO_BANKS, "4K", 39, "no-such-layout", blocks, 0x40_0008_0000)


def test_linux_4_6_draws_both_trees():
    """docs/model.md 7.3 under linux-4.6: hyp_pgd holds the runtime (and the trampoline on the
    last alias page, adding nothing), boot_hyp_pgd the idmap and the trampoline: 2058 tables."""
    e = explain(TWO_BANKS, "4K", 39, "linux-4.6", False, 0x40_0008_0000)
    text = render(e)
    assert "hyp_pgd (runtime tree):" in text and "boot_hyp_pgd (idmap tree):" in text
    assert sum(e.tables_per_level().values()) == 2058 == e.row["table_pages"]
    assert "OVERLAP" in text  # the trampoline shares its VA with bank 1's last page in hyp_pgd
    assert e.row["overlap"] is False or e.row["overlap"] == 0
