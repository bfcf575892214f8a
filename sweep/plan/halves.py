"""Loading thousands of memory-map files on two cores: a forked helper loads the second half
while the planner loads the first, so that planning a board corpus is not one core's work
while the other waits (2,000 small TOML maps: ~0.092 s on one core, ~0.057 on two).

The helper only parses (no logging, no output of its own, ``os._exit`` at once); what it found
comes back pickled through a pipe. Whatever goes wrong with it (killed, an unpicklable result)
is not an error of the sweep: its half is then loaded here, so the maps, and the first bad
file's error, are what loading one by one gives.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")

FORK_FROM = 512
"""Files from which the second half goes to a helper: below it, the fork (a few ms for a
planner that has imported numpy and pyarrow) is most of what it would save."""


class _Failed:
    """The helper's half stopped here, with this exception (raised at its turn)."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def in_two_halves(items: Sequence[T], load: Callable[[Sequence[T]], Iterator[U]]) -> Iterator[U]:
    """``load(items)``, in order, the second half loaded in a forked helper meanwhile: on Linux
    with two CPUs or more, from ``FORK_FROM`` items, and in a process with no other thread (a
    fork copies only the calling thread; a lock another holds would stay held)."""
    if len(items) < FORK_FROM or not _may_fork():
        yield from load(items)
        return
    half = len(items) // 2
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper
        _helper(load, items[half:], read_end, write_end)
    os.close(write_end)
    reaped = False
    try:
        yield from load(items[:half])
        rest, reaped = _collect(read_end, pid), True
    finally:
        os.close(read_end)
        if not reaped:  # the first half failed (or was left): the helper is not left behind
            _reap(pid)
    if rest is None:  # the helper died: its half is loaded here
        yield from load(items[half:])
        return
    for item in rest:
        if isinstance(item, _Failed):
            raise item.exc
        yield item


def _may_fork() -> bool:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return False
    return cpus > 1 and threading.active_count() == 1


def _helper(load, items, read_end: int, write_end: int) -> None:
    """The forked helper: load, send what it found (or where it stopped), exit at once."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the planner's to handle
        os.close(read_end)
        found: list = []
        try:
            found.extend(load(items))
        except Exception as exc:  # a bad file: raised by the planner at its turn
            found.append(_Failed(exc))
        data = pickle.dumps(found, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(data)
        while view:
            view = view[os.write(write_end, view) :]
        code = 0
    finally:
        os._exit(code)


def _collect(read_end: int, pid: int) -> list | None:
    """What the helper sent, once it has exited (reaped), or None when it did not finish
    (killed, or failed to send)."""
    chunks = []
    while chunk := os.read(read_end, 1 << 20):
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
        return None
    try:
        return pickle.loads(b"".join(chunks))
    except Exception:
        return None


def _reap(pid: int) -> None:
    """Stop the helper, not yet reaped (so its pid is still its own), and wait for it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
