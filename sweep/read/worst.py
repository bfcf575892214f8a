"""The worst-first queries: the worst rows and the worst configurations, read from the rows the
part summaries say can be among them (``_worst_bound``), and the ``sweep explain`` line of each.
"""

from __future__ import annotations

import shlex

import pandas as pd

from sweep.core.columns import INPUT_COLUMNS
from sweep.core.memmap import granule_name
from sweep.read.counting import ROWS, Source, once
from sweep.read.engine import Results, results_of

WORST_ORDER = (
    "overlap DESC, idmap_in_window DESC, extra_levels DESC, margin ASC, table_bytes DESC, "
    "memory_map, granule, va_bits, layout, block_mappings, idmap_pa"
)
"""Worst first: overlapping, then idmap in the window, most extra levels, smallest margin,
largest tables; ties in configuration order, so the answer does not depend on file order."""

WORST_CASE_COLUMNS = [
    *INPUT_COLUMNS,
    "overlap",
    "idmap_in_window",
    "margin",
    "levels",
    "extra_levels",
    "table_bytes",
]


def worst_cases(data: Source, n: int = 20) -> pd.DataFrame:
    """The ``n`` worst rows (see ``WORST_ORDER``); DuckDB keeps only the top ``n`` as it scans,
    and with part summaries it scans only rows that can be among them (``_worst_bound``)."""
    r = results_of(data)
    columns = [c for c in WORST_CASE_COLUMNS if c in r.columns]
    columns += [c for c in ("idmap_pa_last", "pages", "margin_last") if c in r.columns]
    order = WORST_ORDER.replace("margin ASC", f"{r.min_margin} ASC")
    keep = once(r) if "mappings" in r.columns else "TRUE"  # rows of before mapping sets: all
    source, where = "results", f" WHERE {keep}"
    if r.summary_parts:
        bound = _worst_bound(r, int(n), keep)
        if bound is not None:
            parts = r.frame(
                f"SELECT DISTINCT part FROM {r.summary} WHERE {bound('min_margin')} AND {keep}"
            )
            source = r.scan_of(sorted(parts["part"]))
            where = f" WHERE {bound(r.min_margin)} AND {keep}"
    return r.frame(
        f"SELECT {', '.join(columns)} FROM {source}{where} ORDER BY {order} LIMIT {int(n)}"
    ).reset_index(drop=True)


def _worst_bound(r: Results, n: int, keep: str = "TRUE", distinct: str | None = None):
    """A predicate (given the margin's SQL) that every one of the ``n`` worst rows meets, from
    the summaries: a group's rows are no better than (overlap, window, extra levels, the top of
    its margin bucket); the worst groups by that bound until they hold ``n`` rows give the
    bound of the ``n``-th worst row. None when the summaries hold fewer than ``n`` rows.

    With ``distinct`` (SQL of a configuration's keys), the bound that the worst rows of the
    ``n`` worst configurations meet: the worst groups until their rows are of ``n`` distinct
    configurations (counted in SQL, over the few rows within the bound)."""
    groups = r.frame(
        "SELECT overlap, idmap_in_window, extra_levels, margin_bits, sum(records) AS records "
        f"FROM {r.summary} WHERE {keep} GROUP BY ALL ORDER BY overlap DESC, idmap_in_window DESC, "
        "extra_levels DESC, margin_bits"
    )
    held = groups["records"].cumsum()
    need = n
    while (held >= need).any():
        k = int((held >= need).to_numpy().argmax())
        o, w, e, bits, _ = groups.iloc[k]
        bound = _bound_at(bool(o), bool(w), int(e), (1 << int(bits)) - 1)
        if distinct is None:
            return bound
        (found,) = r.frame(
            f"SELECT count(DISTINCT ({distinct})) AS n FROM {r.summary} "
            f"WHERE {bound('min_margin')} AND {keep}"
        )["n"]
        if found >= n:
            return bound
        need = int(held.iloc[k]) + n - int(found)  # at least one configuration a row
    return None


def _bound_at(o: bool, w: bool, e: int, top: int):
    """The predicate of rows no better than (overlap ``o``, window ``w``, extra levels ``e``,
    margin ``top``) in ``WORST_ORDER``, given the margin's SQL."""

    def bound(margin: str) -> str:
        return (
            f"(overlap > {o} OR (overlap = {o} AND (idmap_in_window > {w} OR "
            f"(idmap_in_window = {w} AND (extra_levels > {e} OR "
            f"(extra_levels = {e} AND {margin} <= {top}))))))"
        )

    return bound


def worst_configurations(data: Source, n: int = 20) -> pd.DataFrame:
    """The ``n`` worst configurations (board, granule, VA_BITS, layout, blocks) by their worst
    row, with the idmap range of the rows that are that bad and one address to ``explain``.
    Only the configurations with a summary row within :func:`_worst_bound` of the ``n`` worst
    are grouped (a sweep of many small boards holds millions of configurations)."""
    r = results_of(data)
    keys = "memory_map, granule, va_bits, layout, block_mappings"
    severity = "overlap, idmap_in_window, extra_levels"
    keep = once(r)
    source = r.summary
    bound = _worst_bound(r, int(n), keep, distinct=keys)
    if bound is not None:
        source = (
            f"{r.summary} SEMI JOIN (SELECT {keys} FROM {r.summary} WHERE {bound('min_margin')} "
            f"AND {keep}) AS worst USING ({keys})"
        )
    return r.frame(
        f"WITH grouped AS (SELECT {keys}, {severity}, {ROWS} AS rows, "
        "min(min_margin) AS min_margin, max(max_table_bytes) AS max_table_bytes, "
        "min(idmap_from) AS idmap_from, max(idmap_to) AS idmap_to, "
        f"arg_min(tag_random, idmap_from) AS tag_random FROM {source} WHERE {keep} "
        "GROUP BY ALL), "
        f"ranked AS (SELECT *, row_number() OVER (PARTITION BY {keys} ORDER BY overlap DESC, "
        "idmap_in_window DESC, extra_levels DESC) AS rank FROM grouped) "
        "SELECT * EXCLUDE (rank) FROM ranked WHERE rank = 1 "
        "ORDER BY overlap DESC, idmap_in_window DESC, extra_levels DESC, min_margin, "
        f"max_table_bytes DESC, {keys} LIMIT {int(n)}"
    )


def explain_command(row: pd.Series | dict) -> str:
    """The ``sweep explain`` line that shows one configuration's tables."""
    args = ["sweep", "explain", "--map", str(row["memory_map"])]
    args += ["--granule", granule_name(int(row["granule"])), "--va-bits", str(int(row["va_bits"]))]
    args += ["--layout", str(row["layout"])]
    args += ["--blocks" if row["block_mappings"] else "--no-blocks"]
    args += ["--idmap", f"{int(row['idmap_from']):#x}"]
    if int(row.get("tag_random", 0)):
        args += ["--tag-random", f"{int(row['tag_random']):#x}"]
    return shlex.join(args)  # a board's name is quoted: the line is pasted into a shell
