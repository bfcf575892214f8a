"""The lease on a URL store (sweep.run.lease), on fsspec's in-memory file system, which has the
same exclusive create (``"xb"``) that s3fs maps to S3's ``If-None-Match: *``.

tests/test_cluster.py runs the same rules against moto's S3 server with real sweeps.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import uuid

import pytest

from sweep.core.errors import SweepError
from sweep.run.lease import LEASE_FILE, Lease

fsspec = pytest.importorskip("fsspec")


@pytest.fixture
def fs():
    return fsspec.filesystem("memory")


@pytest.fixture
def root(fs):
    path = f"/lease-{uuid.uuid4().hex}"
    yield path
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _write(fs, root: str, **record) -> None:
    fs.pipe(f"{root}/{LEASE_FILE}", json.dumps(record).encode())


def _holder(fs, root: str) -> dict:
    return json.loads(fs.cat(f"{root}/{LEASE_FILE}"))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_a_second_lease_on_a_held_url_is_refused_naming_the_holder(fs, root):
    first = Lease(fs, root, "memory://x").acquire()
    try:
        holder = _holder(fs, root)
        assert (holder["host"], holder["pid"]) == (socket.gethostname(), os.getpid())
        assert holder["expires"] > time.time() + 60
        with pytest.raises(SweepError) as refused:
            Lease(fs, root, "memory://x").acquire()
        message = str(refused.value)
        assert message.startswith(
            f"output memory://x: another sweep is running there (pid {os.getpid()} on host "
            f"{socket.gethostname()}, lease expires in "
        )
        assert "\n" not in message
    finally:
        first.release()
    assert not fs.exists(f"{root}/{LEASE_FILE}")
    Lease(fs, root, "memory://x").acquire().release()  # free again


def test_an_expired_lease_is_taken_over(fs, root, caplog):
    _write(fs, root, host="elsewhere", pid=4242, token="theirs", expires=time.time() - 30)
    lease = Lease(fs, root, "memory://x").acquire()
    try:
        assert _holder(fs, root)["token"] == lease.token
        assert "stale lease (pid 4242 on host elsewhere" in caplog.text
        assert re.search(r"it expired 3\d s ago", caplog.text)
    finally:
        lease.release()


def test_a_live_lease_from_another_host_is_honoured_until_it_expires(fs, root):
    _write(fs, root, host="elsewhere", pid=4242, token="theirs", expires=time.time() + 600)
    with pytest.raises(SweepError, match="pid 4242 on host elsewhere, lease expires in 600 s"):
        Lease(fs, root, "memory://x").acquire()
    assert _holder(fs, root)["token"] == "theirs"


def test_a_lease_whose_process_is_gone_from_this_host_is_taken_over(fs, root, caplog):
    pid = _dead_pid()
    _write(fs, root, host=socket.gethostname(), pid=pid, token="t", expires=time.time() + 600)
    lease = Lease(fs, root, "memory://x").acquire()
    lease.release()
    assert f"pid {pid} is no longer running on this host" in caplog.text


def test_the_lease_is_renewed_while_held(fs, root):
    lease = Lease(fs, root, "memory://x", seconds=60.0, renew_every=0.05).acquire()
    try:
        first = _holder(fs, root)["expires"]
        deadline = time.monotonic() + 10
        while _holder(fs, root)["expires"] == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _holder(fs, root)["expires"] > first
        assert lease.lost is None
    finally:
        lease.release()


def test_a_run_that_loses_its_lease_is_stopped_as_by_ctrl_c(fs, root):
    """Another run took the URL over (this one stalled past its expiry): the renewal sees a
    foreign token and interrupts the main thread, which the driver treats as Ctrl-C."""
    lease = Lease(fs, root, "memory://x", renew_every=0.05).acquire()
    _write(fs, root, host="elsewhere", pid=4242, token="theirs", expires=time.time() + 600)
    try:
        with pytest.raises(KeyboardInterrupt):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                time.sleep(0.01)
        assert lease.lost.startswith("it is now held by pid 4242 on host elsewhere")
    finally:
        lease.release()
    assert _holder(fs, root)["token"] == "theirs"  # not ours to remove
