"""``sweep query``: one answer (a named query or the user's SQL), written for people or scripts.

Tables show addresses in hex and sizes with units (``--raw``: exact integers); CSV and JSON
the same; Parquet keeps the engine's types. A filter value no row has is an error, and an
incomplete sweep (failed or missing units) is said on stderr before the answer.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core.errors import ValidationError
from sweep.core.text import printable
from sweep.read.engine import Results
from sweep.read.queries import QUERIES
from sweep.read.results import for_people, parse_filters, problems

TOP_N = ("worst-cases", "worst-configurations")
"""Queries whose answer is the top N rows: ``--limit`` is their N (20 by default)."""


def _split(args: tuple[str, ...], sql: str | None) -> tuple[str | None, list[str]]:
    name = args[0] if args and "=" not in args[0] else None
    filters = list(args[1:] if name else args)
    if sql and name:
        raise ValidationError(f"query {name!r} and --sql: give one or the other")
    if not sql and not name:
        raise ValidationError(f"give a query name ({', '.join(QUERIES)}) or --sql")
    if name and name not in QUERIES:
        raise ValidationError(f"query {name!r}: not a named query ({', '.join(QUERIES)})")
    return name, filters


def select_only(sql: str) -> str:
    """``sql`` if it is one SELECT (a ``WITH ...`` or ``VALUES`` too), else one line: ``--sql``
    reads the results, it never writes a file (``COPY``), attaches or sets anything."""
    text = sql.strip().rstrip(";").strip()
    try:
        statements = duckdb.connect().extract_statements(text)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValidationError(f"--sql: {type(exc).__name__}: {first}") from None
    if len(statements) != 1:
        raise ValidationError(f"--sql: {len(statements)} statements; give one SELECT")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise ValidationError(
            f"--sql: a {kind.name} statement; --sql runs one SELECT over the table 'results'"
        )
    return text


def answer(
    directory: str, args: tuple[str, ...], sql: str | None = None, limit: int | None = None
) -> pd.DataFrame | pa.Table:
    """The answer as a DataFrame (a named query) or an Arrow table (``--sql``)."""
    name, filters = _split(args, sql)
    if limit is not None and limit < 0:
        raise ValidationError(f"--limit {limit}: must be 0 or more")
    query = select_only(sql) if sql else None
    with Results(directory, **parse_filters(filters)) as data:
        for line in problems(directory, data.parts):
            click.echo(f"sweep: warning: results {directory!r}: {line}", err=True)
        if query:
            if limit is not None:
                query = f"SELECT * FROM ({query}) LIMIT {int(limit)}"
            return data.arrow(query)
        if name in TOP_N:
            frame = QUERIES[name](data, n=20 if limit is None else limit)
        else:
            frame = QUERIES[name](data)
    if not isinstance(frame.index, pd.RangeIndex):
        frame = frame.reset_index()
    return frame if limit is None else frame.head(limit)


def run_query(
    directory: str,
    args: tuple[str, ...],
    sql: str | None,
    limit: int | None,
    fmt: str,
    raw: bool,
    out: str | None,
) -> None:
    result = answer(directory, args, sql=sql, limit=limit)
    if fmt == "parquet":
        if not out:
            raise ValidationError("--format parquet: give --out FILE")
        table = result if isinstance(result, pa.Table) else pa.Table.from_pandas(result)
        pq.write_table(table, out)
        click.echo(f"wrote {out} ({table.num_rows} rows)", err=True)
        return
    frame = result.to_pandas() if isinstance(result, pa.Table) else result
    shown = frame if raw else for_people(frame)
    if fmt == "table":
        text = shown.to_string(index=False) if len(shown) else "(no rows)"
    elif fmt == "csv":
        text = shown.to_csv(index=False).rstrip("\n")
    else:
        text = shown.to_json(orient="records", lines=True).rstrip("\n")
    if out:
        Path(out).write_text(text + "\n")
    else:
        click.echo(printable(text, keep="\n"))  # names from older datasets: escaped
    sys.stdout.flush()
