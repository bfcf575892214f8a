"""What the operator sees while a sweep runs: a progress bar or plain lines, and the logs.

``_sweep.log`` gets every process's lines at INFO: forked pool workers inherit its handler and
append to the file themselves (``O_APPEND``, one write per record), so no queue or lock is shared
with them that a killed worker could leave held. The terminal gets the driver's WARNING and up,
one line each, never a traceback. A log file that cannot be written (a full disk) is given up on,
quietly, never with a handler's traceback on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm import tqdm

from sweep.store.parts import Store

log = logging.getLogger("sweep.run.driver")

PROGRESS_INTERVAL = 10.0
"""Seconds between plain progress lines when stderr is not a terminal."""
LOG_PROGRESS_INTERVAL = 60.0
"""Seconds between progress lines in ``_sweep.log`` (for reading a night's run the next day)."""


class Progress:
    """A tqdm bar (rate, ETA) on a terminal; otherwise a plain line every ``interval`` seconds.

    Rows a resumed run finds already done count toward the total but not the rate; so do the
    rows of failed units, so that a run with failures still ends at 100%.
    """

    def __init__(
        self,
        total: int,
        tty: bool | None = None,
        interval: float = PROGRESS_INTERVAL,
        failed: int = 0,
    ) -> None:
        self.total, self.interval = total, interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.done = self.skipped = self.failed_rows = 0
        self.failed = failed
        """Failed units: those that failed while planning (no rows) are counted from the start,
        so the line agrees with the run's closing summary."""
        self.started = self.last = self.last_logged = time.monotonic()
        self.bar = None
        if self.tty:
            tqdm.monitor_interval = 0  # no monitor thread: the pool may be re-forked
            self.bar = tqdm(
                total=total,
                unit="cfg",
                unit_scale=True,
                smoothing=0.05,
                dynamic_ncols=True,
                file=sys.stderr,
                desc="sweep",
            )
            if self.failed:
                self.bar.set_postfix(failed=self.failed, refresh=False)

    def skip(self, rows: int) -> None:
        self.skipped += rows
        if self.bar is not None:
            self.bar.update(rows)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)

    def fail(self, rows: int = 0) -> None:
        self.failed += 1
        self.failed_rows += rows
        if self.bar is not None:
            self.bar.update(rows)
            self.bar.set_postfix(failed=self.failed, refresh=False)

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        finished = self.done + self.skipped + self.failed_rows
        remaining = max(self.total - finished, 0)
        eta = _duration(remaining / rate) if rate > 0 else ("0:00:00" if not remaining else "?")
        percent = 100.0 * finished / self.total if self.total else 100.0
        return (
            f"sweep: {percent:5.1f}% {finished:,}/{self.total:,} configurations, "
            f"{rate:,.0f}/s, elapsed {_duration(elapsed)}, ETA {eta}, "
            f"{self.failed} failed units"
        )

    def tick(self) -> None:
        now = time.monotonic()
        if self.bar is None and now - self.last >= self.interval:
            self.last = now
            print(self.line(), file=sys.stderr, flush=True)
        if now - self.last_logged >= LOG_PROGRESS_INTERVAL:
            self.last_logged = now
            log.info("%s", self.line().removeprefix("sweep: "))

    def close(self, last_line: bool = True) -> None:
        """The bar closed, or the last plain line; a terminal gone (SIGHUP) is not an error."""
        try:
            if self.bar is not None:
                self.bar.close()
            elif last_line:
                print(self.line(), file=sys.stderr, flush=True)
        except OSError:
            pass


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --- logging ----------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """The terminal gets one line per message, never a traceback (those go to ``_sweep.log``)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"sweep: {record.levelname.lower()}: {record.getMessage()}"


class _TerminalHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        pass  # a closed or broken stderr: nothing sensible to print to


class _LogFile(logging.FileHandler):
    """``_sweep.log``; on a write error (disk full, read-only) it stops writing, quietly: the
    driver reports the disk's state itself, in one line."""

    failed = False

    def _open(self):
        """Appends without following a link put in the log's place (``O_NOFOLLOW``)."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        return os.fdopen(os.open(self.baseFilename, flags, 0o644), "a", encoding=self.encoding)

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.failed = True


class _Fanout(logging.Handler):
    """The driver's one handler on the ``sweep`` logger: the log file and the terminal."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.handlers = handlers

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def close(self) -> None:
        for handler in self.handlers:
            try:
                handler.close()
            except OSError:
                pass
        super().close()


LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s pid %(process)d] %(name)s: %(message)s"


def start_logging(store: Store) -> list[logging.Handler]:
    """``_sweep.log`` gets everything at INFO, stderr WARNING and up."""
    file_handler = _LogFile(store.log_path(), encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    file_handler.setLevel(logging.INFO)
    terminal = _TerminalHandler()
    terminal.setFormatter(_OneLine())
    terminal.setLevel(logging.WARNING)
    handler = _Fanout([file_handler, terminal])
    logger = logging.getLogger("sweep")
    logger.addHandler(handler)
    handler._sweep_previous_level = logger.level  # restored by stop_logging
    logger.setLevel(logging.INFO)
    return [handler]


def worker_logging() -> None:
    """In a forked worker: keep appending to ``_sweep.log``, leave the terminal to the driver
    (which reports each unit's failure itself)."""
    for handler in logging.getLogger("sweep").handlers:
        if isinstance(handler, _Fanout):
            handler.handlers = [h for h in handler.handlers if not isinstance(h, _TerminalHandler)]


def stop_logging(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger("sweep")
    for handler in handlers:
        logger.removeHandler(handler)
        try:
            handler.close()
        except OSError:
            pass
        logger.setLevel(getattr(handler, "_sweep_previous_level", logging.NOTSET))
