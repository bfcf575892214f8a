"""``sweep diff``: which rows changed between two runs, and in which columns, board by board.

Rows are matched on the configuration (docs/model.md section 1's input columns) and their outputs
compared column by column. Dropping a key with ``ignore`` compares runs that differ in that input
on purpose, e.g. two runs of one layout each (``ignore=["layout", "tag_random"]``). The join runs
in DuckDB, one ``granule``/``va_bits`` folder at a time when both are keys, so two large runs
need neither fit in memory: only the per-board counts and the first differing rows come back.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweep.core.columns import INPUT_COLUMNS, ROW_COLUMNS, RUN_COLUMNS
from sweep.core.errors import ValidationError
from sweep.read.diff_pages import diff_pages
from sweep.read.engine import Results, connect, quote
from sweep.read.results import HEX_COLUMNS, warn_if_incomplete
from sweep.store.manifest import Manifest

OUTPUT_COLUMNS = [c for c in ROW_COLUMNS if c not in INPUT_COLUMNS]
"""What is compared: every column that is not an input (section 6 and the project's extras)."""


@dataclass
class Diff:
    """The outcome of comparing run A with run B."""

    keys: list[str]
    compared: list[str]
    rows_a: int = 0
    rows_b: int = 0
    only_a: int = 0
    only_b: int = 0
    n_changed: int = 0
    changed: pd.DataFrame = field(default_factory=pd.DataFrame)
    """The first differing rows: the keys, and for each compared column ``col_a``/``col_b``."""
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per board: rows compared, rows changed, and per column the rows where it differs."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """Output columns only one run has, by run ("A", "B"): not compared, and said so."""
    notes: list[str] = field(default_factory=list)
    """How the runs were matched, when not row for row (runs of pages against single pages)."""

    @property
    def identical(self) -> bool:
        return self.only_a == 0 and self.only_b == 0 and self.n_changed == 0


def _keys(ignore: Sequence[str]) -> list[str]:
    unknown = [c for c in ignore if c not in INPUT_COLUMNS]
    if unknown:
        raise ValidationError(
            f"--ignore {', '.join(unknown)}: only input columns can be ignored "
            f"({', '.join(INPUT_COLUMNS)})"
        )
    keys = [c for c in INPUT_COLUMNS if c not in ignore]
    if "memory_map" not in keys:
        raise ValidationError("--ignore memory_map: the diff is summarized by board, keep it")
    return keys


def _side(
    scan: str | None,
    other: str | None,
    keys: list[str],
    compared: list[str],
    hashed: bool = False,
    boards: list[str] | None = None,
) -> str:
    """One run's rows as keys (names as text: two runs' categories differ) and outputs, or one
    hash of the outputs (``hashed``); none, of the other run's types, when this run lacks the
    folder; only ``boards`` when given."""
    columns = [f"{_text(c)} AS {c}" for c in keys]
    values = [_text(c) for c in compared]  # a DataFrame's categories are DuckDB ENUMs
    if hashed:
        outputs = [f"hash({', '.join(values)}) AS h"]
    else:
        outputs = [f"{v} AS {c}" for v, c in zip(values, compared, strict=True)]
    select = ", ".join([*columns, *outputs, "TRUE AS present"])
    where = "FALSE" if scan is None else "TRUE"
    if boards is not None:
        where += f" AND memory_map IN ({', '.join(quote(b) for b in boards)})"
    return f"(SELECT {select} FROM {other if scan is None else scan} WHERE {where})"


def _text(c: str) -> str:
    """``c`` as a select item, names as text: two runs' categories (or ENUMs) differ."""
    return f"CAST({c} AS VARCHAR)" if ROW_COLUMNS.get(c) == "category" else c


def _counts_sql(a: str, b: str, keys: list[str]) -> str:
    """Per board: matched, only in A, only in B, and changed rows (their output hashes differ:
    64 bits, so two different rows hash alike once in 2^64)."""
    return (
        f"SELECT memory_map, count(*) FILTER (WHERE a.present AND b.present) AS rows, "
        "count(*) FILTER (WHERE b.present IS NULL) AS only_a, "
        "count(*) FILTER (WHERE a.present IS NULL) AS only_b, "
        "count(*) FILTER (WHERE a.present AND b.present AND a.h <> b.h) AS changed "
        f"FROM {a} AS a FULL OUTER JOIN {b} AS b USING ({', '.join(keys)}) GROUP BY memory_map"
    )


def _summary_sql(a: str, b: str, keys: list[str], compared: list[str]) -> str:
    flags = [f"a.{c} IS DISTINCT FROM b.{c}" for c in compared]
    per_column = ", ".join(
        f"count(*) FILTER (WHERE a.present AND b.present AND {f}) AS {c}"
        for c, f in zip(compared, flags, strict=True)
    )
    any_flag = " OR ".join(flags) or "FALSE"
    return (
        f"SELECT memory_map, count(*) FILTER (WHERE a.present AND b.present) AS rows, "
        "count(*) FILTER (WHERE b.present IS NULL) AS only_a, "
        "count(*) FILTER (WHERE a.present IS NULL) AS only_b, "
        f"count(*) FILTER (WHERE a.present AND b.present AND ({any_flag})) AS changed, "
        f"{per_column} "
        f"FROM {a} AS a FULL OUTER JOIN {b} AS b USING ({', '.join(keys)}) GROUP BY memory_map"
    )


def _rows_sql(a: str, b: str, keys: list[str], compared: list[str], n: int) -> str:
    pairs = ", ".join(f"a.{c} AS {c}_a, b.{c} AS {c}_b" for c in compared)
    any_flag = " OR ".join(f"a.{c} IS DISTINCT FROM b.{c}" for c in compared) or "FALSE"
    return (
        f"SELECT {', '.join(keys)}, {pairs} FROM {a} AS a JOIN {b} AS b USING "
        f"({', '.join(keys)}) WHERE {any_flag} ORDER BY {', '.join(keys)} LIMIT {int(n)}"
    )


def diff(
    dir_a: str | Path | pd.DataFrame,
    dir_b: str | Path | pd.DataFrame,
    ignore: Sequence[str] = (),
    show: int = 10,
) -> Diff:
    """Compare two result directories (or DataFrames of rows) row by row (see the module
    docstring); ``changed`` holds the first ``show`` differing rows."""
    keys = _keys(ignore)
    with closing(connect()) as con:
        return _diff(con, dir_a, dir_b, keys, show)


def _diff(con, dir_a, dir_b, keys: list[str], show: int) -> Diff:
    run_a = Results(dir_a, view="run_a", con=con)
    run_b = Results(dir_b, view="run_b", con=con)
    for run in (run_a, run_b):
        if run.directory is not None:  # a DataFrame has no record to be incomplete against
            warn_if_incomplete(run.directory, run.parts)
    keys = [c for c in keys if c in run_a.columns or c in run_b.columns]  # older runs lack some
    missing = [c for c in keys if c not in run_a.columns or c not in run_b.columns]
    if missing:
        raise ValidationError(f"column {missing[0]!r} is missing from one of the runs")
    compared = [c for c in OUTPUT_COLUMNS if c in run_a.columns and c in run_b.columns]
    out = Diff(keys=keys, compared=compared)
    for name, run, other in (("A", run_a, run_b), ("B", run_b, run_a)):
        only = [c for c in [*ROW_COLUMNS, *RUN_COLUMNS] if c in run.columns]
        only = [c for c in only if c not in other.columns and c not in RUN_COLUMNS]
        if only:
            out.skipped[name] = only
    if ("pages" in run_a.columns) != ("pages" in run_b.columns):
        if "idmap_pa" not in keys:
            raise ValidationError(
                "--ignore idmap_pa: runs of pages are matched to single pages by idmap_pa"
            )
        return diff_pages(run_a, run_b, out, show)
    alike, alike_rows = _alike_parts(run_a, run_b, keys)
    if "granule" in keys and "va_bits" in keys and run_a.directory and run_b.directory:
        folders = sorted(set(run_a.partitions()) | set(run_b.partitions()))
        scans = [(run_a.folder_scan(*f, alike), run_b.folder_scan(*f, alike)) for f in folders]
        scans = [(a, b) for a, b in scans if a or b]
    else:
        scans = [("run_a", "run_b")]
    summaries, per_column, firsts = _join(run_a, scans, keys, compared, show)
    if alike:  # equal bytes, equal rows: matched, none changed, counted per board
        out.notes.append(f"{len(alike):,} part(s) with equal SHA-256 in both runs: not read again")
        summaries.append(_alike_counts(run_a, sorted(alike)))
    summary = pd.concat(summaries).groupby("memory_map", sort=True).sum()
    columns = (
        pd.concat(per_column).groupby("memory_map").sum()[compared]
        if per_column
        else pd.DataFrame(columns=compared, dtype="int64")
    )
    summary = summary.join(columns, how="left").fillna(0)
    out.rows_a = run_a.frame("SELECT count(*) AS n FROM run_a")["n"].iat[0]
    out.rows_b = run_a.frame("SELECT count(*) AS n FROM run_b")["n"].iat[0]
    out.only_a, out.only_b = int(summary["only_a"].sum()), int(summary["only_b"].sum())
    out.n_changed = int(summary["changed"].sum())
    matched = int(summary["rows"].sum())
    if matched + out.only_a != out.rows_a or matched + out.only_b != out.rows_b:
        raise ValidationError(
            f"several rows share one configuration ({', '.join(keys)}); ignore fewer columns"
        )
    if firsts:
        out.changed = pd.concat(firsts, ignore_index=True).head(show)
    keep = ["rows", "only_a", "only_b", "changed"] + [c for c in compared if summary[c].any()]
    summary = summary[keep].astype("int64")
    summary.columns.name = None
    out.summary = summary[(summary[["only_a", "only_b", "changed"]] > 0).any(axis=1)]
    return out


def _alike_parts(run_a: Results, run_b: Results, keys: list[str]) -> tuple[frozenset, int]:
    """The parts both runs hold with one SHA-256 in their manifests (the readers held each
    part's bytes to it) and their rows: equal bytes are equal rows, which match each other and
    no other row (a configuration is one row), so they need no join. Only when every input is a
    key (with ``ignore``, rows of other parts could match them)."""
    if run_a.directory is None or run_b.directory is None or set(keys) != set(INPUT_COLUMNS):
        return frozenset(), 0
    a, b = Manifest.load(run_a.store).parts, Manifest.load(run_b.store).parts
    same = [rel for rel in set(run_a.parts) & set(run_b.parts)
            if rel in a and rel in b and a[rel]["sha256"] == b[rel]["sha256"]]  # fmt: skip
    return frozenset(same), sum(int(a[rel]["rows"]) for rel in same)


def _alike_counts(run: Results, parts: list[str]) -> pd.DataFrame:
    """Per board, the rows of parts equal in both runs: all matched, none changed."""
    return run.frame(
        "SELECT CAST(memory_map AS VARCHAR) AS memory_map, count(*) AS rows, 0 AS only_a, "
        f"0 AS only_b, 0 AS changed FROM {run.files_scan(parts)} GROUP BY ALL"
    )


def _join(run: Results, scans: list, keys: list[str], compared: list[str], show: int) -> tuple:
    """Per pair of folder scans (on ``run``'s connection, which holds both runs' views), first a
    narrow join (keys and one hash of the outputs) that counts; then, only for the boards that
    changed, the wide one that counts per column and gives the first rows. Returns the three
    lists of frames: counts, counts per column, first rows."""
    summaries, per_column, firsts = [], [], []
    for scan_a, scan_b in scans:
        counts = run.frame(
            _counts_sql(
                _side(scan_a, scan_b, keys, compared, hashed=True),
                _side(scan_b, scan_a, keys, compared, hashed=True),
                keys,
            )
        )
        summaries.append(counts)
        boards = counts.loc[counts["changed"] > 0, "memory_map"].tolist()
        if not boards:
            continue
        a = _side(scan_a, scan_b, keys, compared, boards=boards)
        b = _side(scan_b, scan_a, keys, compared, boards=boards)
        per_column.append(run.frame(_summary_sql(a, b, keys, compared)))
        if sum(len(f) for f in firsts) < show:
            firsts.append(run.frame(_rows_sql(a, b, keys, compared, show)))
    return summaries, per_column, firsts


def format_diff(result: Diff, dir_a: str, dir_b: str, show: int = 10) -> str:
    """What the command prints: totals, the per-board summary, and the first changed rows."""
    lines = [
        f"A: {dir_a} ({result.rows_a:,} rows)  B: {dir_b} ({result.rows_b:,} rows)",
        f"matched on {', '.join(result.keys)}: {result.n_changed:,} rows differ; "
        f"{result.only_a:,} only in A, {result.only_b:,} only in B",
    ]
    lines += result.notes
    for side, columns in result.skipped.items():
        lines.append(f"not compared, only in {side}: {', '.join(columns)}")
    if result.identical:
        lines.append("the runs agree on every compared column")
        return "\n".join(lines)
    if not result.summary.empty:
        lines += [
            "",
            "per board: rows matched, only in A, only in B, changed; then per column:",
            result.summary.to_string(),
        ]
    if show and not result.changed.empty:
        first = result.changed.head(show)
        columns = list(result.keys)
        for c in result.compared:
            if (first[f"{c}_a"] != first[f"{c}_b"]).any():
                columns += [f"{c}_a", f"{c}_b"]
        shown = first[columns].copy()
        for column in columns:
            if column.removesuffix("_a").removesuffix("_b") in HEX_COLUMNS:
                shown[column] = [f"{int(v):#x}" for v in shown[column]]
        lines += ["", f"first {len(first)} differing rows:", shown.to_string(index=False)]
    return "\n".join(lines)
