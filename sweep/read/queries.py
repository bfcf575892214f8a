"""The named queries: the morning-after questions, each one SQL aggregate in DuckDB.

Each takes a result directory, a :class:`sweep.read.engine.Results` (filters applied) or a DataFrame
from ``results.load``, and returns a small DataFrame. All but ``worst-cases`` aggregate the
rows' summaries (:mod:`sweep.store.summary`: the files beside the parts, a few hundred rows for
10^5 of long runs, one for about 7 of many small boards), so they cost a fraction of a scan of
the rows; ``worst-cases`` reads rows, of the parts the summaries say can hold them, and
``worst-configurations`` groups only the configurations the summaries say can be among them.
Rows that stand for runs of pages (a ``pages`` column) count as ``pages`` configurations, and a
run's smallest margin is ``min(margin, margin_last)``.
"""

from __future__ import annotations

import pandas as pd

from sweep.core.memmap import granule_name
from sweep.core.sizes import short_size
from sweep.read.counting import ROWS, SET_RANK, Source, once, when
from sweep.read.engine import Results, quote, results_of
from sweep.read.worst import (  # noqa: F401 (named queries, and what their callers import here)
    WORST_CASE_COLUMNS,
    WORST_ORDER,
    explain_command,
    worst_cases,
    worst_configurations,
)

CONFIG = ["memory_map", "granule", "va_bits", "layout"]


def overlaps(data: Source) -> pd.DataFrame:
    """Per board and layout: rows, rows whose idmap overlaps a runtime mapping, rows whose idmap
    is inside the HYP window (4.8's "IDMAP intersecting with HYP VA" check), and the shares."""
    r = results_of(data)
    out = r.frame(
        f"SELECT memory_map, layout, {ROWS} AS rows, {when('overlap')} AS overlaps, "
        f"{when('idmap_in_window')} AS in_window FROM {r.summary} WHERE {once(r)} "
        "GROUP BY ALL ORDER BY ALL"
    ).set_index(["memory_map", "layout"])
    out["overlap_share"] = out["overlaps"] / out["rows"]
    out["in_window_share"] = out["in_window"] / out["rows"]
    return out


def overlap_matrix(data: Source) -> pd.DataFrame:
    """Board x layout: the share of rows that overlap."""
    return overlaps(data)["overlap_share"].unstack("layout")


def overlaps_by_config(data: Source) -> pd.DataFrame:
    """Per granule, VA_BITS and layout: rows, overlapping rows and their share."""
    r = results_of(data)
    out = r.frame(
        f"SELECT granule, va_bits, layout, {ROWS} AS rows, {when('overlap')} AS overlaps, "
        f"{when('idmap_in_window')} AS in_window FROM {r.summary} WHERE {once(r)} "
        "GROUP BY ALL ORDER BY ALL"
    ).set_index(["granule", "va_bits", "layout"])
    out["overlap_share"] = out["overlaps"] / out["rows"]
    return out


def _level_summary(r: Results, condition: str) -> pd.DataFrame:
    return r.frame(
        f"SELECT memory_map, granule, va_bits, layout, {ROWS} AS rows, "
        "max(extra_levels) AS max_extra_levels, max(levels) AS max_levels, "
        f"min(idmap_from) AS lowest_idmap_pa FROM {r.summary} WHERE {condition} "
        f"AND {once(r)} GROUP BY ALL ORDER BY ALL"
    ).set_index(CONFIG)


def extra_levels(data: Source) -> pd.DataFrame:
    """Configurations (board, granule, VA_BITS, layout) where the merged tree has more levels than
    the runtime mappings need, with the lowest idmap address that causes it."""
    return _level_summary(results_of(data), "extra_levels > 0")


def unrunnable(data: Source) -> pd.DataFrame:
    """Configurations no kernel of their era could run (``runnable`` false), with the reason
    (docs/model.md section 3): a VA_BITS the era has not, 52 bits at 64K before 6.2, more than
    one extra level up to 6.8, an image above 2^48 from 6.9."""
    r = results_of(data)
    return r.frame(
        f"SELECT memory_map, granule, va_bits, layout, unrunnable AS reason, "
        f"{ROWS} AS rows, max(extra_levels) AS max_extra_levels, max(levels) AS max_levels, "
        f"min(idmap_from) AS lowest_idmap_pa FROM {r.summary} WHERE NOT runnable "
        f"AND {once(r)} GROUP BY ALL ORDER BY ALL"
    ).set_index([*CONFIG, "reason"])


unrunnable_4x = unrunnable
"""The name of ``unrunnable`` before kernel eras (``sweep query NAME unrunnable-4x``)."""


def level_counts(data: Source) -> pd.DataFrame:
    """Rows per (granule, VA_BITS, layout) and level count of the merged tree."""
    r = results_of(data)
    return r.frame(
        f"SELECT granule, va_bits, layout, levels, {ROWS} AS rows FROM {r.summary} "
        f"WHERE {once(r)} GROUP BY ALL ORDER BY ALL"
    )


def _per_board_bytes(r: Results) -> pd.DataFrame:
    """Per board, granule, VA_BITS, block setting and mapping set: rows and table_bytes min,
    sum, max."""
    return r.frame(
        f"SELECT granule, va_bits, block_mappings, mappings, memory_map, {ROWS} AS rows, "
        "min(min_table_bytes) AS min_bytes, max(max_table_bytes) AS max_bytes, "
        f"sum(sum_table_bytes) AS total FROM {r.summary} "
        "GROUP BY ALL ORDER BY ALL"
    )


def table_size(data: Source) -> pd.DataFrame:
    """HYP table bytes by granule, VA_BITS, block mappings and mapping set (a boot set's
    tables and all of DRAM's are different questions): min, mean, max, and the board with the
    largest tables (the first by name when several share the largest)."""
    per_board = _per_board_bytes(results_of(data))
    keys = ["granule", "va_bits", "block_mappings", "mappings"]
    grouped = per_board.groupby(keys, sort=True)
    out = grouped.agg(
        rows=("rows", "sum"),
        min_bytes=("min_bytes", "min"),
        total=("total", "sum"),
        max_bytes=("max_bytes", "max"),
    )
    out.insert(2, "mean_bytes", out.pop("total") / out["rows"])
    largest = per_board.loc[grouped["max_bytes"].idxmax()].set_index(keys)["memory_map"]
    out["largest_board"] = largest.astype(str)
    return out


def config_label(granule: int, va_bits: int) -> str:
    """``"4K/39"``: how a granule and VA_BITS pair is written in tables and plots."""
    return f"{granule_name(int(granule))}/{int(va_bits)}"


def table_bytes_by_board(
    data: Source, block_mappings: bool | None = None, mappings: str | None = None
) -> pd.DataFrame:
    """Board x granule/VA_BITS: the largest ``table_bytes`` (the report's heatmaps), of one
    mapping set (``mappings``) or, when the rows hold several, of each: then the index is the
    board and the set, since a boot set's tables and all of DRAM's answer different questions."""
    r = results_of(data)
    where = [] if block_mappings is None else [f"block_mappings = {bool(block_mappings)}"]
    if mappings is not None:
        where.append(f"mappings = {quote(mappings)}")
    long = r.frame(
        "SELECT mappings, memory_map, granule, va_bits, max(max_table_bytes) AS table_bytes "
        f"FROM {r.summary}{' WHERE ' + ' AND '.join(where) if where else ''} "
        "GROUP BY ALL ORDER BY ALL"
    )
    if long["mappings"].nunique() <= 1:
        return _board_matrix(long.drop(columns="mappings"))
    return _board_matrix(long, index=["memory_map", "mappings"])


def table_bytes_matrices(data: Source) -> dict[tuple[str, bool], pd.DataFrame]:
    """``table_bytes_by_board`` for each mapping set and block setting present, from one scan,
    keyed ``(mappings, block_mappings)`` in ``SET_ORDER``."""
    r = results_of(data)
    long = r.frame(
        "SELECT mappings, block_mappings, memory_map, granule, va_bits, "
        f"max(max_table_bytes) AS table_bytes FROM {r.summary} GROUP BY ALL ORDER BY ALL"
    )
    parts = {
        (str(m), bool(b)): _board_matrix(part)
        for (m, b), part in long.groupby(["mappings", "block_mappings"], observed=True)
    }
    return dict(
        sorted(parts.items(), key=lambda kv: (SET_RANK.get(kv[0][0], len(SET_RANK)), kv[0]))
    )


def _board_matrix(long: pd.DataFrame, index="memory_map") -> pd.DataFrame:
    out = long.pivot(index=index, columns=["granule", "va_bits"], values="table_bytes")
    out = out.sort_index(axis=1)
    out.columns = [config_label(g, v) for g, v in out.columns]
    return out


def size_label(nbytes: int) -> str:
    """``2^k`` bytes as ``"512K"``, ``"1G"``: how a power-of-two bucket is named."""
    return short_size(nbytes) or str(nbytes)


def margin_distribution(data: Source) -> pd.DataFrame:
    """Rows per layout and margin bucket (powers of two): how close the idmap page comes to a
    runtime mapping. Bucket ``k`` holds margins in ``[2^(k-1), 2^k)``; 0 means they touch."""
    r = results_of(data)
    counts = r.frame(
        f"SELECT layout, margin_bits, {ROWS} AS rows FROM {r.summary} WHERE {once(r)} "
        "GROUP BY ALL HAVING sum(rows) > 0 ORDER BY ALL"
    )
    counts["from"] = [
        "0" if k == 0 else size_label(1 << (int(k) - 1)) for k in counts["margin_bits"]
    ]
    return counts


def boards(data: Source) -> pd.DataFrame:
    """Per board: configurations, overlapping ones, idmap in the window, ones needing an extra
    level (each counted once, ``once``) and the most extra levels, the smallest margin, and the
    largest tables of each mapping set:
    what nVHE and pKVM map at boot, and all of DRAM (the limit) without and with blocks, each
    named for its set so that nobody reads the limit as a boot state (empty: no such rows)."""
    r = results_of(data)
    largest = ", ".join(
        f"max(max_table_bytes) FILTER (WHERE {where}) AS {name}"
        for name, where in BOARD_BYTES.items()
    )
    keep = once(r)  # each configuration counted once; the bytes are per set
    return r.frame(
        f"SELECT memory_map, {when(keep)} AS rows, {when(f'{keep} AND overlap')} AS overlaps, "
        f"{when(f'{keep} AND idmap_in_window')} AS in_window, "
        f"{when(f'{keep} AND extra_levels > 0')} AS extra_level_rows, "
        "max(extra_levels) AS max_extra_levels, "
        f"min(min_margin) AS min_margin, {largest} "
        f"FROM {r.summary} GROUP BY ALL ORDER BY ALL"
    ).set_index("memory_map")


BOARD_BYTES = {
    "max_bytes_nvhe_boot": "mappings = 'nvhe-boot'",
    "max_bytes_pkvm_boot": "mappings = 'pkvm-boot'",
    "max_bytes_all_dram": "mappings = 'all-dram' AND NOT block_mappings",
    "max_bytes_all_dram_blocks": "mappings = 'all-dram' AND block_mappings",
}
"""``boards``' table-size columns and the rows each reads."""


QUERIES = {
    "boards": boards,
    "overlaps": overlaps,
    "overlaps-by-config": overlaps_by_config,
    "extra-levels": extra_levels,
    "unrunnable": unrunnable,
    "unrunnable-4x": unrunnable,  # its name before eras, for one release
    "level-counts": level_counts,
    "table-size": table_size,
    "table-bytes-by-board": table_bytes_by_board,
    "margin-distribution": margin_distribution,
    "worst-cases": worst_cases,
    "worst-configurations": worst_configurations,
}
"""Every named query, by the name the command line uses (``sweep query DIR NAME``)."""

QUERY_HELP = {
    "boards": "Per board: rows, overlaps, idmap in the window, extra levels, largest tables.",
    "overlaps": "Per board and layout: rows whose idmap page overlaps a runtime mapping.",
    "overlaps-by-config": "Per granule, VA_BITS and layout: overlapping rows and their share.",
    "extra-levels": "Configurations whose merged tree has more levels than VA_BITS gives.",
    "unrunnable": "Configurations no kernel of their era could run, with the reason.",
    "unrunnable-4x": "The same as unrunnable (its name before kernel eras).",
    "level-counts": "Rows per granule, VA_BITS, layout and level count of the merged tree.",
    "table-size": "HYP table bytes per granule, VA_BITS, blocks, mapping set: min, mean, max.",
    "table-bytes-by-board": "Board x granule/VA_BITS: the largest HYP tables (the heatmap).",
    "margin-distribution": "Rows per layout and margin bucket: how near the idmap page comes.",
    "worst-cases": "The worst rows (overlaps first, then smallest margin); --limit N of them.",
    "worst-configurations": "The worst configurations by their worst row; --limit N of them.",
}
"""What ``sweep query --help`` says of each named query: one whole sentence, in the user's
words (the functions' docstrings are for programmers)."""
