"""One sweep per URL store: a lease, since an object store has no ``flock``.

The lease is ``_sweep.lock`` beside the data, holding the holder's host, pid, a random token and
an expiry ``LEASE_SECONDS`` ahead, renewed by a thread every ``RENEW_SECONDS`` while the run
lasts. It is created with an exclusive create (``If-None-Match: *`` on S3, through fsspec's
``"xb"`` mode), so of two runs starting together exactly one gets it; the other is refused in
one line naming the holder. A lease is stale when it has expired, or when its holder ran on
this host and its process is gone: a run after a crash (``--resume``) takes a stale lease over,
and then reads it back after ``SETTLE_SECONDS`` to be sure no other taker overwrote it.

Expiry compares wall clocks of two machines: keep them in sync (NTP) or keep the lease long.
"""

from __future__ import annotations

import _thread
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from sweep.core.errors import SweepError
from sweep.core.text import printable
from sweep.store.parts import LOCK_FILE as LEASE_FILE

log = logging.getLogger("sweep.run.lease")

LEASE_SECONDS = 120.0
"""How long a lease lasts without renewal: a crashed run's URL is free again after this."""
RENEW_SECONDS = 30.0
MAX_AHEAD_SECONDS = 86400.0
"""A lease that claims to last longer than this was not written by a run: it is stale."""
SETTLE_SECONDS = 1.0
"""After taking over a stale lease, wait this long and read it back (two takers race)."""


class Lease:
    """The lease on one URL store (an fsspec file system and the dataset's root path in it)."""

    def __init__(
        self,
        fs: Any,
        root: str,
        url: str,
        seconds: float = LEASE_SECONDS,
        renew_every: float = RENEW_SECONDS,
    ) -> None:
        self.fs, self.url = fs, url
        self.path = posixpath.join(root, LEASE_FILE)
        self.seconds, self.renew_every = seconds, renew_every
        self.token = uuid.uuid4().hex
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- taking and giving back ---------------------------------------------------------------

    def acquire(self) -> Lease:
        """Take the lease or raise a one-line ``SweepError`` naming the live holder."""
        for _attempt in range(3):
            if self._create():
                self._start_renewing()
                return self
            holder = self._read()
            if holder is _GONE:  # released between our create and our read: try again
                continue
            why = stale(holder)
            if why is None:
                raise SweepError(
                    f"output {self.url}: another sweep is running there ({_who(holder)})"
                )
            log.warning(
                "output %s: taking over a stale lease (%s): %s", self.url, _who(holder), why
            )
            self._remove()
            if self._create():
                time.sleep(SETTLE_SECONDS)
                now = self._read()
                if now is not _GONE and isinstance(now, dict) and now.get("token") == self.token:
                    self._start_renewing()
                    return self
                raise SweepError(
                    f"output {self.url}: another sweep took the stale lease over ({_who(now)})"
                )
        raise SweepError(f"output {self.url}: could not take {LEASE_FILE} (others keep taking it)")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10.0)
            self._thread = None
        try:
            holder = self._read()
            if isinstance(holder, dict) and holder.get("token") == self.token:
                self._remove()
        except OSError as exc:  # the lease then expires by itself
            log.warning("output %s: could not remove %s: %s", self.url, LEASE_FILE, exc)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    # --- the file -----------------------------------------------------------------------------

    def _record(self) -> bytes:
        now = time.time()
        return (
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "token": self.token,
                    "renewed": _iso(now),
                    "expires": now + self.seconds,
                    "expires_utc": _iso(now + self.seconds),
                }
            )
            + "\n"
        ).encode()

    def _create(self) -> bool:
        """Create the lease file if there is none; whether we did."""
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(self._record())
            return True
        except FileExistsError:
            return False
        except (NotImplementedError, ValueError, TypeError):  # no exclusive create here
            if self.fs.exists(self.path):
                return False
            self._write()
            time.sleep(SETTLE_SECONDS)
            holder = self._read()
            return isinstance(holder, dict) and holder.get("token") == self.token

    def _write(self) -> None:
        with self.fs.open(self.path, "wb") as f:
            f.write(self._record())

    def _read(self) -> dict | object:
        """The holder's record, ``_GONE`` if there is no lease, ``_GARBLED`` if unreadable."""
        try:
            with self.fs.open(self.path, "rb") as f:
                data = f.read(1 << 16)
        except FileNotFoundError:
            return _GONE
        try:
            holder = json.loads(data.decode())
        except ValueError:
            return _GARBLED
        return holder if isinstance(holder, dict) else _GARBLED

    def _remove(self) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass

    # --- renewal ------------------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="sweep-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        last = time.time()
        while not self._stop.wait(self.renew_every):
            try:
                holder = self._read()
                if not (isinstance(holder, dict) and holder.get("token") == self.token):
                    self._lose(f"it is now held by {_who(holder)}")
                    return
                self._write()
                last = time.time()
            except OSError as exc:
                if time.time() - last > self.seconds:
                    self._lose(f"not renewed for {self.seconds:.0f} s ({exc})")
                    return
                log.warning("output %s: could not renew the lease (will retry): %s", self.url, exc)

    def _lose(self, why: str) -> None:
        """Another run holds the URL now: stop this one as Ctrl-C does (running units finish,
        nothing new starts), so that two runs never keep writing one dataset."""
        self.lost = why
        log.error("output %s: this run lost its lease (%s); stopping it", self.url, why)
        _thread.interrupt_main()


_GONE = object()
_GARBLED = object()


def stale(holder: dict | object, now: float | None = None) -> str | None:
    """Why a lease may be taken over, or None while its holder may be alive."""
    if holder is _GARBLED:
        return "it cannot be read"
    now = time.time() if now is None else now
    try:
        expires = float(holder["expires"])
        host, pid = str(holder["host"]), holder["pid"]
        if type(pid) is not int or not 0 < pid < 1 << 31 or expires != expires:
            raise ValueError(pid)
    except (KeyError, TypeError, ValueError, OverflowError):
        return "it names no holder and expiry"
    if expires - now > MAX_AHEAD_SECONDS:  # no run writes that: a damaged or forged lease
        return f"its expiry is {expires - now:.3g} s ahead, past any lease"
    if expires < now:
        return f"it expired {now - expires:.0f} s ago"
    if host == socket.gethostname() and not _alive(pid):
        return f"pid {pid} is no longer running on this host"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _who(holder: dict | object) -> str:
    if not isinstance(holder, dict):
        return "holder unknown"
    try:
        left = f", lease expires in {float(holder['expires']) - time.time():.0f} s"
    except (KeyError, TypeError, ValueError, OverflowError):
        left = ""
    pid, host = (printable(str(holder.get(k)))[:80] for k in ("pid", "host"))
    return f"pid {pid} on host {host}{left}"


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def url_lease(store) -> Lease:
    """The lease of a URL :class:`~sweep.store.parts.Store` (whose ``fs`` wraps an fsspec
    system)."""
    return Lease(store.fsspec, store.root, store.url)
