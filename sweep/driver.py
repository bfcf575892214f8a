"""The driver: runs a sweep's units on an executor and keeps count, all night if need be.

It schedules units and nothing else: :mod:`sweep.units` says what a unit is, the builder builds
its rows, :mod:`sweep.store` writes them. Its job is to finish and lose nothing:

- at most one unit per worker is in flight, so units are generated as they are needed and a
  billion-configuration sweep runs in flat memory;
- a unit whose plugin raises is recorded as failed and the sweep goes on (``fail_fast`` stops
  it instead); the run's report lists every failed unit;
- a worker killed by the OS breaks the process pool: the pool is rebuilt and the units it was
  running are retried one at a time, so a unit that kills its worker every time is found and
  recorded as failed while its neighbours finish;
- Ctrl-C (or SIGTERM) stops submitting and waits for the running units; a second one abandons
  them. Every finished unit is on disk, and ``resume`` runs only the units with no part file.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sweep.config import config_difference
from sweep.errors import SweepError
from sweep.executors import EXECUTORS, UnitResult, WorkerKilled, make_executor
from sweep.store import DISK_BYTES_PER_PART, DISK_BYTES_PER_ROW, MEMORY_BYTES_PER_ROW, Store
from sweep.units import Plan, Unit, make_plan

log = logging.getLogger("sweep.driver")

MAX_RETRIES = 2
"""A unit whose worker is killed is retried this many times before it is recorded as failed."""
PROGRESS_INTERVAL = 10.0
"""Seconds between plain progress lines when stderr is not a terminal."""
LOG_PROGRESS_INTERVAL = 60.0
"""Seconds between progress lines in ``_sweep.log`` (for reading a night's run the next day)."""


@dataclass
class RunReport:
    """What a run did; ``_sweep.json`` holds the same counts."""

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

    @property
    def ok(self) -> bool:
        return self.status == "complete"


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_sweep(
    config: dict,
    out: str = "results",
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    executor: str = "processes",
    scheduler: str | None = None,
    progress: bool | None = None,
    config_source: str = "",
    dask_processes: bool = True,
) -> RunReport:
    """Run every unit of ``config`` into the dataset at ``out`` (a path or an fsspec URL).

    ``progress`` forces the bar on (True) or plain lines (False); None picks by ``isatty``.
    """
    if resume and overwrite:
        raise SweepError("--resume and --overwrite: choose one")
    if executor not in EXECUTORS:
        raise SweepError(f"--executor: {executor!r} is not one of {', '.join(EXECUTORS)}")
    if executor == "dask" and not scheduler:
        raise SweepError("--executor dask: needs --scheduler tcp://host:8786")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise SweepError(f"--workers: {workers} must be at least 1")
    store = Store(out)
    plan = make_plan(config, base_dir=os.path.dirname(config_source) or None)
    previous = _check_existing(store, plan, resume, overwrite)
    store.remove_temporaries()
    done = store.parts() if resume else set()

    started = _now()
    meta = _initial_meta(plan, previous, config_source, executor, workers, started)
    store.write_meta(meta)
    report = RunReport(
        str(out), "running", plan.configurations, plan.n_units, failed=list(plan.failures)
    )

    handlers = _start_logging(store, multiprocess=(executor == "processes"))
    ex = None
    bar = None
    clock = time.perf_counter()
    try:
        for failure in plan.failures:
            log.error("%s failed: %s", failure["unit"], failure["error"])
        log.info(
            "sweep %r: %d configurations in %d units to %s, %s with %d workers%s",
            plan.config.name,
            plan.configurations,
            plan.n_units,
            out,
            executor,
            workers,
            f", resuming ({len(done)} part files on disk)" if resume else "",
        )
        ex = make_executor(executor, plan, store, workers, scheduler, dask_processes)
        bar = Progress(plan.configurations, tty=progress)
        report.status = _schedule(plan, ex, done, report, bar, fail_fast)
    finally:
        if ex is not None:
            ex.shutdown(abandon=report.status == "running")
        if report.status == "running":  # an exception escaped the loop
            report.status = "crashed"
        report.seconds = time.perf_counter() - clock
        if bar is not None:
            bar.close()
        log.info(
            "sweep %s: %d units written (%d rows, %d bytes), %d already done, %d failed, in %.1f s",
            report.status,
            report.units_written,
            report.rows_written,
            report.bytes_written,
            report.units_skipped,
            len(report.failed),
            report.seconds,
        )
        meta.update(_final_meta(report, started))
        meta["runs"][-1].update(
            finished=_now(),
            status=report.status,
            units_written=report.units_written,
            rows_written=report.rows_written,
        )
        store.write_meta(meta)
        _stop_logging(handlers)
        store.upload_log()
    return report


def _schedule(
    plan: Plan, ex, done: set[str], report: RunReport, bar: Progress, fail_fast: bool
) -> str:
    """The scheduling loop; returns the run's status."""
    units = plan.units()
    retry: deque[Unit] = deque()
    kills: Counter[str] = Counter()
    in_flight: dict = {}
    stopping = interrupted = False
    restore = _sigterm_as_interrupt()

    def next_unit() -> Unit | None:
        if retry:
            return retry.popleft()
        for unit in units:
            if unit.path in done:
                report.units_skipped += 1
                report.rows_skipped += unit.rows
                bar.skip(unit.rows)
                continue
            return unit
        return None

    try:
        while True:
            try:
                # Units a broken pool lost are retried alone, so a unit that kills its worker
                # every time is told apart from the ones that merely shared the pool with it.
                suspects = any(u.id in kills for u in in_flight.values())
                window = 1 if (retry or suspects) else ex.workers
                while not stopping and len(in_flight) < window:
                    unit = next_unit()
                    if unit is None:
                        break
                    in_flight[ex.submit(unit)] = unit
                if not in_flight:
                    break
                finished, _ = ex.wait(set(in_flight), timeout=1.0)
                lost: list[Unit] = []
                for future in finished:
                    unit = in_flight.pop(future)
                    outcome = ex.outcome(future)
                    if isinstance(outcome, WorkerKilled):
                        lost.append(unit)
                    elif isinstance(outcome, Exception) or outcome.error:
                        error = (
                            outcome.error
                            if isinstance(outcome, UnitResult)
                            else f"{type(outcome).__name__}: {outcome}"
                        )
                        _fail(report, unit, error)
                        bar.fail()
                        if fail_fast and not stopping:
                            log.warning("--fail-fast: stopping after unit %s failed", unit.id)
                            stopping = True
                    else:
                        report.units_written += 1
                        report.rows_written += outcome.rows
                        report.bytes_written += outcome.bytes
                        bar.advance(outcome.rows)
                if lost and ex.restart_on_kill:
                    lost += list(in_flight.values())  # the whole pool went down with it
                    in_flight.clear()
                    _requeue(lost, kills, retry, report, bar)
                    log.warning(
                        "a worker was killed by the OS; rebuilding the pool and retrying %s",
                        ", ".join(u.id for u in lost),
                    )
                    ex.restart()
                elif lost:
                    for unit in lost:
                        _fail(
                            report,
                            unit,
                            "its worker was killed (SIGKILL or out of memory) on every try",
                        )
                        bar.fail()
                bar.tick()
            except KeyboardInterrupt:
                if not stopping:
                    stopping = interrupted = True
                    log.warning(
                        "interrupted: waiting for %d running units (interrupt again to "
                        "abandon them); every finished unit is kept",
                        len(in_flight),
                    )
                    if bar.tty:
                        bar.note(
                            "interrupted: finishing running units; press Ctrl-C again to "
                            "abandon them"
                        )
                else:
                    log.warning("interrupted again: abandoning %d running units", len(in_flight))
                    ex.shutdown(abandon=True)
                    in_flight.clear()
                    return "interrupted"
    finally:
        restore()
    if interrupted:
        return "interrupted"
    if report.failed:
        return "failed"
    return "complete"


def _requeue(lost: list[Unit], kills: Counter, retry: deque, report: RunReport, bar) -> None:
    for unit in lost:
        kills[unit.id] += 1
        if kills[unit.id] > MAX_RETRIES:
            _fail(
                report,
                unit,
                f"its worker was killed (SIGKILL or out of memory) {kills[unit.id]} times",
            )
            bar.fail()
        else:
            retry.append(unit)


def _fail(report: RunReport, unit: Unit, error: str) -> None:
    report.failed.append({"unit": unit.id, "path": unit.path, "rows": unit.rows, "error": error})
    log.error("unit %s failed: %s", unit.describe(), error)


def _sigterm_as_interrupt():
    """SIGTERM (a scheduler ending the job) stops the run as Ctrl-C does; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)


# --- existing results, resume -------------------------------------------------------------------


def _check_existing(store: Store, plan: Plan, resume: bool, overwrite: bool) -> dict | None:
    """Refuse to mix results: a dataset is overwritten only when asked, and resumed only when
    it was run with the same config and the plugins still give the same inputs."""
    previous = store.read_meta()
    if not store.has_results():
        return None
    if overwrite:
        log.info("--overwrite: removing the sweep in %s", store.url)
        store.clear()
        return None
    if not resume:
        raise SweepError(
            f"output {store.url}: already holds a sweep ({len(store.parts())} part files); "
            "use --resume to finish it or --overwrite to replace it"
        )
    if previous is None or "config" not in previous:
        raise SweepError(
            f"--resume: {store.url} has part files but no _sweep.json to check the "
            "config against; use --overwrite"
        )
    difference = config_difference(previous["config"], plan.config.as_dict())
    if difference:
        raise SweepError(
            f"--resume: {store.url} holds a sweep of another config: " + "; ".join(difference)
        )
    difference = config_difference(previous.get("plan", {}), plan.fingerprint())
    if difference:
        raise SweepError(
            f"--resume: {store.url} was run when the plugins gave other inputs: "
            + "; ".join(difference)
        )
    return previous


# --- _sweep.json ------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _initial_meta(
    plan: Plan, previous: dict | None, source: str, executor: str, workers: int, started: str
) -> dict:
    import numpy
    import pyarrow

    import sweep

    runs = list(previous.get("runs", [])) if previous else []
    runs.append(
        {
            "started": started,
            "finished": None,
            "status": "running",
            "executor": executor,
            "workers": workers,
        }
    )
    return {
        "name": plan.config.name,
        "status": "running",
        "started": previous.get("started", started) if previous else started,
        "finished": None,
        "config_source": source,
        "config": plan.config.as_dict(),
        "plan": plan.fingerprint(),
        "package": {"name": "va-sweep", "version": sweep.__version__},
        "plugins": plugin_versions(),
        "versions": {
            "python": sys.version.split()[0],
            "numpy": numpy.__version__,
            "pyarrow": pyarrow.__version__,
        },
        "runs": runs,
        "counts": {},
        "failed": [],
    }


def _final_meta(report: RunReport, started: str) -> dict:
    return {
        "status": report.status,
        "finished": _now(),
        "counts": {
            "configurations": report.configurations,
            "units": report.units,
            "units_done": report.units_written + report.units_skipped,
            "rows_done": report.rows_written + report.rows_skipped,
            "units_failed": len(report.failed),
            "bytes_written_this_run": report.bytes_written,
        },
        "failed": report.failed,
    }


def plugin_versions() -> list[dict]:
    """Each loaded plugin with the version of the distribution it comes from, and its file."""
    from sweep import __version__
    from sweep.plugins import pm

    try:
        owners = importlib.metadata.packages_distributions()
    except Exception:  # a broken installed distribution should not stop a sweep
        owners = {}
    out = []
    for name, plugin in pm.list_name_plugin():
        module = sys.modules.get(getattr(plugin, "__module__", "") or "", plugin)
        module_name = getattr(plugin, "__name__", None) or getattr(module, "__name__", name)
        top = str(module_name).split(".")[0]
        version = None
        if top in ("sweep", "sweep_plugins"):
            version = __version__
        elif owners.get(top):
            try:
                version = importlib.metadata.version(owners[top][0])
            except importlib.metadata.PackageNotFoundError:
                version = None
        source = getattr(plugin, "__file__", None) or getattr(module, "__file__", None)
        out.append({"name": name, "version": version, "source": source})
    return out


# --- logging ----------------------------------------------------------------------------------


class _OneLine(logging.Formatter):
    """The terminal gets one line per message, never a traceback (those go to ``_sweep.log``)."""

    def format(self, record: logging.LogRecord) -> str:
        return f"sweep: {record.levelname.lower()}: {record.getMessage()}"


class _TerminalHandler(logging.StreamHandler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Fanout(logging.Handler):
    """One handler for multiprocessing-logging to wrap, passing records to the real ones."""

    def __init__(self, handlers: list[logging.Handler]) -> None:
        super().__init__()
        self.handlers = handlers

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self.handlers:
            if record.levelno >= handler.level:
                handler.handle(record)

    def close(self) -> None:
        for handler in self.handlers:
            handler.close()
        super().close()


LOG_FORMAT = "%(asctime)s %(levelname)s [%(processName)s pid %(process)d] %(name)s: %(message)s"


def _start_logging(store: Store, multiprocess: bool) -> list[logging.Handler]:
    """``_sweep.log`` gets everything at INFO, stderr WARNING and up; with a process pool the
    handler is multiprocessing-logging's, installed before the pool forks so that every
    worker's records reach this process's one handler."""
    file_handler = logging.FileHandler(store.log_path(), encoding="utf-8")
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    file_handler.setLevel(logging.INFO)
    terminal = _TerminalHandler()
    terminal.setFormatter(_OneLine())
    terminal.setLevel(logging.WARNING)
    handler: logging.Handler = _Fanout([file_handler, terminal])
    if multiprocess:
        from multiprocessing_logging import MultiProcessingHandler

        handler = MultiProcessingHandler("sweep-log", sub_handler=handler)
    logger = logging.getLogger("sweep")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    handler._sweep_previous_level = previous_level  # restored by _stop_logging
    return [handler]


def _stop_logging(handlers: list[logging.Handler]) -> None:
    logger = logging.getLogger("sweep")
    for handler in handlers:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(getattr(handler, "_sweep_previous_level", logging.NOTSET))


# --- progress ---------------------------------------------------------------------------------


class Progress:
    """A tqdm bar (rate, ETA) on a terminal; otherwise a plain line every ``interval`` seconds.

    Rows a resumed run finds already done count toward the total but not the rate.
    """

    def __init__(
        self, total: int, tty: bool | None = None, interval: float = PROGRESS_INTERVAL
    ) -> None:
        self.total, self.interval = total, interval
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.done = self.skipped = self.failed = 0
        self.started = self.last = self.last_logged = time.monotonic()
        self.bar = None
        if self.tty:
            from tqdm import tqdm

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

    def skip(self, rows: int) -> None:
        self.skipped += rows
        if self.bar is not None:
            self.bar.update(rows)

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
            if self.failed:
                self.bar.set_postfix(failed=self.failed, refresh=False)

    def fail(self) -> None:
        self.failed += 1

    def note(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        finished = self.done + self.skipped
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

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            print(self.line(), file=sys.stderr, flush=True)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --- dry run ----------------------------------------------------------------------------------


def describe_plan(plan: Plan) -> str:
    """What ``sweep run --dry-run`` prints: counts and sizes, from the plan alone."""
    from sweep.model import granule_name

    cfg = plan.config
    rows = plan.configurations
    va = "; ".join(
        f"{granule_name(g)}: {','.join(map(str, plan.va_bits[g]))}" for g in cfg.granules
    )
    lines = [
        f"sweep {cfg.name!r}",
        f"memory maps:    {len(plan.memory_maps)}",
        f"granules:       {', '.join(granule_name(g) for g in cfg.granules)}",
        f"va_bits:        {cfg.va_bits if isinstance(cfg.va_bits, str) else 'list'} ({va})",
        f"layouts:        {', '.join(cfg.layouts)}",
        f"block_mappings: {', '.join(str(b).lower() for b in cfg.block_mappings)}",
        f"placement:      {', '.join(f'{k}={v}' for k, v in cfg.placement.items())}",
        f"configurations: {rows:,}",
        f"units:          {plan.n_units:,} (up to {plan.unit_rows:,} rows each, a part file each)",
        f"estimated size: {rows:,} rows, {_bytes(rows * MEMORY_BYTES_PER_ROW)} in memory, "
        f"about {_bytes(rows * DISK_BYTES_PER_ROW + plan.n_units * DISK_BYTES_PER_PART)} on "
        "disk (zstd)",
    ]
    for failure in plan.failures:
        lines.append(f"would fail:     {failure['unit']}: {failure['error']}")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n} B"
