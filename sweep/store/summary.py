"""Part summaries: what the named queries need of a part's rows, in a small Parquet file beside it.

Every named query (:mod:`sweep.read.queries`) but ``worst-cases`` is an aggregate over a few
columns, grouped by configuration and severity. So when a part is written, :mod:`sweep.store.parts`
first writes beside it (``_summary-<index>.parquet``, :mod:`sweep.store.partkey`) the table
:func:`summarize` makes of its rows: one row per distinct ``GROUP`` (configuration, overlap,
window, levels, margin bucket) with the aggregates the queries read. A few hundred rows stand for
a part of long runs' 10^5, about 7 rows one of many small boards' 7, and DuckDB streams the
summary files as it streams parts, so a query over 10^9 rows reads summaries, never all of them
in memory at once. A summary file is as whole as its part: written first (a part on disk always
has its summary), its rows, size and SHA-256 in the part's manifest entry, held to them wherever
the part is (:mod:`sweep.store.manifest`).

A part gets a summary file only where it has at most one row for ``SIDECAR_RATIO`` of the
part's (a random tag and a placement a row can leave nearly a group a row: reading such a
summary would cost what reading the rows does). Where a selected part has none (such parts, a
DataFrame, parts of an older va-sweep, a damaged summary file, a filter on a column outside
``FILTER_COLUMNS``), :func:`rows_sql` reads every row as a summary row of its own, in SQL, so the
same queries run over the rows in DuckDB. Parts of va-sweep 0.1 to this one kept their summary
in their Parquet footer instead (``SUMMARY_KEY``, only when compact); :func:`decode` still reads
those.

Rows that stand for runs of pages (``pages``) weigh ``pages``; a run's margin is its smallest,
``min(margin, margin_last)`` (margin is concave along a run), and its last page is
``idmap_pa_last``.
"""

from __future__ import annotations

import base64
import zlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from sweep.core.kconfig import bit_length
from sweep.store.summary_runs import as_numpy, find_runs, run_values

SUMMARY_KEY = "sweep.store.summary"
"""The Parquet footer key under which older parts held their summary (Arrow IPC, base64)."""
FORMAT = "3"  # 2: runnable and unrunnable are group columns; 3: mappings, cpus, kernel

GROUP = {
    "memory_map": pa.string(),
    "granule": pa.int32(),
    "va_bits": pa.int8(),
    "layout": pa.string(),
    "block_mappings": pa.bool_(),
    "mappings": pa.string(),
    "cpus": pa.int16(),
    "kernel": pa.string(),
    "overlap": pa.bool_(),
    "idmap_in_window": pa.bool_(),
    "levels": pa.int8(),
    "extra_levels": pa.int8(),
    "runnable": pa.bool_(),
    "unrunnable": pa.string(),
    "margin_bits": pa.int8(),
}
"""The summary's group columns: ``margin_bits`` is the bit length of the row's smallest margin
(bucket ``k`` holds margins in ``[2^(k-1), 2^k)``; 0: the idmap page touches a mapping)."""
MISSING = {"runnable": True, "unrunnable": "", "mappings": "all-dram", "cpus": 0, "kernel": ""}
"""Group columns rows written before kernel eras (runnable) or mapping sets (mappings, cpus,
kernel) lack, and what such a row means: a runnable all-of-DRAM row."""
DEFAULTS = {c: repr(v).upper() if isinstance(v, bool) else repr(v) for c, v in MISSING.items()}
"""``MISSING`` as SQL literals."""
FILTER_COLUMNS = frozenset(GROUP) - {"margin_bits"}
"""Columns a filter may name and still be answered from summaries (they are group columns)."""
VALUES = {
    "rows": pa.int64(),  # configurations: rows, or pages for runs
    "records": pa.int64(),  # rows of the table (runs count once)
    "min_margin": pa.int64(),
    "min_table_bytes": pa.int64(),
    "max_table_bytes": pa.int64(),
    "sum_table_bytes": pa.float64(),  # weighted by pages
    "idmap_from": pa.uint64(),  # the lowest idmap_pa
    "idmap_to": pa.uint64(),  # the highest idmap_pa (idmap_pa_last for runs)
    "tag_random": pa.uint64(),  # tag_random of the row with the lowest idmap_pa
}
SCHEMA = pa.schema([*GROUP.items(), *VALUES.items()])
I64_MAX = np.iinfo(np.int64).max
SIDECAR_RATIO = 2
"""A part gets a summary file when the summary has at most one row for this many of its rows.
A summary row is read as plainly as a row (no per-row SQL), so any ratio above 1 saves the
queries time; at 2 the reading is halved at least, and a part nearer one group a row (a random
tag a row) costs the writer only the first pass of :func:`summarize` (``max_runs``) and no
second file. Many small boards give about 7 (``bench/bench_results.py --shape many-maps``)."""


def part_summary(table: pa.Table) -> pa.Table | None:
    """The summary a part of ``table``'s rows keeps in a file beside it, or None (too little
    smaller than the rows to be worth a file: ``SIDECAR_RATIO``)."""
    return kept(summarize(table, max_runs=table.num_rows // SIDECAR_RATIO), table.num_rows)


def kept(found: pa.Table | None, rows: int) -> pa.Table | None:
    """``found``, the summary of ``rows`` rows, if it is worth a file (``SIDECAR_RATIO``)."""
    if found is None or found.num_rows * SIDECAR_RATIO > rows:
        return None
    return found


def merge(summaries: list[pa.Table]) -> pa.Table:
    """The summary of consecutive pieces of a part's rows, from each piece's summary, in order:
    what :func:`summarize` makes of all the rows at once, row for row (groups in order of first
    appearance, each ``VALUES`` a sum, min or max of the pieces', ``tag_random`` the first piece's
    with the lowest ``idmap_from``), so that a part streamed in chunks is summarized exactly."""
    if len(summaries) == 1:
        return summaries[0]
    table = pa.concat_tables(summaries)
    if table.num_rows == 0:
        return SCHEMA.empty_table()
    keys = [pd.factorize(as_numpy(table[c]))[0] for c in GROUP]
    inverse, uniques = pd.factorize(_code(keys))
    g, n = len(uniques), table.num_rows
    first = _at(np.minimum, inverse, np.arange(n), g, n)
    values = {c: as_numpy(table[c]) for c in VALUES}
    for c in ("idmap_from", "idmap_to"):
        values[c] = values[c].view(np.int64)
    out = _combined(inverse, g, values)
    columns = {c: table[c].take(pa.array(first)) for c in GROUP}
    return pa.table({**columns, **{c: pa.array(out[c]).cast(VALUES[c]) for c in VALUES}},
                    schema=SCHEMA)  # fmt: skip


def rows_sql(source: str, columns: list[str]) -> str:
    """SQL reading the rows of ``source`` (with ``columns``) as summary rows, one per row, in
    ``SCHEMA``: what the queries aggregate where there are no footer summaries."""
    runs = "pages" in columns
    weight = "pages" if runs else "1"
    margin = min_margin_sql(columns)
    last = "idmap_pa_last" if runs else "idmap_pa"
    keys = ", ".join(
        f"CAST({c if c in columns else DEFAULTS[c]} AS {_SQL_TYPES[GROUP[c]]}) AS {c}"
        for c in GROUP
        if c != "margin_bits"
    )
    return (
        f"SELECT {keys}, CAST({bit_length_sql('m')} AS TINYINT) AS margin_bits, "
        f"CAST({weight} AS BIGINT) AS rows, CAST(1 AS BIGINT) AS records, "
        "CAST(m AS BIGINT) AS min_margin, table_bytes AS min_table_bytes, "
        "table_bytes AS max_table_bytes, "
        f"CAST(table_bytes AS DOUBLE) * {weight} AS sum_table_bytes, "
        f"CAST(idmap_pa AS UBIGINT) AS idmap_from, CAST({last} AS UBIGINT) AS idmap_to, "
        "CAST(tag_random AS UBIGINT) AS tag_random "
        f"FROM (SELECT *, {margin} AS m, {bit_length_input(margin)} FROM {source})"
    )


def min_margin_sql(columns: list[str]) -> str:
    """SQL for a row's smallest margin: a run's is at one of its ends (margin is concave along
    a run), ``least(margin, margin_last)``."""
    return "least(margin, margin_last)" if "margin_last" in columns else "margin"


_SQL_TYPES = {
    pa.string(): "VARCHAR",
    pa.int32(): "INTEGER",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.bool_(): "BOOLEAN",
}


def bit_length_sql(value: str) -> str:
    """SQL for ``sweep.core.kconfig.bit_length`` of one non-negative integer below 2^53: ``log2``
    of the value as a double (exact there) gives an estimate ``k``, off by one next to powers
    of two, where comparisons with powers of two correct it. Reads ``bit_length_input``."""
    return (
        f"(CASE WHEN {value} = 0 THEN 0 ELSE k - CAST(d < pow(2.0, k - 1) AS INTEGER) "
        "+ CAST(d >= pow(2.0, k) AS INTEGER) END)"
    )


def bit_length_input(value: str) -> str:
    """The columns ``d`` and ``k`` that :func:`bit_length_sql` reads."""
    d = f"CAST({value} AS DOUBLE)"
    return f"{d} AS d, CAST(floor(log2(greatest({d}, 1))) AS INTEGER) + 1 AS k"


def summarize(table: pa.Table, max_runs: int | None = None) -> pa.Table | None:
    """The summary of ``table``'s rows (rows with the ``GROUP`` columns but ``margin_bits``, and
    ``margin``, ``table_bytes``, ``idmap_pa``, ``tag_random``; ``pages``, ``margin_last`` and
    ``idmap_pa_last`` for runs), in ``SCHEMA``.

    Rows are first reduced over runs of consecutive rows with equal group columns (a work
    unit's rows come in long runs: :mod:`sweep.store.summary_runs`), then the runs over
    their groups: a few contiguous passes per column, whatever the order of the rows. With
    ``max_runs``, None as soon as the rows fall in more groups than that (a part of many small
    groups, whose summary would not be kept: most of the work is not done). Rows of few groups
    may still come in many short runs: a random tag a row makes ``margin_bits`` alternate.
    """
    if table.num_rows == 0:
        return SCHEMA.empty_table()
    group, names = _group_keys(table)
    margin = as_numpy(table["margin"]).view(np.int64)
    if "margin_last" in table.column_names:
        margin = np.minimum(margin, as_numpy(table["margin_last"]).view(np.int64))
    runs = find_runs([v for v in group.values() if len(v) > 1], margin)
    starts = runs.starts
    keys = {c: values[starts] if len(values) > 1 else values for c, values in group.items()}
    keys["margin_bits"] = runs.bits
    varying = [bit_length(v) if c == "granule" else v for c, v in keys.items() if len(v) > 1]
    code = _code(varying) if varying else np.zeros(len(starts), dtype=np.int64)
    if max_runs is not None and len(starts) > max_runs and len(pd.unique(code)) > max_runs:
        return None  # many groups; many runs of few groups (a tag a row) still summarize
    inverse, uniques = pd.factorize(code)
    g = len(uniques)
    first = _at(np.minimum, inverse, np.arange(len(starts)), g, len(starts))
    out = {
        **{
            c: values[first] if len(values) > 1 else np.repeat(values, g)
            for c, values in keys.items()
            if c not in names
        },
        **{c: _named(names[c], keys[c], first) for c in names},
        **_combined(inverse, g, run_values(table, margin, runs)),
    }
    return pa.table({c: pa.array(out[c]).cast(SCHEMA.field(c).type) for c in SCHEMA.names})


def _combined(inverse: np.ndarray, g: int, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each of ``g`` groups' ``VALUES`` from its members' (``inverse``: each member's group;
    members are runs of rows, or pieces' summaries, in row order): sums, minimums, maximums,
    and the ``tag_random`` of the first member with the group's lowest ``idmap_from`` (int64
    views here). The one rule :func:`summarize` and :func:`merge` share."""
    n = len(inverse)
    lowest = _at(np.minimum, inverse, values["idmap_from"], g, I64_MAX)
    with_lowest = np.flatnonzero(values["idmap_from"] == lowest[inverse])
    return {
        "rows": np.bincount(inverse, values["rows"], g).astype(np.int64),
        "records": np.bincount(inverse, values["records"], g).astype(np.int64),
        "min_margin": _at(np.minimum, inverse, values["min_margin"], g, I64_MAX),
        "min_table_bytes": _at(np.minimum, inverse, values["min_table_bytes"], g, I64_MAX),
        "max_table_bytes": _at(np.maximum, inverse, values["max_table_bytes"], g, -1),
        "sum_table_bytes": np.bincount(inverse, values["sum_table_bytes"], g),
        "idmap_from": lowest.view(np.uint64),
        "idmap_to": _at(np.maximum, inverse, values["idmap_to"], g, -1).view(np.uint64),
        "tag_random": values["tag_random"][
            _at(np.minimum, inverse[with_lowest], with_lowest, g, n)
        ],
    }


def _group_keys(table: pa.Table) -> tuple[dict[str, np.ndarray], dict[str, pa.Array]]:
    """The ``GROUP`` columns but ``margin_bits`` as small integers per row (names as their
    dictionary codes, a column rows of before kernel eras lack as its ``DEFAULTS``), and the
    dictionaries that name the codes. A column with one value in all rows (most of a work
    unit's) is that value alone, an array of one: it splits no run and is never converted."""
    group: dict[str, np.ndarray] = {}
    names: dict[str, pa.Array] = {}
    for column in GROUP:
        if column == "margin_bits":
            continue
        if column not in table.column_names:  # rows from before kernel eras (MISSING)
            value = MISSING[column]
            if isinstance(value, str):
                group[column], names[column] = np.zeros(1, np.int32), pa.array([value])
            else:
                group[column] = np.array([value])
        elif pa.types.is_integer(GROUP[column]) or GROUP[column] == pa.bool_():
            group[column] = as_numpy(_one_if_constant(table[column]))
        else:  # names: their dictionary codes group, the dictionary names them
            codes, names[column] = _dictionary(table[column])
            group[column] = as_numpy(_one_if_constant(codes))
    return group, names


def _one_if_constant(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``column``'s first value alone when every value equals it, else ``column``."""
    if len(column) > 1:
        low, high = pc.min_max(column).values()
        if low == high:
            return column.slice(0, 1)
    return column


def _code(keys: list[np.ndarray]) -> np.ndarray:
    """One int64 per row, equal exactly where all ``keys`` (small non-negative integers) are:
    their mixed-radix number (renumbered on the way should it outgrow 62 bits)."""
    code = np.zeros(len(keys[0]), dtype=np.int64)
    span = 1
    for key in keys:
        radix = int(key.max()) + 1
        if radix == 1:  # all zero (one value in the part, as a unit's layout): adds nothing
            continue
        if span * radix >= 1 << 62:
            code = pd.factorize(code)[0].astype(np.int64)
            span = int(code.max()) + 1
        code *= radix
        code += key
        span *= radix
    return code


def _at(ufunc, inverse: np.ndarray, values: np.ndarray, groups: int, start) -> np.ndarray:
    """``ufunc`` of ``values`` by group (``inverse``: each value's group), from ``start``."""
    out = np.full(groups, start, dtype=np.asarray(values).dtype)
    ufunc.at(out, inverse, values)
    return out


def _named(dictionary: pa.Array, codes: np.ndarray, first: np.ndarray) -> pa.Array:
    """The names of a name column's groups (``first``: each group's first run; ``codes``: each
    run's code, or the one code of all). One name for all (most of a unit's name columns) is
    repeated: looking it up once a group costs a ``take`` of every name."""
    if len(codes) > 1:
        return dictionary.take(pa.array(codes[first]))
    return pa.repeat(dictionary[int(codes[0])], len(first))


def _dictionary(column: pa.ChunkedArray) -> tuple[pa.ChunkedArray | pa.Array, pa.Array]:
    """A name column's dictionary codes and the names they stand for: the builder's own
    dictionary as it is (a name twice in a dictionary only splits a group, which every query
    adds up again), chunks' equal dictionaries of distinct names as they are (what unifying
    them gives, without its pass over the codes), other chunks' unified, plain strings encoded."""
    if not pa.types.is_dictionary(column.type):
        encoded = pc.dictionary_encode(column.combine_chunks())
    elif column.num_chunks == 1:
        encoded = column.chunk(0)
    else:
        names = column.chunk(0).dictionary
        same = all(c.dictionary.equals(names) for c in column.chunks)
        if same and not names.null_count and len(pc.unique(names)) == len(names):
            return pa.chunked_array([c.indices for c in column.chunks]), names
        encoded = column.unify_dictionaries().combine_chunks()
    return encoded.indices, encoded.dictionary


# --- in the footer of older parts ---------------------------------------------------------------


def encode(summary: pa.Table) -> str:
    """A summary as older parts kept it in their footer: an Arrow IPC stream, zlib-compressed as
    a whole, base64 (what :func:`decode` reads; tests make older parts with it)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, summary.schema) as writer:
        writer.write_table(summary)
    packed = zlib.compress(sink.getvalue().to_pybytes(), 1)  # level 6: 3.5x the time, 20% less
    return FORMAT + ":" + base64.b64encode(packed).decode()


def decode(value: bytes | str) -> pa.Table | None:
    """A footer value back as a summary table, or None when it is not one this version reads."""
    text = value.decode() if isinstance(value, bytes) else value
    version, _, payload = text.partition(":")
    if version != FORMAT:
        return None
    table = pa.ipc.open_stream(zlib.decompress(base64.b64decode(payload))).read_all()
    return table if table.schema.equals(SCHEMA) else None


def combine(summaries: list[pa.Table], parts: list[int]) -> pa.Table:
    """Part files' summaries as one table, with a ``part`` column numbering each one's part."""
    return pa.concat_tables(
        t.append_column("part", pa.array(np.full(t.num_rows, k, dtype=np.int32)))
        for t, k in zip(summaries, parts, strict=True)
    )
