"""Part summaries in files beside the parts: the same answers as footers and rows, held to the
manifest like the parts (a damaged or missing one is named in one line and the rows answer),
and older runs (summaries in footers, or none) still read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from conftest import one_tree_registered
from results_data import run_small_sweep

from sweep.cli import main
from sweep.core.errors import ValidationError
from sweep.read import queries
from sweep.read.engine import Results
from sweep.read.trust import ResultsWarning
from sweep.store import summary
from sweep.store.manifest import Manifest, verify_dataset
from sweep.store.parts import PartInfo, Store, summary_path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real small sweep: five boards every 1 GiB; every part keeps a summary file."""
    out = run_small_sweep(tmp_path_factory.mktemp("files") / "results")
    entries = Manifest.load(Store(str(out))).parts
    assert entries and all("summary" in entry for entry in entries.values())
    return out


@pytest.fixture(scope="module")
def answers(run):
    data = Results(run)
    assert data.summary_parts
    return {name: query(data) for name, query in queries.QUERIES.items()}


def _copy(run, target):
    shutil.copytree(run, target)
    return target


def _same_answers(data: Results, answers: dict) -> None:
    for name, query in queries.QUERIES.items():
        pd.testing.assert_frame_equal(query(data), answers[name], obj=name)


def _footer_part(table: pa.Table) -> pa.Buffer:
    """A part as va-sweeps before summary files wrote it: its summary in its footer."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
        encoded = summary.encode(summary.summarize(table))
        writer.add_key_value_metadata({summary.SUMMARY_KEY: encoded})
    return sink.getvalue()


def test_summary_files_footers_and_rows_answer_alike(run, answers, tmp_path):
    """The same run three ways: summary files, an older run's footer summaries (and a manifest
    that lists no summary file), and the rows read as summary rows (no manifest)."""
    old = tmp_path / "old"
    store, manifest = Store(str(old)), Manifest()
    for rel in sorted(Store(str(run)).parts()):
        data = _footer_part(pq.read_table(run / rel))
        store.write_bytes(rel, data)
        digest = hashlib.sha256(memoryview(data)).hexdigest()
        manifest.record(rel, PartInfo(pq.read_metadata(run / rel).num_rows, data.size, digest))
    manifest.flush(store, force=True)
    shutil.copy(run / "_sweep.json", old / "_sweep.json")
    assert not list(old.rglob("_summary-*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsWarning)  # an older run is read without a word
        footers = Results(old)
        assert footers.summary_parts and not footers.summaries
        _same_answers(footers, answers)
    rows = _copy(run, tmp_path / "rows")
    (rows / "_manifest.json").unlink()
    with pytest.warns(ResultsWarning, match="unchecked"):
        data = Results(rows)
    assert not data.summary_parts
    _same_answers(data, answers)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "do not match the manifest's SHA-256"),
        (lambda b: b[:100], "truncated"),
        (None, "missing"),
    ],
)
def test_a_damaged_summary_file_is_one_line_and_rows_answer(run, answers, tmp_path, damage, why):
    out = _copy(run, tmp_path / "out")
    rel = sorted(Store(str(out)).parts())[3]
    side = out / summary_path(rel)
    if damage is None:
        side.unlink()
    else:
        side.write_bytes(damage(side.read_bytes()))
    with pytest.warns(ResultsWarning) as caught:
        data = Results(out)
    lines = [str(w.message) for w in caught]
    assert len(lines) == 1 and summary_path(rel) in lines[0] and why in lines[0], lines
    assert "rows are read instead" in lines[0] and "\n" not in lines[0]
    assert not data.summary_parts and rel not in data.summaries
    _same_answers(data, answers)
    with pytest.raises(ValidationError, match=summary_path(rel).replace(".", r"\.")):
        Results(out, strict=True)
    problems = verify_dataset(str(out))[1]
    assert [p for p, _ in problems] == [rel]
    assert f"its summary file {side.name}: " in problems[0][1] and why in problems[0][1]


def test_resume_rewrites_a_part_whose_summary_file_is_damaged(run, tmp_path):
    out = _copy(run, tmp_path / "out")
    rel = sorted(Store(str(out)).parts())[0]
    side = out / summary_path(rel)
    side.write_bytes(b"not a summary")
    config = run.parent / f"{run.name}.toml"
    with one_tree_registered():
        got = CliRunner().invoke(main, ["run", str(config), "--out", str(out), "--resume"])
    assert got.exit_code == 0, got.output
    assert verify_dataset(str(out)) == (10, [])
    assert side.read_bytes() == (run / summary_path(rel)).read_bytes()
    assert Results(out).summary_parts


def test_old_manifest_entries_load_and_a_bad_summary_entry_is_a_problem(run, tmp_path):
    out = _copy(run, tmp_path / "out")
    raw = json.loads((out / "_manifest.json").read_text())
    for entry in raw["parts"].values():
        entry.pop("summary")  # a manifest of a run before summary files
    (out / "_manifest.json").write_text(json.dumps(raw))
    manifest = Manifest.load(Store(str(out)))
    assert manifest.problem is None and not Results(out).summaries
    next(iter(raw["parts"].values()))["summary"] = {"rows": 1, "bytes": "x", "sha256": ""}
    (out / "_manifest.json").write_text(json.dumps(raw))
    assert "is not rows, bytes, sha256" in Manifest.load(Store(str(out))).problem
