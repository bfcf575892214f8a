"""The report's figures: small aggregated frames in, base64 PNGs out (matplotlib, Agg).

Each figure takes the answer of a named query (:mod:`sweep.read.queries`), never rows, and is
bounded in size whatever the number of boards: a board axis shows the ``TOP_BOARDS`` boards by
the figure's measure and one row summarising the rest, so every image stays well under
``MAX_PIXELS`` on a side (the report checks it).
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator  # noqa: E402

from sweep.core.sizes import binary_scale  # noqa: E402
from sweep.read.queries import config_label  # noqa: E402

TOP_BOARDS = 30
"""Boards drawn one by one on a board axis; the rest are one summary row."""
MAX_PIXELS = 4000
DPI = 90


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
    ax.set_xticks(range(matrix.shape[1]), [str(c) for c in matrix.columns], ha="center")
    ax.set_yticks(range(matrix.shape[0]), [str(r) for r in matrix.index])
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


def table_bytes(matrices: dict[bool, pd.DataFrame]) -> tuple[str, tuple[int, int]]:
    """Heatmap: the largest HYP table size per board and granule/VA_BITS, blocks off and on;
    the boards with the largest tables first."""
    return png(table_bytes_figure(matrices))


def table_bytes_figure(matrices: dict[bool, pd.DataFrame]) -> plt.Figure:
    fig, axes = plt.subplots(
        len(matrices),
        1,
        figsize=(10, sum(_height(len(top_boards(m, m.max(axis=1)))) for m in matrices.values())),
        squeeze=False,
    )
    for ax, (blocks, full) in zip(axes[:, 0], matrices.items(), strict=True):
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
        ax.set_title(f"largest table_bytes, block mappings {'on' if blocks else 'off'}")
        _size_colorbar(fig, image, ax, vmin, max(vmax, vmin * 2))
    return fig


def share_matrix(
    share: pd.DataFrame, counts: pd.DataFrame, title: str, xlabel: str
) -> tuple[str, tuple[int, int]]:
    """A matrix of overlap shares (%) with the counts in each cell, scaled to the largest
    share so that 0.5% on one board still shows against 0 elsewhere."""
    fig, ax = plt.subplots(figsize=(2.5 + 1.3 * share.shape[1], _height(share.shape[0])))
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


def levels(counts: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Per layout: rows by level count of the merged tree, for each granule/VA_BITS."""
    pairs = list(zip(counts.granule, counts.va_bits, strict=True))
    counts = counts.assign(config=[config_label(g, v) for g, v in pairs])
    order = [config_label(g, v) for g, v in sorted({(int(g), int(v)) for g, v in pairs})]
    layouts = list(dict.fromkeys(str(x) for x in counts["layout"]))
    all_levels = sorted(counts["levels"].unique())
    colours = dict(zip(all_levels, plt.get_cmap("tab10").colors, strict=False))
    fig, axes = plt.subplots(
        1, len(layouts), figsize=(3.6 * len(layouts), 3.6), squeeze=False, sharey=True
    )
    for ax, layout in zip(axes[0], layouts, strict=True):
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
        ax.set_title(layout)
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
    return png(fig)


def margins(dist: pd.DataFrame) -> tuple[str, tuple[int, int]]:
    """Per layout: how far the idmap page is from the nearest runtime mapping (log2 buckets)."""
    fig, ax = plt.subplots(figsize=(9, 3.8))
    layouts = list(dict.fromkeys(dist["layout"]))
    width = 0.8 / max(1, len(layouts))
    for i, layout in enumerate(layouts):
        part = dist[dist["layout"] == layout]
        offset = (i - (len(layouts) - 1) / 2) * width
        ax.bar(part["margin_bits"] + offset, part["rows"], width=width, label=str(layout))
    ticks = sorted(dist["margin_bits"].unique())
    labels = dist.drop_duplicates("margin_bits").set_index("margin_bits")["from"]
    ax.set_xticks(ticks, [labels[t] for t in ticks], rotation=60, fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("margin at least (0: idmap touches or overlaps a runtime mapping)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title("margin between the idmap page and the runtime mappings")
    return png(fig)
