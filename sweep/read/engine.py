"""The one reader of results: a sweep's part files (or a DataFrame) as the DuckDB view ``results``.

DuckDB streams the Parquet files under a memory limit: only the columns a query names are read,
filters are pushed down (a ``granule``/``va_bits`` filter picks the folders before any file is
opened; others use the row groups' statistics), and aggregates and top-N rows are all that reach
pandas, so a query over 10^9 rows needs megabytes. ``sweep.read.results``, ``sweep.read.queries``,
``sweep.read.report`` and ``sweep.read.diff`` all read through here.

Only the sweep's own part files are read, and only those its ``_manifest.json`` vouches for
(:func:`sweep.store.manifest.trusted_parts`): a part of another run, a copied or damaged part, a
stray folder is left out with one warning line naming it (refused with ``strict``), and a
``notes.txt`` or any other file that is not a part is named in one line, never read. Parquet
that is not a sweep's rows is refused in one line naming the columns it lacks.
"""

from __future__ import annotations

import difflib
import functools
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from sweep.core.columns import ROW_COLUMNS
from sweep.core.env import env_duckdb_memory
from sweep.core.errors import ValidationError
from sweep.core.memmap import granule_name, parse_granule
from sweep.read.trust import STRICT, ResultsWarning, check_columns, strict_reads, trusted
from sweep.store import summary
from sweep.store.parts import PartKey, Store
from sweep.store.summary import FILTER_COLUMNS

MEMORY_LIMIT = "1GB"
"""DuckDB's memory limit unless ``SWEEP_MEMORY_LIMIT`` says otherwise (read at each connect)."""
"""DuckDB's memory limit for every reader (it spills to a temporary folder beyond it)."""

FOLDER_KEYS = ("granule", "va_bits")
__all__ = ["Results", "ResultsWarning", "connect", "quote", "results_of", "strict_reads"]


def quote(text: str) -> str:
    """``text`` as a SQL string literal: in single quotes, each quote in it doubled."""
    return "'" + text.replace("'", "''") + "'"


def _literal(value: object) -> str:
    """A SQL literal for a filter value (filters are values, never SQL)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    return quote(str(value))


def _normalise(column: str, value: object) -> object:
    """A filter value as the column holds it: ``va_bits="39"`` is the integer 39 (a string
    of digits for an integer column is that integer, not a value no row has)."""
    dtype = ROW_COLUMNS.get(column)
    if dtype == "category":
        return str(value)
    if column == "granule":
        return parse_granule(value)  # type: ignore[arg-type]
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, str) and dtype is not None and dtype.startswith(("int", "uint")):
        try:
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            raise ValidationError(
                f"filter {column}={value!r}: expected an integer ({column} is {dtype})"
            ) from None
    return value


def _as_list(wanted: object) -> list:
    if isinstance(wanted, (str, bytes)) or not isinstance(wanted, Iterable):
        return [wanted]
    return list(wanted)


class Results:
    """Rows of one sweep (a result directory or URL), or of a DataFrame, as the view ``results``.

    ``filters`` are ``column=value`` or ``column=[v1, v2]``, and-ed; a value that matches no row
    of the data is an error naming the nearest values that do (a typo is not an empty answer).
    """

    def __init__(
        self,
        source: str | Path | pd.DataFrame,
        view: str = "results",
        con: duckdb.DuckDBPyConnection | None = None,
        strict: bool | None = None,
        **filters: object,
    ) -> None:
        self.con = con or connect()
        self.strict = STRICT.get() if strict is None else strict
        self.left_out: dict[str, str] = {}
        self.view = view
        self.directory: str | None = None
        self.parts: list[str] = []
        self.selected: list[str] = []
        self.summaries: dict[str, str] = {}
        """Part -> its summary file, for the parts whose summary file the manifest vouches for."""
        if isinstance(source, pd.DataFrame):
            self.con.register("_frame", source)
            scan = "_frame"
            self.columns = list(source.columns)
        else:
            self.directory = str(source)
            store = Store(self.directory)
            if store.local and not Path(store.root).is_dir():
                raise ValidationError(f"results {self.directory!r}: no such directory")
            if not store.local:
                self.con.register_filesystem(store.fsspec)
            self.store = store
            kept = {
                c: {_normalise(c, v) for v in _as_list(filters[c])}
                for c in FOLDER_KEYS
                if c in filters
            }
            self.parts, self.left_out, self.summaries = trusted(
                store, self.directory, self.strict, kept
            )
            self.selected = self._folders(filters)
            scan = self._scan(self.selected)
            self.columns = [r[0] for r in self._rows(f"DESCRIBE SELECT * FROM {scan}")]
            check_columns(self.directory, self.columns)
        self.filters = {c: [_normalise(c, v) for v in _as_list(w)] for c, w in filters.items()}
        where = self._where()
        self._rows(f"CREATE VIEW {view} AS SELECT * FROM {scan}{where}")
        if self.filters:
            self._check_filters(scan)

    # --- files ---------------------------------------------------------------------------------

    def _folders(self, filters: Mapping[str, object], empty: bool = False) -> list[str]:
        """The part files of the folders the ``granule``/``va_bits`` filters keep."""
        keep = {
            c: {_normalise(c, v) for v in _as_list(filters[c])} for c in FOLDER_KEYS if c in filters
        }
        chosen = []
        for rel in self.parts:
            key = PartKey.parse(rel)
            folder = {"granule": key.granule, "va_bits": key.va_bits}
            if all(folder[c] in values for c, values in keep.items()):
                chosen.append(rel)
        if empty:
            return chosen
        return chosen or self.parts[:1]  # one file keeps the schema; the WHERE empties it

    def folder_scan(
        self, granule: int, va_bits: int, leave_out: frozenset[str] = frozenset()
    ) -> str | None:
        """The scan of one folder's part files (but ``leave_out``), or None when none is left."""
        parts = self._folders({"granule": granule, "va_bits": va_bits}, empty=True)
        parts = [rel for rel in parts if rel not in leave_out]
        return self._scan(parts) if parts else None

    def files_scan(self, parts: list[str]) -> str:
        """The scan of these part files (relative paths among ``parts``), no filter."""
        return self._scan(parts)

    def _path(self, rel: str) -> str:
        root = self.store.root if self.store.local else self.store.url.rstrip("/")
        return f"{root}/{rel}"

    def _scan(self, parts: list[str]) -> str:
        files = ", ".join(_literal(self._path(rel)) for rel in parts)
        return f"read_parquet([{files}])"

    def partitions(self) -> list[tuple[int, int]]:
        """The ``(granule, va_bits)`` folders holding part files, sorted."""
        found = set()
        for rel in self.parts:
            key = PartKey.parse(rel)
            found.add((key.granule, key.va_bits))
        return sorted(found)

    # --- filters -------------------------------------------------------------------------------

    def _where(self) -> str:
        terms = []
        for column, values in self.filters.items():
            if column not in self.columns:
                raise ValidationError(
                    f"filter {column!r}: not a column of the results "
                    f"(columns: {', '.join(self.columns)})"
                )
            if not values:
                raise ValidationError(f"filter {column!r}: empty list of values")
            terms.append(f"{column} IN ({', '.join(_literal(v) for v in values)})")
        return f" WHERE {' AND '.join(terms)}" if terms else ""

    def _check_filters(self, scan: str) -> None:
        """Every filter value must match some row (on its own, in the folders the folder keys
        keep); else name the near matches. Folder keys are checked by the folders' names."""
        present = self.partitions()
        folder_keys = FOLDER_KEYS if self.directory else ()
        for column, values in self.filters.items():
            if column in folder_keys:
                keys = {p[FOLDER_KEYS.index(column)] for p in present}
                for value in values:
                    if value not in keys:
                        self._no_match(column, value, scan)
        pairs = [
            (c, v) for c, values in self.filters.items() if c not in FOLDER_KEYS for v in values
        ]
        if not pairs:
            return
        counts = ", ".join(f"count(*) FILTER (WHERE {c} = {_literal(v)})" for c, v in pairs)
        if all(c in FILTER_COLUMNS for c, _ in pairs) and self._part_summaries is not None:
            scan = f"({self._part_summaries})"  # fewer rows than the parts': the same answer
        found = self._rows(f"SELECT {counts} FROM {scan}")[0]
        for (column, value), n in zip(pairs, found, strict=True):
            if n == 0:
                self._no_match(column, value, scan)

    def _no_match(self, column: str, value: object, scan: str) -> None:
        raise ValidationError(
            f"filter {column}={self._shown(column, value)}: matches no row of the results"
            f"{self._near(column, value, scan)}"
        )

    def _shown(self, column: str, value: object) -> str:
        if column == "granule":
            return granule_name(int(value))
        return f"{value:#x}" if isinstance(value, int) and value > 9999 else str(value)

    def _near(self, column: str, value: object, scan: str) -> str:
        if column in FOLDER_KEYS and self.directory:
            index = FOLDER_KEYS.index(column)
            present = sorted({p[index] for p in self.partitions()})
            return f" (present: {', '.join(self._shown(column, v) for v in present)})"
        if ROW_COLUMNS.get(column) == "category" or isinstance(value, str):
            names = [str(r[0]) for r in self._rows(f"SELECT DISTINCT {column} FROM {scan}")]
            close = difflib.get_close_matches(str(value), names, n=3, cutoff=0.6)
            listed = close or sorted(names)[:10]
            more = "" if close or len(names) <= 10 else f", ... {len(names)} in all"
            return f" ({'did you mean' if close else 'present'}: {', '.join(listed)}{more})"
        if isinstance(value, bool):
            return ""
        below, above = self._rows(
            f"SELECT max({column}) FILTER (WHERE {column} < {value}), "
            f"min({column}) FILTER (WHERE {column} > {value}) FROM {scan}"
        )[0]
        near = [self._shown(column, int(v)) for v in (below, above) if v is not None]
        return f" (nearest: {', '.join(near)})" if near else ""

    # --- summaries -----------------------------------------------------------------------------

    @functools.cached_property
    def summary_parts(self) -> bool:
        """Whether :attr:`summary` reads the parts' own summaries (then it has a ``part`` column,
        an index into :attr:`selected`): every selected part has one and every filter is on a
        group column (``FILTER_COLUMNS``)."""
        return all(c in FILTER_COLUMNS for c in self.filters) and self._part_summaries is not None

    @functools.cached_property
    def summary(self) -> str:
        """The name of a view of these rows' summaries (:mod:`sweep.store.summary`), made on first
        use: the parts' own summaries (:attr:`summary_parts`), else every row read as a summary
        row in SQL."""
        name = f"{self.view}_summary"
        if self.summary_parts:
            source = f"SELECT * FROM ({self._part_summaries}){self._where()}"
        else:
            source = summary.rows_sql(self.view, self.columns)
        self._rows(f"CREATE VIEW {name} AS {source}")
        return name

    @functools.cached_property
    def _part_summaries(self) -> str | None:
        """SQL of every selected part's summary rows with a ``part`` column, or None when some
        part has none. Summary files (streamed by DuckDB: the summaries of 10^9 rows never sit in
        memory) when every selected part has one, else the footers of parts of older va-sweeps
        (:meth:`_footers`)."""
        if not self.selected:
            return None
        if all(rel in self.summaries for rel in self.selected):
            files = [self._path(self.summaries[rel]) for rel in self.selected]
            listed = ", ".join(_literal(f) for f in files)
            # ``part`` is computed only where a query names it (worst-cases, on few rows).
            return (
                f"SELECT * EXCLUDE (filename), CAST(list_position([{listed}], filename) - 1 "
                f"AS INTEGER) AS part FROM read_parquet([{listed}], filename = true)"
            )
        return self._footers()

    def _footers(self) -> str | None:
        """Every selected part's footer summary (parts of va-sweeps that kept it there) in one
        table, registered for these results, or None when some part has none."""
        files = [self._path(rel) for rel in self.selected]
        listed = ", ".join(_literal(f) for f in files)
        found = self._rows(
            f"SELECT file_name, value FROM parquet_kv_metadata([{listed}]) "
            f"WHERE key = {quote(summary.SUMMARY_KEY)}"
        )
        index = {f: k for k, f in enumerate(files)}
        tables = [summary.decode(value) for _, value in found]
        names = [name for name, _ in found]
        if len(found) != len(files) or None in tables or set(names) != set(index):
            return None
        name = f"_{self.view}_footers"  # two views (sweep diff) share one connection
        self.con.register(name, summary.combine(tables, [index[n] for n in names]))
        return f"SELECT * FROM {name}"

    def scan_of(self, parts: list[int]) -> str:
        """``FROM`` text for the rows of the selected parts numbered ``parts`` (filters
        applied): what a query that needs rows reads once the summaries have ruled out the rest."""
        chosen = [self.selected[k] for k in parts] or self.selected[:1]
        where = self._where() if parts else " WHERE FALSE"
        return f"(SELECT * FROM {self._scan(chosen)}{where})"

    # --- running SQL ---------------------------------------------------------------------------

    def _rows(self, sql: str) -> list[tuple]:
        try:
            return self.con.execute(sql).fetchall()
        except duckdb.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: duckdb.Error) -> ValidationError:
        text = str(exc).strip().splitlines()[0]
        where = f"results {self.directory!r}: " if self.directory else ""
        return ValidationError(f"{where}{type(exc).__name__}: {text}")

    def arrow(self, sql: str) -> pa.Table:
        """Run ``sql`` (over the view ``results``) and give its answer as an Arrow table."""
        try:
            relation = self.con.sql(sql)
            if relation is None:
                return pa.table({})
            fetch = getattr(relation, "to_arrow_table", None) or relation.arrow
            return fetch()
        except duckdb.Error as exc:
            raise self._error(exc) from None

    def frame(self, sql: str) -> pd.DataFrame:
        """Run ``sql`` and give a pandas DataFrame: integers as integers, names as strings."""
        table = self.arrow(sql)
        columns = {}
        for name, column in zip(table.column_names, table.columns, strict=True):
            if pa.types.is_decimal(column.type):  # DuckDB's sum of integers is a HUGEINT
                column = column.cast(pa.int64())
            elif pa.types.is_dictionary(column.type):
                column = column.cast(column.type.value_type)
            columns[name] = column
        return pa.table(columns).to_pandas() if columns else pd.DataFrame()

    @property
    def min_margin(self) -> str:
        """A run's smallest margin: margin is concave along a run, so it is at one end."""
        return summary.min_margin_sql(self.columns)

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Results:
        return self

    def __exit__(self, *exc) -> None:
        """Close the DuckDB connection however the block ends (an error in a report or a
        diff leaves no connection, and no spill folder in use, behind)."""
        self.close()


def connect() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the readers' memory limit."""
    # Spilled data goes to the system's temporary folder, not to ``.tmp`` in the user's cwd.
    spill = os.path.join(tempfile.gettempdir(), f"sweep-duckdb-{os.getpid()}")
    limit = env_duckdb_memory("SWEEP_MEMORY_LIMIT", MEMORY_LIMIT)  # a bad value: one line
    con = duckdb.connect(config={"memory_limit": limit, "temp_directory": spill})
    con.execute("SET enable_progress_bar = false")
    return con


def results_of(source: Results | str | Path | pd.DataFrame, **filters: object) -> Results:
    """``source`` as :class:`Results` (a directory, a URL or a DataFrame; filters apply)."""
    if isinstance(source, Results):
        if filters:
            raise ValidationError("filters go where the results are opened, not on a query")
        return source
    return Results(source, **filters)
