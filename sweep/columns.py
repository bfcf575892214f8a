"""The output schema: every column's name and dtype, as MODEL.md sections 1 and 6 fix them."""

from __future__ import annotations

INPUT_COLUMNS: dict[str, str] = {
    "memory_map": "category",
    "granule": "int32",
    "va_bits": "int8",
    "layout": "category",
    "block_mappings": "bool",
    "idmap_pa": "uint64",
    "tag_random": "uint64",
}
"""Section 1: the inputs of one configuration."""

OUTPUT_COLUMNS: dict[str, str] = {
    "phys_offset": "uint64",
    "clipped_bytes": "uint64",
    "hyp_va_min": "uint64",
    "hyp_va_max": "uint64",
    "idmap_va_bits": "int8",
    "idmap_extended": "bool",
    "levels_runtime": "int8",
    "levels_idmap": "int8",
    "levels": "int8",
    "extra_levels": "int8",
    "overlap": "bool",
    "idmap_in_window": "bool",
    "margin": "uint64",
    "tables_lm1": "int64",
    "tables_l0": "int64",
    "tables_l1": "int64",
    "tables_l2": "int64",
    "tables_l3": "int64",
    "table_pages": "int64",
    "table_bytes": "int64",
    "shared_tables": "int64",
}
"""Section 6: the outputs, never renamed."""

EXTRA_COLUMNS: dict[str, str] = {
    "hyp_dram_last": "uint64",
}
"""Added by this project: the HYP VA of the last clipped DRAM byte (the ``HYP VA range`` end
that a 6.x kernel prints, ``kern_hyp_va(high_memory - 1)``)."""

ROW_COLUMNS: dict[str, str] = {**INPUT_COLUMNS, **OUTPUT_COLUMNS, **EXTRA_COLUMNS}
"""Every column of a result row, in order."""
