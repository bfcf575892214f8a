"""The report of boards with hostile names (issue 22 item 1, issue 21 item 12): a name that is
a shell command is quoted in the printed ``sweep explain`` line, mathtext is drawn as written,
a long name is cut in figures, a CJK name draws no empty boxes, and the header reads well."""

from __future__ import annotations

import html
import json
import re
import shlex
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from small_sweep import small_config

from sweep.read import figures, results
from sweep.read.report import _duration, _versions, write_report
from sweep.run.driver import run_sweep

NAMES = [
    "juno; touch pwned #",
    "price$\\frac{1}$board",
    "rev$2 a$b",
    "b" * 300,
    "开发板",
    "plain-1",
    "plain-2",
]


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    maps = folder / "maps"
    maps.mkdir()
    for i, name in enumerate(NAMES):
        (maps / f"m{i}.toml").write_text(
            f"name = {json.dumps(name)}\n[[banks]]\nbase = {0x8000_0000 + i * (1 << 30)}\n"
            f'size = "{1 + i % 3}G"\n'
        )
    config = small_config(maps, placement={"kind": "stride", "step": "256M"}, unit_rows=1000)
    report = run_sweep(config, out=str(folder / "out"), workers=1, progress=False)
    assert report.status == "complete"
    return folder / "out"


@pytest.fixture(scope="module")
def hostile_page(hostile_run, tmp_path_factory) -> str:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_report(hostile_run, tmp_path_factory.mktemp("page") / "r.html")
    assert not [w for w in caught if "missing from font" in str(w.message)]
    return out.read_text()


def test_a_printed_explain_line_quotes_the_board_name(hostile_page):
    lines = [
        html.unescape(x) for x in re.findall(r"<code>(sweep explain [^<]+)</code>", hostile_page)
    ]
    juno = [line for line in lines if "touch" in line]
    assert juno, lines
    args = shlex.split(juno[0])
    assert args[args.index("--map") + 1] == "juno; touch pwned #"
    assert "--map 'juno; touch pwned #' --granule 4K" in juno[0]


def test_names_are_drawn_as_written_and_cut_when_long(hostile_run):
    matrices = results.table_bytes_matrices(hostile_run)
    fig = figures.table_bytes_figure(matrices)
    ticks = [t for t in fig.axes[0].get_yticklabels()]
    texts = [t.get_text() for t in ticks]
    assert "rev$2 a$b" in texts and "price$\\frac{1}$board" in texts
    assert not any(t.get_parse_math() for t in ticks)
    assert max(len(t) for t in texts) == figures.MAX_LABEL
    assert "bbbbbbbbbbbbbbbbbbbbbbbbbb\u2026bbbbbbbbbbbbb" in texts
    plt.close(fig)


def test_a_cjk_name_is_drawn_without_a_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig, ax = plt.subplots()
        with plt.rc_context({"font.family": figures._fonts()[0]}):
            ax.set_title(figures.label("开发板"))
            fig.canvas.draw()
        plt.close(fig)
    assert not [w for w in caught if "missing from font" in str(w.message)]
    if len(figures._fonts()[0]) == 1:  # no CJK font installed: the code points are shown
        assert figures.label("开发板") == "\\u5f00\\u53d1\\u677f"


def test_heatmap_titles_never_meet_the_x_label_above(hostile_run):
    matrices = results.table_bytes_matrices(hostile_run)
    assert list(matrices) == [("all-dram", False), ("all-dram", True)]
    fig = figures.table_bytes_figure(matrices)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    xlabel = fig.axes[0].xaxis.label.get_window_extent(renderer)
    title = fig.axes[1].title.get_window_extent(renderer)
    assert not xlabel.overlaps(title)
    plt.close(fig)


def test_margin_histogram_ticks_do_not_overlap():
    wide = pd.DataFrame(
        {
            "layout": ["linux-4.8"] * 48,
            "margin_bits": list(range(48)),
            "rows": [10] * 48,
            "from": [figures.binary_size(1 << k) for k in range(48)],
        }
    )
    fig = figures.margins_figure(wide)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
    assert 8 <= len(labels) <= figures.MAX_TICKS
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for a, b in zip(boxes, boxes[1:], strict=False))
    plt.close(fig)


def test_header_versions_read_as_a_line_and_run_time_excludes_the_idle_gap():
    meta = {
        "package": {"name": "va-sweep", "version": "0.1.0"},
        "versions": {
            "package": "0.1.0",
            "plugins": {"sweep_plugins.boards": "0.1.0", "x-boards": "1.2"},
            "pyarrow": "21.0.0",
            "algorithm": 3,
        },
        "started": "2026-01-01T00:00:00+00:00",
        "finished": "2026-01-02T00:00:30+00:00",
        "runs": [
            {"started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:00:10+00:00"},
            {"started": "2026-01-02T00:00:10+00:00", "finished": "2026-01-02T00:00:30+00:00"},
        ],
    }
    text = _versions(meta)
    assert text == (
        "va-sweep 0.1.0; pyarrow 21.0.0; algorithm 3; plugins: sweep_plugins.boards 0.1.0,"
        " x-boards 1.2"
    )
    assert "{" not in text
    assert _duration(meta).startswith("30.0 s in 2 runs (2026-01-01T00:00:00+00:00 to ")


def test_figures_of_fifty_layouts_stay_under_the_pixel_bound():
    """Each layout is a panel of the level figure and a column of the overlap matrix: 50 plugin
    layouts made a figure of 16,000 pixels, which the report refuses."""
    names = [f"plugin-layout-{k}" for k in range(50)]
    counts = pd.DataFrame(
        {
            "layout": names * 2,
            "granule": [4096] * 100,
            "va_bits": [39] * 50 + [48] * 50,
            "levels": [3] * 50 + [4] * 50,
            "rows": [10] * 100,
        }
    )
    _, (width, height) = figures.levels(counts)
    assert max(width, height) < figures.MAX_PIXELS
    share = pd.DataFrame([[1.0] * 50], index=["board"], columns=names)
    _, (width, height) = figures.share_matrix(share, share * 10, "t", "layout")
    assert max(width, height) < figures.MAX_PIXELS
