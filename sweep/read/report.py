"""``sweep report``: one self-contained HTML page of a sweep's results, for people to look at.

Every number on the page is a named query (:mod:`sweep.read.queries`) run in DuckDB over the part
files, so the page costs the same memory for a thousand rows as for a billion, and what it shows
can be re-asked with ``sweep query``. Figures are PNGs embedded as data URIs (one file to mail or
attach to a bug); the only script is a few lines that sort the per-board table.
"""

from __future__ import annotations

import html
import os
import shlex
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from sweep.core.errors import ValidationError
from sweep.core.memmap import granule_name
from sweep.read import figures, queries
from sweep.read.engine import Results
from sweep.read.results import for_people, metadata, problems

SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach((th, i) => th.addEventListener("click",
  () => {
    const body = th.closest("table").tBodies[0];
    const sign = th.dataset.dir === "asc" ? -1 : 1;
    th.dataset.dir = sign > 0 ? "asc" : "desc";
    const key = (r) => r.cells[i].dataset.v !== undefined ? Number(r.cells[i].dataset.v)
                                                          : r.cells[i].textContent;
    Array.from(body.rows)
      .sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0) * sign)
      .forEach((r) => body.appendChild(r));
  }));
"""
"""Click a column's heading to sort the per-board table by it (again: the other way)."""

CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 110em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
table.rows { border-collapse: collapse; font-size: 0.85em; }
table.rows th, table.rows td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd;
  text-align: right; font-family: monospace; white-space: nowrap; }
table.rows tr.explain td { text-align: left; color: #444; padding-bottom: 0.6em; }
table.sortable th { cursor: pointer; }
.facts { color: #555; } .bad { color: #b00; font-weight: bold; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dl.header dt { font-weight: bold; } dl.header dd { margin: 0; }
code { font-size: 0.85em; }
"""

N_WORST = 25
N_UNRUNNABLE = 100
N_BOARDS = 1000
"""Boards the page lists at most: the worst (most overlaps, then extra levels, then largest
tables); ``sweep query DIR boards`` lists every one."""


def _e(text: object) -> str:
    return html.escape(str(text))


def _seconds(record: object) -> float | None:
    """A run's seconds from its ``started`` and ``finished`` times, or None if not recorded."""
    try:
        start = datetime.fromisoformat(record["started"])
        end = datetime.fromisoformat(record["finished"])
        return max(0.0, (end - start).total_seconds())
    except (KeyError, TypeError, ValueError, OverflowError):
        return None


def _duration(meta: dict) -> str:
    """The time the sweep's runs took, added up: a resume's idle gap is not run time."""
    runs = [_seconds(run) for run in meta.get("runs") or [] if isinstance(run, dict)]
    total = _seconds(meta)
    if total is None:
        return "not recorded"
    span = f"{meta['started']} to {meta['finished']}"
    if len(runs) < 2 or None in runs:
        return f"{total:,.1f} s ({span})"
    return f"{sum(runs):,.1f} s in {len(runs)} runs ({span})"


def _placement(config: dict) -> str:
    placement = config.get("placement") or {}
    return " ".join(f"{k}={v}" for k, v in placement.items()) or "not recorded"


def _versions(meta: dict) -> str:
    """``va-sweep 0.1.0; pyarrow 21.0.0; algorithm 3; plugins: x 1.2``: one line for people."""
    package = meta.get("package") if isinstance(meta.get("package"), dict) else {}
    versions = [f"{package.get('name', 'va-sweep')} {package.get('version', '?')}"]
    recorded = meta.get("versions") if isinstance(meta.get("versions"), dict) else {}
    plugins = {}
    for key, value in recorded.items():
        if key == "plugins" and isinstance(value, dict):
            plugins.update(value)
        elif key != "package" and not isinstance(value, (dict, list)):
            versions.append(f"{key} {value}")
    for p in meta.get("plugins") if isinstance(meta.get("plugins"), list) else []:
        if isinstance(p, dict) and p.get("version"):
            plugins.setdefault(p.get("name"), p["version"])
    shown = [f"{name} {version}" for name, version in plugins.items() if version]
    return "; ".join(versions) + (f"; plugins: {', '.join(shown)}" if shown else "")


def _granule(value: object) -> str:
    return granule_name(value) if isinstance(value, int) else str(value)


def header(directory: str | Path, data: Results, meta: dict) -> str:
    """The sweep's status (complete, or its failed and missing units named), placement, tag
    seed, VA_BITS, versions and the time the run took."""
    config = meta.get("config") or {}
    lines = problems(directory, data.parts)
    status = (
        "".join(f'<span class="bad">{_e(line)}</span><br>' for line in lines)
        if lines
        else _e(meta.get("status", "no _sweep.json: not recorded"))
    )
    va_bits = (meta.get("plan") or {}).get("va_bits") or config.get("va_bits", "not recorded")
    if isinstance(va_bits, dict):
        va_bits = "; ".join(f"{g}: {', '.join(map(str, v))}" for g, v in va_bits.items())
    items = [
        ("status", status),
        ("memory maps", _e(", ".join(map(str, config.get("memory_maps", []))) or "-")),
        ("granules", _e(", ".join(_granule(g) for g in config.get("granules", [])) or "-")),
        ("VA_BITS", _e(va_bits)),
        ("layouts", _e(", ".join(map(str, config.get("layouts", []))) or "-")),
        ("block mappings", _e(", ".join(map(str, config.get("block_mappings", []))) or "-")),
        ("placement", _e(_placement(config))),
        ("tag seed", _e((config.get("tag") or {}).get("seed", "not recorded"))),
        ("versions", _e(_versions(meta))),
        ("run time", _e(_duration(meta))),
    ]
    return '<dl class="header">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in items) + "</dl>"


def _worst_table(worst: pd.DataFrame) -> str:
    """The worst configurations, each followed by its ``sweep explain`` line on a row of its
    own (copied whole with a triple click)."""
    table = _html_table(worst)
    body = table.split("<tbody>", 1)[1]
    rows = body.split("</tr>")[:-1]
    span = len(worst.columns)
    lines = [explain_line(r) for _, r in worst.iterrows()]
    joined = "".join(
        f'{row}</tr><tr class="explain"><td colspan="{span}"><code>{_e(line)}</code></td></tr>'
        for row, line in zip(rows, lines, strict=True)
    )
    return table.split("<tbody>", 1)[0] + f"<tbody>{joined}</tbody></table>"


def explain_line(row: pd.Series) -> str:
    """The ``sweep explain`` command of one row, every argument shell-quoted (``shlex.join``,
    as git quotes what it prints), so pasting it runs ``sweep`` and nothing a name says."""
    args = ["sweep", "explain", "--map", str(row["memory_map"])]
    args += ["--granule", granule_name(int(row["granule"])), "--va-bits", str(int(row["va_bits"]))]
    args += ["--layout", str(row["layout"]), "--blocks" if row["block_mappings"] else "--no-blocks"]
    args += ["--idmap", f"{int(row['idmap_from']):#x}"]
    if int(row.get("tag_random", 0)):
        args += ["--tag-random", f"{int(row['tag_random']):#x}"]
    return shlex.join(args)


def _html_table(frame: pd.DataFrame, sortable: bool = False) -> str:
    """A table of a query's answer as the command line shows it; a sortable table carries each
    number's exact value in ``data-v`` so that hex and sizes sort as numbers."""
    shown = for_people(frame)
    head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
    raws = frame[list(shown.columns)].itertuples(index=False)
    rows = []
    for raw, text in zip(raws, shown.itertuples(index=False), strict=True):
        cells = []
        for value, words in zip(raw, text, strict=True):
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            attr = f' data-v="{value}"' if sortable and number and pd.notna(value) else ""
            cells.append(f"<td{attr}>{_e(words if pd.notna(value) else '')}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    css = "rows sortable" if sortable else "rows"
    return (
        f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _figure(heading: str, caption: str, drawn: tuple[str, tuple[int, int]]) -> str:
    data, (width, height) = drawn
    if max(width, height) >= figures.MAX_PIXELS:
        raise AssertionError(f"figure {heading!r} is {width} x {height} pixels")
    return (
        f"<h2>{_e(heading)}</h2><p>{_e(caption)}</p>"
        f'<img alt="{_e(heading)}" width="{width}" height="{height}" '
        f'src="data:image/png;base64,{data}">'
    )


def _figures(data: Results, by_board: pd.DataFrame, many: bool) -> list[str]:
    """The page's figures, each with its heading and caption; ``many``: more boards than a
    figure draws one by one (``figures.TOP_BOARDS``), the rest summarised."""
    top = f" The {figures.TOP_BOARDS} boards with the largest tables are drawn, the others "
    top += "summarised in the last row (their largest)."
    return [
        _figure(
            "Table size",
            "The largest HYP page-table footprint (table_bytes) of each board at each granule "
            "and VA_BITS, over every layout and idmap address, one map per mapping set: "
            "nvhe-boot and pkvm-boot are what a kernel maps at EL2 at boot, all-dram the limit "
            "that VMs drive nVHE towards (and the worst case pKVM provisions for), never a "
            f"boot state.{top if many else ''}",
            figures.table_bytes(by_board),
        ),
        _figure(
            "Overlaps by board",
            "Share of rows where the idmap page shares a VA with a runtime mapping of another "
            "PA." + (" The boards with the largest share are drawn, the others summed." * many),
            figures.overlaps_by_board(queries.overlaps(data)),
        ),
        _figure(
            "Overlaps by granule/VA_BITS",
            "The same share for each granule and VA_BITS, over every board.",
            figures.overlaps_by_config(queries.overlaps_by_config(data)),
        ),
        _figure(
            "Level counts",
            "How many levels the merged tree needs; more than the runtime mappings alone is "
            "an extra level.",
            figures.levels(queries.level_counts(data)),
        ),
        _figure(
            "Margin distribution",
            "Distance in VA between the idmap page and the nearest runtime mapping.",
            figures.margins(queries.margin_distribution(data)),
        ),
    ]


def render(directory: str | Path) -> str:
    """The report page for the results in ``directory``, as an HTML string."""
    started = time.perf_counter()
    with Results(directory) as data:
        return _page(directory, data, started)


def _page(directory: str | Path, data: Results, started: float) -> str:
    meta = metadata(directory)
    per_board = queries.boards(data)
    if per_board.empty:
        raise ValidationError(f"results {str(directory)!r}: no rows to report on")
    by_board = queries.table_bytes_matrices(data)
    unrunnable = queries.unrunnable(data)
    worst = queries.worst_configurations(data, N_WORST)
    n_boards = len(per_board)
    many = n_boards > figures.TOP_BOARDS + 1
    parts_html = _figures(data, by_board, many)
    title = f"va-sweep report: {meta.get('name', Path(directory).name)}"
    facts = (
        f"{int(per_board['rows'].sum()):,} configurations (each counted once, whatever its "
        f"mapping sets); {n_boards} board(s); {int(per_board['overlaps'].sum()):,} overlap; "
        f"{int(per_board['extra_level_rows'].sum()):,} need an extra level; "
        f"{len(unrunnable):,} configurations no kernel of their era could run."
    )
    shown_unrunnable = unrunnable.reset_index().head(N_UNRUNNABLE)
    more = len(unrunnable) - len(shown_unrunnable)
    page = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
        header(directory, data, meta),
        f'<p class="facts">{_e(facts)}</p>',
        *parts_html,
        "<h2>Worst configurations</h2><p>Each configuration once, by its worst rows: "
        "overlapping first, then idmap in the HYP window, most extra levels, smallest margin, "
        "largest tables; with the idmap range of its rows that bad and the command that "
        "prints its tables.</p>",
        _worst_table(worst),
        "<h2>Configurations no kernel of their era could run</h2><p>With the reason "
        "(docs/model.md section 3)"
        f"{f'; the first {N_UNRUNNABLE} of {len(unrunnable):,}' if more else ''}.</p>",
        _html_table(shown_unrunnable) if len(unrunnable) else "<p>None.</p>",
        f"<h2>Every board</h2><p>{_boards_listed(n_boards)}; click a heading to sort.</p>",
        _html_table(_worst_boards(per_board).reset_index(), sortable=True),
        f"<script>{SORT_SCRIPT}</script>",
        f'<p class="facts">Read from {_e(directory)} in {time.perf_counter() - started:.1f} s.</p>',
        "</body></html>",
    ]
    return "\n".join(page)


def _worst_boards(per_board: pd.DataFrame) -> pd.DataFrame:
    """At most ``N_BOARDS`` boards, the worst (``N_BOARDS``' order), listed by name."""
    if len(per_board) <= N_BOARDS:
        return per_board
    worst = ["overlaps", "extra_level_rows", *queries.BOARD_BYTES]
    chosen = per_board.sort_values(worst, ascending=False, na_position="last").head(N_BOARDS)
    return chosen.sort_index()


def _boards_listed(n: int) -> str:
    if n <= N_BOARDS:
        return f"{n} boards"
    return (
        f"{n:,} boards; the {N_BOARDS:,} with the most overlapping configurations, then the most "
        "needing an extra level, then the largest tables, are listed (all: sweep query DIR boards)"
    )


def write_report(directory: str | Path, out: str | Path) -> Path:
    """Render and write the page; it is written whole or not at all.

    The folder it goes in is checked first, so a typo costs no rendering and is one line."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ValidationError(f"--out {str(out)!r}: no folder {str(out.parent)!r} to write it in")
    page = render(directory)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.unlink(missing_ok=True)  # a link left there: removed, its target untouched
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with os.fdopen(os.open(partial, flags, 0o644), "w", encoding="utf-8") as f:
            f.write(page)
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ValidationError(f"--out {str(out)!r}: cannot write: {exc.strerror or exc}") from None
    return out
