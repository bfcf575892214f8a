"""Reading a sweep's results back: ``load`` with filters pushed down, and the named queries.

A result directory is the store's hive-partitioned Parquet dataset (``granule=``/``va_bits=``
folders; see :mod:`sweep.store`) with ``_sweep.json`` beside it.
``load`` hands filters to pyarrow so a question about one granule reads one folder; the named
queries answer the morning-after questions (which boards and kernels overlap, where an extra level
appears, how big the tables get) as small DataFrames.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from sweep.columns import HEX_COLUMNS, INPUT_COLUMNS, ROW_COLUMNS  # noqa: F401 (HEX_COLUMNS re-exported)
from sweep.errors import ValidationError
from sweep.metadata import read_meta
from sweep.model import granule_name, parse_address, parse_granule
from sweep.store import open_dataset

LEGACY_LAYOUTS = ("high-only", "merged", "tagged")
"""Layouts whose kernels build the idmap with 4.x ``head.S``: at most one extra level, so a row
with ``extra_levels > 1`` under one of them is a configuration those kernels could not run."""

CATEGORY_COLUMNS = tuple(c for c, t in ROW_COLUMNS.items() if t == "category")


def dataset(directory: str | Path) -> ds.Dataset:
    """The result directory as a pyarrow dataset; names starting with ``_`` or ``.`` are skipped."""
    if "://" not in str(directory) and not Path(directory).is_dir():
        raise ValidationError(f"results {str(directory)!r}: no such directory")
    try:
        data = open_dataset(str(directory))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ValidationError(
            f"results {str(directory)!r}: not a Parquet dataset ({exc})"
        ) from None
    if not data.files:
        raise ValidationError(f"results {str(directory)!r}: holds no Parquet files")
    return data


def metadata(directory: str | Path) -> dict:
    """The sweep's own metadata (``_sweep.json``), or ``{}`` when the run wrote none."""
    return read_meta(str(directory))


def _filter_value(column: str, value: object) -> object:
    """Normalise one filter value: granules may be given as ``"4K"``, addresses as ints."""
    if column == "granule":
        return parse_granule(value)  # type: ignore[arg-type]
    if isinstance(value, np.generic):
        return value.item()
    return value


def filter_expression(schema: pa.Schema, **filters: object) -> pc.Expression | None:
    """``column=value`` (equality) or ``column=[v1, v2]`` (membership), and-ed together."""
    expression = None
    for column, wanted in filters.items():
        if column not in schema.names:
            raise ValidationError(
                f"filter {column!r}: not a column of the results "
                f"(columns: {', '.join(schema.names)})"
            )
        if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
            term = pc.field(column) == _filter_value(column, wanted)
        else:
            values = [_filter_value(column, v) for v in wanted]
            if not values:
                raise ValidationError(f"filter {column!r}: empty list of values")
            field_type = schema.field(column).type
            if pa.types.is_dictionary(field_type):
                field_type = field_type.value_type
            term = pc.field(column).isin(pa.array(values, type=field_type))
        expression = term if expression is None else expression & term
    return expression


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow to pandas with the row dtypes: categories (sorted) for names, exact integer widths."""
    frame = table.to_pandas()
    for column in frame.columns:
        dtype = ROW_COLUMNS.get(column)
        if dtype is None:
            continue
        if dtype == "category":
            values = frame[column]
            if not isinstance(values.dtype, pd.CategoricalDtype):
                values = values.astype(str).astype("category")
            values = values.cat.remove_unused_categories()
            categories = [str(c) for c in values.cat.categories]
            values = values.cat.rename_categories(categories)
            frame[column] = values.cat.reorder_categories(sorted(categories))
        elif str(frame[column].dtype) != dtype:
            frame[column] = frame[column].astype(dtype)
    return frame


def _typed(column: str, text: str) -> object:
    dtype = ROW_COLUMNS.get(column)
    if dtype == "bool":
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "on", "off"):
            raise ValidationError(f"filter {column}={text!r}: expected true or false")
        return lowered in ("true", "1", "on")
    if column == "granule":
        return parse_granule(text)
    if column in HEX_COLUMNS:
        return parse_address(text, f"filter {column}")
    if dtype is not None and dtype != "category":
        try:
            return int(text.replace("_", ""), 0)
        except ValueError:
            raise ValidationError(f"filter {column}={text!r}: expected an integer") from None
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


def load(
    directory: str | Path, columns: Sequence[str] | None = None, **filters: object
) -> pd.DataFrame:
    """Rows of a result directory as a DataFrame, e.g. ``load(d, granule="4K", layout="merged")``.

    ``filters`` are pushed down to pyarrow (whole folders are skipped for ``granule``/``va_bits``);
    a list of values means any of them. ``columns`` limits what is read.
    """
    data = dataset(directory)
    if columns is not None:
        unknown = [c for c in columns if c not in data.schema.names]
        if unknown:
            raise ValidationError(f"columns {unknown}: not columns of the results in {directory}")
        columns = list(columns)
    else:
        # Folder keys come last from pyarrow when the files do not hold them: row order instead.
        names = data.schema.names
        columns = [c for c in ROW_COLUMNS if c in names] + [
            c for c in names if c not in ROW_COLUMNS
        ]
    table = data.to_table(columns=columns, filter=filter_expression(data.schema, **filters))
    return to_pandas(table)


def partitions(directory: str | Path) -> list[tuple[int, int]]:
    """The ``(granule, va_bits)`` folders present, sorted: a unit to read one at a time."""
    found = set()
    for fragment in dataset(directory).get_fragments():
        keys = ds.get_partition_keys(fragment.partition_expression)
        if "granule" in keys and "va_bits" in keys:
            found.add((int(keys["granule"]), int(keys["va_bits"])))
    return sorted(found)


def for_people(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with addresses in hex and granules as ``4K``: how the command line prints."""
    shown = frame.copy()
    for column in shown.columns:
        if column in HEX_COLUMNS or column == "lowest_idmap_pa":
            shown[column] = [f"{int(v):#x}" for v in shown[column]]
        elif column == "granule":
            shown[column] = [granule_name(int(v)) for v in shown[column]]
    return shown


# --- named queries: each takes rows (a DataFrame from ``load``) and returns a small frame ------


def _group(df: pd.DataFrame, by: list[str]):
    return df.groupby(by, observed=True, sort=True)


def overlaps(df: pd.DataFrame) -> pd.DataFrame:
    """Per board and layout: rows, rows whose idmap overlaps a runtime mapping, rows whose idmap
    is inside the HYP window (4.8's "IDMAP intersecting with HYP VA" check), and the shares."""
    out = _group(df, ["memory_map", "layout"]).agg(
        rows=("overlap", "size"),
        overlaps=("overlap", "sum"),
        in_window=("idmap_in_window", "sum"),
    )
    out["overlap_share"] = out["overlaps"] / out["rows"]
    out["in_window_share"] = out["in_window"] / out["rows"]
    return out


def overlap_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """Board x layout: the share of rows that overlap (what the report draws)."""
    return overlaps(df)["overlap_share"].unstack("layout")


_CONFIG = ["memory_map", "granule", "va_bits", "layout"]


def _level_summary(rows: pd.DataFrame) -> pd.DataFrame:
    out = _group(rows, _CONFIG).agg(
        rows=("extra_levels", "size"),
        max_extra_levels=("extra_levels", "max"),
        max_levels=("levels", "max"),
        lowest_idmap_pa=("idmap_pa", "min"),
    )
    return out


def extra_levels(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations (board, granule, VA_BITS, layout) where the merged tree has more levels than
    the runtime mappings need, with the lowest idmap address that causes it."""
    return _level_summary(df[df["extra_levels"] > 0])


def unrunnable_4x(df: pd.DataFrame) -> pd.DataFrame:
    """Configurations 4.x kernels could not run: ``extra_levels > 1`` under a legacy layout
    (4.x ``head.S`` adds at most one level to the idmap, MODEL.md section 5)."""
    legacy = df["layout"].astype(str).isin(LEGACY_LAYOUTS)
    return _level_summary(df[legacy & (df["extra_levels"] > 1)])


def level_counts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per (granule, VA_BITS, layout) and level count of the merged tree."""
    out = _group(df, ["granule", "va_bits", "layout", "levels"]).size().rename("rows")
    return out.reset_index()


def table_size(df: pd.DataFrame) -> pd.DataFrame:
    """HYP table bytes by granule, VA_BITS and block mappings: min, mean, max, and the board
    with the largest tables."""
    grouped = _group(df, ["granule", "va_bits", "block_mappings"])
    out = grouped.agg(
        rows=("table_bytes", "size"),
        min_bytes=("table_bytes", "min"),
        mean_bytes=("table_bytes", "mean"),
        max_bytes=("table_bytes", "max"),
    )
    largest = df.loc[
        grouped["table_bytes"].idxmax(), ["granule", "va_bits", "block_mappings", "memory_map"]
    ]
    largest = largest.set_index(["granule", "va_bits", "block_mappings"])["memory_map"]
    out["largest_board"] = largest.astype(str)
    return out


def config_label(granule: int, va_bits: int) -> str:
    """``"4K/39"``: how a granule and VA_BITS pair is written in tables and plots."""
    return f"{granule_name(int(granule))}/{int(va_bits)}"


def table_bytes_by_board(df: pd.DataFrame, block_mappings: bool | None = None) -> pd.DataFrame:
    """Board x granule/VA_BITS: the largest ``table_bytes`` (the report's heatmap)."""
    if block_mappings is not None:
        df = df[df["block_mappings"] == block_mappings]
    out = (
        _group(df, ["memory_map", "granule", "va_bits"])["table_bytes"]
        .max()
        .unstack(["granule", "va_bits"])
    )
    out = out.sort_index(axis=1)
    out.columns = [config_label(g, v) for g, v in out.columns]
    return out


def margin_bits(margin: pd.Series | np.ndarray) -> np.ndarray:
    """``bit_length(margin)``: 0 for touching/overlapping, k for margins in ``[2^(k-1), 2^k)``.

    Exact: every margin is below 2^52, so float64 holds it without rounding.
    """
    values = np.asarray(margin, dtype=np.float64)
    return np.frexp(values)[1].astype(np.int8)


def _size_label(nbytes: int) -> str:
    for unit, shift in (("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift}{unit}"
    return str(nbytes)


def margin_distribution(df: pd.DataFrame) -> pd.DataFrame:
    """Rows per layout and margin bucket (powers of two): how close the idmap page comes to a
    runtime mapping. Bucket ``k`` holds margins in ``[2^(k-1), 2^k)``; 0 means they touch."""
    bits = margin_bits(df["margin"])
    counts = (
        pd.DataFrame({"layout": df["layout"], "margin_bits": bits})
        .groupby(["layout", "margin_bits"], observed=True, sort=True)
        .size()
        .rename("rows")
        .reset_index()
    )
    counts["from"] = [
        "0" if k == 0 else _size_label(1 << (int(k) - 1)) for k in counts["margin_bits"]
    ]
    return counts


WORST_CASE_COLUMNS = [
    *INPUT_COLUMNS,
    "overlap",
    "idmap_in_window",
    "margin",
    "levels",
    "extra_levels",
    "table_bytes",
]


def worst_cases(df: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` worst rows: overlapping first, then idmap in the window, most extra levels,
    smallest margin, largest tables."""
    columns = [c for c in WORST_CASE_COLUMNS if c in df.columns]
    order = df.sort_values(
        ["overlap", "idmap_in_window", "extra_levels", "margin", "table_bytes"],
        ascending=[False, False, False, True, False],
        kind="stable",
    )
    return order.head(n)[columns].reset_index(drop=True)


QUERIES = {
    "overlaps": overlaps,
    "extra-levels": extra_levels,
    "unrunnable-4x": unrunnable_4x,
    "level-counts": level_counts,
    "table-size": table_size,
    "table-bytes-by-board": table_bytes_by_board,
    "margin-distribution": margin_distribution,
    "worst-cases": worst_cases,
}
"""Every named query, by the name the command line uses."""
