"""sweep.results: load with pushed-down filters, and every named query, on a real small sweep.

Expected values are recounted here row by row from the reference rows (plain Python loops), or
are MODEL.md facts worked out by hand.
"""

from __future__ import annotations

import ast
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pandas as pd
import pytest
import results_data
from results_data import reference_rows, run_small_sweep

from sweep import results
from sweep.columns import ROW_COLUMNS
from sweep.errors import ValidationError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = run_small_sweep(tmp_path_factory.mktemp("run") / "results")
    # What a run may leave beside its data must not be read as data.
    (directory / "_notes.txt").write_text("not parquet")
    (directory / "granule=4096" / "va_bits=39" / ".part-7.parquet.tmp").write_text("half")
    return directory


@pytest.fixture(scope="module")
def df(run_dir) -> pd.DataFrame:
    return results.load(run_dir)


@pytest.fixture(scope="module")
def rows(df) -> pd.DataFrame:
    """The scalar reference's rows for the run's configurations: the oracle."""
    return reference_rows(df)


def _records(rows: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in rows.astype({"memory_map": str, "layout": str}).to_dict("records")
    ]


def test_load_restores_dtypes_and_categories(df, rows):
    # idmap every 1 GiB: 2 + 8 + 4 + 14 + 6 addresses per granule, x 10 x 4 layouts x 2
    assert len(df) == 34 * 10 * 4 * 2
    assert {c: str(t) for c, t in df.dtypes.items()} == ROW_COLUMNS
    assert list(df.columns) == list(ROW_COLUMNS)
    assert list(df["memory_map"].cat.categories) == sorted(
        ["juno-like", "seattle-like", "two-banks", "lx2160a-like", "far"]
    )
    assert list(df["layout"].cat.categories) == ["high-only", "merged", "tagged", "tagged-48"]
    # What the run wrote is what the reference computes, row by row.
    pd.testing.assert_frame_equal(
        df.astype({"memory_map": str, "layout": str}).reset_index(drop=True),
        rows.astype({"memory_map": str, "layout": str}),
    )


@pytest.mark.parametrize(
    "filters, keep",
    [
        ({"granule": "4K"}, lambda r: r.granule == 4096),
        ({"granule": 16384, "va_bits": 36}, lambda r: (r.granule == 16384) & (r.va_bits == 36)),
        ({"layout": "merged"}, lambda r: r.layout == "merged"),
        (
            {"layout": ["merged", "tagged"], "block_mappings": True},
            lambda r: r.layout.isin(["merged", "tagged"]) & r.block_mappings,
        ),
        (
            {"memory_map": ["juno-like", "far"], "granule": ["4K", "64K"]},
            lambda r: r.memory_map.isin(["juno-like", "far"]) & r.granule.isin([4096, 65536]),
        ),
        ({"overlap": True}, lambda r: r.overlap),
        ({"idmap_pa": 0x40_0000_0000}, lambda r: r.idmap_pa == 0x40_0000_0000),
    ],
)
def test_load_filters(run_dir, rows, filters, keep):
    got = results.load(run_dir, **filters)
    expected = rows[keep(rows)]
    assert len(got) == len(expected) > 0
    assert sorted(got["idmap_pa"].tolist()) == sorted(expected["idmap_pa"].tolist())


def test_partition_filters_skip_other_folders(run_dir, rows, tmp_path):
    """A granule filter never opens another granule's files (they are pushed down to folders)."""
    directory = shutil.copytree(run_dir, tmp_path / "results")
    for broken in (directory / "granule=65536" / "va_bits=52").glob("*.parquet"):
        broken.write_bytes(b"PAR1 this is not a parquet file PAR1")
    got = results.load(directory, granule="4K", layout="merged")
    assert len(got) == ((rows.granule == 4096) & (rows.layout == "merged")).sum()
    with pytest.raises(Exception):  # noqa: B017 - reading everything does hit the broken file
        results.load(directory)


def test_load_columns_and_partitions(run_dir):
    got = results.load(run_dir, columns=["memory_map", "table_bytes"], va_bits=52)
    assert list(got.columns) == ["memory_map", "table_bytes"]
    assert results.partitions(run_dir) == [
        (4096, 39),
        (4096, 48),
        (4096, 52),
        (16384, 36),
        (16384, 47),
        (16384, 48),
        (16384, 52),
        (65536, 42),
        (65536, 48),
        (65536, 52),
    ]
    assert results.metadata(run_dir)["name"] == "small"
    assert results.metadata(run_dir / "granule=4096") == {}


def test_load_errors(run_dir, tmp_path):
    with pytest.raises(ValidationError, match="no such directory"):
        results.load(tmp_path / "missing")
    with pytest.raises(ValidationError, match="holds no Parquet files"):
        results.load(tmp_path)
    with pytest.raises(ValidationError, match="filter 'board': not a column"):
        results.load(run_dir, board="juno")
    with pytest.raises(ValidationError, match="granule"):
        results.load(run_dir, granule="8K")
    with pytest.raises(ValidationError, match="empty list"):
        results.load(run_dir, layout=[])


def test_parse_filters():
    assert results.parse_filters(
        ["granule=4K,64K", "layout=merged", "overlap=true", "idmap_pa=0x8008_0000"]
    ) == {"granule": [4096, 65536], "layout": "merged", "overlap": True, "idmap_pa": 0x8008_0000}
    with pytest.raises(ValidationError, match="expected column=value"):
        results.parse_filters(["granule"])
    with pytest.raises(ValidationError, match="expected true or false"):
        results.parse_filters(["overlap=maybe"])


def test_overlaps(df, rows):
    got = results.overlaps(df)
    counts, overlaps, in_window = Counter(), Counter(), Counter()
    for r in _records(rows):
        key = (r["memory_map"], r["layout"])
        counts[key] += 1
        overlaps[key] += r["overlap"]
        in_window[key] += r["idmap_in_window"]
    assert got["rows"].to_dict() == dict(counts)
    assert got["overlaps"].to_dict() == dict(overlaps)
    assert got["in_window"].to_dict() == dict(in_window)
    # MODEL.md 7.3: the two-bank board under high-only overlaps at 4K/39 with the kernel in the
    # high bank (idmap 0x40_0000_0000 and 0x40_4000_0000), blocks off and on.
    assert got.loc[("two-banks", "high-only"), "overlaps"] >= 4
    assert got.loc[("two-banks", "merged"), "overlaps"] == 0
    matrix = results.overlap_matrix(df)
    assert matrix.loc["two-banks", "high-only"] == pytest.approx(
        overlaps[("two-banks", "high-only")] / counts[("two-banks", "high-only")]
    )


def test_extra_levels_and_unrunnable(df, rows):
    extra = results.extra_levels(df)
    expected = defaultdict(list)
    for r in _records(rows):
        if r["extra_levels"] > 0:
            expected[(r["memory_map"], r["granule"], r["va_bits"], r["layout"])].append(r)
    assert set(extra.index) == set(expected)
    for key, group in expected.items():
        assert extra.loc[key, "rows"] == len(group)
        assert extra.loc[key, "max_extra_levels"] == max(r["extra_levels"] for r in group)
        assert extra.loc[key, "lowest_idmap_pa"] == min(r["idmap_pa"] for r in group)
    # MODEL.md 7.2: Seattle at 4K/39 needs one extra level (idmap_va_bits 40).
    assert extra.loc[("seattle-like", 4096, 39, "merged"), "max_extra_levels"] == 1

    unrunnable = results.unrunnable_4x(df)
    # By hand: the 'far' idmap at 2^48 and above needs 49 bits: levels(49) at 4K is
    # (49 - 4) // 9 = 5 against levels(39) = 3; at 16K (49 - 4) // 11 = 4 against levels(36) = 2.
    assert set(unrunnable.index) == {
        ("far", g, v, layout)
        for g, v in ((4096, 39), (16384, 36))
        for layout in ("high-only", "merged", "tagged")
    }
    assert (unrunnable["max_extra_levels"] == 2).all()
    assert (unrunnable["lowest_idmap_pa"] == 1 << 48).all()


def test_level_counts(df, rows):
    got = results.level_counts(df)
    expected = Counter(
        (r["granule"], r["va_bits"], r["layout"], r["levels"]) for r in _records(rows)
    )
    assert {tuple(k): v for *k, v in got.itertuples(index=False)} == dict(expected)


def test_table_size(df, rows):
    got = results.table_size(df)
    groups = defaultdict(list)
    for r in _records(rows):
        groups[(r["granule"], r["va_bits"], r["block_mappings"])].append(r)
    assert len(got) == len(groups) == 20
    for key, group in groups.items():
        sizes = [r["table_bytes"] for r in group]
        assert got.loc[key, "min_bytes"] == min(sizes)
        assert got.loc[key, "max_bytes"] == max(sizes)
        assert got.loc[key, "mean_bytes"] == pytest.approx(sum(sizes) / len(sizes))
        largest = [r["memory_map"] for r in group if r["table_bytes"] == max(sizes)]
        assert got.loc[key, "largest_board"] in largest
    by_board = results.table_bytes_by_board(df, block_mappings=True)
    assert list(by_board.columns) == [
        "4K/39",
        "4K/48",
        "4K/52",
        "16K/36",
        "16K/47",
        "16K/48",
        "16K/52",
        "64K/42",
        "64K/48",
        "64K/52",
    ]
    # MODEL.md 7.1, blocks on: two 1 GiB blocks need 3 tables, 12 288 bytes; the other idmap
    # address and the layouts cannot do better than the root plus one table path.
    juno = [
        r["table_bytes"]
        for r in _records(rows)
        if r["memory_map"] == "juno-like"
        and r["granule"] == 4096
        and r["va_bits"] == 39
        and r["block_mappings"]
    ]
    assert by_board.loc["juno-like", "4K/39"] == max(juno)
    assert 12_288 in juno


def test_margin_distribution(df, rows):
    got = results.margin_distribution(df)
    assert got["rows"].sum() == len(rows)
    expected = Counter((r["layout"], r["margin"].bit_length()) for r in _records(rows))
    assert {(lay, k): n for lay, k, n, _ in got.itertuples(index=False)} == dict(expected)
    assert got[got.margin_bits == 0]["from"].eq("0").all()
    # By hand: 0x8_0000 = 2^19 falls in bucket 20, which starts at 512K; 2^30 in bucket 31.
    tiny = pd.DataFrame(
        {"layout": ["merged"] * 3, "margin": pd.array([0, 0x8_0000, 1 << 30], dtype="uint64")}
    )
    assert results.margin_distribution(tiny)[["margin_bits", "from"]].values.tolist() == [
        [0, "0"],
        [20, "512K"],
        [31, "1G"],
    ]
    assert results.margin_bits(
        pd.Series([0, 1, 4095, 4096, (1 << 52) - 1], dtype="uint64")
    ).tolist() == [0, 1, 12, 13, 52]


def test_worst_cases(df, rows):
    worst = results.worst_cases(df, n=5)
    assert len(worst) == 5
    n_overlap = int(rows["overlap"].sum())
    assert n_overlap >= 2
    # MODEL.md 7.3, high-only: the overlapping rows come first.
    first = worst.iloc[0]
    assert bool(first["overlap"]) and first["memory_map"] == "two-banks"
    assert first["idmap_pa"] in (0x40_0000_0000, 0x40_4000_0000) and first["margin"] == 0
    assert worst["overlap"].tolist()[: min(5, n_overlap)] == [True] * min(5, n_overlap)
    after = worst[~worst["overlap"]]
    assert after["extra_levels"].is_monotonic_decreasing
    shown = results.for_people(worst)
    assert shown["idmap_pa"].iloc[0] in ("0x4000000000", "0x4040000000")
    assert shown["granule"].iloc[0] == "4K" and shown["margin"].iloc[0] == "0x0"


def test_every_named_query_returns_a_frame(df):
    for name, query in results.QUERIES.items():
        answer = query(df)
        assert isinstance(answer, pd.DataFrame), name
        assert len(answer) > 0, name


# --- the README's cookbook, run against a real default sweep ---------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def cookbook_blocks(text: str) -> list[str]:
    """The ```python blocks of the README's "## Looking at results" section, in order."""
    section = text.split("\n## Looking at results\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_cookbook_has_eight_to_ten_entries():
    blocks = cookbook_blocks(README.read_text())
    assert 8 <= len(blocks) <= 10
    # Each is followed by the output pasted from its run.
    section = README.read_text().split("\n## Looking at results\n", 1)[1]
    assert section.count("```python\n") == section.count("```text\n") == len(blocks)


default_run = results_data.default_run  # the session's one default sweep


def test_every_cookbook_query_runs(default_run, monkeypatch):
    monkeypatch.chdir(default_run.parent)
    namespace: dict = {}
    for code in cookbook_blocks(README.read_text()):
        tree = ast.parse(code)
        *body, last = tree.body
        assert isinstance(last, ast.Expr), f"a cookbook block must end in an expression:\n{code}"
        exec(compile(ast.Module(body, type_ignores=[]), "README.md", "exec"), namespace)
        value = eval(compile(ast.Expression(last.value), "README.md", "eval"), namespace)
        assert isinstance(value, (pd.DataFrame, pd.Series, int)), code


def test_cli_query(run_dir):
    from click.testing import CliRunner

    from sweep.cli import main

    runner = CliRunner()
    got = runner.invoke(main, ["query", str(run_dir), "unrunnable-4x", "layout=merged"])
    assert got.exit_code == 0, got.output
    assert "far" in got.output and "high-only" not in got.output
    assert "0x1000000000000" in got.output  # lowest_idmap_pa = 2^48, in hex
    none = runner.invoke(
        main, ["query", str(run_dir), "overlaps", "overlap=true", "memory_map=juno-like"]
    )
    assert none.exit_code == 0 and "overlaps: no rows" in none.output
    bad = runner.invoke(main, ["query", str(run_dir), "overlaps", "board=juno"])
    assert bad.exit_code == 2 and "filter 'board': not a column" in bad.output
