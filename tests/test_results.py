"""sweep.read.results: load with pushed-down filters, and every named query, on a real small sweep.

Expected values are recounted here row by row from the reference rows (plain Python loops), or
are docs/model.md facts worked out by hand.
"""

from __future__ import annotations

import ast
import io
import json
import re
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import results_data
from click.testing import CliRunner
from results_data import reference_rows, run_small_sweep

from sweep.cli import main
from sweep.core.columns import ROW_COLUMNS
from sweep.core.eras import REASONS
from sweep.core.errors import ValidationError
from sweep.core.kconfig import bit_length
from sweep.read import results
from sweep.read.engine import Results
from sweep.store.summary import bit_length_input, bit_length_sql


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = run_small_sweep(tmp_path_factory.mktemp("run") / "results")
    # What a run may leave beside its data must not be read as data.
    (directory / "_notes.txt").write_text("not parquet")
    (directory / "notes.txt").write_text("a person's notes")
    (directory / "granule-4096" / "notes.txt").write_text("more notes")
    (directory / "granule-4096" / "va_bits-39" / "notes.txt").write_text("and more")
    (directory / "granule-4096" / "va_bits-39" / ".part-7.parquet.tmp").write_text("half")
    return directory


@pytest.fixture(scope="module")
def df(run_dir) -> pd.DataFrame:
    return results.load(run_dir)


@pytest.fixture(scope="module")
def rows(df) -> pd.DataFrame:
    """The scalar reference's rows for the run's configurations: the oracle."""
    return reference_rows(df)


@pytest.fixture(scope="module", params=["frame", "directory"])
def data(request, df, run_dir):
    """The same rows as a DataFrame (streamed through ``summarize``) and as the sweep's part
    files (the queries read the summaries in their footers): each query must give the same
    recounted answer from both."""
    return df if request.param == "frame" else run_dir


def _records(rows: pd.DataFrame) -> list[dict]:
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in rows.astype({"memory_map": str, "layout": str}).to_dict("records")
    ]


def test_load_restores_dtypes_and_categories(df, rows):
    # idmap every 1 GiB: 2 + 8 + 4 + 14 + 6 addresses per granule, x 10 x 8 layouts (7 eras and
    # high-only-merged) x 2
    assert len(df) == 34 * 10 * 8 * 2
    assert {c: str(t) for c, t in df.dtypes.items()} == ROW_COLUMNS
    assert list(df.columns) == list(ROW_COLUMNS)
    assert list(df["memory_map"].cat.categories) == sorted(
        ["juno-like", "seattle-like", "two-banks", "lx2160a-like", "far"]
    )
    assert list(df["layout"].cat.categories) == [
        "high-only-merged",
        "linux-4.17",
        "linux-4.6",
        "linux-4.8",
        "linux-5.12",
        "linux-6.2",
        "linux-6.9",
        "linux-7.0",
    ]
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
        ({"layout": "linux-4.8"}, lambda r: r.layout == "linux-4.8"),
        (
            {"layout": ["linux-4.8", "linux-4.17"], "block_mappings": True},
            lambda r: r.layout.isin(["linux-4.8", "linux-4.17"]) & r.block_mappings,
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
    for broken in (directory / "granule-65536" / "va_bits-52").glob("*.parquet"):
        broken.write_bytes(b"PAR1 this is not a parquet file PAR1")
    got = results.load(directory, granule="4K", layout="linux-4.8")
    assert len(got) == ((rows.granule == 4096) & (rows.layout == "linux-4.8")).sum()
    # Reading everything meets the broken file: it is left out, naming it (issue 21).
    with pytest.warns(results.ResultsWarning, match="va_bits-52/part-000000.parquet left out"):
        whole = results.load(directory)
    assert len(whole) == ((rows.granule != 65536) | (rows.va_bits != 52)).sum()


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
    assert results.metadata(run_dir / "granule-4096") == {}


def test_load_errors(run_dir, tmp_path):
    with pytest.raises(ValidationError, match="no such directory"):
        results.load(tmp_path / "missing")
    with pytest.raises(ValidationError, match="holds no part files"):
        results.load(tmp_path)
    with pytest.raises(ValidationError, match="filter 'board': not a column"):
        results.load(run_dir, board="juno")
    with pytest.raises(ValidationError, match="granule"):
        results.load(run_dir, granule="8K")
    with pytest.raises(ValidationError, match="empty list"):
        results.load(run_dir, layout=[])


def test_parse_filters():
    assert results.parse_filters(
        ["granule=4K,64K", "layout=linux-4.8", "overlap=true", "idmap_pa=0x8008_0000"]
    ) == {
        "granule": [4096, 65536],
        "layout": "linux-4.8",
        "overlap": True,
        "idmap_pa": 0x8008_0000,
    }
    with pytest.raises(ValidationError, match="expected column=value"):
        results.parse_filters(["granule"])
    with pytest.raises(ValidationError, match="expected true or false"):
        results.parse_filters(["overlap=maybe"])


def test_overlaps(data, rows):
    got = results.overlaps(data)
    counts, overlaps, in_window = Counter(), Counter(), Counter()
    for r in _records(rows):
        key = (r["memory_map"], r["layout"])
        counts[key] += 1
        overlaps[key] += r["overlap"]
        in_window[key] += r["idmap_in_window"]
    assert got["rows"].to_dict() == dict(counts)
    assert got["overlaps"].to_dict() == dict(overlaps)
    assert got["in_window"].to_dict() == dict(in_window)
    # docs/model.md 7.3: the two-bank board under 4.6's alias in one tree (high-only-merged)
    # overlaps at 4K/39 with the kernel in the high bank (idmap 0x40_0000_0000 and
    # 0x40_4000_0000), blocks off and on. 4.6 itself keeps the idmap in a tree of its own
    # (boot_hyp_pgd): no overlap; 4.8 moves the runtime to the other half: none either.
    assert got.loc[("two-banks", "high-only-merged"), "overlaps"] >= 4
    assert got.loc[("two-banks", "linux-4.6"), "overlaps"] == 0
    assert got.loc[("two-banks", "linux-4.8"), "overlaps"] == 0
    matrix = results.overlap_matrix(data)
    assert matrix.loc["two-banks", "high-only-merged"] == pytest.approx(
        overlaps[("two-banks", "high-only-merged")] / counts[("two-banks", "high-only-merged")]
    )


def test_extra_levels_and_unrunnable(data, rows):
    extra = results.extra_levels(data)
    expected = defaultdict(list)
    for r in _records(rows):
        if r["extra_levels"] > 0:
            expected[(r["memory_map"], r["granule"], r["va_bits"], r["layout"])].append(r)
    assert set(extra.index) == set(expected)
    for key, group in expected.items():
        assert extra.loc[key, "rows"] == len(group)
        assert extra.loc[key, "max_extra_levels"] == max(r["extra_levels"] for r in group)
        assert extra.loc[key, "lowest_idmap_pa"] == min(r["idmap_pa"] for r in group)
    # docs/model.md 7.2: Seattle at 4K/39 needs one extra level (idmap_va_bits 40).
    assert extra.loc[("seattle-like", 4096, 39, "linux-4.8"), "max_extra_levels"] == 1

    # Kernels before 6.9 add one idmap level at most (head.S). Only 'far' at 4K/39 and 16K/36
    # needs two (worked out below), and those VA_BITS are Kconfig choices of every era, so the
    # rows give the second level as the reason they cannot run (sweep.core.eras.REASONS[3]).
    one_level = ("linux-4.6", "linux-4.8", "linux-4.17", "linux-5.12", "linux-6.2")
    for r in _records(rows):
        if r["layout"] in one_level and r["extra_levels"] > 1:
            assert (r["memory_map"], r["granule"], r["va_bits"]) in {
                ("far", 4096, 39),
                ("far", 16384, 36),
            }
            assert not r["runnable"] and r["unrunnable"] == REASONS[3], r

    # The query: every configuration with rows no kernel of its era could run, per reason,
    # recounted from the rows; the what-if layout names no era and is always runnable.
    unrunnable = results.unrunnable(data)
    expected = defaultdict(list)
    for r in _records(rows):
        if not r["runnable"]:
            key = (r["memory_map"], r["granule"], r["va_bits"], r["layout"], r["unrunnable"])
            expected[key].append(r)
    assert set(unrunnable.index) == set(expected) and "high-only-merged" not in str(expected)
    for key, group in expected.items():
        assert unrunnable.loc[key, "rows"] == len(group)
        assert unrunnable.loc[key, "lowest_idmap_pa"] == min(r["idmap_pa"] for r in group)
    # By hand: the 'far' idmap at 2^48 and above needs 49 bits: levels(49) at 4K is
    # (49 - 4) // 9 = 5 against levels(39) = 3; at 16K (49 - 4) // 11 = 4 against levels(36) = 2:
    # two extra levels, which no kernel before 6.9 builds; from 6.9 the image cannot sit there.
    far = unrunnable.xs("far", level="memory_map").reset_index()
    two = far[far["reason"] == REASONS[3]]
    assert set(zip(two.granule, two.va_bits, two.layout, strict=True)) == {
        (g, v, layout)
        for g, v in ((4096, 39), (16384, 36))
        for layout in ("linux-4.6", "linux-4.8", "linux-4.17", "linux-5.12", "linux-6.2")
    }
    assert (two["max_extra_levels"] == 2).all() and (two["lowest_idmap_pa"] == 1 << 48).all()
    above = far[far["reason"] == REASONS[4]]
    assert set(above.layout) == {"linux-6.9", "linux-7.0"}
    assert (above["lowest_idmap_pa"] == 1 << 48).all()
    assert results.unrunnable_4x is results.unrunnable  # its name before eras


def test_level_counts(data, rows):
    got = results.level_counts(data)
    expected = Counter(
        (r["granule"], r["va_bits"], r["layout"], r["levels"]) for r in _records(rows)
    )
    assert {tuple(k): v for *k, v in got.itertuples(index=False)} == dict(expected)


def test_table_size(data, rows):
    got = results.table_size(data)
    groups = defaultdict(list)
    for r in _records(rows):
        groups[(r["granule"], r["va_bits"], r["block_mappings"], r["mappings"])].append(r)
    assert len(got) == len(groups) == 20
    for key, group in groups.items():
        sizes = [r["table_bytes"] for r in group]
        assert got.loc[key, "min_bytes"] == min(sizes)
        assert got.loc[key, "max_bytes"] == max(sizes)
        assert got.loc[key, "mean_bytes"] == pytest.approx(sum(sizes) / len(sizes))
        largest = [r["memory_map"] for r in group if r["table_bytes"] == max(sizes)]
        assert got.loc[key, "largest_board"] in largest
    by_board = results.table_bytes_by_board(data, block_mappings=True)
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
    # docs/model.md 7.1, blocks on: two 1 GiB blocks need 3 tables, 12 288 bytes; the other idmap
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
    assert results.table_bytes_matrices(data)["all-dram", True].loc["juno-like", "4K/39"] == max(
        juno
    )
    assert 12_288 in juno


def test_margin_distribution(data, df, rows):
    got = results.margin_distribution(data)
    assert got["rows"].sum() == len(rows)
    expected = Counter((r["layout"], r["margin"].bit_length()) for r in _records(rows))
    assert {(lay, k): n for lay, k, n, _ in got.itertuples(index=False)} == dict(expected)
    assert got[got.margin_bits == 0]["from"].eq("0").all()
    # By hand: 0x8_0000 = 2^19 falls in bucket 20, which starts at 512K; 2^30 in bucket 31.
    tiny = df.head(3).copy()
    tiny["layout"] = "linux-4.8"
    tiny["margin"] = pd.array([0, 0x8_0000, 1 << 30], dtype="uint64")
    assert results.margin_distribution(tiny)[["margin_bits", "from"]].values.tolist() == [
        [0, "0"],
        [20, "512K"],
        [31, "1G"],
    ]
    # The bucket (a bit length) is exact next to every power of two below 2^53, in numpy (the
    # footer summaries) and in SQL (rows read as summary rows), where log2 rounds.
    values = sorted({0, 1, 4095, 4096} | {(1 << k) + d for k in range(1, 53) for d in (-1, 0, 1)})
    got = bit_length(np.array(values, dtype=np.int64))
    assert got.tolist() == [v.bit_length() for v in values]
    frame = pd.DataFrame({"v": pd.array(values, dtype="uint64")})
    got = Results(frame).frame(
        f"SELECT {bit_length_sql('v')} AS n FROM (SELECT v, {bit_length_input('v')} FROM results)"
    )["n"]
    assert got.tolist() == [v.bit_length() for v in values]


def test_worst_cases(data, rows):
    worst = results.worst_cases(data, n=5)
    assert len(worst) == 5
    n_overlap = int(rows["overlap"].sum())
    assert n_overlap >= 2
    # docs/model.md 7.3, high-only-merged: the overlapping rows come first.
    first = worst.iloc[0]
    assert bool(first["overlap"]) and first["memory_map"] == "two-banks"
    assert first["idmap_pa"] in (0x40_0000_0000, 0x40_4000_0000) and first["margin"] == 0
    assert worst["overlap"].tolist()[: min(5, n_overlap)] == [True] * min(5, n_overlap)
    after = worst[~worst["overlap"]]
    assert after["extra_levels"].is_monotonic_decreasing
    shown = results.for_people(worst)
    assert shown["idmap_pa"].iloc[0] in ("0x4000000000", "0x4040000000")
    assert shown["granule"].iloc[0] == "4K" and shown["margin"].iloc[0] == "0x0"


def test_every_named_query_returns_a_frame(data):
    for name, query in results.QUERIES.items():
        answer = query(data)
        assert isinstance(answer, pd.DataFrame), name
        assert len(answer) > 0, name


# --- the README's cookbook, run against a real default sweep ---------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"


def cookbook(text: str) -> list[tuple[str, str]]:
    """The ```python blocks of the README's "## Looking at results" section, each with the
    ```text block pasted after it, in order."""
    section = text.split("\n## Looking at results\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```\s*```text\n(.*?)```", section, flags=re.S)


def test_cookbook_has_eight_to_ten_entries():
    entries = cookbook(README.read_text())
    assert 8 <= len(entries) <= 10
    # Each is followed by the output pasted from its run.
    section = README.read_text().split("\n## Looking at results\n", 1)[1]
    assert section.count("```python\n") == section.count("```text\n") == len(entries)


default_run = results_data.default_run  # the session's one default sweep


def run_cookbook(directory: Path) -> list[str]:
    """What each cookbook block prints when run, in order, in ``directory``'s parent."""
    namespace: dict = {}
    printed = []
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        for code, _ in cookbook(README.read_text()):
            tree = ast.parse(code)
            *body, last = tree.body
            assert isinstance(last, ast.Expr), (
                f"a cookbook block must end in an expression:\n{code}"
            )
            exec(compile(ast.Module(body, type_ignores=[]), "README.md", "exec"), namespace)
            value = eval(compile(ast.Expression(last.value), "README.md", "eval"), namespace)
            printed.append(value.to_string() if hasattr(value, "to_string") else str(value))
    return printed


def test_every_cookbook_answer_is_what_the_readme_shows(default_run, monkeypatch):
    """Issue 14: the answers pasted in the README are the answers of the real default sweep
    (regenerate them with ``run_cookbook`` when the model changes them)."""
    monkeypatch.chdir(default_run.parent)
    printed = run_cookbook(default_run)
    for (code, pasted), got in zip(cookbook(README.read_text()), printed, strict=True):
        assert [line.rstrip() for line in got.splitlines()] == pasted.rstrip("\n").splitlines(), (
            code
        )


def test_cli_query(run_dir):
    from click.testing import CliRunner

    from sweep.cli import main

    runner = CliRunner()
    got = runner.invoke(main, ["query", str(run_dir), "unrunnable-4x", "layout=linux-4.8"])
    assert got.exit_code == 0, got.output
    assert "far" in got.output and "linux-4.6" not in got.output
    assert "linux-4.17" not in got.output
    assert "0x1000000000000" in got.output  # lowest_idmap_pa = 2^48, in hex
    none = runner.invoke(
        main, ["query", str(run_dir), "overlaps", "overlap=true", "memory_map=juno-like"]
    )
    assert none.exit_code == 0 and "(no rows)" in none.output
    bad = runner.invoke(main, ["query", str(run_dir), "overlaps", "board=juno"])
    assert bad.exit_code == 2 and "filter 'board': not a column" in bad.output


def test_filter_values_that_match_nothing_name_near_matches(run_dir):
    """Issue 9: a typo is an error naming what is there, not an empty answer."""
    with pytest.raises(ValidationError, match=r"layout=linux4\.8: matches no row.*linux-4\.8"):
        results.load(run_dir, layout="linux4.8")
    with pytest.raises(ValidationError, match=r"memory_map=junolike.*did you mean: juno-like"):
        results.load(run_dir, memory_map=["far", "junolike"])
    # The sweep has 4K VA_BITS 39, 48, 52 only (Kconfig): 40 is named with what is there.
    with pytest.raises(ValidationError, match=r"va_bits=40: .*present: 36, 39, 42, 47, 48, 52"):
        results.load(run_dir, va_bits=40)
    # The idmap every 1 GiB from 0x8000_0000 (juno-like): the addresses either side are named.
    with pytest.raises(ValidationError, match=r"idmap_pa=0x80001000.*0x80000000, 0xc0000000"):
        results.load(run_dir, idmap_pa=0x8000_1000, memory_map="juno-like")
    runner = CliRunner()
    got = runner.invoke(main, ["query", str(run_dir), "overlaps", "layout=linux4.8"])
    assert got.exit_code == 2 and "did you mean: linux-4.8" in got.output
    assert "Traceback" not in got.output
    hexless = runner.invoke(main, ["query", str(run_dir), "overlaps", "idmap_pa=40eed000"])
    assert hexless.exit_code == 2 and "0x" in hexless.output


def test_stray_files_are_not_data(run_dir):
    """Issue 9: only the sweep's part files are read; the notes the fixture left are not."""
    assert len(results.load(run_dir)) == 34 * 10 * 8 * 2
    got = CliRunner().invoke(main, ["query", str(run_dir), "level-counts"])
    assert got.exit_code == 0, got.output


def test_query_formats(run_dir, rows):
    runner = CliRunner()
    csv = runner.invoke(
        main,
        ["query", str(run_dir), "unrunnable", "memory_map=far", "va_bits=39,36"]
        + ["--format", "csv", "--raw"],
    )
    assert csv.exit_code == 0, csv.output
    frame = pd.read_csv(io.StringIO(csv.stdout))  # stderr names the fixture's stray notes
    assert frame["lowest_idmap_pa"].tolist() == [1 << 48] * len(frame)  # --raw: exact integers
    assert len(frame) == 2 * 7  # see test_extra_levels...: two VA_BITS x seven eras
    js = runner.invoke(main, ["query", str(run_dir), "worst-cases", "--format", "json"])
    records = [json.loads(line) for line in js.stdout.splitlines()]
    assert len(records) == 20  # worst-cases gives 20 rows unless --limit says otherwise
    assert records[0]["idmap_pa"].startswith("0x") and records[0]["granule"] == "4K"
    assert records[0]["table_bytes"].endswith("iB")
    limited = runner.invoke(main, ["query", str(run_dir), "worst-cases", "--limit", "3"])
    assert len(limited.stdout.strip().splitlines()) == 4  # header and three rows
    sql = "SELECT layout, count(*) AS n FROM results GROUP BY ALL ORDER BY layout"
    got = runner.invoke(
        main, ["query", str(run_dir), "granule=4K", "--sql", sql, "--format", "csv"]
    )
    assert got.exit_code == 0, got.output
    n = int(((rows.granule == 4096) & (rows.layout == "linux-4.8")).sum())
    assert f"linux-4.8,{n}" in got.stdout.splitlines()
    out = run_dir.parent / "answer.parquet"
    parquet = runner.invoke(
        main, ["query", str(run_dir), "level-counts", "--format", "parquet", "--out", str(out)]
    )
    assert parquet.exit_code == 0, parquet.output
    assert pd.read_parquet(out)["rows"].sum() == len(rows)
    bad = runner.invoke(main, ["query", str(run_dir), "--sql", "SELECT nothing FROM results"])
    assert bad.exit_code == 2 and "nothing" in bad.output and "Traceback" not in bad.output
    # With blocks off only, no board has a largest table with blocks: "-", not "nan TiB".
    off = runner.invoke(main, ["query", str(run_dir), "boards", "block_mappings=false"])
    assert off.exit_code == 0, off.output
    assert "nan" not in off.output
    assert [line.split()[-1] for line in off.stdout.splitlines()[1:]] == ["-"] * 5


def test_incomplete_sweeps_say_so(run_dir, tmp_path):
    """Issue 9: failed and missing units are named by load (a warning) and query (stderr)."""
    directory = shutil.copytree(run_dir, tmp_path / "results")
    meta = json.loads((directory / "_sweep.json").read_text())
    folder = directory / "granule-16384" / "va_bits-47"
    (folder / "part-000000.parquet").unlink()
    meta["failed"] = [{"unit": "16K/va47/000000", "error": "boom"}]
    meta["status"] = "failed"
    (directory / "_sweep.json").write_text(json.dumps(meta))
    with pytest.warns(results.ResultsWarning, match=r"1 failed unit\(s\): 16K/va47/000000"):
        results.load(directory, columns=["margin"])
    got = CliRunner().invoke(main, ["query", str(directory), "level-counts"])
    assert "1 failed unit(s): 16K/va47/000000" in got.stderr
    # A part that vanished without being recorded as failed is missing.
    (directory / "granule-4096" / "va_bits-52" / "part-000000.parquet").unlink()
    assert results.problems(directory)[1].startswith("1 of 10 unit(s) missing")


def test_load_warns_above_its_limit(run_dir):
    # 5,440 rows x (8 bytes of uint64 margin + 4 of a category code) = 65,280 bytes = 63.75 KiB
    with pytest.warns(results.ResultsWarning, match=r"5,440 rows x 2 columns is about 63.8 KiB"):
        results.load(run_dir, columns=["margin", "layout"], warn_above=1000)


def test_queries_weight_runs_of_pages():
    """Rows standing for runs of pages (issue 11's every-page placement) count as ``pages``
    configurations, and a run's smallest margin is at one of its ends."""
    frame = pd.DataFrame(
        {
            "memory_map": pd.Categorical(["a", "a", "b"]),
            "granule": pd.array([4096] * 3, dtype="int32"),
            "va_bits": pd.array([39] * 3, dtype="int8"),
            "layout": pd.Categorical(["linux-4.8"] * 3),
            "block_mappings": [False] * 3,
            "idmap_pa": pd.array([0x8000_0000, 0x8010_0000, 0x9000_0000], dtype="uint64"),
            "idmap_pa_last": pd.array([0x800F_F000, 0x8FFF_F000, 0x9000_0000], dtype="uint64"),
            "pages": pd.array([256, 65280, 1], dtype="int64"),
            "tag_random": pd.array([0] * 3, dtype="uint64"),
            "overlap": [True, False, False],
            "idmap_in_window": [False] * 3,
            "extra_levels": pd.array([0, 1, 0], dtype="int8"),
            "levels": pd.array([3, 4, 3], dtype="int8"),
            "margin": pd.array([0, 1 << 20, 1 << 30], dtype="uint64"),
            "margin_last": pd.array([0, 4096, 1 << 30], dtype="uint64"),
            "table_bytes": pd.array([4096, 8192, 4096], dtype="int64"),
        }
    )
    got = results.overlaps(frame)
    assert got.loc[("a", "linux-4.8"), "rows"] == 256 + 65280
    assert got.loc[("a", "linux-4.8"), "overlaps"] == 256
    assert results.extra_levels(frame).loc[("a", 4096, 39, "linux-4.8"), "rows"] == 65280
    dist = results.margin_distribution(frame).set_index("from")["rows"].to_dict()
    assert dist == {"0": 256, "4K": 65280, "1G": 1}  # the 1M..4K run falls in 4K's bucket
    size = results.table_size(frame).iloc[0]
    assert size["rows"] == 65537 and size["mean_bytes"] == pytest.approx(
        (256 * 4096 + 65280 * 8192 + 4096) / 65537
    )
    assert results.overlaps(Results(frame, memory_map="b"))["rows"].tolist() == [1]
    with pytest.raises(ValidationError, match="did you mean: linux-4.8"):
        Results(frame, layout="linux4.8", granule="4K")
    worst = results.worst_configurations(frame)
    assert worst.iloc[0][["idmap_from", "idmap_to"]].tolist() == [0x8000_0000, 0x800F_F000]


def test_a_real_every_page_sweep_counts_pages(tmp_path):
    """Rows of an every-page sweep are runs; the queries count pages. Juno's DRAM (its banks
    0x8000_0000-0xfeff_ffff and 0x8_8000_0000-0x9_ffff_ffff, as `sweep explain` prints them) is
    0x7f00_0000 + 0x1_8000_0000 bytes = 2,093,056 pages of 4K."""
    out = tmp_path / "pages"
    got = CliRunner().invoke(
        main,
        ["run", "--out", str(out), "placement.kind=every-page", "memory_maps=juno"]
        + ["granules=4K", "layouts=linux-4.8", "block_mappings=false", "--workers", "1"],
    )
    assert got.exit_code == 0, got.output
    pages = (0x7F00_0000 + 0x1_8000_0000) // 4096
    assert pages == 2_093_056
    assert results.overlaps(out).loc[("juno", "linux-4.8"), "rows"] == 3 * pages  # VA_BITS 39/48/52
    assert results.level_counts(out)["rows"].sum() == 3 * pages
    assert results.margin_distribution(out)["rows"].sum() == 3 * pages
    assert len(results.load(out)) < 100  # runs, not pages


@pytest.mark.parametrize(
    "sets", [["all-dram", "nvhe-boot", "pkvm-boot"], ["pkvm-boot", "nvhe-boot"]]
)
def test_configuration_counts_take_each_configuration_once(tmp_path, sets):
    """A configuration's overlap, window, levels and margin do not depend on its mapping set
    or CPU count: the counting queries take all of DRAM's rows, or with boot sets only the
    first set's (nVHE) at its fewest CPUs, and agree with the rows read with pandas."""
    from small_sweep import small_config, write_map

    from sweep.run.driver import run_sweep

    config = small_config(
        write_map(tmp_path), layouts=["linux-6.9", "linux-7.0"], mappings=sets, cpus=[4, 1]
    )
    out = tmp_path / "out"
    assert run_sweep(config, out=str(out), workers=1, progress=False).ok
    rows = pd.read_parquet(out)
    keep = "all-dram" if "all-dram" in sets else "nvhe-boot"
    once = rows[(rows["mappings"] == keep) & ((rows["cpus"] == 1) | (keep == "all-dram"))]
    assert 0 < len(once) < len(rows)
    got = results.overlaps(str(out))
    want = once.groupby(["memory_map", "layout"], observed=True).agg(
        rows=("overlap", "size"), overlaps=("overlap", "sum")
    )
    assert got["rows"].tolist() == want["rows"].tolist()
    assert got["overlaps"].tolist() == want["overlaps"].tolist()
    levels = results.level_counts(str(out))
    assert levels["rows"].sum() == len(once)
    boards = results.boards(str(out))
    assert boards["rows"].tolist() == [len(once)]
