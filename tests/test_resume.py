"""Issue 21, resume and stop: ``--resume`` needs nothing but the folder, ``--fail-fast`` stops
on plan failures, ``--dry-run`` with "would fail" exits 1, the progress line counts every
failure, SIGHUP stops a run as Ctrl-C does, and an unrelated plugin does not block a resume."""

from __future__ import annotations

import fcntl
import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from small_sweep import T1G
from test_driver import WrappedLayout, _runner_script, _slow_config, _start, _wait_for_parts

from sweep.cli import main
from sweep.read.results import load
from sweep.run.progress import Progress

HI = 'name = "hi"\n[[banks]]\nbase = 0x40_0000_0000\nsize = "1G"\n'
CONFIG = (
    'name = "small"\nmemory_maps = ["t1g.toml"]\ngranules = ["4K"]\nva_bits = [39, 48]\n'
    'layouts = ["linux-4.8"]\nblock_mappings = [false, true]\nunit_rows = 8\n'
    '[placement]\nkind = "stride"\nstep = "64M"\n'
)
"""The small sweep (tests/small_sweep.py) as a file: 64 rows in 8 units."""


@pytest.fixture
def folder(tmp_path) -> Path:
    (tmp_path / "t1g.toml").write_text(T1G)
    (tmp_path / "hi.toml").write_text(HI)
    (tmp_path / "small.toml").write_text(CONFIG)
    return tmp_path


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args, "--workers", "1"])


def _rows(out: Path) -> pd.DataFrame:
    frame = load(out, columns=["va_bits", "block_mappings", "idmap_pa", "margin"])
    return frame.sort_values(["va_bits", "block_mappings", "idmap_pa"], ignore_index=True)


def _interrupt(out: Path, lose: int = 3) -> None:
    """Make ``out`` look like a run stopped after all but ``lose`` units (parts, manifest,
    ``_sweep.json``), as Ctrl-C leaves it."""
    manifest = json.loads((out / "_manifest.json").read_text())
    for rel in sorted(manifest["parts"])[-lose:]:
        (out / rel).unlink()
        del manifest["parts"][rel]
    (out / "_manifest.json").write_text(json.dumps(manifest))
    meta = json.loads((out / "_sweep.json").read_text())
    meta["status"] = "interrupted"
    (out / "_sweep.json").write_text(json.dumps(meta))


def test_resume_needs_only_the_folder(folder, monkeypatch):
    """Item 6: a sweep started with a CONFIG and an override resumes from its _sweep.json."""
    out = folder / "big"
    monkeypatch.chdir(folder)  # the config named relative to here, its map relative to it
    first = _run("small.toml", "block_mappings=false", "--out", str(out))
    assert first.exit_code == 0, first.output
    whole = _rows(out)
    assert len(whole) == 32
    _interrupt(out)
    monkeypatch.chdir(folder.parent)  # another folder: only --out is given
    resumed = _run("--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "3 units written" in resumed.stderr and "1 already done" in resumed.stderr
    pd.testing.assert_frame_equal(_rows(out), whole)
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


def test_resume_with_another_config_prints_the_command_that_works(folder):
    out = folder / "big"
    assert (
        _run(str(folder / "small.toml"), "block_mappings=false", "--out", str(out)).exit_code == 0
    )
    _interrupt(out)
    refused = _run(str(folder / "small.toml"), "--out", str(out), "--resume")
    assert refused.exit_code == 2
    assert refused.stderr.count("\n") == 1
    assert "block_mappings: [false] -> [false, true]" in refused.stderr
    assert f"`sweep run --out {out} --resume` (no CONFIG) resumes it" in refused.stderr
    # An override with no CONFIG applies to the recorded config, and must match it too.
    changed = _run("--out", str(out), "--resume", "block_mappings=true")
    assert changed.exit_code == 2 and "block_mappings: [false] -> [true]" in changed.stderr
    same = _run("--out", str(out), "--resume", "block_mappings=false")
    assert same.exit_code == 0, same.output


def test_dry_run_resume_says_what_is_left(folder):
    out = folder / "big"
    assert _run(str(folder / "small.toml"), "--out", str(out)).exit_code == 0
    _interrupt(out, lose=2)
    got = CliRunner().invoke(main, ["run", "--out", str(out), "--resume", "--dry-run"])
    assert got.exit_code == 0, got.output
    assert f"resume:         6 of 8 units already whole in {out} (48 rows); 2 to run" in got.output


def test_a_scheduler_without_dask_is_refused(folder):
    got = _run(str(folder / "small.toml"), "--scheduler", "tcp://h:8786", "--dry-run")
    assert got.exit_code == 2
    assert "--scheduler tcp://h:8786: used only with --executor dask" in got.stderr


# --- plans that fail: --fail-fast, --dry-run, the progress line -------------------------------

FAILING = CONFIG.replace('"t1g.toml"]', '"t1g.toml", "hi.toml"]').replace(
    'kind = "stride"\nstep = "64M"\n', 'kind = "list"\naddresses = ["0x80001000"]\n'
)
"""Two maps, one idmap address: inside t1g, outside hi (its placement fails while planning)."""


def test_fail_fast_stops_when_plans_fail_and_each_failure_is_printed_once(folder):
    (folder / "failing.toml").write_text(FAILING)
    got = _run(str(folder / "failing.toml"), "--out", str(folder / "o"), "--fail-fast")
    assert got.exit_code == 1
    assert got.stderr.count("plan:hi:4K") == 1, got.stderr
    assert "0 units written" in got.stderr
    assert not list((folder / "o").rglob("part-*.parquet"))
    meta = json.loads((folder / "o" / "_sweep.json").read_text())
    assert meta["status"] == "failed" and [f["unit"] for f in meta["failed"]] == ["plan:hi:4K"]


def test_without_fail_fast_a_plan_failure_is_printed_once_and_the_rest_runs(folder):
    (folder / "failing.toml").write_text(FAILING)
    got = _run(str(folder / "failing.toml"), "--out", str(folder / "o"))
    assert got.exit_code == 1
    assert got.stderr.count("plan:hi:4K") == 1, got.stderr
    assert "2 units written" in got.stderr and ", 1 failed units" in got.stderr


def test_dry_run_that_would_fail_exits_1(folder):
    (folder / "failing.toml").write_text(FAILING)
    got = CliRunner().invoke(main, ["run", str(folder / "failing.toml"), "--dry-run"])
    assert got.exit_code == 1
    assert "would fail:     plan:hi:4K" in got.output


def test_the_progress_line_counts_plan_failures():
    assert Progress(10, tty=False, failed=33).line().endswith("33 failed units")


# --- SIGHUP ------------------------------------------------------------------------------------


@pytest.mark.faults
def test_sighup_stops_the_run_as_ctrl_c_does(tmp_path):
    """Item 8: a dropped ssh session (SIGHUP to the whole group) is an interruption: a message
    in the log, every finished unit kept, _sweep.json says interrupted and why."""
    (tmp_path / "t1g.toml").write_text(T1G)
    script, config = _runner_script(tmp_path, 0.05), _slow_config(tmp_path, tmp_path / "t1g.toml")
    out = tmp_path / "out"
    proc = _start(script, config, out)
    _wait_for_parts(out, 2, proc)
    os.killpg(proc.pid, signal.SIGHUP)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr.decode()
    meta = json.loads((out / "_sweep.json").read_text())
    assert meta["status"] == "interrupted"
    assert meta["runs"][-1]["reason"] == "the terminal hung up (SIGHUP)"
    assert (
        "the terminal hung up (SIGHUP): stopped as for Ctrl-C" in (out / "_sweep.log").read_text()
    )
    assert b"Traceback" not in stderr
    verify = CliRunner().invoke(main, ["verify", str(out)])
    assert verify.exit_code == 1 and "did not finish: its last run is interrupted" in verify.output
    assert CliRunner().invoke(main, ["verify", str(out), "--partial-ok"]).exit_code == 0


# --- an unrelated plugin ----------------------------------------------------------------------


def test_resume_is_not_refused_for_an_unrelated_plugin(folder, add_plugin):
    """Item 9: a plugin installed after the run, feeding nothing of this sweep."""
    out = folder / "big"
    assert _run(str(folder / "small.toml"), "--out", str(out)).exit_code == 0
    _interrupt(out)

    class Unused:
        name, source, description = "unused-layout", "tests", "feeds no sweep here"

        def memstart_align(self, granule):
            return 1 << 30

        def compute(self, batch):
            raise AssertionError("never run")

    add_plugin("tests-unrelated", register_layouts=lambda register: register(Unused()))
    resumed = _run("--out", str(out), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "3 units written" in resumed.stderr


def test_resume_is_refused_when_a_plugin_feeding_the_sweep_changed(folder, add_plugin):
    """The other side of item 9: a plugin whose layout the sweep uses is still held equal."""
    out = folder / "big"
    config = folder / "small.toml"
    config.write_text(CONFIG.replace('"linux-4.8"', '"tests-4.8"'))
    layout = WrappedLayout("tests-4.8", lambda batch: None)
    add_plugin("tests-feeding", register_layouts=lambda register: register(layout))
    assert _run(str(config), "--out", str(out)).exit_code == 0
    _interrupt(out)
    meta = json.loads((out / "_sweep.json").read_text())
    meta["versions"]["plugins"]["tests-feeding"] = "0.9"
    (out / "_sweep.json").write_text(json.dumps(meta))
    refused = _run("--out", str(out), "--resume")
    assert refused.exit_code == 2
    assert "plugin tests-feeding: 0.9 -> None" in refused.stderr


def test_ctrl_c_on_a_terminal_is_one_message(tmp_path, capsys):
    """Item 14: one Ctrl-C printed two lines on a terminal (a log line and a bar note)."""
    from sweep.run.progress import start_logging, stop_logging
    from sweep.run.scheduling import RunReport, Scheduler
    from sweep.store.manifest import Manifest
    from sweep.store.parts import Store

    class Plan:
        def units(self):
            return iter([])

    class Executor:
        workers, restart_on_kill = 1, True

        def wait(self, futures, timeout):
            raise AssertionError("nothing is in flight")

    store = Store(str(tmp_path / "out"))
    handlers = start_logging(store)
    bar = Progress(10, tty=True)
    scheduler = Scheduler(
        Plan(), Executor(), store, Manifest(), {}, RunReport("o", "", 10, 1), bar, False
    )
    calls = iter([KeyboardInterrupt, False])

    def step():
        outcome = next(calls)
        if outcome is KeyboardInterrupt:
            raise KeyboardInterrupt
        return outcome

    scheduler._step = step
    try:
        assert scheduler.run() == "interrupted"
    finally:
        bar.close()
        stop_logging(handlers)
    said = [line for line in capsys.readouterr().err.splitlines() if "interrupt" in line]
    assert len(said) == 1, said


def test_resume_with_no_config_and_no_sweep_is_refused(tmp_path):
    """A mistyped --out must not start the default sweep (every board) in a new folder."""
    got = CliRunner().invoke(main, ["run", "--out", str(tmp_path / "typo"), "--resume"])
    assert got.exit_code == 2
    assert got.stderr == (
        f"sweep: error: --resume: {tmp_path / 'typo'} holds no sweep to resume (no _sweep.json);"
        " give the CONFIG to start one there, or the --out of the sweep to finish\n"
    )
    assert not (tmp_path / "typo").exists()


def test_a_clean_run_leaves_no_lock_file_and_a_waiting_run_takes_the_new_one(tmp_path):
    """Issue 21 item 8: the lock file goes with the run that held it; a sweep that opened the
    old file while it was held locks it only once it is gone, sees that, and takes a new one."""
    from sweep.run.lock import FolderLock
    from sweep.store.parts import Store

    out = tmp_path / "out"
    first = FolderLock(Store(str(out))).acquire()
    early = os.open(out / "_sweep.lock", os.O_RDWR)  # another sweep, arriving now
    first.release()
    assert not (out / "_sweep.lock").exists()
    fcntl.flock(early, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the old file: free, but nameless
    with FolderLock(Store(str(out))) as second:
        assert second._still_named(second.fd) and not second._still_named(early)
    os.close(early)
    assert not (out / "_sweep.lock").exists()
