"""The report's figures: small aggregated frames in, base64 PNGs out (matplotlib, Agg).

Each figure takes the answer of a named query (:mod:`sweep.read.queries`), never rows, and is
bounded in size whatever the number of boards: a board axis shows the ``TOP_BOARDS`` boards by
the figure's measure and one row summarising the rest, so every image stays well under
``MAX_PIXELS`` on a side (the report checks it).
"""

from __future__ import annotations

import base64
import functools
import io
import unicodedata

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib import font_manager  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ft2font import FT2Font  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from sweep.core.columns import MAPPING_SETS  # noqa: E402
from sweep.core.sizes import binary_scale  # noqa: E402
from sweep.core.text import printable  # noqa: E402
from sweep.read.queries import config_label  # noqa: E402

TOP_BOARDS = 30
"""Boards drawn one by one on a board axis; the rest are one summary row."""
MAX_PIXELS = 4000
DPI = 90
PANELS_PER_ROW, MAX_PANELS = 6, 36
"""The level-count figure draws a panel per layout, six to a row, 36 at most."""
MAX_INCHES = 36
"""The widest a figure is drawn (at ``DPI``, under ``MAX_PIXELS``)."""
MAX_TICKS = 16
"""Labelled ticks on the margin histogram's axis at most (the others are unlabelled)."""
MAX_LABEL = 40
"""Characters of a name a figure draws; a longer one keeps its start and end around an ellipsis
(the tables of the page show it whole), so one long name cannot shrink every figure."""
FALLBACK_FONTS = ("Noto Sans CJK", "Source Han Sans", "WenQuanYi", "Droid Sans Fallback", "AR PL")
"""Fonts drawing CJK names where installed (``fonts-noto-cjk``); without one, a character no
font has is drawn as its code (``\\u677f``) rather than as an empty box with a warning."""
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}
"""Names are text: ``price$\\frac{1}$board`` is drawn as written, never as mathtext."""


@functools.cache
def _fonts() -> tuple[list[str], frozenset[int]]:
    """The font family to draw with (DejaVu Sans, then a CJK font if one is installed) and the
    code points those fonts have."""
    family, covered = ["DejaVu Sans"], set()
    names = {f.name: f.fname for f in font_manager.fontManager.ttflist}
    extra = [n for n in sorted(names) if n.startswith(FALLBACK_FONTS)][:1]
    for name in family + extra:
        try:
            path = names.get(name) or font_manager.findfont(name, fallback_to_default=False)
            covered.update(FT2Font(path).get_charmap())
        except (OSError, ValueError, RuntimeError):
            continue
    return family + extra, frozenset(covered)


def label(name: object) -> str:
    """A name as a figure draws it: control characters and glyphs no font has escaped, at
    most ``MAX_LABEL`` characters."""
    text = printable(name)
    covered = _fonts()[1]
    if covered and any(ord(c) not in covered for c in text):
        text = "".join(
            c if ord(c) in covered or unicodedata.category(c) == "Zs" else f"\\u{ord(c):04x}"
            for c in text
        )
    if len(text) > MAX_LABEL:
        keep = MAX_LABEL - 1
        text = text[: keep - keep // 3] + "\u2026" + text[len(text) - keep // 3 :]
    return text


def _plain(draw):
    """Draw under :data:`PLAIN_TEXT` with :func:`_fonts`' family (names are never mathtext)."""

    @functools.wraps(draw)
    def drawn(*args, **kwargs):
        with matplotlib.rc_context({**PLAIN_TEXT, "font.family": _fonts()[0]}):
            return draw(*args, **kwargs)

    return drawn


def binary_size(nbytes: float) -> str:
    """``4214784`` -> ``"4 MiB"``: a colour-bar tick or a heatmap cell (shorter than
    ``human_size``'s ``"4.0 MiB"``: no decimal when whole or from 100 up)."""
    value, unit = binary_scale(nbytes, largest="PiB")
    text = f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.1f}"
    return f"{text} {unit}"


def png(fig: plt.Figure) -> tuple[str, tuple[int, int]]:
    """The figure as base64 PNG, and its size in pixels (width, height)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    data = buffer.getvalue()
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    return base64.b64encode(data).decode("ascii"), (width, height)


def top_boards(matrix: pd.DataFrame, measure: pd.Series, how: str = "max") -> pd.DataFrame:
    """The ``TOP_BOARDS`` rows of ``matrix`` with the largest ``measure``, then one row that
    summarises the others (their ``how`` per column), labelled with how many they are."""
    if len(matrix) <= TOP_BOARDS + 1:
        return matrix
    order = (
        measure.reindex(matrix.index).fillna(-np.inf).sort_values(ascending=False, kind="stable")
    )
    top, rest = list(order.index[:TOP_BOARDS]), list(order.index[TOP_BOARDS:])
    summary = matrix.loc[rest].agg(how)
    summary.name = f"{len(rest)} other boards ({how})"
    return pd.concat([matrix.loc[top], summary.to_frame().T])


def _cell_text(ax: plt.Axes, matrix: pd.DataFrame, text: pd.DataFrame, image) -> None:
    """Each cell's text, white on dark cells so it stays readable."""
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            value = matrix.iat[i, j]
            if pd.isna(value):
                continue
            r, g, b, _a = image.cmap(image.norm(float(value)))
            colour = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, text.iat[i, j], ha="center", va="center", fontsize=7, color=colour)


def _matrix_axes(ax: plt.Axes, matrix: pd.DataFrame, xlabel: str) -> None:
    # Centred under their columns: a label rotated with ha="right" sits half a column left.
    ax.set_xticks(range(matrix.shape[1]), [label(c) for c in matrix.columns], ha="center")
    ax.set_yticks(range(matrix.shape[0]), [label(r) for r in matrix.index])
    ax.set_xlabel(xlabel)


def _height(rows: int) -> float:
    return max(2.5, 0.28 * rows + 1.5)


def _size_colorbar(fig: plt.Figure, image, ax: plt.Axes, vmin: float, vmax: float) -> None:
    """A log colour bar with ticks at powers of two, labelled KiB/MiB/GiB."""
    bar = fig.colorbar(image, ax=ax, label="table size")
    low, high = int(np.floor(np.log2(vmin))), int(np.ceil(np.log2(vmax)))
    step = max(1, (high - low) // 6)
    ticks = [2.0**k for k in range(low, high + 1, step) if vmin <= 2.0**k <= vmax] or [vmin, vmax]
    bar.ax.yaxis.set_major_locator(FixedLocator(ticks))
    bar.ax.yaxis.set_minor_locator(NullLocator())
    bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: binary_size(v)))


@_plain
def table_bytes(matrices: dict[tuple[str, bool], pd.DataFrame]) -> tuple[str, tuple[int, int]]:
    """Heatmaps: the largest HYP table size per board and granule/VA_BITS, one per mapping set
    and block setting; the boards with the largest tables first."""
    return png(table_bytes_figure(matrices))


@_plain
def table_bytes_figure(matrices: dict[tuple[str, bool], pd.DataFrame]) -> plt.Figure:
    """The heatmaps, one per mapping set and block setting (``queries.table_bytes_matrices``),
    laid out so no title meets the x label above it."""
    fig, axes = plt.subplots(
        len(matrices),
        1,
        figsize=(10, sum(_height(len(top_boards(m, m.max(axis=1)))) for m in matrices.values())),
        squeeze=False,
        layout="constrained",
    )
    for ax, ((mappings, blocks), full) in zip(axes[:, 0], matrices.items(), strict=True):
        matrix = top_boards(full.astype(float), full.max(axis=1).astype(float))
        values = matrix.to_numpy(dtype=float)
        vmin, vmax = np.nanmin(values), np.nanmax(values)
        image = ax.imshow(
            np.ma.masked_invalid(values),
            aspect="auto",
            cmap="viridis",
            norm=LogNorm(vmin=vmin, vmax=max(vmax, vmin * 2)),
        )
        _cell_text(ax, matrix, matrix.map(lambda v: binary_size(v) if pd.notna(v) else ""), image)
        _matrix_axes(ax, matrix, "granule/VA_BITS")
        ax.set_title(
            f"largest table_bytes, {mappings}: {MAPPING_SETS.get(mappings, mappings)}, "
            f"block mappings {'on' if blocks else 'off'}"
        )
        _size_colorbar(fig, image, ax, vmin, max(vmax, vmin * 2))
    return fig


@_plain
def share_matrix(
    share: pd.DataFrame, counts: pd.DataFrame, title: str, xlabel: str
) -> tuple[str, tuple[int, int]]:
    """A matrix of overlap shares (%) with the counts in each cell, scaled to the largest
    share so that 0.5% on one board still shows against 0 elsewhere."""
    width = min(2.5 + 1.3 * share.shape[1], MAX_INCHES)  # many layouts: narrower cells
    fig, ax = plt.subplots(figsize=(width, _height(share.shape[0])))
    values = share.to_numpy(dtype=float)
    top = float(np.nanmax(values)) if values.size else 0.0
    image = ax.imshow(values, aspect="auto", cmap="Reds", vmin=0, vmax=top if top > 0 else 1.0)
    text = share.copy().astype(object)
    for i in range(share.shape[0]):
        for j in range(share.shape[1]):
            if pd.notna(share.iat[i, j]):
                text.iat[i, j] = f"{share.iat[i, j]:.2g}% ({int(counts.iat[i, j]):,})"
    _cell_text(ax, share, text, image)
    _matrix_axes(ax, share, xlabel)
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="% of rows")
    return png(fig)


@_plain
def overlaps_by_board(table: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Board x layout from the ``overlaps`` query: the boards with most overlapping rows."""
    overlaps = table["overlaps"].unstack("layout")
    rows = table["rows"].unstack("layout")
    measure = overlaps.sum(axis=1) / rows.sum(axis=1)
    top_overlaps = top_boards(overlaps, measure, "sum")
    top_rows = top_boards(rows, measure, "sum")
    top_rows.index = top_overlaps.index
    share = top_overlaps / top_rows * 100
    return share_matrix(share, top_overlaps, "rows with overlap, % (count)", "layout")


@_plain
def overlaps_by_config(table: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Granule/VA_BITS x layout from the ``overlaps-by-config`` query."""
    frame = table.reset_index()
    frame["config"] = [
        config_label(g, v) for g, v in zip(frame.granule, frame.va_bits, strict=True)
    ]
    order = list(dict.fromkeys(frame["config"]))
    share = frame.pivot(index="config", columns="layout", values="overlap_share").reindex(order)
    counts = frame.pivot(index="config", columns="layout", values="overlaps").reindex(order)
    return share_matrix(share * 100, counts, "rows with overlap, % (count)", "layout")


@_plain
def levels(counts: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Per layout: rows by level count of the merged tree, for each granule/VA_BITS."""
    pairs = list(zip(counts.granule, counts.va_bits, strict=True))
    counts = counts.assign(config=[config_label(g, v) for g, v in pairs])
    order = [config_label(g, v) for g, v in sorted({(int(g), int(v)) for g, v in pairs})]
    every = list(dict.fromkeys(str(x) for x in counts["layout"]))
    layouts = every[:MAX_PANELS]  # a figure of bounded size, whatever the layouts
    all_levels = sorted(counts["levels"].unique())
    colours = dict(zip(all_levels, plt.get_cmap("tab10").colors, strict=False))
    columns = min(len(layouts), PANELS_PER_ROW)
    rows = -(-len(layouts) // columns)
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(3.6 * columns, 3.6 * rows),
        squeeze=False,
        sharey=True,
        layout="constrained",  # a row's titles never meet the labels of the row above
    )
    for ax in axes.flat[len(layouts) :]:
        ax.set_visible(False)
    for ax, layout in zip(axes.flat, layouts, strict=False):
        part = (
            counts[counts["layout"].astype(str) == layout]
            .pivot_table(index="config", columns="levels", values="rows", aggfunc="sum")
            .reindex(order)
            .fillna(0)
        )
        bottom = np.zeros(len(part))
        for lv in part.columns:
            ax.bar(range(len(part)), part[lv], bottom=bottom, color=colours[lv])
            bottom += part[lv].to_numpy()
        ax.set_xticks(range(len(part)), part.index, rotation=60, ha="right", fontsize=8)
        ax.set_title(label(layout))
    for row in axes:
        row[0].set_ylabel("rows")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[lv]) for lv in all_levels]
    fig.legend(
        handles,
        [f"{lv} levels" for lv in all_levels],
        loc="outside lower center",
        ncol=len(all_levels),
    )
    more = f" (the first {len(layouts)} of {len(every)} layouts)" * (len(every) > len(layouts))
    fig.suptitle(f"level count of the merged HYP tree{more}")
    return png(fig)


@_plain
def margins(dist: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Per layout: how far the idmap page is from the nearest runtime mapping (log2 buckets)."""
    return png(margins_figure(dist))


@_plain
def margins_figure(dist: pd.DataFrame) -> plt.Figure:
    """The margin histogram; at most ``MAX_TICKS`` labelled ticks, so labels never meet."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    layouts = list(dict.fromkeys(dist["layout"]))
    width = 0.8 / max(1, len(layouts))
    for i, layout in enumerate(layouts):
        part = dist[dist["layout"] == layout]
        offset = (i - (len(layouts) - 1) / 2) * width
        ax.bar(part["margin_bits"] + offset, part["rows"], width=width, label=label(layout))
    ticks = sorted(dist["margin_bits"].unique())
    labels = dist.drop_duplicates("margin_bits").set_index("margin_bits")["from"]
    shown = ticks[:: max(1, -(-len(ticks) // MAX_TICKS))]  # at most MAX_TICKS: none meet
    ax.set_xticks(shown, [labels[t] for t in shown], rotation=90, fontsize=8)
    ax.set_xticks(ticks, minor=True)
    ax.set_yscale("log")
    ax.set_xlabel("margin at least (0: idmap touches or overlaps a runtime mapping)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title("margin between the idmap page and the runtime mappings")
    return fig
