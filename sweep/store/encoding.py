"""How a part's rows and its summary become Parquet bytes: encodings, compression, statistics.

Measured against pyarrow's defaults on the same unit tables by ``bench/bench_driver.py --only
writer``; the files they make are kept by :mod:`sweep.store.parts`.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core.columns import ROW_COLUMNS, row_bytes

ROW_GROUP_ROWS = 1_000_000
"""At most this many rows per row group (Parquet readers do best with 100k to 1M)."""
WRITE_BATCH_ROWS = 1 << 16
"""Rows pyarrow's Parquet writer encodes at a time: its own default, 1,024, spends a tenth of
a part's write on the work it does once a batch (``bench/bench_driver.py --only writer``)."""
COMPRESSION = "zstd"
COMPRESSION_LEVEL = -1
"""zstd's fastest levels are negative: -1 against the default 1 halves the time of the random
``tag_random`` column and writes 1% more bytes (``bench/bench_driver.py --only writer``)."""
MEMORY_BYTES_PER_ROW = row_bytes(ROW_COLUMNS)
"""Bytes of one row as Arrow holds it (dictionary indices for the string columns)."""
DISK_BYTES_PER_ROW = 10
"""Bytes of one row in a part file, measured on a stride sweep with random tags
(``bench/bench_driver.py`` prints it; under 1 with ``tag.seed = 0``): most columns are constant
or smooth along a unit, ``tag_random`` is not."""
DISK_BYTES_PER_PART = 16 << 10
"""A part file's own overhead (footer, schema, statistics) and its summary file's
(``sweep.store.summary``), which dominate small units."""


DICTIONARY_COLUMNS = tuple(c for c, dtype in ROW_COLUMNS.items() if dtype == "category")
STATISTICS_COLUMNS = ("granule", "va_bits", "block_mappings", "idmap_pa")
"""The columns whose row groups carry min/max statistics; filters on others still work, reading
every row group. ``granule`` and ``va_bits`` are one value per part, so a pandas/pyarrow filter
on them skips whole files. The name columns (``memory_map``, ``layout``) have none: pyarrow
computes a dictionary column's statistics row by row (15 ns a row each, a tenth of a part's
write); a filter on a name reads that column's dictionary-coded pages (under a byte a row),
and the named queries answer it from the part summaries (``sweep.store.summary``)."""


def writer_options(schema: pa.Schema) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` keywords for a part (``bench/bench_driver.py`` measures
    them against pyarrow's defaults on the same tables).

    A stride unit is mostly constant or smooth integer columns and one random one
    (``tag_random``). Dictionary encoding only where strings repeat (``memory_map``,
    ``layout``); ``BYTE_STREAM_SPLIT`` for every other 64-bit integer, which lays the bytes of a
    column out plane by plane so that zstd finds the constant high bytes (measured on a 500k-row
    unit: 9.5 bytes a row with random tags against 17.4 with the defaults and 11.8 with
    ``DELTA_BINARY_PACKED``, 0.24 without tags against 6.0, and 2-3x faster writes); narrower
    integers (Parquet stores them in 32 bits) plain, which zstd takes 20% faster; booleans keep
    RLE; min/max statistics only where they are cheap and filters use them.
    ``BYTE_STREAM_SPLIT`` for integers needs pyarrow 16 (``pyproject.toml`` asks 17, whose
    ``add_key_value_metadata`` wrote older parts' footer summaries)."""
    integers = {
        f.name: "BYTE_STREAM_SPLIT" if f.type.bit_width == 64 else "PLAIN"
        for f in schema
        if f.name not in DICTIONARY_COLUMNS and pa.types.is_integer(f.type)
    }
    return {
        "compression": COMPRESSION,
        "compression_level": COMPRESSION_LEVEL,
        "row_group_size": ROW_GROUP_ROWS,
        "write_batch_size": WRITE_BATCH_ROWS,
        "use_dictionary": [c for c in DICTIONARY_COLUMNS if c in schema.names],
        "column_encoding": integers,
        "write_statistics": [c for c in STATISTICS_COLUMNS if c in schema.names],
    }


def part_bytes(table: pa.Table) -> pa.Buffer:
    """A part file's bytes: ``table`` under :func:`writer_options`."""
    writer = PartWriter()
    writer.write(table)
    return writer.finish()


class PartWriter:
    """A part file's bytes, written a table of rows at a time (each its own row groups, of at
    most ``ROW_GROUP_ROWS``), so that a unit streamed in chunks is never held whole: the bytes
    stay in memory, about a tenth of the rows' Arrow size (``DISK_BYTES_PER_ROW``)."""

    def __init__(self) -> None:
        self.sink = pa.BufferOutputStream()
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0

    def write(self, table: pa.Table) -> None:
        """Append ``table``'s rows (the schema of the first table written)."""
        table = non_nullable(table)
        if self.writer is None:
            options = writer_options(table.schema)
            self.row_group_size = options.pop("row_group_size")
            self.writer = pq.ParquetWriter(self.sink, table.schema, **options)
        self.writer.write_table(table, row_group_size=self.row_group_size)
        self.rows += table.num_rows

    def finish(self) -> pa.Buffer:
        """The file's bytes (its footer written)."""
        if self.writer is None:
            raise ValueError("a part needs at least one table of rows")
        self.writer.close()
        return self.sink.getvalue()


SUMMARY_SPLIT = ("rows", "records", "min_table_bytes", "max_table_bytes", "sum_table_bytes")
"""The summary columns written ``BYTE_STREAM_SPLIT``: counts and table sizes, whose high bytes
are zero or alike, which zstd then finds. On the summaries of ``bench/bench_driver.py``'s 2,000
random boards (``write_many_maps``, ~30,000 rows a unit) plain, they were two thirds of a file's
bytes and 40% of its writing; split, a seventh of those bytes. The rest writes faster plain."""


def summary_bytes(summary: pa.Table) -> pa.Buffer:
    """A part summary's file (:mod:`sweep.store.summary`): one row group (DuckDB reads the
    files of a query in parallel), names dictionary-coded, ``SUMMARY_SPLIT`` split, the part's
    zstd level."""
    sink = pa.BufferOutputStream()
    strings = [f.name for f in summary.schema if pa.types.is_string(f.type)]
    pq.write_table(
        non_nullable(summary),
        sink,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        row_group_size=max(summary.num_rows, 1),
        use_dictionary=strings,
        column_encoding={
            c: "BYTE_STREAM_SPLIT" for c in SUMMARY_SPLIT if c in summary.schema.names
        },
        write_statistics=False,
    )
    return sink.getvalue()


def non_nullable(table: pa.Table) -> pa.Table:
    """The same columns under a schema that says no value is null (none is), so that Parquet
    writes no definition levels."""
    if any(column.null_count for column in table.columns):
        return table
    schema = pa.schema(
        [f.with_nullable(False) for f in table.schema], metadata=table.schema.metadata
    )
    return pa.Table.from_arrays(table.columns, schema=schema)
