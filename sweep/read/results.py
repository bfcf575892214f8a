"""Reading a sweep's results back: ``load`` for a DataFrame, the named queries, and the sweep's
own record (status, failed and missing units).

A result directory holds the store's part files (``granule-*/va_bits-*/part-*.parquet``, see
:mod:`sweep.store.parts`) and ``_sweep.json``. Everything is read through :mod:`sweep.read.engine`
(DuckDB): the named queries (:mod:`sweep.read.queries`, re-exported here) aggregate there, and
``load`` is for rows that fit in memory: it warns, with the estimated size, above
``LOAD_WARN_BYTES``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from sweep.core.columns import HEX_COLUMNS as SCHEMA_HEX_COLUMNS
from sweep.core.columns import ROW_COLUMNS, RUN_HEX_COLUMNS, row_bytes
from sweep.core.env import env_bytes
from sweep.core.errors import ValidationError
from sweep.core.memmap import granule_name, parse_address, parse_granule
from sweep.core.sizes import human_size
from sweep.read.engine import Results, ResultsWarning  # noqa: F401 (re-exported)
from sweep.read.queries import (  # noqa: F401 - the named queries are part of this module's API
    BOARD_BYTES,
    QUERIES,
    WORST_CASE_COLUMNS,
    boards,
    config_label,
    explain_command,
    extra_levels,
    level_counts,
    margin_distribution,
    overlap_matrix,
    overlaps,
    overlaps_by_config,
    size_label,
    table_bytes_by_board,
    table_bytes_matrices,
    table_size,
    unrunnable,
    unrunnable_4x,
    worst_cases,
    worst_configurations,
)
from sweep.store.parts import Store
from sweep.store.record import incomplete, read_meta

LOAD_WARN_BYTES = 2 << 30
"""``load`` warns above this many bytes unless ``SWEEP_LOAD_WARN_BYTES`` says otherwise."""
"""``load`` warns before building a DataFrame larger than this (the named queries do not)."""

CATEGORY_COLUMNS = tuple(c for c, t in ROW_COLUMNS.items() if t == "category")

ANSWER_HEX_COLUMNS = ("lowest_idmap_pa", "idmap_from", "idmap_to", "min_margin")
"""The named queries' own columns (not the schema's) that hold addresses and margins."""

HEX_COLUMNS = (*SCHEMA_HEX_COLUMNS, *RUN_HEX_COLUMNS, *ANSWER_HEX_COLUMNS)
"""Columns people read in hex: the schema's (rows and runs), and those of the answers."""

SIZE_COLUMNS = (
    "table_bytes",
    "min_bytes",
    "mean_bytes",
    "max_bytes",
    "max_table_bytes",
    *BOARD_BYTES,
)
"""Columns people read as sizes (KiB, MiB, GiB)."""


def metadata(directory: str | Path) -> dict:
    """The sweep's own record (``_sweep.json``), or ``{}`` when the run wrote none."""
    return read_meta(str(directory))


def problems(directory: str | Path, parts: Iterable[str] | None = None) -> list[str]:
    """What is wrong with a sweep's results, one line each: a run that did not finish, failed
    units and missing units, named (an empty list for a complete sweep). ``parts`` are the
    parts read (:attr:`Results.parts`: those the manifest vouches for); default: all on disk."""
    meta = metadata(directory)
    if parts is None:
        parts = Store(str(directory)).parts()
    return incomplete(meta, set(parts), unknown_ok=True)


def warn_if_incomplete(directory: str | Path, parts: Iterable[str] | None = None) -> list[str]:
    lines = problems(directory, parts)
    for line in lines:
        warnings.warn(f"results {str(directory)!r}: {line}", ResultsWarning, stacklevel=3)
    return lines


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with the row dtypes: names as categories (sorted), exact integer widths."""
    columns = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        if ROW_COLUMNS.get(name) == "category" and not pa.types.is_dictionary(column.type):
            column = column.dictionary_encode()
        columns[name] = column
    frame = pa.table(columns).to_pandas() if columns else pd.DataFrame()
    for column in frame.columns:
        dtype = ROW_COLUMNS.get(column)
        if dtype == "category":
            values = frame[column].astype("category").cat.remove_unused_categories()
            categories = sorted(str(c) for c in values.cat.categories)
            frame[column] = values.cat.rename_categories(str).cat.reorder_categories(categories)
        elif dtype is not None and str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def load(
    directory: str | Path,
    columns: Sequence[str] | None = None,
    warn_above: int | None = None,
    strict: bool | None = None,
    **filters: object,
) -> pd.DataFrame:
    """Rows of a result directory as a DataFrame, e.g. ``load(d, granule="4K", layout="merged")``.

    ``filters`` are pushed down (a ``granule``/``va_bits`` filter opens only those folders); a
    list of values means any of them, and a value no row has is an error naming near ones.
    ``columns`` limits what is read. Above ``warn_above`` bytes (``LOAD_WARN_BYTES``) it warns
    with the estimated size first: the named queries answer without loading rows. Only the
    parts the manifest vouches for are read (a warning names each one left out; ``strict``:
    an error instead).
    """
    data = Results(directory, strict=strict, **filters)
    try:
        warn_if_incomplete(directory, data.parts)
        if columns is not None:
            unknown = [c for c in columns if c not in data.columns]
            if unknown:
                raise ValidationError(
                    f"columns {unknown}: not columns of the results in {directory}"
                )
            columns = list(columns)
        else:
            columns = [c for c in ROW_COLUMNS if c in data.columns]
            columns += [c for c in data.columns if c not in ROW_COLUMNS]
        rows = data._rows("SELECT count(*) FROM results")[0][0]
        size = rows * row_bytes(columns)
        limit = (
            env_bytes("SWEEP_LOAD_WARN_BYTES", LOAD_WARN_BYTES)
            if warn_above is None
            else warn_above
        )
        if size > limit:
            warnings.warn(
                f"results.load: {rows:,} rows x {len(columns)} columns is about "
                f"{human_size(size)} in memory; the named queries (sweep.read.results.QUERIES) "
                "aggregate without loading, or pass columns= and filters",
                ResultsWarning,
                stacklevel=2,
            )
        return to_pandas(data.arrow(f"SELECT {', '.join(columns)} FROM results"))
    finally:
        data.close()


def partitions(directory: str | Path) -> list[tuple[int, int]]:
    """The ``(granule, va_bits)`` folders present, sorted."""
    return Results(directory).partitions()


def _typed(column: str, text: str) -> object:
    dtype = ROW_COLUMNS.get(column)
    if dtype == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "on", "off"):
            raise ValidationError(f"filter {column}={text!r}: expected true or false")
        return lowered in ("true", "1", "on")
    if column == "granule":
        return parse_granule(text)
    if column in SCHEMA_HEX_COLUMNS:
        return parse_address(text, f"filter {column}")
    if dtype is not None and dtype != "category":
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            hint = " (an address in hex is written 0x...)" if re.fullmatch(r"\w+", text) else ""
            raise ValidationError(f"filter {column}={text!r}: expected an integer{hint}") from None
    return text


def parse_filters(items: Iterable[str]) -> dict[str, object]:
    """``["granule=4K,16K", "layout=merged"]`` (the command line's form) as ``load`` filters."""
    filters: dict[str, object] = {}
    for item in items:
        column, sep, value = item.partition("=")
        if not sep or not column:
            raise ValidationError(f"filter {item!r}: expected column=value or column=v1,v2")
        values = [_typed(column, v) for v in value.split(",")]
        filters[column] = values if len(values) > 1 else values[0]
    return filters


def for_people(frame: pd.DataFrame, raw: bool = False) -> pd.DataFrame:
    """A copy with addresses in hex, granules as ``4K`` and, unless ``raw``, sizes with units."""
    shown = frame.copy()
    for column in shown.columns:
        if column in HEX_COLUMNS:
            shown[column] = _each(lambda v: f"{int(v):#x}", shown[column])
        elif column == "granule":
            shown[column] = _each(lambda v: granule_name(int(v)), shown[column])
        elif column in SIZE_COLUMNS and not raw:
            shown[column] = _each(human_size, shown[column])
    return shown


def _each(show, values: pd.Series) -> list[str]:
    """``show(v)`` for every value; ``-`` where there is none (a board with no row of that
    kind: ``boards``' largest tables with blocks, when only blocks off were swept)."""
    return ["-" if pd.isna(v) else show(v) for v in values]
