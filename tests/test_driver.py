"""The driver: units, tags, runs on processes and Dask, failures, killed workers, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from small_sweep import small_config, write_map

import sweep.plan.decode
import sweep.plan.units
from sweep import hookimpl
from sweep.cli import main
from sweep.core.eras import BY_NAME
from sweep.core.errors import SweepError
from sweep.model.reference import compute_row
from sweep.plan.placements import _splitmix64, tag_random
from sweep.plan.plugins import pm, reset
from sweep.plan.units import ALGORITHM_VERSION, make_plan
from sweep.read.results import load as read_results
from sweep.run.driver import Progress, run_sweep
from sweep_plugins.layouts import EraLayout

TESTS = Path(__file__).resolve().parent
GIB = 1 << 30
STEP = 64 << 20
ADDRESSES = [0x8000_0000 + k * STEP for k in range(16)]
"""A stride of 64M over one 1 GiB bank at 0x8000_0000: 16 idmap addresses."""


@pytest.fixture
def map_file(tmp_path):
    return write_map(tmp_path)


def expected_inputs(layouts=("linux-4.8",), va_bits=(39, 48)) -> set:
    return {
        ("t1g", 4096, v, lay, b, a)
        for v, lay, b, a in product(va_bits, layouts, (False, True), ADDRESSES)
    }


def inputs_of(df: pd.DataFrame) -> list:
    cols = ["memory_map", "granule", "va_bits", "layout", "block_mappings", "idmap_pa"]
    return [tuple(r) for r in df[cols].astype(object).itertuples(index=False)]


# --- test plugins: layouts that fail, kill their worker, or take their time ---------------------


class WrappedLayout:
    """``linux-4.8`` under another name, running ``before(batch)`` first."""

    def __init__(self, name, before):
        self.base = EraLayout(BY_NAME["linux-4.8"])
        self.name, self.source, self.description = name, self.base.source, "test layout"
        self.before = before

    def memstart_align(self, granule):
        return self.base.memstart_align(granule)

    def compute(self, batch):
        self.before(batch)
        return self.base.compute(batch)


def install_layouts(layouts, name="test-layouts"):
    class Plugin:
        @hookimpl
        def register_layouts(register):
            for layout in layouts:
                register(layout)

    pm.register(Plugin, name=name)
    reset()


@pytest.fixture
def layouts(add_plugin):
    """Register test layouts for one test (conftest's add_plugin; fork workers inherit them)."""
    count = iter(range(1000))

    def add(*wrapped):
        def register_layouts(register):
            for layout in wrapped:
                register(layout)

        add_plugin(f"test-layouts-{next(count)}", register_layouts=register_layouts)

    return add


def _boom_at_48(batch):
    if (batch.va_bits == 48).any():  # one VA_BITS per row
        raise ValueError("this plugin cannot do 48 bits")


def _kill_at_39(batch):
    if (batch.va_bits == 39).any():
        os.kill(os.getpid(), signal.SIGKILL)


def _kill_once(marker):
    def before(batch):
        if not os.path.exists(marker):
            Path(marker).write_text("killed")
            os.kill(os.getpid(), signal.SIGKILL)

    return before


def install_slow_layout(delay: float) -> None:
    """Used by the subprocess runs: ``slow-merged`` sleeps before each segment."""
    install_layouts([WrappedLayout("slow-merged", lambda batch: time.sleep(delay))], "slow")


# --- units and tags -------------------------------------------------------------------------


@pytest.mark.parametrize("segment_rows", [1, 10**9])
def test_units_cover_the_product_once_in_a_stable_order(map_file, monkeypatch, segment_rows):
    # Inputs are filled segment by segment (runs of one map, layout and block setting) when
    # segments are long, else decoded row by row: each way, every configuration once.
    monkeypatch.setattr(sweep.plan.decode, "SEGMENT_ROWS", segment_rows)
    config = small_config(map_file, layouts=["linux-4.8", "linux-4.17"])
    plan = make_plan(config)
    assert plan.configurations == 2 * 2 * 2 * 16 == 128
    units = list(plan.units())
    assert plan.n_units == len(units) == 16
    seen = []
    for unit in units:
        assert 0 < unit.rows <= 8
        rows = plan.decoder.unit_inputs(unit)
        seen += [
            (
                plan.map_list[m].name,
                unit.granule,
                unit.va_bits,
                config.layouts[lay],
                bool(block),
                int(idmap),
            )
            for m, lay, block, idmap in zip(
                rows.map_index, rows.layout_index, rows.block_mappings, rows.idmap_pa, strict=True
            )
        ]
    assert len(seen) == len(set(seen)) == 128
    assert set(seen) == expected_inputs(("linux-4.8", "linux-4.17"))
    again = list(make_plan(config).units())
    assert again == units
    assert units[0].path == "granule-4096/va_bits-39/part-000000.parquet"
    assert units[-1].id == "4K/va48/000007"


@pytest.mark.parametrize("segment_rows", [1, 10**9])
def test_small_maps_are_packed_into_one_unit(map_file, monkeypatch, segment_rows):
    monkeypatch.setattr(sweep.plan.decode, "SEGMENT_ROWS", segment_rows)
    plan = make_plan(small_config(map_file, unit_rows=1000))
    units = list(plan.units())
    # One unit per (granule, VA_BITS) partition, holding both block settings.
    assert [(u.va_bits, u.rows) for u in units] == [(39, 32), (48, 32)]
    assert plan.decoder.unit_inputs(units[0]).block_mappings.tolist() == [False] * 16 + [True] * 16


def test_splitmix64_matches_its_published_first_output():
    # The splitmix64 generator seeded with 0 first returns 0xe220a8397b1dcdaf; other states
    # against Vigna's splitmix64.c next(), in plain Python ints.
    def published(x: int) -> int:
        mask = (1 << 64) - 1
        z = (x + 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    values = np.array([0, 1, 0xDEADBEEF, (1 << 64) - 1], dtype=np.uint64)
    assert int(_splitmix64(values[:1])[0]) == published(0) == 0xE220A8397B1DCDAF
    assert [int(v) for v in _splitmix64(values)] == [published(int(v)) for v in values]


def test_tag_random_is_a_function_of_its_inputs_only():
    idmap = np.array(ADDRESSES, dtype=np.uint64)
    assert not tag_random(0, "t1g", 4096, 48, idmap).any()
    whole = tag_random(7, "t1g", 4096, 48, idmap)
    pieces = np.concatenate(
        [tag_random(7, "t1g", 4096, 48, idmap[i : i + 3]) for i in range(0, 16, 3)]
    )
    assert (whole == pieces).all()
    assert (tag_random(7, "t1g", 4096, 48, idmap[::-1]) == whole[::-1]).all()
    assert len(set(whole.tolist())) == 16
    for other in [
        tag_random(8, "t1g", 4096, 48, idmap),
        tag_random(7, "t1h", 4096, 48, idmap),
        tag_random(7, "t1g", 16384, 48, idmap),
        tag_random(7, "t1g", 4096, 47, idmap),
    ]:
        assert (other != whole).all()


# --- running ----------------------------------------------------------------------------------


def test_a_run_writes_every_row_of_the_model(map_file, tmp_path):
    out = tmp_path / "out"
    layouts = ["linux-4.8", "linux-4.17"]
    report = run_sweep(
        small_config(map_file, layouts=layouts, tag={"seed": 5}),
        out=str(out),
        workers=2,
        progress=False,
    )
    assert report.status == "complete"
    assert (report.units_written, report.rows_written) == (16, 128)
    df = read_results(str(out))
    assert sorted(inputs_of(df)) == sorted(expected_inputs(layouts))
    # docs/model.md section 8: only the tagged layout's rows (4.17 on) get a tag_random.
    assert (df.loc[df["layout"] == "linux-4.8", "tag_random"] == 0).all()
    assert (df.loc[df["layout"] == "linux-4.17", "tag_random"] != 0).all()
    # Spot checks against the scalar reference, tags included.
    from sweep.core.memmap import MemoryMap

    t1g = MemoryMap("t1g", [(0x8000_0000, GIB)])
    for row in df[df["layout"] == "linux-4.17"].sample(6, random_state=1).to_dict("records"):
        assert (
            row["tag_random"]
            == tag_random(5, "t1g", 4096, row["va_bits"], np.array([row["idmap_pa"]], np.uint64))[0]
        )
    for row in df.sample(12, random_state=1).to_dict("records"):
        expected = compute_row(
            t1g,
            4096,
            row["va_bits"],
            row["layout"],
            row["block_mappings"],
            row["idmap_pa"],
            row["tag_random"],
        )
        assert {k: row[k] for k in expected} == expected
    meta = json.loads((out / "_sweep.json").read_text())
    assert meta["status"] == "complete"
    assert meta["config"]["tag"] == {"seed": 5}
    assert meta["counts"]["rows_done"] == 128 and meta["counts"]["units_done"] == 16
    assert meta["package"]["name"] == "va-sweep"
    assert "sweep_plugins.placements" in {p["name"] for p in meta["plugins"]}
    assert meta["started"] <= meta["finished"]
    log = (out / "_sweep.log").read_text()
    # Workers' lines reach the one log, naming the worker process and the unit.
    assert "ForkProcess" in log and "unit 4K/va48/000003" in log


def test_existing_results_are_kept_unless_asked(map_file, tmp_path):
    out = str(tmp_path / "out")
    config = small_config(map_file)
    run_sweep(config, out=out, workers=1, progress=False)
    with pytest.raises(SweepError, match="already holds a sweep .*--resume.*--overwrite"):
        run_sweep(config, out=out, workers=1, progress=False)
    other = small_config(map_file, va_bits=[39])
    with pytest.raises(SweepError, match=r"another config: va_bits: \[39, 48\] -> \[39\]"):
        run_sweep(other, out=out, workers=1, resume=True, progress=False)
    report = run_sweep(config, out=out, workers=1, resume=True, progress=False)
    assert (report.units_written, report.units_skipped, report.status) == (0, 8, "complete")
    report = run_sweep(other, out=out, workers=1, overwrite=True, progress=False)
    assert report.rows_written == 32
    assert len(read_results(out)) == 32  # nothing of the old sweep is left


@pytest.mark.parametrize(
    "options, message",
    [
        ({"resume": True, "overwrite": True}, "--resume and --overwrite: choose one"),
        ({"workers": 0}, "--workers: 0 must be at least 1"),
        ({"executor": "dask"}, "--executor dask: needs --scheduler tcp://host:8786"),
        ({"executor": "threads"}, "--executor: 'threads' is not one of processes"),
    ],
)
def test_bad_run_options_are_one_line(map_file, tmp_path, options, message):
    with pytest.raises(SweepError, match=message):
        run_sweep(small_config(map_file), out=str(tmp_path / "o"), progress=False, **options)


def test_a_failing_plugin_fails_its_units_and_the_sweep_goes_on(map_file, tmp_path, layouts):
    layouts(WrappedLayout("boom-48", _boom_at_48))
    out = tmp_path / "out"
    config = small_config(map_file, layouts=["boom-48"])
    report = run_sweep(config, out=str(out), workers=2, progress=False)
    assert report.status == "failed"
    assert sorted(f["unit"] for f in report.failed) == [f"4K/va48/00000{k}" for k in range(4)]
    assert all("ValueError: this plugin cannot do 48 bits" in f["error"] for f in report.failed)
    assert sorted(inputs_of(read_results(str(out)))) == sorted(
        expected_inputs(("boom-48",), va_bits=(39,))
    )
    meta = json.loads((out / "_sweep.json").read_text())
    assert meta["status"] == "failed" and len(meta["failed"]) == 4
    assert "Traceback" in (out / "_sweep.log").read_text()

    # --resume retries only the failed units (which fail again).
    report = run_sweep(config, out=str(out), workers=2, resume=True, progress=False)
    assert (report.units_skipped, report.units_written, len(report.failed)) == (4, 0, 4)


def test_cli_lists_failed_units_and_fail_fast_stops(map_file, tmp_path, layouts):
    layouts(WrappedLayout("boom-48", _boom_at_48))
    config = tmp_path / "boom.toml"
    config.write_text(
        f'memory_maps = ["{map_file}"]\ngranules = ["4K"]\nva_bits = [39, 48]\n'
        'layouts = ["boom-48"]\nunit_rows = 8\n[placement]\nkind = "stride"\nstep = "64M"\n'
    )
    result = CliRunner().invoke(
        main, ["run", str(config), "--out", str(tmp_path / "a"), "--workers", "1"]
    )
    assert result.exit_code == 1
    assert "4 units failed" in result.output
    assert (  # the plugin boundary names the plugin and the layout (sweep.plan.guard)
        "4K/va48/000002: PluginError: plugin 'test-layouts-0': layout 'boom-48' compute() raised"
        " ValueError: this plugin cannot do 48 bits"
    ) in result.output
    result = CliRunner().invoke(
        main, ["run", str(config), "--out", str(tmp_path / "b"), "--workers", "1", "--fail-fast"]
    )
    assert result.exit_code == 1
    assert "1 units failed" in result.output
    assert "4 units written" in result.output  # the VA_BITS 39 units come first


def test_a_killed_worker_is_detected_and_its_unit_retried(map_file, tmp_path, layouts):
    layouts(WrappedLayout("kill-once", _kill_once(str(tmp_path / "killed"))))
    out = tmp_path / "out"
    report = run_sweep(
        small_config(map_file, layouts=["kill-once"]), out=str(out), workers=2, progress=False
    )
    assert (tmp_path / "killed").exists()
    assert report.status == "complete" and not report.failed
    df = read_results(str(out))
    assert sorted(inputs_of(df)) == sorted(expected_inputs(("kill-once",)))
    assert "a worker was killed by the OS" in (out / "_sweep.log").read_text()


def test_a_unit_that_always_kills_its_worker_is_failed_alone(map_file, tmp_path, layouts):
    layouts(WrappedLayout("kill-39", _kill_at_39))
    out = tmp_path / "out"
    report = run_sweep(
        small_config(map_file, layouts=["kill-39"]), out=str(out), workers=2, progress=False
    )
    assert report.status == "failed"
    assert sorted(f["unit"] for f in report.failed) == [f"4K/va39/00000{k}" for k in range(4)]
    assert all("killed" in f["error"] for f in report.failed)
    # Every unit that does not kill its worker finished.
    assert sorted(inputs_of(read_results(str(out)))) == sorted(
        expected_inputs(("kill-39",), va_bits=(48,))
    )


def test_dask_local_cluster_writes_the_same_dataset(map_file, tmp_path):
    pytest.importorskip("distributed")
    config = small_config(map_file, tag={"seed": 3})
    run_sweep(config, out=str(tmp_path / "p"), workers=2, progress=False)
    report = run_sweep(
        config,
        out=str(tmp_path / "d"),
        workers=2,
        executor="dask-local",
        dask_processes=False,
        progress=False,
    )
    assert report.status == "complete" and report.units_written == 8
    assert sorted(
        p.relative_to(tmp_path / "d").as_posix() for p in (tmp_path / "d").rglob("part-*.parquet")
    ) == sorted(
        p.relative_to(tmp_path / "p").as_posix() for p in (tmp_path / "p").rglob("part-*.parquet")
    )
    key = ["va_bits", "block_mappings", "idmap_pa"]
    a = read_results(str(tmp_path / "p")).sort_values(key, ignore_index=True)
    b = read_results(str(tmp_path / "d")).sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(a, b)


def test_dry_run_counts_without_running(map_file, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(
        f'memory_maps = ["{map_file}"]\ngranules = ["4K", "64K"]\n'
        'va_bits = [39, 48]\nlayouts = ["linux-4.8", "linux-4.17"]\nunit_rows = 10\n'
        '[placement]\nkind = "stride"\nstep = "256M"\n'
    )
    result = CliRunner().invoke(
        main, ["run", str(config), "--dry-run", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    # 4 addresses x 2 granules x 2 VA_BITS x 2 layouts x 2 block settings; 16 rows per partition.
    assert "configurations: 64" in result.output
    assert "units:          8 " in result.output
    assert not (tmp_path / "o").exists()


def test_plain_progress_lines_say_how_far():
    bar = Progress(total=200, tty=False, interval=0)
    bar.skip(50)
    bar.advance(50)
    bar.fail(20)  # a failed unit's configurations are finished too: a run with failures ends
    line = bar.line()
    assert line.startswith("sweep:  60.0% 120/200 configurations, ")
    assert line.endswith("1 failed units")


# --- interruptions, in real processes -----------------------------------------------------------


def _runner_script(tmp_path: Path, delay: float) -> Path:
    script = tmp_path / "run_slow.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "from test_driver import install_slow_layout\n"
        f"install_slow_layout({delay})\n"
        "from sweep.cli import main\n"
        "main(sys.argv[1:], prog_name='sweep')\n"
    )
    return script


def _slow_config(tmp_path: Path, map_file: Path) -> Path:
    config = tmp_path / "slow.toml"
    config.write_text(
        f'name = "slow"\nmemory_maps = ["{map_file}"]\ngranules = ["4K", "16K"]\n'
        'va_bits = [39, 48]\nlayouts = ["slow-merged"]\nunit_rows = 4\n'
        '[placement]\nkind = "stride"\nstep = "64M"\n[tag]\nseed = 11\n'
    )
    return config  # 2 x 2 x 2 x 16 = 128 rows in 32 units


def _start(script, config, out, *flags):
    return subprocess.Popen(
        [
            sys.executable,
            str(script),
            "run",
            str(config),
            "--out",
            str(out),
            "--workers",
            "2",
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_for_parts(out: Path, at_least: int, proc, timeout=60.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = len(list(out.rglob("part-*.parquet")))
        if n >= at_least:
            return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the sweep wrote too few parts in time")


def _rows(out) -> pd.DataFrame:
    df = read_results(str(out))
    return df.sort_values(["granule", "va_bits", "block_mappings", "idmap_pa"], ignore_index=True)


def test_sigkill_halfway_then_resume_gives_exactly_the_uninterrupted_rows(map_file, tmp_path):
    script, config = _runner_script(tmp_path, 0.1), _slow_config(tmp_path, map_file)
    killed = tmp_path / "killed"
    proc = _start(script, config, killed)
    _wait_for_parts(killed, 8, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-write
    proc.wait()
    time.sleep(0.2)  # the workers die with the parent; let the kernel finish them
    written = len(list(killed.rglob("part-*.parquet")))
    assert 8 <= written < 32
    assert json.loads((killed / "_sweep.json").read_text())["status"] == "running"
    # Only parts the manifest vouches for count as done; a part written after its last update
    # is written again.
    recorded = json.loads((killed / "_manifest.json").read_text())["parts"]
    assert set(recorded) <= {p.relative_to(killed).as_posix() for p in killed.rglob("part-*")}

    resumed = _start(script, config, killed, "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    assert f"{len(recorded)} already done" in err.decode()

    whole = tmp_path / "whole"
    install_slow_layout(0.0)
    try:
        from sweep.plan.config import load_config

        run_sweep(load_config(config), out=str(whole), workers=2, progress=False)
    finally:
        pm.unregister(name="slow")
        reset()
    a, b = _rows(killed), _rows(whole)
    assert len(a) == 128 and not a.duplicated().any()
    pd.testing.assert_frame_equal(a, b)
    assert not list(killed.rglob(".*.tmp"))
    meta = json.loads((killed / "_sweep.json").read_text())
    assert meta["status"] == "complete"
    assert [run["status"] for run in meta["runs"]] == ["killed", "complete"]
    assert meta["runs"][1]["versions"]["algorithm"] == ALGORITHM_VERSION


def test_ctrl_c_keeps_finished_units_and_resume_finishes(map_file, tmp_path):
    script, config = _runner_script(tmp_path, 0.1), _slow_config(tmp_path, map_file)
    out = tmp_path / "out"
    proc = _start(script, config, out)
    _wait_for_parts(out, 4, proc)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert "interrupted" in err.decode() and "Traceback" not in err.decode()
    meta = json.loads((out / "_sweep.json").read_text())
    assert meta["status"] == "interrupted"
    done = len(list(out.rglob("part-*.parquet")))
    assert meta["counts"]["units_done"] == done < 32
    resumed = _start(script, config, out, "--resume")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    assert len(_rows(out)) == 128


def test_a_map_whose_placement_fails_is_recorded_and_the_others_run(map_file, tmp_path):
    tiny = tmp_path / "tiny.toml"
    tiny.write_text('name = "tiny"\n[[banks]]\nbase = 0x8000_0000\nsize = "64K"\n')
    config = small_config(
        map_file, memory_maps=[str(map_file), str(tiny)], placement={"kind": "kernel-load"}
    )
    out = tmp_path / "out"
    report = run_sweep(config, out=str(out), workers=1, progress=False)
    # kernel-load puts the idmap at base + 0x80000, beyond tiny's 64 KiB.
    assert report.status == "failed"
    assert [f["unit"] for f in report.failed] == ["plan:tiny:4K"]
    assert "too small" in report.failed[0]["error"]
    df = read_results(str(out))
    assert sorted(inputs_of(df)) == sorted(
        ("t1g", 4096, v, "linux-4.8", b, 0x8008_0000) for v in (39, 48) for b in (False, True)
    )
    with pytest.raises(SweepError, match="tiny.*too small"):
        make_plan(small_config(tiny, placement={"kind": "kernel-load"}))


def test_dask_scheduler_address_runs_the_same_units(map_file, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        report = run_sweep(
            small_config(map_file),
            out=str(tmp_path / "d"),
            workers=1,
            executor="dask",
            scheduler=cluster.scheduler_address,
            progress=False,
        )
    assert report.status == "complete" and report.units_written == 8
    assert sorted(inputs_of(read_results(str(tmp_path / "d")))) == sorted(expected_inputs())


# --- one sweep per folder, the folder's own, verified parts, versions ---------------------------


def test_a_second_run_on_a_locked_folder_is_refused_naming_the_holder(map_file, tmp_path):
    import socket

    from sweep.run.lock import FolderLock
    from sweep.store.parts import Store

    out = tmp_path / "out"
    with FolderLock(Store(str(out))):
        with pytest.raises(SweepError) as refused:
            run_sweep(small_config(map_file), out=str(out), workers=1, progress=False)
    message = str(refused.value)
    assert "\n" not in message and "another sweep is running there" in message
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message
    assert not list(out.rglob("*.parquet"))  # nothing written, nothing removed
    report = run_sweep(small_config(map_file), out=str(out), workers=1, progress=False)
    assert report.status == "complete"  # released: the next run gets it


def test_a_dead_holders_lock_is_taken_over(map_file, tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from sweep.run.lock import FolderLock\n"
            "from sweep.store.parts import Store\n"
            f"FolderLock(Store({str(out)!r})).acquire()\n"
            "print('locked', flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout.readline() == b"locked\n"
    with pytest.raises(SweepError, match=f"pid {holder.pid} on host"):
        run_sweep(small_config(map_file), out=str(out), workers=1, progress=False)
    holder.kill()
    holder.wait()
    report = run_sweep(small_config(map_file), out=str(out), workers=1, progress=False)
    assert report.status == "complete"


def test_a_folder_that_is_not_a_sweep_is_refused_naming_a_file(map_file, tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"\xff\xd8")
    result = CliRunner().invoke(main, ["run", "--out", str(out), f"memory_maps={map_file}"])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "not empty and not a sweep (it holds 'holiday.jpg')" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["holiday.jpg"]


def test_an_unwritable_out_is_one_line_before_any_work(map_file, tmp_path):
    (tmp_path / "a-file").write_text("")
    out = tmp_path / "a-file" / "out"
    result = CliRunner().invoke(main, ["run", "--out", str(out), f"memory_maps={map_file}"])
    assert result.exit_code == 2
    assert result.output == f"sweep: error: output {out}: cannot write there (Not a directory)\n"


def test_workers_are_capped_at_the_units_to_run(map_file, tmp_path, caplog):
    report = run_sweep(small_config(map_file), out=str(tmp_path / "o"), workers=50, progress=False)
    assert report.status == "complete"
    meta = json.loads((tmp_path / "o" / "_sweep.json").read_text())
    cap = min(8, 4 * len(os.sched_getaffinity(0)))  # 8 units
    assert meta["runs"][-1]["workers"] == cap
    assert f"--workers 50: capped at {cap}" in (tmp_path / "o" / "_sweep.log").read_text()


def test_resume_rewrites_damaged_parts_naming_them(map_file, tmp_path):
    out = tmp_path / "out"
    config = small_config(map_file, tag={"seed": 9})
    run_sweep(config, out=str(out), workers=2, progress=False)
    whole = _rows(out)
    parts = sorted(out.rglob("part-*.parquet"))
    assert len(parts) == 8
    truncated, garbled, emptied = parts[1], parts[4], parts[6]
    truncated.write_bytes(truncated.read_bytes()[:-100])
    data = bytearray(garbled.read_bytes())
    data[len(data) // 3] ^= 0x01  # one bit, somewhere in the data pages
    garbled.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    result = CliRunner().invoke(main, ["verify", str(out)])
    assert result.exit_code == 1
    bad = {line.split(":")[0] for line in result.output.splitlines()[:-1]}
    assert bad == {p.relative_to(out).as_posix() for p in (truncated, garbled, emptied)}
    assert result.output.splitlines()[-1] == f"8 part files checked, 3 problems in {out}"

    report = run_sweep(config, out=str(out), workers=2, resume=True, progress=False)
    assert (report.units_written, report.units_skipped) == (3, 5)
    log = (out / "_sweep.log").read_text()
    for part in (truncated, garbled, emptied):
        assert f"part {part.relative_to(out).as_posix()}: " in log
    pd.testing.assert_frame_equal(_rows(out), whole)
    assert CliRunner().invoke(main, ["verify", str(out)]).exit_code == 0


def test_resume_refuses_other_code_versions_unless_allowed(map_file, tmp_path):
    out = tmp_path / "out"
    config = small_config(map_file)
    run_sweep(config, out=str(out), workers=1, progress=False)
    meta_path = out / "_sweep.json"
    meta = json.loads(meta_path.read_text())
    meta["versions"]["pyarrow"] = "1.0.0"
    meta["versions"]["algorithm"] = 0
    meta_path.write_text(json.dumps(meta))
    import pyarrow

    with pytest.raises(SweepError) as refused:
        run_sweep(config, out=str(out), workers=1, resume=True, progress=False)
    assert f"pyarrow: 1.0.0 -> {pyarrow.__version__}" in str(refused.value)
    assert f"algorithm: 0 -> {ALGORITHM_VERSION}" in str(refused.value)
    report = run_sweep(
        config, out=str(out), workers=1, resume=True, allow_version_change=True, progress=False
    )
    assert report.status == "complete"
    runs = json.loads(meta_path.read_text())["runs"]
    assert [r["status"] for r in runs] == ["complete", "complete"]
    assert all(r["versions"]["pyarrow"] == pyarrow.__version__ for r in runs)


@pytest.mark.parametrize("code", ["ENOSPC", "EDQUOT", "EROFS"])
def test_a_full_output_stops_at_once_keeping_what_is_done(map_file, tmp_path, monkeypatch, code):
    import errno

    from sweep.store.parts import Store

    real = Store.write_bytes
    out = tmp_path / "out"

    def write_bytes(self, rel, data):
        if "part-000002" in rel:  # the third unit of each partition finds the disk full
            raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)))
        return real(self, rel, data)

    monkeypatch.setattr(Store, "write_bytes", write_bytes)  # the forked workers inherit it
    args = ["run", "--out", str(out), "--workers", "1", f"memory_maps={map_file}"]
    args += ["granules=4K", "va_bits=39,48", "layouts=linux-4.8", "block_mappings=false,true"]
    args += ["unit_rows=8"]
    args += ["placement.kind=stride", "placement.step=64M"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines == [
        f"sweep: error: output {out}: OSError: [Errno {getattr(errno, code)}] "
        f"{os.strerror(getattr(errno, code))} (writing "
        "granule-4096/va_bits-39/part-000002.parquet); stopped, keeping the 2 units done; "
        "make room, then run again with --resume"
    ]
    assert len(list(out.rglob("part-*.parquet"))) == 2  # nothing after the full disk
    meta = json.loads((out / "_sweep.json").read_text())
    assert meta["status"] == meta["runs"][-1]["status"] == "stopped"
    monkeypatch.undo()
    result = CliRunner().invoke(main, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert len(read_results(str(out))) == 64
