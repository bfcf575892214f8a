"""The one schema (sweep.core.columns), the Kconfig tables (sweep.core.kconfig) and ``sweep
columns``."""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import sweep
from sweep.cli import main
from sweep.core import kconfig
from sweep.core.columns import HEX_COLUMNS, RUN_COLUMNS, SCHEMA, TABLE_COLUMNS

G = 1 << 30


def juno_example_1() -> pd.Series:
    """docs/model.md section 7, example 1 with block mappings off."""
    configs = pd.DataFrame(
        [
            dict(
                memory_map="juno",
                granule=4096,
                va_bits=39,
                layout="merged",
                block_mappings=False,
                idmap_pa=0x8008_0000,
            )
        ]
    )
    return sweep.build(configs, {"juno": sweep.MemoryMap("juno", [(0x8000_0000, 2 * G)])})


def test_sweep_columns_lists_every_built_column_with_its_dtype():
    built = juno_example_1()
    result = CliRunner().invoke(main, ["columns"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()[1:]
    # every column of a row, then the columns only every-page rows have (RUN_SCHEMA)
    assert [line.split()[0] for line in lines] == list(built.columns) + list(RUN_COLUMNS)
    assert all(line.endswith("[every-page rows only]") for line in lines[-len(RUN_COLUMNS) :])
    lines = lines[: -len(RUN_COLUMNS)]
    for line in lines:
        name, dtype, section = line.split()[:3]
        assert dtype == str(built[name].dtype), name
        assert section in ("1", "2", "3", "4", "5", "9"), name


def test_sweep_columns_of_one_name_and_a_mistake():
    result = CliRunner().invoke(main, ["columns", "margin"])
    assert result.exit_code == 0
    assert result.output.splitlines()[1].split()[:3] == ["margin", "uint64", "4"]
    result = CliRunner().invoke(main, ["columns", "margn"])
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "sweep: error: columns: no column margn (sweep columns lists them)"
    )


def test_table_columns_add_up_to_table_pages():
    # Example 1, blocks off: 0/1/3/1025 tables at levels 0..3 -> 1029 pages.
    row = juno_example_1().iloc[0]
    counts = {level: int(row[column]) for level, column in TABLE_COLUMNS.items()}
    assert counts == {-1: 0, 0: 0, 1: 1, 2: 3, 3: 1025}
    assert sum(counts.values()) == row["table_pages"] == 1029


def test_hex_columns_are_the_address_like_uint64_columns():
    # Every uint64 column is an address or a byte count read beside addresses.
    assert set(HEX_COLUMNS) == {c.name for c in SCHEMA if c.dtype == "uint64"}
    assert len({c.name for c in SCHEMA}) == len(SCHEMA)


@pytest.mark.parametrize(
    ("bits", "granule", "expected"),
    [
        # Documentation/arch/arm64/memory.rst: 4K 39-bit 3 levels, 48-bit 4, 52-bit (LPA2) 5;
        # 16K 36-bit 2, 47-bit 3, 48-bit 4; 64K 42-bit 2, 48-bit 3, 52-bit 3.
        (39, 4096, 3),
        (48, 4096, 4),
        (52, 4096, 5),
        (36, 16384, 2),
        (47, 16384, 3),
        (48, 16384, 4),
        (42, 65536, 2),
        (48, 65536, 3),
        (52, 65536, 3),
    ],
)
def test_levels_as_the_kernel_documents_them(bits, granule, expected):
    assert kconfig.levels(bits, granule) == expected
    assert kconfig.levels(np.array([bits]), granule).tolist() == [expected]
    assert kconfig.levels(np.array([bits]), np.array([granule])).tolist() == [expected]


def test_level_shift_and_block_level():
    # An L1 entry maps 1 GiB at 4K, an L2 entry 32 MiB at 16K and 512 MiB at 64K.
    assert kconfig.level_shift(1, 4096) == 30
    assert kconfig.level_shift(2, 16384) == 25
    assert kconfig.level_shift(2, 65536) == 29
    assert [kconfig.min_block_level(g) for g in kconfig.GRANULES] == [1, 2, 2]


def test_bit_length_is_python_s_on_every_power_edge():
    rng = random.Random(5)
    values = [0, 1, 2, 3, (1 << 62) - 1, 1 << 62, (1 << 63) - 1]
    values += [(1 << k) + d for k in range(1, 62) for d in (-1, 0, 1)]
    values += [rng.randrange(1 << 63) for _ in range(1000)]
    got = kconfig.bit_length(np.array(values, dtype=np.int64)).tolist()
    assert got == [v.bit_length() for v in values]


def test_granule_names():
    assert [kconfig.granule_name(g) for g in kconfig.GRANULES] == ["4K", "16K", "64K"]
    assert kconfig.GRANULE_LIST == "4K, 16K, 64K"


def test_docs_model_defines_every_column_with_its_dtype_and_section():
    """docs/model.md's tables name each column with the dtype a row has (the schema's) and, in
    section 6's table, with the section that defines it."""
    text = (Path(__file__).parents[1] / "docs" / "model.md").read_text()
    for column in SCHEMA:
        dtype = "category (string)" if column.dtype == "category" else column.dtype
        row = rf"^\| [^|]*`{column.name}`[^|]*\| {re.escape(dtype)} \|"
        assert re.search(row, text, re.M), f"docs/model.md: no table row for {column.name}"
        if column.kind != "input":
            listed = rf"^\| `{column.name}` \| {column.dtype} \| {column.section}\b"
            assert re.search(listed, text, re.M), f"docs/model.md section 6: {column.name}"
