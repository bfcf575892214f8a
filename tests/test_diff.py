"""sweep diff: two real runs compared row by row, checked against the scalar reference."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import HIGH_ONLY_ONE_TREE, one_tree_registered

from sweep.cli import main
from sweep.core.errors import ValidationError
from sweep.model.reference import compute_row
from sweep.plan.plugins import get_memory_maps
from sweep.read.diff import OUTPUT_COLUMNS, diff
from sweep.read.results import load

BOARDS = "juno,amd-seattle,qemu-virt"


def _run(directory: Path, *overrides: str) -> Path:
    result = CliRunner().invoke(
        main,
        ["run", "--out", str(directory), "--workers", "1", f"memory_maps={BOARDS}", *overrides],
    )
    assert result.exit_code == 0, result.output
    return directory


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Linux 4.8's merged layout, and the same tree rules under 4.6's alias (``high-only-merged``,
    conftest: 4.6's own two trees would change every row's table counts); both block settings,
    so that ignoring the block setting and the idmap leaves several rows per configuration."""
    base = tmp_path_factory.mktemp("diff")
    blocks = "block_mappings=false,true"
    with one_tree_registered():
        return {
            "linux-4.8": _run(base / "linux-4.8", "layouts=linux-4.8", blocks),
            "high-only-merged": _run(
                base / "high-only-merged", f"layouts={HIGH_ONLY_ONE_TREE.name}", blocks
            ),
            "linux-4.8-4K": _run(base / "linux-4.8-4K", "layouts=linux-4.8", "granules=4K", blocks),
        }


def test_a_run_against_itself_is_identical(runs):
    result = diff(runs["linux-4.8"], runs["linux-4.8"])
    assert result.identical and result.summary.empty
    assert result.rows_a == result.rows_b == len(load(runs["linux-4.8"])) > 0
    cli = CliRunner().invoke(main, ["diff", str(runs["linux-4.8"]), str(runs["linux-4.8"])])
    assert cli.exit_code == 0 and "the runs agree on every compared column" in cli.output


def test_two_layouts(runs):
    """linux-4.8 vs high-only-merged, matched ignoring the layout, against the reference row by
    row; ``show`` above the row count, so that ``changed`` holds every differing row."""
    result = diff(runs["linux-4.8"], runs["high-only-merged"], ignore=["layout"], show=10**6)
    maps = get_memory_maps()
    expected_rows, expected_columns = Counter(), Counter()
    for r in load(runs["linux-4.8"]).astype({"memory_map": str, "layout": str}).itertuples():
        config = dict(
            granule=r.granule,
            va_bits=r.va_bits,
            block_mappings=r.block_mappings,
            idmap_pa=r.idmap_pa,
        )
        a = compute_row(maps[r.memory_map], layout="linux-4.8", **config)
        b = compute_row(
            maps[r.memory_map],
            layout=HIGH_ONLY_ONE_TREE.name,
            layout_plugin=HIGH_ONLY_ONE_TREE,
            **config,
        )
        differs = [c for c in OUTPUT_COLUMNS if a[c] != b[c]]
        expected_rows[r.memory_map] += bool(differs)
        expected_columns.update((r.memory_map, c) for c in differs)
    assert result.summary["changed"].to_dict() == {k: v for k, v in expected_rows.items() if v}
    for (board, column), n in expected_columns.items():
        assert result.summary.loc[board, column] == n
    assert len(result.changed) == sum(expected_rows.values())
    assert result.only_a == result.only_b == 0
    # By hand (docs/model.md 3): Juno's idmap 0x8008_0000 is below 2^(V-1) at every VA_BITS, so
    # linux-4.8 takes the high window exactly as 4.6's alias does, in the same one tree: no table
    # or address of Juno changes. Only whether a kernel runs it does, at VA_BITS 52: no 4.8-4.16
    # kernel offers 52 bits (sweep.core.eras: linux-4.8 has no va52_granules), while the what-if
    # names no era, so all its rows count as runnable: 3 granules x 2 block settings = 6 rows.
    juno = result.summary.loc["juno"]
    assert juno["changed"] == juno["runnable"] == juno["unrunnable"] == 3 * 2
    assert set(juno[juno > 0].index) == {"rows", "changed", "runnable", "unrunnable"}
    juno_rows = result.changed[result.changed.memory_map == "juno"]
    assert (juno_rows["va_bits"] == 52).all() and not juno_rows["runnable_a"].any()
    seattle = result.changed[
        (result.changed.memory_map == "amd-seattle") & (result.changed.va_bits == 39)
    ]
    assert len(seattle) == 2  # blocks off and on
    assert (seattle["hyp_va_min_a"] == 0).all() and (seattle["hyp_va_min_b"] == 1 << 38).all()


def test_rows_only_in_one_run(runs):
    result = diff(runs["linux-4.8"], runs["linux-4.8-4K"])
    merged = load(runs["linux-4.8"])
    assert result.only_a == int((merged.granule != 4096).sum()) > 0
    assert result.only_b == 0 and result.changed.empty
    per_board = merged[merged.granule != 4096].groupby("memory_map", observed=True).size()
    assert result.summary["only_a"].to_dict() == per_board.to_dict()


def test_cli_summary_and_exit_code(runs):
    cli = CliRunner().invoke(
        main,
        [
            "diff",
            str(runs["linux-4.8"]),
            str(runs["high-only-merged"]),
            "--ignore",
            "layout",
            "--show",
            "3",
        ],
    )
    assert cli.exit_code == 1
    assert "per board: rows matched, only in A, only in B, changed" in cli.output
    assert "amd-seattle" in cli.output and "first 3 differing rows:" in cli.output
    assert "0x8000080000" in cli.output  # addresses are printed in hex


def test_errors(runs, tmp_path):
    with pytest.raises(ValidationError, match="only input columns can be ignored"):
        diff(runs["linux-4.8"], runs["linux-4.8"], ignore=["margin"])
    with pytest.raises(ValidationError, match="keep it"):
        diff(runs["linux-4.8"], runs["linux-4.8"], ignore=["memory_map"])
    with pytest.raises(ValidationError, match="several rows share one configuration"):
        diff(runs["linux-4.8"], runs["linux-4.8"], ignore=["idmap_pa", "block_mappings"])
    cli = CliRunner().invoke(main, ["diff", str(runs["linux-4.8"]), str(tmp_path / "none")])
    assert cli.exit_code == 2 and "no such directory" in cli.output
    assert "Traceback" not in cli.output


def test_parts_with_equal_bytes_are_not_joined_and_a_changed_part_is(runs, tmp_path):
    """Issue 23: a run against its copy reads no part again (equal SHA-256 in both manifests);
    one part rewritten with one row changed (and its manifest entry with it) is the only part
    joined, and the diff finds exactly that row."""
    import hashlib
    import json
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    a = runs["linux-4.8"]
    same = diff(a, a)
    manifest = json.loads((a / "_manifest.json").read_text())["parts"]
    assert same.identical and same.notes == [
        f"{len(manifest)} part(s) with equal SHA-256 in both runs: not read again"
    ]
    b = tmp_path / "b"
    shutil.copytree(a, b)
    rel = sorted(manifest)[0]
    table = pq.read_table(b / rel)
    pages = table["table_pages"].to_numpy().copy()
    pages[0] += 1
    table = table.set_column(
        table.schema.get_field_index("table_pages"), "table_pages", pa.array(pages)
    )
    pq.write_table(table, b / rel)
    data = (b / rel).read_bytes()
    record = json.loads((b / "_manifest.json").read_text())
    record["parts"][rel].update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (b / "_manifest.json").write_text(json.dumps(record))
    got = diff(a, b)
    assert got.n_changed == 1 and got.only_a == got.only_b == 0
    assert got.notes == [
        f"{len(manifest) - 1} part(s) with equal SHA-256 in both runs: not read again"
    ]
    assert got.changed["table_pages_b"].tolist() == [got.changed["table_pages_a"].iloc[0] + 1]
    assert got.rows_a == got.rows_b == sum(e["rows"] for e in manifest.values())
