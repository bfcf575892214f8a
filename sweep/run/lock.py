"""One sweep per folder: an advisory lock held for the whole run.

``fcntl.flock`` on ``_sweep.lock`` in the output folder: the kernel drops it when the holder
dies, however it dies, so a run after a crash (``--resume``) takes over a stale lock by simply
getting it, while a second run beside a live one is refused with the holder's pid and host
(written into the file). A run that ends unlinks the file before it lets go; a run that had
opened it meanwhile sees that its lock names no file and takes the new one. Forked workers
close their copy of the descriptor
(:func:`close_inherited`), so only the driver holds it and an orphaned worker never does.
URL stores have no flock: there the lock is a lease (:mod:`sweep.run.lease`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
from datetime import UTC, datetime

from sweep.core.errors import SweepError
from sweep.core.text import printable
from sweep.run.lease import Lease, url_lease
from sweep.store.parts import LOCK_FILE, OWN_FILES, Store

_HELD: set[int] = set()
"""Descriptors of the locks this process holds (a forked worker closes them)."""


PERSISTENT_SCHEMES = ("file", "s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "hdfs", "oci")
"""URL schemes of stores that keep what a run writes after it ends (fsspec's names)."""


def check_output(url: str) -> None:
    """Refuse, in one line, an ``--out`` no run can keep results in: a store in this process's
    memory (``memory://``), a read-only one (``http://``), a chained URL (``simplecache::``,
    a cache in front of a store) or any scheme not in :data:`PERSISTENT_SCHEMES`."""
    text = str(url)
    if "::" in text:
        why = "is a chained URL (a cache or a wrapper in front of a store); give the store's own"
    elif "://" not in text:
        return
    else:
        scheme = text.split("://", 1)[0].lower()
        if scheme in PERSISTENT_SCHEMES:
            return
        why = {
            "memory": "is this process's memory: the sweep would be gone when the run ends",
            "http": "is read-only over HTTP",
            "https": "is read-only over HTTPS",
        }.get(scheme, f"is not a store a sweep keeps its results in ({scheme}://)")
    raise SweepError(
        f"--out {printable(text)[:200]}: {why} (a folder, or a URL of"
        f" {', '.join(s + '://' for s in PERSISTENT_SCHEMES)})"
    )


RETRIES = 16
"""Times ``acquire`` takes the lock again when the file it locked was unlinked meanwhile."""


class FolderLock:
    """The lock on one output folder; ``release()`` (or the holder's death) frees it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.fd: int | None = None
        self.lease: Lease | None = None

    def acquire(self) -> FolderLock:
        check_output(self.store.url)
        if not self.store.local:
            self.lease = url_lease(self.store).acquire()
            return self
        for _ in range(RETRIES):  # the file a holder unlinks as it leaves: take the new one
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                return self._refuse(fd, exc)
            if self._still_named(fd):
                break
            os.close(fd)
        else:
            raise SweepError(f"output {self.store.url}: {LOCK_FILE} keeps changing; try again")
        return self._hold(fd)

    def _refuse(self, fd: int, exc: OSError):
        """The flock is held by another sweep, or cannot be taken: one line saying which."""
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

    def _still_named(self, fd: int) -> bool:
        """Whether ``_sweep.lock`` still names the file ``fd`` locked (a holder leaving
        unlinks it: then the lock taken is on a file no other sweep will open)."""
        try:
            now = os.stat(os.path.join(self.store.root, LOCK_FILE), follow_symlinks=False)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)

    def _hold(self, fd: int) -> FolderLock:
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

    def _open(self) -> int:
        """``_sweep.lock``, opened without following a link or waiting on a FIFO, and only if
        it is a regular file; the folder's own tree checked first (:func:`check_tree`)."""
        path = os.path.join(self.store.root, LOCK_FILE)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            os.makedirs(self.store.root, exist_ok=True)
            check_tree(self.store.root, self.store.url)
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SweepError(_linked(self.store.url, LOCK_FILE)) from None
            raise SweepError(
                f"output {self.store.url}: cannot write there ({_reason(exc)})"
            ) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise SweepError(
                f"output {self.store.url}: {LOCK_FILE} is not a regular file; remove it"
            )
        os.set_blocking(fd, True)
        return fd

    def release(self) -> None:
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        if self.fd is None:
            return
        _HELD.discard(self.fd)
        if self._still_named(self.fd):  # no stale lock file: a sweep waiting on this one
            with contextlib.suppress(OSError):  # retries on the new file (acquire)
                os.unlink(os.path.join(self.store.root, LOCK_FILE))
        os.close(self.fd)  # closing drops the flock
        self.fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        holder = json.loads(os.pread(fd, 4096, 0).decode())
        pid, host, since = (printable(str(holder[k]))[:80] for k in ("pid", "host", "since"))
        return f"pid {pid} on host {host}, since {since}"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "its pid and host are not recorded yet"


def check_tree(root: str, url: str) -> None:
    """Refuse a results tree that leaves the folder: a symbolic link among the sweep's own
    files, its partition folders or its part files would make a run (or ``--resume``) write,
    append or delete outside ``--out``, so none is followed, whatever it points to (as SQLite
    and PostgreSQL refuse to follow theirs). ``--out`` itself may be a link."""
    for top, dirs, files in os.walk(root):
        depth = os.path.relpath(top, root).count(os.sep) + (top != root)
        for name in dirs + files:
            if _in_tree(depth, name) and os.path.islink(os.path.join(top, name)):
                raise SweepError(_linked(url, os.path.relpath(os.path.join(top, name), root)))
        dirs[:] = [d for d in dirs if _in_tree(depth, d)] if depth < 2 else []


def _in_tree(depth: int, name: str) -> bool:
    """Whether ``name``, ``depth`` folders down, is part of a sweep's tree."""
    if depth == 0:
        return name.startswith(("granule-", ".")) or name in OWN_FILES
    return name.startswith("va_bits-") if depth == 1 else True


def _linked(url: str, name: str) -> str:
    return (
        f"output {url}: {name} is a symbolic link; a sweep writes only inside its folder and"
        " never follows one: remove the link (or choose another --out)"
    )


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
