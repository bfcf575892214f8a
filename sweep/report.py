"""``sweep report``: one self-contained HTML page of a sweep's results, for people to look at.

Figures are drawn with matplotlib's Agg backend (no display needed) and embedded as base64 PNGs,
so the page is one file that can be mailed or attached to a bug; it holds no script. Every figure
comes from a named query of ``sweep.results``, so what the page shows can be re-asked in pandas.
"""

from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from sweep import results  # noqa: E402
from sweep.errors import ValidationError  # noqa: E402

REPORT_COLUMNS = sorted(
    set(results.WORST_CASE_COLUMNS) | {"levels", "idmap_pa"},
    key=list(results.ROW_COLUMNS).index,
)
"""The columns the report reads: everything else stays on disk."""


def human_bytes(nbytes: float) -> str:
    """``4214784`` -> ``"4.0M"``: short enough to print inside a heatmap cell."""
    value = float(nbytes)
    for unit in ("", "K", "M", "G", "T", "P"):
        if value < 1024 or unit == "P":
            return f"{value:.0f}{unit}" if unit == "" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.0f}"


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell_text(ax: plt.Axes, matrix: pd.DataFrame, text: pd.DataFrame, image=None) -> None:
    """Write each cell's text, white on dark cells so it stays readable."""
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix.iat[i, j]
            if pd.isna(value):
                continue
            colour = "black"
            if image is not None:
                r, g, b, _a = image.cmap(image.norm(float(value)))
                colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, text.iat[i, j], ha="center", va="center", fontsize=7, color=colour)


def _matrix_axes(ax: plt.Axes, matrix: pd.DataFrame, xlabel: str) -> None:
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], rotation=45, ha="right")
    ax.set_yticks(range(matrix.shape[0]), [str(r) for r in matrix.index])
    ax.set_xlabel(xlabel)


def _height(rows: int) -> float:
    return max(2.5, 0.28 * rows + 1.5)


def figure_table_bytes(df: pd.DataFrame) -> str:
    """Heatmap: the largest HYP table size per board and granule/VA_BITS, blocks off and on."""
    settings = sorted(df["block_mappings"].unique())
    boards = df["memory_map"].nunique()
    fig, axes = plt.subplots(
        len(settings), 1, figsize=(10, _height(boards) * len(settings)), squeeze=False
    )
    for ax, blocks in zip(axes[:, 0], settings, strict=True):
        matrix = results.table_bytes_by_board(df, block_mappings=bool(blocks)).astype(float)
        values = matrix.to_numpy()
        image = ax.imshow(
            np.ma.masked_invalid(values),
            aspect="auto",
            cmap="viridis",
            norm=LogNorm(vmin=np.nanmin(values), vmax=np.nanmax(values)),
        )
        _cell_text(ax, matrix, matrix.map(human_bytes), image)
        _matrix_axes(ax, matrix, "granule/VA_BITS")
        ax.tick_params(axis="x", labelrotation=0)
        ax.set_title(f"largest table_bytes, block mappings {'on' if blocks else 'off'}")
        fig.colorbar(image, ax=ax, label="bytes (log)")
    return _png(fig)


def figure_overlaps(df: pd.DataFrame) -> str:
    """Board x layout: share of rows whose idmap overlaps a runtime mapping."""
    table = results.overlaps(df)
    share = table["overlap_share"].unstack("layout") * 100
    counts = table["overlaps"].unstack("layout")
    fig, ax = plt.subplots(figsize=(2.0 + 1.3 * share.shape[1], _height(share.shape[0])))
    # Scaled to the largest share, so that 0.5% on one board still shows against 0 elsewhere.
    top = float(np.nanmax(share.to_numpy(dtype=float))) if share.size else 0.0
    image = ax.imshow(
        share.to_numpy(dtype=float),
        aspect="auto",
        cmap="Reds",
        vmin=0,
        vmax=top if top > 0 else 1.0,
    )
    text = share.copy().astype(object)
    for i in range(share.shape[0]):
        for j in range(share.shape[1]):
            if pd.notna(share.iat[i, j]):
                text.iat[i, j] = f"{share.iat[i, j]:.2g}% ({int(counts.iat[i, j])})"
    _cell_text(ax, share, text, image)
    _matrix_axes(ax, share, "layout")
    ax.set_title("rows with overlap, % (count)")
    fig.colorbar(image, ax=ax, label="% of rows")
    return _png(fig)


def figure_levels(df: pd.DataFrame) -> str:
    """Per layout: rows by level count of the merged tree, for each granule/VA_BITS."""
    counts = results.level_counts(df)
    pairs = list(zip(counts.granule, counts.va_bits, strict=True))
    counts["config"] = [results.config_label(g, v) for g, v in pairs]
    order = [results.config_label(g, v) for g, v in sorted({(int(g), int(v)) for g, v in pairs})]
    layouts = [str(x) for x in counts["layout"].unique()]
    all_levels = sorted(counts["levels"].unique())
    colours = dict(zip(all_levels, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(
        1, len(layouts), figsize=(3.6 * len(layouts), 3.6), squeeze=False, sharey=True
    )
    for ax, layout in zip(axes[0], layouts, strict=True):
        part = (
            counts[counts["layout"] == layout]
            .pivot_table(
                index="config", columns="levels", values="rows", aggfunc="sum", observed=True
            )
            .reindex(order)
            .fillna(0)
        )
        bottom = np.zeros(len(part))
        for lv in part.columns:
            ax.bar(
                range(len(part)), part[lv], bottom=bottom, color=colours[lv], label=f"{lv} levels"
            )
            bottom += part[lv].to_numpy()
        ax.set_xticks(range(len(part)), part.index, rotation=60, ha="right", fontsize=8)
        ax.set_title(str(layout))
    axes[0][0].set_ylabel("rows")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lv]) for lv in all_levels]
    fig.legend(
        handles,
        [f"{lv} levels" for lv in all_levels],
        loc="upper center",
        ncol=len(all_levels),
        bbox_to_anchor=(0.5, -0.06),
    )
    fig.suptitle("level count of the merged HYP tree", y=1.02)
    return _png(fig)


def figure_margins(df: pd.DataFrame) -> str:
    """Per layout: how far the idmap page is from the nearest runtime mapping (log2 buckets)."""
    dist = results.margin_distribution(df)
    fig, ax = plt.subplots(figsize=(9, 3.8))
    layouts = [lay for lay in dist["layout"].unique()]
    width = 0.8 / max(1, len(layouts))
    for i, layout in enumerate(layouts):
        part = dist[dist["layout"] == layout]
        ax.bar(
            part["margin_bits"] + (i - (len(layouts) - 1) / 2) * width,
            part["rows"],
            width=width,
            label=str(layout),
        )
    ticks = sorted(dist["margin_bits"].unique())
    labels = dist.drop_duplicates("margin_bits").set_index("margin_bits")["from"]
    ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=60, fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("margin at least (0: idmap touches or overlaps a runtime mapping)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title("margin between the idmap page and the runtime mappings")
    return _png(fig)


def _html_table(frame: pd.DataFrame) -> str:
    shown = results.for_people(frame)
    if "table_bytes" in shown:
        shown["table_bytes"] = [f"{int(v):,}" for v in shown["table_bytes"]]
    return shown.to_html(index=False, border=0, classes="rows", escape=True)


CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 110em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
table.rows { border-collapse: collapse; font-size: 0.85em; }
table.rows th, table.rows td { padding: 0.2em 0.6em; border-bottom: 1px solid #ddd;
  text-align: right; font-family: monospace; }
.facts { color: #555; }
"""


def render(directory: str | Path, n_worst: int = 25) -> str:
    """The report page for the results in ``directory``, as an HTML string."""
    started = time.perf_counter()
    df = results.load(directory, columns=REPORT_COLUMNS)
    if df.empty:
        raise ValidationError(f"results {str(directory)!r}: no rows to report on")
    meta = results.metadata(directory)
    figures = [
        (
            "Table size",
            "The largest HYP page-table footprint (table_bytes) of each board at each "
            "granule and VA_BITS, over every layout and idmap address.",
            figure_table_bytes(df),
        ),
        (
            "Overlaps",
            "Share of rows where the idmap page shares a VA with a runtime mapping of another PA.",
            figure_overlaps(df),
        ),
        (
            "Level counts",
            "How many levels the merged tree needs; more than the runtime mappings "
            "alone is an extra level.",
            figure_levels(df),
        ),
        (
            "Margin distribution",
            "Distance in VA between the idmap page and the nearest runtime mapping.",
            figure_margins(df),
        ),
    ]
    unrunnable = results.unrunnable_4x(df)
    worst = results.worst_cases(df, n_worst)
    title = f"va-sweep report: {meta.get('name', Path(directory).name)}"
    facts = (
        f"{len(df):,} rows; {df['memory_map'].nunique()} board(s); layouts "
        f"{', '.join(map(str, df['layout'].unique()))}; {int(df['overlap'].sum()):,} rows overlap; "
        f"{int((df['extra_levels'] > 0).sum()):,} need an extra level; "
        f"{len(unrunnable):,} configurations 4.x kernels could not run."
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="facts">{html.escape(facts)}</p>',
    ]
    for heading, caption, png in figures:
        parts += [
            f"<h2>{html.escape(heading)}</h2><p>{html.escape(caption)}</p>",
            f'<img alt="{html.escape(heading)}" src="data:image/png;base64,{png}">',
        ]
    parts += [
        f"<h2>Worst cases</h2><p>The {len(worst)} worst rows: overlapping first, then idmap in "
        "the HYP window, most extra levels, smallest margin, largest tables.</p>",
        _html_table(worst),
        "<h2>Configurations 4.x kernels could not run</h2><p>extra_levels &gt; 1 under "
        f"{', '.join(results.LEGACY_LAYOUTS)}.</p>",
        _html_table(unrunnable.reset_index()) if len(unrunnable) else "<p>None.</p>",
        f'<p class="facts">Read from {html.escape(str(directory))} in '
        f"{time.perf_counter() - started:.1f} s.</p>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_report(directory: str | Path, out: str | Path) -> Path:
    """Render and write the page; it is written whole or not at all.

    The folder it goes in is checked first, so a typo costs no rendering and is one line."""
    out = Path(out)
    if not out.parent.is_dir():
        raise ValidationError(f"--out {str(out)!r}: no folder {str(out.parent)!r} to write it in")
    page = render(directory)
    partial = out.with_name(f".{out.name}.partial")
    try:
        partial.write_text(page, encoding="utf-8")
        partial.replace(out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise ValidationError(f"--out {str(out)!r}: cannot write: {exc.strerror or exc}") from None
    return out
