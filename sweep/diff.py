"""``sweep diff``: which rows changed between two runs, and in which columns, board by board.

Rows are matched on the configuration (MODEL.md section 1's input columns) and their outputs
compared column by column. Dropping a key with ``ignore`` compares runs that differ in that input
on purpose, e.g. two runs of one layout each (``ignore=["layout", "tag_random"]``). The runs are
read one ``granule``/``va_bits`` folder at a time, so two large runs need not fit in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sweep import results
from sweep.columns import INPUT_COLUMNS, ROW_COLUMNS
from sweep.errors import ValidationError
from sweep.results import HEX_COLUMNS

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
    changed: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per differing row: the keys, and for each compared column ``col_a``/``col_b``."""
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Per board: rows compared, rows changed, and per column the rows where it differs."""

    @property
    def identical(self) -> bool:
        return self.only_a == 0 and self.only_b == 0 and self.changed.empty


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


def _plain_keys(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Category columns of two runs have different categories: compare them as strings.
    for column in keys:
        if isinstance(frame[column].dtype, pd.CategoricalDtype):
            frame[column] = frame[column].astype(str)
    return frame


def _units(dir_a: Path, dir_b: Path, keys: list[str]) -> list[dict]:
    """Read both runs folder by folder when the folders are join keys; else whole."""
    if "granule" in keys and "va_bits" in keys:
        found = sorted(set(results.partitions(dir_a)) | set(results.partitions(dir_b)))
        if found:
            return [{"granule": g, "va_bits": v} for g, v in found]
    return [{}]


def _load(directory: Path, columns: list[str], keys: list[str], unit: dict) -> pd.DataFrame:
    frame = results.load(directory, columns=columns, **unit)
    frame = _plain_keys(frame, keys)
    if frame.duplicated(keys).any():
        raise ValidationError(
            f"results {str(directory)!r}: several rows share one configuration "
            f"({', '.join(keys)}); ignore fewer columns"
        )
    return frame


def diff(dir_a: str | Path, dir_b: str | Path, ignore: Sequence[str] = ()) -> Diff:
    """Compare two result directories row by row (see the module docstring)."""
    dir_a, dir_b = Path(dir_a), Path(dir_b)
    keys = _keys(ignore)
    names_a = results.dataset(dir_a).schema.names
    names_b = results.dataset(dir_b).schema.names
    missing = [c for c in keys if c not in names_a or c not in names_b]
    if missing:
        raise ValidationError(f"column {missing[0]!r} is missing from one of the runs")
    compared = [c for c in OUTPUT_COLUMNS if c in names_a and c in names_b]
    out = Diff(keys=keys, compared=compared)
    changed_parts, board_rows = [], []
    columns = keys + compared
    for unit in _units(dir_a, dir_b, keys):
        a = _load(dir_a, columns, keys, unit)
        b = _load(dir_b, columns, keys, unit)
        out.rows_a += len(a)
        out.rows_b += len(b)
        # Which configurations are in which run: keys only (an outer join of whole rows would
        # turn integer columns with gaps into floats). Then the outputs, on an inner join.
        joined = a[keys].merge(b[keys], on=keys, how="outer", indicator=True)
        out.only_a += int((joined["_merge"] == "left_only").sum())
        out.only_b += int((joined["_merge"] == "right_only").sum())
        both = a.merge(b, on=keys, how="inner", suffixes=("_a", "_b"))
        differs = pd.DataFrame(
            {c: (both[f"{c}_a"] != both[f"{c}_b"]).to_numpy() for c in compared},
            index=both.index,
        )
        board_rows.append(
            joined.groupby(["memory_map", "_merge"], observed=False).size().unstack("_merge")
        )
        any_diff = differs.any(axis=1)
        if any_diff.any():
            rows = both[any_diff]
            flags = differs[any_diff]
            changed_parts.append((rows, flags))
    out.summary = _summary(board_rows, changed_parts, compared)
    if changed_parts:
        out.changed = pd.concat([rows for rows, _ in changed_parts], ignore_index=True)
    return out


def _summary(
    board_rows: list[pd.DataFrame], changed_parts: list, compared: list[str]
) -> pd.DataFrame:
    """Per board: rows in both runs, rows only in one, rows changed, and rows changed per
    column (only the columns that changed somewhere)."""
    sides = {"both": "rows", "left_only": "only_a", "right_only": "only_b"}
    if board_rows:
        counts = pd.concat(board_rows).groupby(level=0).sum()
        counts.columns = counts.columns.astype(str)
        summary = counts.reindex(columns=list(sides), fill_value=0).rename(columns=sides)
    else:
        summary = pd.DataFrame(columns=list(sides.values()), dtype="int64")
    summary["changed"] = 0
    for column in compared:
        summary[column] = 0
    for part, flags in changed_parts:
        boards = part["memory_map"].to_numpy()
        summary.loc[:, "changed"] = summary["changed"].add(
            flags.any(axis=1).groupby(boards).sum(), fill_value=0
        )
        per_column = flags.groupby(boards).sum()
        for column in compared:
            summary.loc[:, column] = summary[column].add(per_column[column], fill_value=0)
    keep = ["rows", "only_a", "only_b", "changed"] + [c for c in compared if summary[c].any()]
    summary = summary[keep].astype("int64")
    summary.index.name = "memory_map"
    summary.columns.name = None
    return summary[(summary[["only_a", "only_b", "changed"]] > 0).any(axis=1)]


def format_diff(result: Diff, dir_a: str, dir_b: str, show: int = 10) -> str:
    """What the command prints: totals, the per-board summary, and the first changed rows."""
    lines = [
        f"A: {dir_a} ({result.rows_a:,} rows)  B: {dir_b} ({result.rows_b:,} rows)",
        f"matched on {', '.join(result.keys)}: {len(result.changed):,} rows differ; "
        f"{result.only_a:,} only in A, {result.only_b:,} only in B",
    ]
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
