"""Issue 21, trust: readers see only the parts the sweep's manifest vouches for, and an
unfinished sweep says so (``sweep verify``), in one line each, never a traceback.

Every trial tampers with a copy of one small real sweep (64 rows in 8 units, tests/small_sweep.py):
another run's part, a duplicated part, a stray folder, a flipped bit, a deleted unit, a file
that is not a part, Parquet that is not a sweep's rows, a garbage ``_sweep.json``.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from small_sweep import small_config, write_map

from sweep.cli import main
from sweep.read import results
from sweep.read.engine import Results
from sweep.run.driver import run_sweep

pytestmark = pytest.mark.filterwarnings("ignore::sweep.read.engine.ResultsWarning")

FOLDER = "granule-4096/va_bits-48"
ROWS = 64
UNIT_ROWS = 8


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory) -> tuple[Path, Path]:
    """The small sweep, and one of another layout (another run's parts, of the same names)."""
    root = tmp_path_factory.mktemp("trust")
    map_file = write_map(root)
    ours, other = root / "ours", root / "other"
    assert run_sweep(small_config(map_file), out=str(ours), workers=1, progress=False).ok
    other_config = small_config(map_file, layouts=["linux-4.17"])
    assert run_sweep(other_config, out=str(other), workers=1, progress=False).ok
    return ours, other


@pytest.fixture
def copy(sweeps, tmp_path) -> Path:
    return Path(shutil.copytree(sweeps[0], tmp_path / "results"))


def _count(directory: Path, **kwargs) -> tuple[int, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Results(directory, **kwargs) as data:
            rows = data.frame("SELECT count(*) AS n FROM results")["n"][0]
    return int(rows), [str(w.message) for w in caught]


def _query(directory: Path, *args: str):
    return CliRunner().invoke(main, ["query", str(directory), *args])


def test_a_complete_sweep_reads_whole_without_a_warning(copy):
    assert _count(copy) == (ROWS, [])


def test_another_runs_part_is_left_out_naming_it(copy, sweeps):
    rel = f"{FOLDER}/part-000001.parquet"
    shutil.copy(sweeps[1] / rel, copy / rel)
    rows, said = _count(copy)
    assert rows == ROWS - UNIT_ROWS
    assert len(said) == 1 and f"part {rel} left out" in said[0], said
    got = _query(copy, "--sql", "SELECT count(*) AS n FROM results", "--format", "csv")
    assert got.exit_code == 0 and got.stdout.splitlines() == ["n", str(ROWS - UNIT_ROWS)]
    assert f"sweep: warning: results {str(copy)!r}: part {rel} left out" in got.stderr
    assert "Traceback" not in got.output and "warnings.warn" not in got.stderr


def test_a_duplicated_part_and_a_stray_folder_are_not_counted(copy):
    stray = copy / "granule-4096" / "va_bits-99"
    stray.mkdir()
    shutil.copy(copy / FOLDER / "part-000000.parquet", stray / "part-000000.parquet")
    shutil.copy(copy / FOLDER / "part-000000.parquet", copy / FOLDER / "part-000017.parquet")
    rows, said = _count(copy)
    assert rows == ROWS
    assert sorted(line.split(": part ")[1].split(" ")[0] for line in said) == [
        f"{FOLDER}/part-000017.parquet",
        "granule-4096/va_bits-99/part-000000.parquet",
    ]
    assert results.partitions(copy) == [(4096, 39), (4096, 48)]


def test_a_flipped_bit_is_left_out_and_strict_refuses(copy):
    path = copy / FOLDER / "part-000002.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))
    rows, said = _count(copy)
    assert rows == ROWS - UNIT_ROWS and "SHA-256" in said[0]
    strict = _query(copy, "level-counts", "--strict")
    assert strict.exit_code == 2 and "Traceback" not in strict.output
    assert strict.stderr.count("\n") == 1 and "part-000002.parquet" in strict.stderr
    assert "--strict" in strict.stderr
    with pytest.raises(Exception, match="part-000002.parquet"):
        Results(copy, strict=True)


def test_a_deleted_unit_is_still_missing_when_a_foreign_part_is_added(copy, sweeps):
    """One trial of the issue: a deleted unit plus a foreign part hid the 'missing' warning."""
    (copy / FOLDER / "part-000003.parquet").unlink()
    stray = copy / "granule-4096" / "va_bits-52"
    stray.mkdir()
    shutil.copy(sweeps[1] / FOLDER / "part-000000.parquet", stray / "part-000000.parquet")
    got = _query(copy, "level-counts")
    assert got.exit_code == 0
    assert "1 of 8 unit(s) missing" in got.stderr
    assert "va_bits-52/part-000000.parquet left out" in got.stderr


def test_a_file_that_is_not_a_part_is_named_in_one_line(copy):
    (copy / "notes.txt").write_text("mine\n")
    (copy / FOLDER / "extra.parquet").write_bytes(
        (copy / FOLDER / "part-000000.parquet").read_bytes()
    )
    rows, said = _count(copy)
    assert rows == ROWS
    assert said == [
        f"results {str(copy)!r}: 2 file(s) not of the sweep, not read: "
        f"{FOLDER}/extra.parquet, notes.txt"
    ]


def test_parquet_that_is_not_sweep_rows_is_one_line(tmp_path):
    folder = tmp_path / "other" / FOLDER
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"a": [1, 2], "b": ["x", "y"]}), folder / "part-000000.parquet")
    for args in (
        ["query", str(tmp_path / "other"), "unrunnable"],
        ["report", str(tmp_path / "other"), "--out", str(tmp_path / "r.html")],
    ):
        got = CliRunner().invoke(main, args)
        assert got.exit_code == 2, got.output
        assert "Traceback" not in got.output and "BinderException" not in got.output
        assert "not a sweep's rows (no column memory_map" in got.stderr


def test_no_manifest_reads_every_part_saying_they_are_unchecked(copy):
    (copy / "_manifest.json").unlink()
    rows, said = _count(copy)
    assert rows == ROWS and said == [
        f"results {str(copy)!r}: no _manifest.json; its part files are read unchecked"
    ]


def test_load_reads_only_vouched_parts(copy, sweeps):
    rel = f"{FOLDER}/part-000000.parquet"
    shutil.copy(sweeps[1] / rel, copy / rel)
    with pytest.warns(results.ResultsWarning, match="part-000000.parquet left out"):
        frame = results.load(copy, columns=["va_bits", "tag_random"])
    assert len(frame) == ROWS - UNIT_ROWS
    whole = pd.read_parquet(sweeps[0], columns=["va_bits", "tag_random"])
    assert sorted(frame.tag_random) == sorted(
        whole.tag_random[whole.index.isin(range(len(whole)))].drop(
            whole.index[whole.va_bits == 48][:UNIT_ROWS]
        )
    )


# --- sweep verify against the plan ----------------------------------------------------------


def _verify(directory: Path, *args: str):
    return CliRunner().invoke(main, ["verify", str(directory), *args])


def test_verify_a_complete_sweep_exits_0(copy):
    got = _verify(copy)
    assert got.exit_code == 0, got.output
    assert got.output.splitlines() == [f"8 part files checked, 0 problems in {copy}"]


def test_verify_an_interrupted_sweep_says_what_is_missing_and_exits_1(copy):
    for index in (1, 2):
        (copy / FOLDER / f"part-{index:06d}.parquet").unlink()
    manifest = json.loads((copy / "_manifest.json").read_text())
    for index in (1, 2):
        del manifest["parts"][f"{FOLDER}/part-{index:06d}.parquet"]
    (copy / "_manifest.json").write_text(json.dumps(manifest))
    meta = json.loads((copy / "_sweep.json").read_text())
    meta["status"] = "interrupted"
    (copy / "_sweep.json").write_text(json.dumps(meta))
    got = _verify(copy)
    assert got.exit_code == 1
    assert got.output.splitlines() == [
        "incomplete: the sweep did not finish: its last run is interrupted",
        "incomplete: 2 of 8 unit(s) missing (no whole part file): 4K/va48/000001, 4K/va48/000002",
        "the sweep is incomplete: exit 1 (--partial-ok accepts it)",
        f"6 part files checked, 0 problems in {copy}",
    ]
    partial = _verify(copy, "--partial-ok")
    assert partial.exit_code == 0 and "accepted (--partial-ok)" in partial.output


def test_verify_a_killed_run_still_marked_running(copy):
    meta = json.loads((copy / "_sweep.json").read_text())
    meta.update(status="running", counts={})
    (copy / "_sweep.json").write_text(json.dumps(meta))
    got = _verify(copy)
    assert got.exit_code == 1
    assert "its last run is running (a run is going on, or was killed)" in got.output


def test_verify_failed_units_are_incomplete(copy):
    (copy / FOLDER / "part-000000.parquet").unlink()
    meta = json.loads((copy / "_sweep.json").read_text())
    meta.update(status="failed", failed=[{"unit": "4K/va48/000000", "error": "boom"}])
    (copy / "_sweep.json").write_text(json.dumps(meta))
    got = _verify(copy)
    assert got.exit_code == 1
    assert "incomplete: 1 failed unit(s): 4K/va48/000000" in got.output.splitlines()
    assert "1 problem in" in got.output  # the manifest lists it: "in the manifest but missing"


@pytest.mark.parametrize(
    "garbage, said",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a sweep's record (a JSON list)"),
        ('{"status": 7}', "field 'status' holds 7, not a str"),
        ('{"status": "done"}', "field 'status' is 'done', not a run's state"),
        ('{"failed": ["x"]}', "field 'failed' holds 'x', not a failed unit"),
    ],
)
def test_verify_a_garbage_sweep_json_is_one_line_and_exit_1(copy, garbage, said):
    (copy / "_sweep.json").write_text(garbage)
    got = _verify(copy)
    assert got.exit_code == 1 and "Traceback" not in got.output
    named = [line for line in got.output.splitlines() if line.startswith("_sweep.json: ")]
    assert len(named) == 1 and said in named[0], got.output
    query = _query(copy, "level-counts")
    assert query.exit_code == 2 and said in query.stderr and "Traceback" not in query.output


@pytest.mark.parametrize(
    "manifest",
    ["{not json", '{"format": 1, "parts": {"x": [1]}}', '{"format": 1, "parts": {"x": {}}}'],
)
def test_a_damaged_manifest_is_one_line_never_a_traceback(copy, manifest):
    (copy / "_manifest.json").write_text(manifest)
    rows, said = _count(copy)
    assert rows == ROWS and len(said) == 1 and "its part files are read unchecked" in said[0]
    got = _verify(copy)
    assert got.exit_code == 1 and "Traceback" not in got.output
    assert got.output.splitlines()[0].startswith("_manifest.json: ")
