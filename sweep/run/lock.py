"""One sweep per folder: an advisory lock held for the whole run.

``fcntl.flock`` on ``_sweep.lock`` in the output folder: the kernel drops it when the holder
dies, however it dies, so a run after a crash (``--resume``) takes over a stale lock by simply
getting it, while a second run beside a live one is refused with the holder's pid and host
(written into the file). Forked workers close their copy of the descriptor
(:func:`close_inherited`), so only the driver holds it and an orphaned worker never does.
URL stores have no flock: there the lock is a lease (:mod:`sweep.run.lease`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from datetime import UTC, datetime

from sweep.core.errors import SweepError
from sweep.run.lease import Lease, url_lease
from sweep.store.parts import LOCK_FILE, Store

_HELD: set[int] = set()
"""Descriptors of the locks this process holds (a forked worker closes them)."""


class FolderLock:
    """The lock on one output folder; ``release()`` (or the holder's death) frees it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fd: int | None = None
        self.lease: Lease | None = None

    def acquire(self) -> FolderLock:
        if not self.store.local:
            self.lease = url_lease(self.store).acquire()
            return self
        path = os.path.join(self.store.root, LOCK_FILE)
        try:
            os.makedirs(self.store.root, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SweepError(
                f"output {self.store.url}: cannot write there ({_reason(exc)})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise SweepError(
                    f"output {self.store.url}: cannot lock {LOCK_FILE} ({_reason(exc)})"
                ) from None
            raise SweepError(
                f"output {self.store.url}: another sweep is running there ({holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise SweepError(
                f"output {self.store.url}: cannot write there ({_reason(exc)})"
            ) from None
        self.fd = fd
        _HELD.add(fd)
        return self

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.fd is None:
            return
        _HELD.discard(self.fd)
        os.close(self.fd)  # closing drops the flock; the file stays (unlinking it would race)
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {holder['pid']} on host {holder['host']}, since {holder['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "its pid and host are not recorded yet"


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def close_inherited() -> None:
    """In a forked worker: drop this process's copies of the parent's lock descriptors, so the
    lock dies with the driver and never outlives it in an orphan."""
    for fd in list(_HELD):
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()
