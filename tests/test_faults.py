"""Fault trials, replayed as an operator's night would go wrong (``pytest -m faults``).

Each trial runs real ``sweep run`` processes (a layout that sleeps a little per segment, so that
kills land mid-run) and compares the end result with an uninterrupted run, row for row:
- SIGKILLs of the whole group or of the driver alone at random moments, once, twice or three
  times, then ``--resume``;
- two or three pool workers killed (SIGKILL, or a single SIGTERM) at chosen moments: no hang;
- 200 random damages to part files (truncated, garbled, emptied, swapped), every one found;
- a full disk (a small tmpfs, where root may mount one), then ``--resume`` after making room;
- two runs started on one folder: the second is refused, always.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from small_sweep import write_map
from test_driver import _rows, _runner_script, _slow_config, _start, install_slow_layout

from sweep.plan.config import load_config
from sweep.plan.plugins import pm, reset
from sweep.run.driver import run_sweep
from sweep.store.manifest import Manifest, verify_dataset
from sweep.store.parts import Store

pytestmark = pytest.mark.faults

TIMEOUT = 180.0
"""Seconds a run may take before it counts as hung (an uninterrupted one takes about 3)."""


@pytest.fixture(scope="module")
def trial(tmp_path_factory):
    """The runner script, its config (128 rows in 32 units) and the uninterrupted rows."""
    root = tmp_path_factory.mktemp("faults")
    map_file = write_map(root)
    script, config = _runner_script(root, 0.05), _slow_config(root, map_file)
    install_slow_layout(0.0)
    try:
        run_sweep(load_config(config), out=str(root / "whole"), workers=2, progress=False)
    finally:
        pm.unregister(name="slow")
        reset()
    return script, config, _rows(root / "whole")


def _parts(out: Path) -> int:
    return len(list(out.rglob("part-*.parquet")))


def _finish(proc: subprocess.Popen, stats: dict) -> tuple[int, str]:
    """Wait for a run; a run past ``TIMEOUT`` is a hang (counted, then its group killed)."""
    try:
        _, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        stats["hangs"] += 1
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return proc.returncode, err.decode()


def _assert_exact(out: Path, whole: pd.DataFrame) -> None:
    rows = _rows(out)
    assert not rows.duplicated().any()
    pd.testing.assert_frame_equal(rows, whole)
    checked, problems = verify_dataset(str(out))
    assert (checked, problems) == (32, [])
    assert not list(out.rglob(".*.tmp"))


def _workers_of(pid: int) -> list[int]:
    """The live pool workers of the sweep ``pid``: its forked children (same command line)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = []
    for child in map(int, children):
        try:
            if Path(f"/proc/{child}/cmdline").read_bytes() == cmdline:
                out.append(child)
        except OSError:
            pass
    return out


def _wait(condition, proc, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            return None
        time.sleep(0.01)
    return None


# --- the whole group or the driver alone killed, then --resume ------------------------------------


def test_kills_at_random_moments_then_resume_is_exact(trial, tmp_path):
    script, config, whole = trial
    rng = random.Random(20261202)
    stats = {"runs": 0, "kills": 0, "hangs": 0}
    for k in range(10):
        out = tmp_path / f"run{k}"
        for crash in range(1 + k % 3):  # one, two or three crashes in a row
            proc = _start(script, config, out, *(["--resume"] if crash else []))
            stats["runs"] += 1
            # Anywhere from the start to the last writes of _sweep.json.
            time.sleep(rng.uniform(0.3, 3.0))
            if proc.poll() is None:
                if (k + crash) % 2:  # the whole group
                    os.killpg(proc.pid, signal.SIGKILL)
                else:  # the driver alone: its workers must die with it and hold no lock
                    os.kill(proc.pid, signal.SIGKILL)
                stats["kills"] += 1
            proc.communicate()
        proc = _start(script, config, out, "--resume")
        stats["runs"] += 1
        code, err = _finish(proc, stats)
        assert code == 0, err
        _assert_exact(out, whole)
        runs = json.loads((out / "_sweep.json").read_text())["runs"]
        assert runs[-1]["status"] == "complete"
        assert "running" not in [r["status"] for r in runs]
    print(f"group kills: {stats}")
    assert stats["hangs"] == 0


# --- killed workers: the pool is rebuilt, never waited on -----------------------------------------


def test_two_and_three_worker_kills_never_hang_and_lose_nothing(trial, tmp_path):
    script, config, whole = trial
    rng = random.Random(13)
    stats = {"runs": 0, "kills": 0, "hangs": 0}
    for k in range(20):
        out = tmp_path / f"run{k}"
        proc = _start(script, config, out)
        stats["runs"] += 1
        kills = 2 + k % 2
        moments = sorted(rng.sample(range(2, 26), kills))
        killed: set[int] = set()
        for n, moment in enumerate(moments):
            # A single SIGTERM to a rebuilt worker must not stop the sweep either.
            how = signal.SIGTERM if (k % 4 == 1 and n == 1) else signal.SIGKILL

            def target(moment=moment, out=out, proc=proc, killed=killed):
                if _parts(out) < moment:
                    return None
                live = [p for p in _workers_of(proc.pid) if p not in killed]
                return rng.choice(live) if live else None

            pid = _wait(target, proc)
            if pid is None:
                break  # the sweep finished first
            os.kill(pid, how)
            killed.add(pid)
            stats["kills"] += 1
        code, err = _finish(proc, stats)
        assert code == 0, err
        assert "a worker was killed by the OS" in (out / "_sweep.log").read_text()
        _assert_exact(out, whole)
    print(f"worker kills: {stats}")
    assert stats["hangs"] == 0 and stats["kills"] >= 45


# --- damaged parts ------------------------------------------------------------------------------


def _damage(data: bytes, rng: random.Random, other: bytes) -> tuple[str, bytes]:
    kind = rng.choice(["truncate", "flip", "garble", "zero", "empty", "append", "swap", "head"])
    n = len(data)
    if kind == "truncate":
        return kind, data[: rng.randrange(1, n)]
    if kind == "empty":
        return kind, b""
    if kind == "append":
        return kind, data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
    if kind == "swap":
        return kind, other  # a whole, valid part of other rows
    if kind == "head":  # the magic bytes or the start of the first page
        at = rng.randrange(0, 64)
        return kind, data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]
    at = rng.randrange(n)
    length = 1 if kind == "flip" else rng.randrange(1, min(512, n - at) + 1)
    if kind == "flip":
        patch = bytes([data[at] ^ (1 << rng.randrange(8))])
    elif kind == "zero":
        patch = bytes(length)
    else:
        patch = bytes(rng.randrange(256) for _ in range(length))
    damaged = data[:at] + patch + data[at + length :]
    return kind, damaged


def test_every_damaged_part_is_found_and_resume_rewrites_it(trial, tmp_path):
    script, config, whole = trial
    out = tmp_path / "out"
    install_slow_layout(0.0)
    try:
        run_sweep(load_config(config), out=str(out), workers=2, progress=False)
        store = Store(str(out))
        manifest = Manifest.load(store)
        parts = sorted(store.parts())
        rng = random.Random(200)
        found, kinds = 0, {}
        for _ in range(200):
            rel, other = rng.sample(parts, 2)
            path = out / rel
            original = path.read_bytes()
            kind, damaged = _damage(original, rng, (out / other).read_bytes())
            if damaged == original:
                kind, damaged = "flip", original[:-1] + bytes([original[-1] ^ 1])
            path.write_bytes(damaged)
            kinds[kind] = kinds.get(kind, 0) + 1
            if manifest.check(store, rel) is not None:
                found += 1
            path.write_bytes(original)
        print(f"damages: 200, found: {found}, by kind: {kinds}")
        assert found == 200
        # Five at once, then --resume: each named, rewritten, and the rows are exact again.
        damaged = rng.sample(parts, 5)
        for rel in damaged:
            _, bad = _damage((out / rel).read_bytes(), rng, b"")
            (out / rel).write_bytes(bad if bad else b"")
        assert {rel for rel, _ in verify_dataset(str(out))[1]} == set(damaged)
        report = run_sweep(load_config(config), out=str(out), workers=2, resume=True)
        assert (report.units_written, report.units_skipped) == (5, 27)
    finally:
        pm.unregister(name="slow")
        reset()
    log = (out / "_sweep.log").read_text()
    assert all(f"part {rel}: " in log for rel in damaged)
    _assert_exact(out, whole)


# --- a full disk --------------------------------------------------------------------------------


def _tmpfs(mount: Path, options: str) -> Path:
    """A tmpfs at ``mount`` (root only, where the kernel lets this process mount one)."""
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    return mount


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs."""
    yield _tmpfs(tmp_path / "tmpfs", "size=256k")
    subprocess.run(["umount", "-l", str(tmp_path / "tmpfs")], check=False)


def test_a_read_only_out_is_one_line_before_any_work(trial, tmp_path):
    script, config, _ = trial
    mount = _tmpfs(tmp_path / "ro", "ro,size=64k")
    try:
        proc = _start(script, config, mount / "out")
        code, err = _finish(proc, {"hangs": 0})
        assert code == 2
        assert (
            err == f"sweep: error: output {mount / 'out'}: cannot write there "
            "(Read-only file system)\n"
        )
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_in_one_line_and_resume_finishes(trial, small_tmpfs):
    script, config, whole = trial
    out = small_tmpfs / "out"
    # About 8 KiB a part: the room left fills after a few of the 32 units.
    filler = small_tmpfs / "filler"
    filler.write_bytes(os.urandom(200 << 10))
    proc = _start(script, config, out)
    code, err = _finish(proc, {"hangs": 0})
    lines = err.strip().splitlines()
    assert code == 1, err
    assert "Traceback" not in err and "Logging error" not in err
    assert lines[-1].startswith(f"sweep: error: output {out}: ")
    assert "No space left on device" in lines[-1] and "--resume" in lines[-1]
    kept = _parts(out)
    assert kept < 32
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=16m", str(small_tmpfs)], check=True)
    code, err = _finish(_start(script, config, out, "--resume"), {"hangs": 0})
    assert code == 0, err
    _assert_exact(out, whole)


# --- two runs on one folder ----------------------------------------------------------------------


def test_a_second_run_on_one_folder_is_always_refused(trial, tmp_path):
    _, config, whole = trial
    script = _runner_script(tmp_path, 0.4)  # a run of about 7 s: the second starts inside it
    other = tmp_path / "other.toml"
    other.write_text(config.read_text().replace("seed = 11", "seed = 12"))
    refused = 0
    for k in range(10):
        out = tmp_path / f"run{k}"
        first = _start(script, config, out)
        if k % 2:  # the second one a moment later, or both at once
            _wait(lambda out=out: (out / "_sweep.lock").exists(), first)
        second = _start(script, other, out)
        results = [_finish(p, {"hangs": 0}) for p in (first, second)]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        loser = next(err for code, err in results if code == 2)
        assert loser.count("\n") == 1
        # Started at once, the loser may find the lock before the winner has written who it
        # is into it (sweep.run.lock says so); otherwise it names the winner.
        named = "another sweep is running there (pid " in loser and " on host " in loser
        early = "another sweep is running there (its pid and host are not recorded yet)"
        assert named or (k % 2 == 0 and early in loser), loser
        refused += 1
        winner_config = config if results[0][0] == 0 else other
        if winner_config == config:
            _assert_exact(out, whole)
        else:
            assert verify_dataset(str(out)) == (32, [])
    print(f"two runs on one folder: {refused} of 10 second runs refused")
    shutil.rmtree(tmp_path, ignore_errors=True)
