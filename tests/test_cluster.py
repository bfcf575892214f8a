"""A real object store and a real cluster: moto's S3 server, a Dask scheduler and two workers,
each its own process on 127.0.0.1, and sweeps run by the ``sweep`` command as an operator would.

A sweep to ``s3://`` on the cluster must give the rows of a local run (the process pool, same
config), exactly, also when workers are SIGKILLed mid-sweep (each worker's nanny starts a new
one, as in production) and when the sweep itself is SIGKILLed and ``--resume``d. The lease on
the URL is exercised against the same server. Marker ``cluster`` (``.ci/run`` runs it); every
loop has a deadline and every process is torn down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.cluster

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("s3fs")
pytest.importorskip("moto")
distributed = pytest.importorskip("distributed")

from sweep.read.engine import Results  # noqa: E402
from sweep.read.queries import QUERIES  # noqa: E402
from sweep.read.results import load as read_results  # noqa: E402
from sweep.run.lease import LEASE_FILE  # noqa: E402
from sweep.store.parts import Store  # noqa: E402

HOST = "127.0.0.1"
BUCKET = "sweeps"
SWEEP_TIMEOUT = 180.0
"""No sweep here takes more than a few seconds; a hang fails the test instead of the suite."""

# A 64 GiB bank at a 1M stride: 65,536 placements x 2 granules x 2 VA_BITS x 2 layouts x 2 block
# settings = 1,048,576 rows, in 256 units of 4,096: seconds of building and uploading (about 5 s),
# so that the kills below land while units are running (in 32 units of 32,768, and once the
# builder got faster in 64 of 16,384, the sweep ended between two kills 1.5 s apart; in 128 of
# 8,192 it took 2.3-2.8 s).
MAP = 'name = "c64g"\n[[banks]]\nbase = 0x8000_0000\nsize = "64G"\n'
UNIT_ROWS = 4_096
CONFIG = f"""name = "cluster"
memory_maps = ["c64g.toml"]
granules = ["4K", "64K"]
va_bits = [39, 48]
layouts = ["linux-4.8", "linux-4.17"]
block_mappings = [false, true]
unit_rows = {UNIT_ROWS}
[placement]
kind = "stride"
step = "1M"
[tag]
seed = 5
"""
ROWS = 1_048_576
UNITS = ROWS // UNIT_ROWS
KEY = ["memory_map", "granule", "va_bits", "layout", "block_mappings", "idmap_pa"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_for(what: str, ok, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session (so that teardown can kill it with all its children)."""
    out = open(log, "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    proc._log = out  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                break
            except subprocess.TimeoutExpired:
                continue
    proc._log.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """moto's S3 server, and the environment every process of a test gets to reach it."""
    logs = tmp_path_factory.mktemp("logs")
    port = _free_port()
    endpoint = f"http://{HOST}:{port}"
    environ = dict(os.environ)
    environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        FSSPEC_S3_ENDPOINT_URL=endpoint,  # fsspec's configuration from the environment
        NO_PROXY=HOST,
        no_proxy=HOST,
    )
    environ.pop("SWEEP_PLUGINS", None)
    server = _start(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        environ,
        logs / "moto.log",
    )
    try:
        _wait_for("moto's S3 server", lambda: _listening(port), 60, server)
        # This process reads the results too: the same environment, and fsspec's configuration
        # read from it again (fsspec reads it once, at import).
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "FSSPEC_S3_ENDPOINT_URL")
        old = {k: os.environ.get(k) for k in names}
        os.environ.update({k: environ[k] for k in names})
        fsspec.config.set_conf_env(fsspec.config.conf)
        fs = fsspec.filesystem("s3", endpoint_url=endpoint, skip_instance_cache=True)
        fs.mkdir(BUCKET)
        yield {"environ": environ, "fs": fs, "endpoint": endpoint, "logs": logs}
    finally:
        _stop(server)
        for k, v in locals().get("old", {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        fsspec.config.conf.get("s3", {}).pop("endpoint_url", None)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


@pytest.fixture(scope="module")
def cluster(env):
    """A Dask scheduler and two workers (each with its nanny), as separate processes."""
    port = _free_port()
    address = f"tcp://{HOST}:{port}"
    logs = env["logs"]
    procs = [
        _start(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_scheduler",
                "--host",
                HOST,
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env["environ"],
            logs / "scheduler.log",
        )
    ]
    try:
        _wait_for("the Dask scheduler", lambda: _listening(port), 60, procs[0])
        for name in ("w1", "w2"):
            procs.append(
                _start(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--host",
                        HOST,
                        "--nthreads",
                        "1",
                        "--name",
                        name,
                        "--no-dashboard",
                        "--death-timeout",
                        "60",
                    ],
                    env["environ"],
                    logs / f"{name}.log",
                )
            )
        client = distributed.Client(address, timeout="30s")
        try:
            yield {"address": address, "client": client}
        finally:
            client.close()
    finally:
        for proc in reversed(procs):
            _stop(proc)


def _worker_pids(client, count: int = 2, timeout: float = 60.0) -> dict[str, int]:
    """The pid of each connected worker process, once ``count`` are connected."""
    pids: dict[str, int] = {}

    def ready() -> bool:
        pids.clear()
        if len(client.scheduler_info(n_workers=-1)["workers"]) >= count:
            pids.update(client.run(os.getpid, on_error="return"))
        return len(pids) >= count and all(isinstance(p, int) for p in pids.values())

    _wait_for(f"{count} Dask workers", ready, timeout)
    return dict(pids)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("config")
    (folder / "c64g.toml").write_text(MAP)
    path = folder / "cluster.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def local_rows(env, config_file, tmp_path_factory):
    """The same sweep by the local process pool: the rows every cluster run must give."""
    out = tmp_path_factory.mktemp("local") / "run"
    result = _sweep(env, config_file, "--out", str(out), "--workers", "2")
    assert result.returncode == 0, result.stderr
    return _sorted(read_results(str(out)))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(KEY, ignore_index=True)


def _sweep_args(config_file: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "sweep.cli", "run", str(config_file), *args]


def _sweep(env, config_file: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        _sweep_args(config_file, *args),
        env=env["environ"],
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT,
    )


def _parts(env, url: str) -> int:
    """Finished part files at ``url``, listed afresh (s3fs caches listings)."""
    store = Store(url)
    store.fsspec.invalidate_cache()
    return len(store.parts())


def _s3_rows(env, url: str) -> pd.DataFrame:
    return _sorted(read_results(url))


def _meta(env, url: str) -> dict:
    return json.loads(env["fs"].cat(url.removeprefix("s3://") + "/_sweep.json"))


def _dask(cluster, url: str) -> tuple[str, ...]:
    return ("--executor", "dask", "--scheduler", cluster["address"], "--out", url)


def _assert_exact(env, url: str, local_rows: pd.DataFrame) -> None:
    assert _parts(env, url) == UNITS
    pd.testing.assert_frame_equal(_s3_rows(env, url), local_rows)
    meta = _meta(env, url)
    assert meta["status"] == "complete"
    assert meta["counts"]["rows_done"] == len(local_rows) == ROWS
    assert not env["fs"].exists(url.removeprefix("s3://") + "/" + LEASE_FILE)


def test_a_sweep_to_s3_on_the_cluster_gives_the_local_rows(env, cluster, config_file, local_rows):
    _worker_pids(cluster["client"])
    url = f"s3://{BUCKET}/run"
    result = _sweep(env, config_file, *_dask(cluster, url))
    assert result.returncode == 0, result.stderr
    assert f"{UNITS} units written ({ROWS:,} rows" in result.stderr
    print("no kill:", result.stderr.strip().splitlines()[-1])
    _assert_exact(env, url, local_rows)
    # The named queries read S3 as they read a folder (footer summaries where the parts keep
    # them, the rows otherwise), and agree with the local rows.
    data = Results(url)
    assert data.summary
    for name, query in QUERIES.items():
        pd.testing.assert_frame_equal(query(data), query(local_rows), obj=name)


def _start_sweep(env, config_file: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        _sweep_args(config_file, *args),
        env=env["environ"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[int, str]:
    try:
        _out, err = proc.communicate(timeout=SWEEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _out, err = proc.communicate()
        raise AssertionError(
            f"the sweep did not finish within {SWEEP_TIMEOUT:.0f} s: {err}"
        ) from None
    return proc.returncode, err


def _when_parts(env, url: str, count: int, proc: subprocess.Popen) -> None:
    _wait_for(f"{count} part files in {url}", lambda: _parts(env, url) >= count, 60, proc)


@pytest.mark.parametrize("kills", [1, 2], ids=["one-worker", "two-workers-1.5s-apart"])
def test_workers_killed_mid_sweep_lose_nothing(env, cluster, config_file, local_rows, kills):
    """SIGKILL the worker processes (their nannies start new ones, as in production): Dask
    moves their units elsewhere, and the sweep completes with exactly the local rows."""
    pids = _worker_pids(cluster["client"])
    url = f"s3://{BUCKET}/killed-{kills}"
    proc = _start_sweep(env, config_file, *_dask(cluster, url))
    try:
        _when_parts(env, url, 2, proc)
        for k, pid in enumerate(list(pids.values())[:kills]):
            if k:
                time.sleep(1.5)
            assert proc.poll() is None, "the sweep ended before the kills: make it longer"
            os.kill(pid, signal.SIGKILL)
        code, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert code == 0, err
    assert f"sweep complete: {UNITS} units written ({ROWS:,} rows" in err
    print(f"{kills} kill(s):", err.strip().splitlines()[-1])  # its time, with pytest -s
    _assert_exact(env, url, local_rows)
    assert set(_worker_pids(cluster["client"]).values()).isdisjoint(list(pids.values())[:kills])


def test_resume_on_s3_after_the_sweep_is_killed(env, cluster, config_file, local_rows):
    """SIGKILL the sweep itself halfway: its lease is left behind, naming a dead pid on this
    host, so --resume takes it over and runs only the missing units."""
    _worker_pids(cluster["client"])
    url = f"s3://{BUCKET}/resumed"
    proc = _start_sweep(env, config_file, *_dask(cluster, url))
    try:
        _when_parts(env, url, 8, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert env["fs"].exists(f"{BUCKET}/resumed/{LEASE_FILE}")
    done = _parts(env, url)
    assert 8 <= done < UNITS
    result = _sweep(env, config_file, *_dask(cluster, url), "--resume")
    assert result.returncode == 0, result.stderr
    assert "no longer running on this host" in result.stderr
    _assert_exact(env, url, local_rows)
    meta = _meta(env, url)
    assert meta["counts"]["units_done"] == UNITS
    assert [run["status"] for run in meta["runs"]][-1] == "complete"


def test_two_runs_started_together_on_one_url_one_is_refused(env, cluster, config_file, local_rows):
    """The issue's trial: two runs on one ``--out`` at once. Exactly one gets the lease; the
    other is refused in one line naming the holder's pid, and the winner's rows are exact."""
    _worker_pids(cluster["client"])
    url = f"s3://{BUCKET}/together"
    runs = [
        _start_sweep(env, config_file, *_dask(cluster, url), *extra)
        for extra in ((), ("--resume",))
    ]
    try:
        results = [_finish(proc) for proc in runs]
    finally:
        for proc in runs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    codes = sorted(code for code, _err in results)
    assert codes == [0, 2], results
    (winner,) = [proc for proc, (code, _e) in zip(runs, results, strict=True) if code == 0]
    (refusal,) = [err for code, err in results if code == 2]
    assert refusal.count("\n") == 1, refusal
    assert refusal.startswith(
        f"sweep: error: output {url}: another sweep is running there (pid {winner.pid} on host "
    )
    _assert_exact(env, url, local_rows)


def _lease(env, url: str, host: str, expires: float) -> None:
    record = {"host": host, "pid": 4242, "token": "theirs", "expires": expires}
    env["fs"].pipe(url.removeprefix("s3://") + "/" + LEASE_FILE, json.dumps(record).encode())


def test_a_lease_from_another_host_holds_until_it_expires(env, config_file):
    """The lease another machine holds is honoured while it lasts; once expired, a --resume
    takes it over (the machine-local pid check does not apply to another host)."""
    url = f"s3://{BUCKET}/elsewhere"
    small = ("placement.step=1G", "--workers", "1", "--out", url)
    _lease(env, url, "elsewhere", time.time() + 600)
    refused = _sweep(env, config_file, *small, "--resume")
    assert refused.returncode == 2
    assert "another sweep is running there (pid 4242 on host elsewhere" in refused.stderr
    assert not _parts(env, url)
    _lease(env, url, "elsewhere", time.time() - 5)
    taken = _sweep(env, config_file, *small, "--resume")
    assert taken.returncode == 0, taken.stderr
    assert "stale lease (pid 4242 on host elsewhere" in taken.stderr
    # 64 placements (1G steps over 64G) x 2 layouts x 2 block settings = 256 rows: one unit in
    # each of the 2 x 2 (granule, VA_BITS) partitions.
    assert _parts(env, url) == 4
    assert not env["fs"].exists(f"{BUCKET}/elsewhere/{LEASE_FILE}")


def test_a_plugin_the_workers_lack_is_one_line_before_any_work(cluster, config_file, tmp_path):
    """A plugin registered in the sweep's process only (not installed on the workers): the
    executor asks every worker first and refuses, naming the plugin and the worker."""
    from sweep.core.errors import SweepError
    from sweep.plan.config import load_config
    from sweep.plan.plugins import pm, reset
    from sweep.run.driver import run_sweep

    class OnlyHere:
        """No hooks: enough to be a plugin the workers cannot load by name."""

    _worker_pids(cluster["client"])
    pm.register(OnlyHere, name="only-here")
    reset()
    try:
        with pytest.raises(
            SweepError, match=r"worker tcp://127\.0\.0\.1:\d+ cannot load plugin\(s\) only-here"
        ):
            run_sweep(
                load_config(str(config_file), []),
                out=str(tmp_path / "out"),
                executor="dask",
                scheduler=cluster["address"],
                progress=False,
                config_source=str(config_file),
            )
    finally:
        pm.unregister(name="only-here")
        reset()
    assert not list((tmp_path / "out").rglob("*.parquet"))
