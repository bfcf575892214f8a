"""``sweep diff`` of an every-page run (runs of pages) against a run of single pages.

An every-page row is a run of ``pages`` consecutive pages from ``idmap_pa`` to
``idmap_pa_last`` whose outputs are equal but for ``margin``, ``clipped_bytes`` and
``hyp_dram_last``, which change by the same step from page to page (docs/model.md section 8).
Each single page is matched to the run holding it (same other inputs, inside its range, on a
page boundary) and compared with that run's values at that page; the runs' other pages are not
compared, and are counted as such, not as differences.
"""

from __future__ import annotations

from sweep.core.columns import ROW_COLUMNS

INTERPOLATED = {
    "margin": "margin_last",
    "clipped_bytes": "clipped_bytes_last",
    "hyp_dram_last": "hyp_dram_last_last",
}
"""Columns that change along a run, and the run column holding their value at its last page."""


def _at_page(column: str) -> str:
    """The runs side's value of ``column`` at the single page ``p.idmap_pa`` (exact integers)."""
    last = INTERPOLATED.get(column)
    if last is None:
        return f"r.{column}"
    step = (
        f"(CAST(p.idmap_pa AS HUGEINT) - r.idmap_pa) * (CAST(r.{last} AS HUGEINT) - r.{column})"
        " // (CAST(r.idmap_pa_last AS HUGEINT) - r.idmap_pa)"
    )
    return (
        f"CAST(CASE WHEN r.idmap_pa_last = r.idmap_pa THEN r.{column} "
        f"ELSE CAST(r.{column} AS HUGEINT) + {step} END AS UBIGINT)"
    )


def _key(column: str, side: str) -> str:
    if ROW_COLUMNS.get(column) == "category":
        return f"CAST({side}.{column} AS VARCHAR)"
    return f"{side}.{column}"


def joined_sql(
    runs: str, pages: str, keys: list[str], compared: list[str], runs_are_a: bool
) -> str:
    """Every row of ``pages`` with the run of ``runs`` holding it (``inside``) and both sides'
    outputs as ``c_a``/``c_b``."""
    others = [k for k in keys if k != "idmap_pa"]
    on = " AND ".join(f"{_key(k, 'p')} = {_key(k, 'r')}" for k in others)
    on += (
        " AND p.idmap_pa BETWEEN r.idmap_pa AND r.idmap_pa_last"
        " AND (p.idmap_pa - r.idmap_pa) % p.granule = 0"
    )
    key_list = ", ".join(f"{_key(k, 'p')} AS {k}" for k in keys)
    outputs = []
    for c in compared:
        mine, theirs = _at_page(c), f"p.{c}"
        a, b = (mine, theirs) if runs_are_a else (theirs, mine)
        outputs.append(f"{a} AS {c}_a, {b} AS {c}_b")
    return (
        f"SELECT {key_list}, r.idmap_pa IS NOT NULL AS inside, {', '.join(outputs)} "
        f"FROM {pages} AS p LEFT JOIN {runs} AS r ON {on}"
    )


def counts_sql(joined: str, compared: list[str], runs_are_a: bool) -> str:
    """Per board: pages matched, pages of the single-page side in no run, and changed rows."""
    flags = [f"{c}_a IS DISTINCT FROM {c}_b" for c in compared]
    per_column = "".join(
        f", count(*) FILTER (WHERE inside AND {f}) AS {c}"
        for c, f in zip(compared, flags, strict=True)
    )
    alone = "only_b" if runs_are_a else "only_a"
    other = "only_a" if runs_are_a else "only_b"
    return (
        f"SELECT memory_map, count(*) FILTER (WHERE inside) AS rows, "
        f"count(*) FILTER (WHERE NOT inside) AS {alone}, 0 AS {other}, "
        f"count(*) FILTER (WHERE inside AND ({' OR '.join(flags) or 'FALSE'})) AS changed"
        f"{per_column} FROM ({joined}) GROUP BY memory_map"
    )


def first_rows_sql(joined: str, keys: list[str], compared: list[str], n: int) -> str:
    flags = " OR ".join(f"{c}_a IS DISTINCT FROM {c}_b" for c in compared) or "FALSE"
    pairs = ", ".join(f"{c}_a, {c}_b" for c in compared)
    return (
        f"SELECT {', '.join(keys)}, {pairs} FROM ({joined}) WHERE inside AND ({flags}) "
        f"ORDER BY {', '.join(keys)} LIMIT {int(n)}"
    )


def diff_pages(run_a, run_b, out, show: int):
    """Fill ``out`` (a ``sweep.read.diff.Diff``) comparing runs with single pages: the side with
    runs is the one with a ``pages`` column."""
    runs_are_a = "pages" in run_a.columns
    runs, pages = ("run_a", "run_b") if runs_are_a else ("run_b", "run_a")
    joined = joined_sql(runs, pages, out.keys, out.compared, runs_are_a)
    summary = run_a.frame(counts_sql(joined, out.compared, runs_are_a))
    summary = summary.set_index("memory_map").sort_index()
    out.rows_a = int(run_a.frame("SELECT count(*) AS n FROM run_a")["n"].iat[0])
    out.rows_b = int(run_a.frame("SELECT count(*) AS n FROM run_b")["n"].iat[0])
    total_pages = int(run_a.frame(f"SELECT sum(pages) AS n FROM {runs}")["n"].iat[0] or 0)
    matched = int(summary["rows"].sum())
    out.only_a, out.only_b = int(summary["only_a"].sum()), int(summary["only_b"].sum())
    out.n_changed = int(summary["changed"].sum())
    out.changed = run_a.frame(first_rows_sql(joined, out.keys, out.compared, show))
    keep = ["rows", "only_a", "only_b", "changed"]
    keep += [c for c in out.compared if summary[c].any()]
    shown = summary[keep].astype("int64")
    out.summary = shown[(shown[["only_a", "only_b", "changed"]] > 0).any(axis=1)]
    side, other = ("A", "B") if runs_are_a else ("B", "A")
    out.notes.append(
        f"{side} holds runs of pages ({out.rows_a if runs_are_a else out.rows_b:,} runs, "
        f"{total_pages:,} pages): each page of {other} is compared with the run holding it; "
        f"{side}'s other {total_pages - matched:,} pages are not compared"
    )
    return out
