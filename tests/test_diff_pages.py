"""Issue 21, item 4: ``sweep diff`` of an every-page run against a per-page run compares each
page with the run holding it, and a column only one side has is named, not silently skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from small_sweep import small_config, write_map

from sweep.cli import main
from sweep.read.diff import diff, format_diff
from sweep.read.results import load
from sweep.run.driver import run_sweep

PAGES = (1 << 30) // 4096
"""Pages of the one 1 GiB bank, each a configuration of the every-page run (per setting)."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """The small sweep every page (runs) and every 64 MiB (single pages), tags off."""
    root = tmp_path_factory.mktemp("pages")
    map_file = write_map(root)
    every = small_config(map_file, placement={"kind": "every-page"}, tag={"seed": 0})
    stride = small_config(map_file, tag={"seed": 0})
    assert run_sweep(every, out=str(root / "every"), workers=1, progress=False).ok
    assert run_sweep(stride, out=str(root / "stride"), workers=1, progress=False).ok
    return root / "every", root / "stride"


def test_single_pages_are_compared_with_the_runs_holding_them(runs):
    every, stride = runs
    for a, b, side in ((every, stride, "A"), (stride, every, "B")):
        got = CliRunner().invoke(main, ["diff", str(a), str(b)])
        assert got.exit_code == 0, got.output
        lines = got.output.splitlines()
        assert "0 rows differ; 0 only in A, 0 only in B" in lines[1]
        assert lines[2].startswith(f"{side} holds runs of pages (")
        assert f"{4 * PAGES:,} pages)" in lines[2]
        assert f"other {4 * PAGES - 64:,} pages are not compared" in lines[2]
        assert lines[-1] == "the runs agree on every compared column"


def test_a_changed_page_inside_a_run_is_found_with_its_column(runs):
    """The runs' margins are interpolated page by page: one margin off by one is found."""
    every, stride = runs
    rows = load(stride)
    rows.loc[5, "margin"] += 1
    rows.loc[9, "idmap_pa"] += 1  # not on a page boundary: in no run
    result = diff(every, rows)
    assert result.n_changed == 1 and result.only_b == 1
    assert list(result.summary.columns) == ["rows", "only_a", "only_b", "changed", "margin"]
    changed = result.changed.iloc[0]
    assert changed["margin_b"] == changed["margin_a"] + 1
    assert changed["idmap_pa"] == rows.loc[5, "idmap_pa"]


def test_a_column_only_one_side_has_is_named(runs):
    _, stride = runs
    rows = load(stride)
    result = diff(stride, rows.drop(columns=["pkvm_reserve_bytes"]))
    text = format_diff(result, "a", "b")
    assert result.identical
    assert "not compared, only in A: pkvm_reserve_bytes" in text.splitlines()
    assert text.splitlines()[-1] == "the runs agree on every compared column"
