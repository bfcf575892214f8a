"""The scheduling loop of a run: hand units to an executor, take what comes back, keep count.

At most one unit per worker is in flight. A unit whose worker was killed is retried alone (with
:attr:`~sweep.run.executors.ProcessExecutor.restart_on_kill`, after the pool is rebuilt), so a unit
that kills its worker every time is told apart from its neighbours and recorded as failed after
``MAX_RETRIES``. A unit that reports a full output (:class:`OutputFull`) stops the run at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections import Counter, deque
from dataclasses import dataclass, field

from sweep.run.executors import UnitResult, WorkerKilled, output_error
from sweep.run.progress import Progress
from sweep.run.task import Plan, Unit
from sweep.store.manifest import Manifest
from sweep.store.parts import PartInfo, Store

log = logging.getLogger("sweep.run.driver")

MAX_RETRIES = 2
"""A unit whose worker is killed is retried this many times before it is recorded as failed."""


@dataclass
class RunReport:
    """What a run did; ``_sweep.json`` holds the same counts. ``reason`` says why it stopped."""

    out: str
    status: str
    configurations: int
    units: int
    units_written: int = 0
    units_skipped: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    failed: list[dict] = field(default_factory=list)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "complete"


class OutputFull(Exception):
    """The output took no more data (ENOSPC, EDQUOT, EROFS): the run stops at once."""


def write_guarded(fn, *args) -> None:
    """One of the driver's own writes; a full output becomes :class:`OutputFull`."""
    try:
        fn(*args)
    except OSError as exc:
        if output_error(exc):
            raise OutputFull(f"{exc.strerror or exc} (writing the sweep's records)") from None
        raise


class Scheduler:
    """The scheduling loop's state: the units still to hand out, those in flight, the kills."""

    def __init__(
        self,
        plan: Plan,
        ex,
        store: Store,
        manifest: Manifest,
        whole: dict[str, int],
        report: RunReport,
        bar: Progress,
        fail_fast: bool,
    ) -> None:
        self.plan, self.ex, self.store, self.manifest = plan, ex, store, manifest
        self.whole, self.report, self.bar, self.fail_fast = whole, report, bar, fail_fast
        self.units = plan.units()
        self.retry: deque[Unit] = deque()
        self.kills: Counter[str] = Counter()
        self.in_flight: dict = {}
        self.stopping = self.interrupted = False

    def next_unit(self) -> Unit | None:
        if self.retry:
            return self.retry.popleft()
        for unit in self.units:
            rows = self.whole.get(unit.path)
            if rows is not None and (unit.part_rows is None or rows == unit.part_rows):
                self.report.units_skipped += 1
                self.report.rows_skipped += unit.rows
                self.bar.skip(unit.rows)
                continue
            if rows is not None:
                log.warning(
                    "part %s: holds %d rows, its unit %d; writing it again",
                    unit.path,
                    rows,
                    unit.rows,
                )
            return unit
        return None

    def run(self) -> str:
        """Hand out units until none is left; returns the run's status."""
        restore = _sigterm_as_interrupt()
        try:
            while True:
                try:
                    if not self._step():
                        break
                except KeyboardInterrupt:
                    if self.stopping and self.interrupted:
                        log.warning(
                            "interrupted again: abandoning %d running units", len(self.in_flight)
                        )
                        self.ex.shutdown(abandon=True)
                        self.in_flight.clear()
                        return "interrupted"
                    self.stopping = self.interrupted = True
                    log.warning(  # one line, on the terminal and in the log alike
                        "interrupted: waiting for %d running units (Ctrl-C again abandons "
                        "them); every finished unit is kept",
                        len(self.in_flight),
                    )
        finally:
            restore()
        if self.interrupted:
            return "interrupted"
        return "failed" if self.report.failed else "complete"

    def _step(self) -> bool:
        """Fill the window, wait up to a second, take what finished; False when all is done."""
        # Units a broken pool lost are retried alone, so a unit that kills its worker every
        # time is told apart from the ones that merely shared the pool with it.
        suspects = any(u.id in self.kills for u in self.in_flight.values())
        window = 1 if (self.retry or suspects) else self.ex.workers
        while not self.stopping and len(self.in_flight) < window:
            unit = self.next_unit()
            if unit is None:
                break
            self.in_flight[self.ex.submit(unit)] = unit
        if not self.in_flight:
            return False
        finished, _ = self.ex.wait(set(self.in_flight), timeout=1.0)
        lost = [u for u in map(self._take, finished) if u is not None]
        if lost and self.ex.restart_on_kill:
            lost += list(self.in_flight.values())  # the whole pool went down with it
            self.in_flight.clear()
            self._requeue(lost)
            log.warning(
                "a worker was killed by the OS; rebuilding the pool and retrying %s",
                ", ".join(u.id for u in lost),
            )
            self.ex.restart()
        elif lost:  # Dask replaces the worker itself; the unit is retried as above
            self._requeue(lost)
            log.warning("a worker was lost; retrying %s", ", ".join(u.id for u in lost))
        write_guarded(self.manifest.flush, self.store)
        self.bar.tick()
        return True

    def _take(self, future) -> Unit | None:
        """Record one finished future; returns its unit when its worker was killed."""
        unit = self.in_flight.pop(future)
        outcome = self.ex.outcome(future)
        if isinstance(outcome, WorkerKilled):
            return unit
        if isinstance(outcome, UnitResult) and outcome.fatal:
            raise OutputFull(f"{outcome.error} (writing {unit.path})")
        if isinstance(outcome, Exception) or outcome.error:
            error = (
                outcome.error
                if isinstance(outcome, UnitResult)
                else f"{type(outcome).__name__}: {outcome}"
            )
            self._fail(unit, error)
            if self.fail_fast and not self.stopping:
                log.warning("--fail-fast: stopping after unit %s failed", unit.id)
                self.stopping = True
            return None
        info = PartInfo(outcome.part_rows, outcome.bytes, outcome.sha256, outcome.summary)
        self.manifest.record(unit.path, info)
        self.report.units_written += 1
        self.report.rows_written += outcome.rows
        self.report.bytes_written += outcome.bytes
        self.bar.advance(outcome.rows)
        return None

    def _requeue(self, lost: list[Unit]) -> None:
        for unit in lost:
            self.kills[unit.id] += 1
            if self.kills[unit.id] > MAX_RETRIES:
                self._fail(
                    unit,
                    f"its worker was killed (SIGKILL or out of memory) {self.kills[unit.id]} times",
                )
            else:
                self.retry.append(unit)

    def _fail(self, unit: Unit, error: str) -> None:
        self.report.failed.append(
            {"unit": unit.id, "path": unit.path, "rows": unit.rows, "error": error}
        )
        self.bar.fail(unit.rows)
        log.error("unit %s failed: %s", unit.describe(), error)


def _sigterm_as_interrupt():
    """SIGTERM (a scheduler ending the job) stops the run as Ctrl-C does; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
