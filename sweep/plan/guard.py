"""The plugin boundary: every call into a plugin's code goes through :func:`plugin_call`.

What a plugin does there stays its own, as pytest treats a plugin's hook: any exception, even a
``SystemExit`` or a ``GeneratorExit`` (everything but Ctrl-C), becomes a :class:`PluginError`
naming the plugin and what it was asked; a call that does not return within the time budget
(``SWEEP_PLUGIN_TIMEOUT`` seconds, default :data:`DEFAULT_BUDGET`) is stopped the same way;
and what the plugin prints goes to stderr, never into the sweep's own output.

The budget is kept by ``SIGALRM`` in the main thread (it also ends a ``sleep`` or a blocking
wait) and by an asynchronous exception elsewhere (a Dask worker's threads), which stops any
loop of Python code. A budget is per call; a call inside a guarded call shares the outer one.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sweep.core.errors import PluginError, SweepError

ENV_BUDGET = "SWEEP_PLUGIN_TIMEOUT"
"""Seconds one call into a plugin may take (a float; 0 turns the budget off)."""
DEFAULT_BUDGET = 30.0
NOTE_AFTER = 5.0
"""Seconds after which a call still running is named on stderr (then stopped at the budget)."""
T = TypeVar("T")
_state = threading.local()
_stalled: dict[tuple[str, str], str] = {}
"""Calls that spent their budget in this process, by (plugin, what): later ones fail at once."""


class PluginTimeout(BaseException):
    """Raised inside a plugin's code when its budget is spent (a BaseException, so the plugin's
    own ``except Exception`` does not swallow it)."""


def forget_stalled() -> None:
    """Give every plugin call its budget again (after ``plugins.reset()``: a plugin reloaded)."""
    _stalled.clear()


def budget() -> float:
    """The time budget of one plugin call, in seconds (0: none); a bad value is one line."""
    value = os.environ.get(ENV_BUDGET, "").strip()
    if not value:
        return DEFAULT_BUDGET
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < 1e9:
        raise SweepError(
            f"{ENV_BUDGET}={value[:40]!r}: expected seconds, a number from 0 (no budget) up"
        )
    return seconds


def plugin_call(plugin: str, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, the code of ``plugin``; ``what`` says what it was asked (``"the
    hook register_layouts"``) in the one-line error that any failure of it becomes."""
    if getattr(_state, "depth", 0):  # inside another guarded call: its budget and redirect hold
        return fn(*args, **kwargs)
    if (plugin, what) in _stalled:  # it hung once here: every later call would hang alike
        raise PluginError(_stalled[(plugin, what)])
    seconds = budget()
    _state.depth = 1
    _state.fired = False
    note = _waiting_note(plugin, what, seconds)
    try:
        with contextlib.redirect_stdout(sys.stderr), _deadline(seconds):
            result = fn(*args, **kwargs)
        if _state.fired:  # the plugin caught PluginTimeout and returned late
            raise PluginTimeout
        return result
    except KeyboardInterrupt:
        raise
    except PluginTimeout:
        _stalled[(plugin, what)] = (
            f"plugin {plugin!r}: {what} did not return within {seconds:g} s"
            f" ({ENV_BUDGET} sets the budget)"
        )
        raise PluginError(_stalled[(plugin, what)]) from None
    except PluginError as exc:
        if str(exc).startswith("plugin "):
            raise
        raise PluginError(f"plugin {plugin!r}: {what}: {exc}") from None
    except BaseException as exc:  # noqa: B036 - the boundary: SystemExit too, as pytest does
        raise PluginError(f"plugin {plugin!r}: {what} raised {_describe(exc)}") from None
    finally:
        note.cancel()
        _state.depth = 0


def _waiting_note(plugin: str, what: str, seconds: float) -> threading.Timer:
    """A line on stderr when a call takes longer than ``NOTE_AFTER``: a wait is never silent."""
    stop = f"; stopped at {seconds:g} s" if seconds else ""
    line = f"sweep: waiting for plugin {plugin!r}: {what}{stop}\n"
    timer = threading.Timer(NOTE_AFTER, lambda: sys.__stderr__ and sys.__stderr__.write(line))
    timer.daemon = True
    if not seconds or seconds > NOTE_AFTER:
        timer.start()
    return timer


def guarded(plugin: str, what: str, fn: Callable, *args, **kwargs) -> tuple[object, Exception]:
    """``fn(...)`` at the plugin boundary (:mod:`sweep.plan.guard`): its value and None, or None
    and the exception (an exception as it was raised; an exit, a hang, as a PluginError)."""

    def call():
        try:
            return fn(*args, **kwargs), None
        except Exception as exc:
            return None, exc

    try:
        return plugin_call(plugin, what, call)
    except PluginError as exc:
        return None, PluginError(str(exc).removeprefix(f"plugin {plugin!r}: "))


def reason(exc: Exception) -> str:
    """What went wrong, for a plugin's error line (its type unless it is a PluginError)."""
    return str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}) (a plugin must not end the process)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@contextlib.contextmanager
def _deadline(seconds: float):
    """Raise :class:`PluginTimeout` in this thread after ``seconds`` (and every second after,
    should the plugin catch it), until the block ends."""
    if seconds <= 0:
        yield
        return
    if threading.current_thread() is threading.main_thread():
        with _alarm(seconds):
            yield
        return
    timer = _AsyncTimer(threading.get_ident(), seconds)
    timer.start()
    try:
        yield
    finally:
        timer.stop()


@contextlib.contextmanager
def _alarm(seconds: float):
    def fire(signum, frame):
        _state.fired = True
        raise PluginTimeout

    previous = signal.signal(signal.SIGALRM, fire)
    started = time.monotonic()
    delay, interval = signal.setitimer(signal.ITIMER_REAL, seconds, 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if delay:  # someone else's timer (pytest-timeout, say): it goes on where it was
            left = max(1e-3, delay - (time.monotonic() - started))
            signal.setitimer(signal.ITIMER_REAL, left, interval)


class _AsyncTimer(threading.Thread):
    """Outside the main thread: raise :class:`PluginTimeout` in the plugin's thread."""

    def __init__(self, target: int, seconds: float) -> None:
        super().__init__(daemon=True, name="sweep-plugin-budget")
        self.target, self.seconds = target, seconds
        self.done = threading.Event()

    def run(self) -> None:
        wait = self.seconds
        while not self.done.wait(wait):
            _state_of_target_fired.add(self.target)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self.target), ctypes.py_object(PluginTimeout)
            )
            wait = 1.0

    def stop(self) -> None:
        self.done.set()
        self.join()
        # an exception set as the call returned, not yet raised: cleared, never raised later
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.target), None)
        if self.target in _state_of_target_fired:
            _state_of_target_fired.discard(self.target)
            _state.fired = True


_state_of_target_fired: set[int] = set()
