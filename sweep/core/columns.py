"""The row schema, written once: every column's name, dtype, section of the model and meaning.

``docs/model.md`` defines each column; ``sweep columns`` prints this table. The dicts below
(``INPUT_COLUMNS``, ``OUTPUT_COLUMNS``, ``EXTRA_COLUMNS``, ``ROW_COLUMNS``, ``HEX_COLUMNS``,
``TABLE_COLUMNS``) are views of ``SCHEMA`` for the code that needs only names and dtypes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Column(NamedTuple):
    name: str
    dtype: str
    section: int
    """The section of docs/model.md that defines it."""
    meaning: str
    kind: str
    """``input`` (a configuration), ``output`` (the model's, never renamed) or ``extra``."""
    hex: bool = False
    """People read it in hex: an address, or a byte count compared with addresses."""


def _inputs(*columns: tuple) -> list[Column]:
    return [Column(*c[:4], "input", *c[4:]) for c in columns]


def _outputs(*columns: tuple) -> list[Column]:
    return [Column(*c[:4], "output", *c[4:]) for c in columns]


MAPPING_SETS = {
    "all-dram": "all of DRAM, the limit",
    "nvhe-boot": "nVHE at boot",
    "pkvm-boot": "pKVM at boot",
}
"""The ``mappings`` input's values, by code (0, 1, 2), and what each counts in a few words
(docs/model.md sections 5 and 10): all of DRAM is the limit VMs drive nVHE towards and the
worst case pKVM provisions for; the boot sets are what ``init_hyp_mode`` and
``recreate_hyp_mappings`` map."""


SCHEMA: tuple[Column, ...] = (
    *_inputs(
        ("memory_map", "category", 1, "name of the memory map whose DRAM banks the row uses"),
        ("granule", "int32", 1, "translation granule in bytes: 4096, 16384 or 65536"),
        ("va_bits", "int8", 1, "VA size the kernel runs with (VA_BITS, or vabits_actual)"),
        ("layout", "category", 1, "kernel era whose HYP VA layout the row uses: linux-7.0, ..."),
        ("block_mappings", "bool", 1, "whether the HYP table builder may use block leaves"),
        ("idmap_pa", "uint64", 1, "physical address of the HYP idmap page, granule-aligned", True),
        ("tag_random", "uint64", 1, "random tag bits of a tagged layout, raw (else 0)", True),
        (
            "mappings",
            "category",
            1,
            "what the table columns count: all-dram, nvhe-boot, pkvm-boot",
        ),
        ("cpus", "int16", 1, "CPUs a boot set maps stacks and per-CPU regions for (0: all-dram)"),
        ("kernel", "category", 1, "kernel build (release) whose boot set the row counts, or ''"),
    ),
    *_outputs(
        ("phys_offset", "uint64", 2, "PHYS_OFFSET (memstart_addr) after the linear-map clip", True),
        ("clipped_bytes", "uint64", 2, "DRAM bytes the linear map could not cover, dropped", True),
        ("hyp_va_min", "uint64", 3, "lowest VA of the window kept for runtime aliases", True),
        ("hyp_va_max", "uint64", 3, "highest VA of that window", True),
        ("idmap_va_bits", "int8", 2, "VA bits that reach the idmap page's last byte (VA == PA)"),
        ("idmap_extended", "bool", 5, "the idmap needs more VA bits than va_bits"),
        ("levels_runtime", "int8", 5, "levels of a tree of va_bits bits"),
        ("levels_idmap", "int8", 5, "levels of a tree of max(va_bits, idmap_va_bits) bits"),
        ("levels", "int8", 5, "levels of the merged HYP tree (tree_va_bits bits)"),
        ("extra_levels", "int8", 5, "levels - levels_runtime (4.x: above 1, could not run)"),
        ("overlap", "bool", 4, "an idmap VA is also a runtime alias of another PA"),
        ("idmap_in_window", "bool", 4, "hyp_va_min <= idmap_pa <= hyp_va_max (4.8 gives up)"),
        (
            "margin",
            "uint64",
            4,
            "VA gap between the idmap page and the nearest runtime range",
            True,
        ),
        ("tables_lm1", "int64", 5, "tables of level -1 descriptors (4K, 52-bit trees only)"),
        ("tables_l0", "int64", 5, "tables of level 0 descriptors"),
        ("tables_l1", "int64", 5, "tables of level 1 descriptors"),
        ("tables_l2", "int64", 5, "tables of level 2 descriptors"),
        ("tables_l3", "int64", 5, "tables of level 3 descriptors (page tables)"),
        ("table_pages", "int64", 5, "tables of the row's mapping set (mappings), all levels"),
        ("table_bytes", "int64", 5, "memory the tables take: table_pages * granule"),
        (
            "shared_tables",
            "int64",
            5,
            "tables the merge saves: T(runtime) + T(idmap) - table_pages",
        ),
    ),
    Column(
        "hyp_dram_last",
        "uint64",
        3,
        "HYP VA of the last clipped DRAM byte (the end of the kernel's HYP VA range)",
        "extra",
        True,
    ),
    Column(
        "runnable", "bool", 3, "a kernel of the row's era could run this configuration", "extra"
    ),
    Column(
        "unrunnable",
        "category",
        3,
        "why no kernel of the era could run it ('' when runnable; sweep.core.eras.REASONS)",
        "extra",
    ),
    Column(
        "pkvm_reserve_bytes",
        "uint64",
        9,
        "bytes protected mode reserves at boot (kvm_hyp_reserve; 0 before pKVM, 5.13)",
        "extra",
        True,
    ),
    Column(
        "pkvm_reserve_base",
        "uint64",
        9,
        "highest base memblock can give that reservation (a real boot's is a few MiB lower)",
        "extra",
        True,
    ),
)
"""Every column of a result row, in row order."""

INPUT_COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA if c.kind == "input"}
"""Section 1: the inputs of one configuration."""

OUTPUT_COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA if c.kind == "output"}
"""Section 6: the outputs, never renamed."""

EXTRA_COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA if c.kind == "extra"}
"""Added by this project (docs/model.md, "Readings")."""

ROW_COLUMNS: dict[str, str] = {c.name: c.dtype for c in SCHEMA}
"""Every column of a result row, in order."""

HEX_COLUMNS: tuple[str, ...] = tuple(c.name for c in SCHEMA if c.hex)
"""Columns people read in hex: addresses, and byte counts compared with addresses."""

DTYPE_BYTES: dict[str, int] = {
    "category": 4,
    "bool": 1,
    "int8": 1,
    "int32": 4,
    "int64": 8,
    "uint64": 8,
}
"""Bytes of one value of each dtype as Arrow holds it (dictionary indices for ``category``)."""


def row_bytes(columns: Iterable[str]) -> int:
    """Bytes of one row of ``columns`` in memory (:data:`DTYPE_BYTES`; a column not of the
    schema, an answer's, counts as an ``int64``)."""
    return sum(DTYPE_BYTES.get(ROW_COLUMNS.get(c, "int64"), 8) for c in columns)


TABLE_COLUMNS: dict[int, str] = {
    level: f"tables_l{'m1' if level < 0 else level}" for level in (-1, 0, 1, 2, 3)
}
"""Translation level -> the column counting its tables (``-1 -> "tables_lm1"``)."""

RUN_SCHEMA: tuple[Column, ...] = (
    Column(
        "idmap_pa_last", "uint64", 8, "last page of the run (idmap_pa is its first)", "run", True
    ),
    Column("pages", "int64", 8, "pages in the run, each a configuration", "run"),
    Column("margin_last", "uint64", 4, "margin at the run's last page", "run", True),
    Column("clipped_bytes_last", "uint64", 2, "clipped_bytes at the run's last page", "run", True),
    Column("hyp_dram_last_last", "uint64", 3, "hyp_dram_last at the run's last page", "run", True),
)
"""Optional columns, written after ``ROW_COLUMNS`` by ``placement.kind = "every-page"``
(``sweep.model.runs``): a row is a run of ``pages`` consecutive pages from ``idmap_pa`` to
``idmap_pa_last`` whose outputs are equal but for ``margin``, ``clipped_bytes`` and
``hyp_dram_last``, which change by the same amount from page to page, from the row's value to
the ``_last`` one."""

RUN_COLUMNS: dict[str, str] = {c.name: c.dtype for c in RUN_SCHEMA}

RUN_HEX_COLUMNS: tuple[str, ...] = tuple(c.name for c in RUN_SCHEMA if c.hex)
"""The run columns people read in hex (:data:`HEX_COLUMNS` of ``RUN_SCHEMA``)."""
