"""sweep report: the page of the default sweep loads in a real headless chromium with no console
errors and every figure rendered (decoded, non-blank pixels on screen).

The browser is Debian's chromium, driven over the DevTools protocol (websocket-client); `.ci/run`
installs it with apt. Where it is missing the browser tests are skipped, saying so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import results_data
from click.testing import CliRunner
from matplotlib import image as mpimg

from sweep.cli import main
from sweep.core.errors import SweepError
from sweep.model.reference import compute_row
from sweep.plan.plugins import get_memory_maps
from sweep.read import figures, results
from sweep.read.report import write_report
from sweep.store.parts import Store

default_run = results_data.default_run  # the session's one default sweep

FIGURES = [
    "Table size",
    "Overlaps by board",
    "Overlaps by granule/VA_BITS",
    "Level counts",
    "Margin distribution",
]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1600",
    "--remote-debugging-port=0",
]


@pytest.fixture(scope="module")
def report_page(default_run, tmp_path_factory) -> Path:
    """``sweep report`` of the default sweep, written by the command line."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    result = CliRunner().invoke(main, ["report", str(default_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


class Browser:
    """A headless chromium and one page, spoken to over the DevTools protocol."""

    def __init__(self, profile: Path) -> None:
        websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
        self.process = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                pytest.fail("chromium did not start its DevTools endpoint")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=60)
        self.next_id = 0
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            assert time.monotonic() < deadline, f"no {event} within {timeout} s"
            self.events.append(json.loads(self.ws.recv()))

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"]["value"]

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                errors.append(params["exceptionDetails"].get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(
                    " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
                )
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(params["entry"]["text"])
        return errors

    def screenshot(self, clip: dict) -> np.ndarray:
        """Pixels of a page region (page coordinates), whether or not it is scrolled into view."""
        data = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={**clip, "scale": 1},
        )["data"]
        return mpimg.imread(io.BytesIO(base64.b64decode(data)), format="png")

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium is not installed (Debian package chromium; .ci/run installs it)")
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    yield b
    b.close()


IMAGES_JS = """JSON.stringify(Array.from(document.images).map(i => {
  const r = i.getBoundingClientRect();
  return {alt: i.alt, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight,
          x: r.left + window.scrollX, y: r.top + window.scrollY, cw: r.width, ch: r.height};
}))"""


def _figures(browser: Browser) -> list[dict]:
    return json.loads(browser.evaluate(IMAGES_JS))


def _is_drawn(pixels: np.ndarray) -> bool:
    """Not blank: many distinct colours, and not one colour nearly everywhere."""
    rgb = (pixels[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    return len(colours) > 20 and counts.max() < 0.97 * len(rgb)


def test_default_report_renders_in_chromium(default_run, report_page, browser):
    browser.open(report_page)
    assert browser.evaluate("document.title") == "va-sweep report: default"
    figures = _figures(browser)
    assert [f["alt"] for f in figures] == FIGURES
    for figure in figures:
        assert figure["complete"] and figure["w"] > 0 and figure["h"] > 0, figure
        pixels = browser.screenshot(
            {"x": figure["x"], "y": figure["y"], "width": figure["cw"], "height": figure["ch"]}
        )
        assert _is_drawn(pixels), f"figure {figure['alt']!r} is blank on screen"
    assert browser.console_errors() == []
    # The worst configurations are there, each with its explain line, as the query gives them.
    worst = results.worst_configurations(default_run, 25)
    assert browser.evaluate("document.querySelectorAll('table.rows')[0].rows.length") == (
        2 * len(worst) + 1
    )


def test_checker_sees_a_broken_figure_and_a_console_error(browser, tmp_path):
    """The checks above can fail: a page with a broken image and an error is caught."""
    bad = tmp_path / "bad.html"
    bad.write_text(
        "<!DOCTYPE html><html><head><title>bad</title></head><body>"
        '<img alt="broken" src="data:image/png;base64,iVBORw0KGgoAAAA=">'
        '<script>console.error("figure failed")</script></body></html>'
    )
    browser.open(bad)
    (figure,) = _figures(browser)
    assert figure["w"] == 0
    assert "figure failed" in browser.console_errors()
    blank = tmp_path / "blank.html"
    blank.write_text(
        '<!DOCTYPE html><html><body style="margin:0;background:#fff">'
        '<div style="width:300px;height:200px"></div></body></html>'
    )
    browser.open(blank)
    assert not _is_drawn(browser.screenshot({"x": 0, "y": 0, "width": 300, "height": 200}))


def test_page_is_self_contained(default_run, report_page):
    """One file: every image is a data URI, nothing is fetched, one inline script (sorting)."""
    page = report_page.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "http://" not in page and "https://" not in page and page.count("<script>") == 1
    assert "<script src" not in page
    df = results.load(default_run)
    once = df[df["mappings"] == "all-dram"]  # every configuration has all of DRAM's row
    assert len(df) > len(once)  # the boot sets' rows repeat configurations
    assert f"{len(once):,} configurations (each counted once" in page
    assert f"{df['memory_map'].nunique()} board(s)" in page
    assert f"{int(once['overlap'].sum()):,} overlap" in page
    assert f"{int((once['extra_levels'] > 0).sum()):,} need an extra level" in page


def test_report_errors(tmp_path):
    missing = CliRunner().invoke(
        main, ["report", str(tmp_path / "none"), "--out", str(tmp_path / "r.html")]
    )
    assert missing.exit_code == 2
    assert "no such directory" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "r.html").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SweepError, match="holds no part files"):
        write_report(tmp_path / "empty", tmp_path / "r.html")


def test_report_says_what_the_sweep_was(default_run, report_page):
    """The header: status, placement, tag seed, VA_BITS, versions, run time (the default
    config: kernel-load, seed 0, Kconfig VA_BITS, docs/model.md section 8)."""
    page = report_page.read_text()
    header = page.split('<dl class="header">', 1)[1].split("</dl>", 1)[0]
    assert "<dt>status</dt><dd>complete</dd>" in header
    assert "<dt>placement</dt><dd>kind=kernel-load</dd>" in header
    assert "<dt>tag seed</dt><dd>0</dd>" in header
    assert "<dt>VA_BITS</dt><dd>4K: 39, 48, 52; 16K: 36, 47, 48, 52; 64K: 42, 48, 52</dd>" in header
    assert "va-sweep 0.1.0" in header and "pyarrow" in header
    assert re.search(r"<dt>run time</dt><dd>[\d.,]+ s \(", header)


def test_a_failed_unit_is_in_the_header(default_run, tmp_path):
    directory = shutil.copytree(default_run, tmp_path / "results")
    meta = json.loads((directory / "_sweep.json").read_text())
    (directory / "granule-16384" / "va_bits-47" / "part-000000.parquet").unlink()
    meta["failed"] = [{"unit": "16K/va47/000000", "error": "boom"}]
    meta["status"] = "failed"
    (directory / "_sweep.json").write_text(json.dumps(meta))
    page = write_report(directory, tmp_path / "r.html").read_text()
    assert '<span class="bad">1 failed unit(s): 16K/va47/000000</span>' in page


def test_heatmaps_and_board_columns_are_per_mapping_set(default_run):
    """Each heatmap holds its own set's largest tables, as the rows themselves say (read with
    pandas, not through the footer summaries the queries read); the boot sets are a few
    dozen pages where all of DRAM, the limit, is far more."""
    columns = ["memory_map", "granule", "va_bits", "mappings", "block_mappings", "table_bytes"]
    rows = pd.read_parquet(default_run, columns=columns)
    matrices = results.table_bytes_matrices(default_run)
    for (mappings, blocks), matrix in matrices.items():
        mine = rows[(rows["mappings"] == mappings) & (rows["block_mappings"] == blocks)]
        want = mine.groupby(["memory_map", "granule", "va_bits"], observed=True)["table_bytes"]
        for (board, granule, va_bits), value in want.max().items():
            assert matrix.loc[board, results.config_label(granule, va_bits)] == value
    boot = matrices["nvhe-boot", False].max().max()
    assert boot < 64 * 65536 < matrices["all-dram", False].max().max()
    per_board = results.boards(default_run)
    nvhe = rows[rows["mappings"] == "nvhe-boot"].groupby("memory_map", observed=True)
    want = nvhe["table_bytes"].max()
    assert per_board.loc[want.index.astype(str), "max_bytes_nvhe_boot"].tolist() == want.tolist()
    both = results.table_bytes_by_board(default_run, block_mappings=False)
    assert both.index.names == ["memory_map", "mappings"]
    one = results.table_bytes_by_board(default_run, mappings="pkvm-boot")
    assert one.equals(matrices["pkvm-boot", False])


def test_heatmap_labels_and_colour_bar(default_run):
    """x labels centred under their columns (not shifted half a column), colour bar in KiB/MiB/
    GiB at powers of two."""
    # The block settings the default sweep has (as the report draws them): pages only, as every
    # kernel maps (sweep/plan/default.toml, block_mappings = [false]).
    matrices = results.table_bytes_matrices(default_run)
    # One map per mapping set, the boot sets (what kernels map) first, all of DRAM last.
    assert list(matrices) == [("nvhe-boot", False), ("pkvm-boot", False), ("all-dram", False)]
    fig = figures.table_bytes_figure(matrices)
    heatmap = fig.axes[0]
    labels = heatmap.get_xticklabels()
    assert [t.get_text() for t in labels][:3] == ["4K/39", "4K/48", "4K/52"]
    assert {t.get_horizontalalignment() for t in labels} == {"center"}
    assert {t.get_rotation() for t in labels} == {0.0}
    bar = [ax for ax in fig.axes if ax.get_ylabel() == "table size"][0]
    ticks = [t.get_text() for t in bar.get_yticklabels()]
    assert ticks and all(re.fullmatch(r"\d+ (B|KiB|MiB|GiB)", t) for t in ticks), ticks
    assert figures.binary_size(1 << 30) == "1 GiB" and figures.binary_size(3 << 19) == "1.5 MiB"


def test_top_boards_keeps_thirty_and_summarises_the_rest():
    matrix = pd.DataFrame(
        {"4K/39": [float(k) for k in range(40)]}, index=[f"b{k}" for k in range(40)]
    )
    top = figures.top_boards(matrix, matrix["4K/39"])
    assert list(top.index[:3]) == ["b39", "b38", "b37"] and len(top) == 31
    assert top.index[-1] == "10 other boards (max)" and top.iloc[-1, 0] == 9.0  # b0..b9


@pytest.fixture(scope="module")
def many_boards(default_run, tmp_path_factory) -> Path:
    """702 boards (the shape of every loadable DTB of Debian's kernels, issue 12): the default
    sweep's real rows, each board copied under 27 names."""
    out = tmp_path_factory.mktemp("many") / "results"
    store = Store(str(out))
    for rel in sorted(Store(str(default_run)).parts()):
        table = pq.read_table(default_run / rel)
        names = pc.cast(table["memory_map"], pa.string())
        copies = []
        for k in range(27):
            renamed = pc.binary_join_element_wise(names, pa.scalar(f"-{k:02d}"), "")
            index = table.schema.get_field_index("memory_map")
            copies.append(table.set_column(index, "memory_map", renamed.dictionary_encode()))
        store.write_part(rel, pa.concat_tables(copies))
    shutil.copy(default_run / "_sweep.json", out / "_sweep.json")
    return out


def test_a_report_of_702_boards(many_boards, browser, tmp_path):
    page = write_report(many_boards, tmp_path / "many.html")
    assert page.stat().st_size < 4 << 20
    browser.open(page)
    shown = _figures(browser)
    assert [f["alt"] for f in shown] == FIGURES
    for figure in shown:
        assert figure["complete"] and 0 < figure["w"] < 4000 and 0 < figure["h"] < 4000, figure
        pixels = browser.screenshot(
            {"x": figure["x"], "y": figure["y"], "width": figure["cw"], "height": figure["ch"]}
        )
        assert _is_drawn(pixels), f"figure {figure['alt']!r} is blank on screen"
    assert browser.console_errors() == []
    table = "document.querySelector('table.sortable')"
    assert browser.evaluate(f"{table}.tBodies[0].rows.length") == 702
    # Sorting by max_bytes_all_dram puts the largest tables first: ls2088a-rdb-window-max's
    # copies. Its
    # largest row is 4K/52 under linux-4.6, by the scalar reference: the merged tree of the later
    # eras holds 262,664 tables there (README cookbook 5 gave 1075867776 bytes when the root was
    # counted as its 16 entries: 128 + 262,663 x 4096), now whole pages, 262,664 x 4096 =
    # 1,075,871,744 bytes; 4.6's two trees (idmap and runtime apart) hold a few tables more.
    ls2088a = get_memory_maps()["ls2088a-rdb-window-max"]
    kernel_load = ls2088a.banks[0].base + 0x80000
    largest = compute_row(ls2088a, 4096, 52, "linux-4.6", False, kernel_load)["table_bytes"]
    merged = compute_row(ls2088a, 4096, 52, "linux-4.8", False, kernel_load)["table_bytes"]
    assert largest > merged == 262_664 * 4096
    headings = browser.evaluate(f"Array.from({table}.tHead.rows[0].cells).map(c => c.textContent)")
    column = headings.index("max_bytes_all_dram")
    click = f"({table}.tHead.rows[0].cells[{column}].click(), true)"
    assert browser.evaluate(click) and browser.evaluate(click)  # ascending, then descending
    first = browser.evaluate(f"{table}.tBodies[0].rows[0].cells[0].textContent")
    assert first.startswith("ls2088a-rdb-window-max-")
    assert browser.evaluate(f"{table}.tBodies[0].rows[0].cells[{column}].dataset.v") == str(largest)


def test_explain_lines_run(default_run, report_page):
    """Each worst configuration's ``sweep explain`` line runs and agrees with the sweep."""
    page = report_page.read_text()
    lines = re.findall(r"<code>(sweep explain [^<]+)</code>", page)
    assert len(lines) == len(results.worst_configurations(default_run, 25))
    got = CliRunner().invoke(main, shlex.split(html.unescape(lines[0]))[1:])
    assert got.exit_code == 0, got.output
