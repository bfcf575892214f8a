"""The driver: runs a sweep's units on an executor and keeps count, all night if need be.

It schedules units and nothing else: :mod:`sweep.run.task` says what a unit is, the builder builds
its rows, :mod:`sweep.store.parts` writes them, :mod:`sweep.store.manifest` says which are whole,
:mod:`sweep.run.records` keeps ``_sweep.json`` and :mod:`sweep.run.progress` tells the operator.
Its job is to finish and lose nothing:

- one sweep per folder: the folder's lock (:mod:`sweep.run.lock`) is held for the whole run;
- at most one unit per worker is in flight, so units are generated as they are needed and a
  billion-configuration sweep runs in flat memory;
- a unit whose plugin raises is recorded as failed and the sweep goes on (``fail_fast`` stops
  it instead); the run's report lists every failed unit;
- a worker killed by the OS breaks the process pool: the pool is rebuilt and the units it was
  running are retried one at a time, so a unit that kills its worker every time is found and
  recorded as failed while its neighbours finish;
- a full disk (or quota, or a read-only file system) stops the run at once, keeping every unit
  written; Ctrl-C (or SIGTERM) stops submitting and waits for the running units, a second one
  abandons them. ``resume`` runs only the units with no whole part file.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import threading
import time
from dataclasses import dataclass, replace

from sweep.core.errors import SweepError
from sweep.plan.config import (
    SweepConfig,
    config_difference,
)
from sweep.run.executors import EXECUTORS, make_executor
from sweep.run.lock import FolderLock
from sweep.run.progress import Progress, start_logging, stop_logging
from sweep.run.records import (
    code_versions,
    finish_meta,
    now,
    plan_plugins,
    recorded_versions,
    start_meta,
    version_difference,
)
from sweep.run.scheduling import OutputFull, RunReport, Scheduler, write_guarded
from sweep.run.task import Plan, make_plan
from sweep.store.manifest import Manifest
from sweep.store.parts import (
    META_FILE,
    Store,
)

log = logging.getLogger("sweep.run.driver")

WORKERS_PER_CPU = 4
"""``--workers`` beyond this many per CPU only adds memory and switching: it is capped."""


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep (the ``sweep run`` options); ``progress`` None picks by ``isatty``."""

    out: str = "results"
    workers: int | None = None
    resume: bool = False
    overwrite: bool = False
    fail_fast: bool = False
    executor: str = "processes"
    scheduler: str | None = None
    progress: bool | None = None
    config_source: str = ""
    dask_processes: bool = True
    allow_version_change: bool = False

    def check(self) -> None:
        if self.resume and self.overwrite:
            raise SweepError("--resume and --overwrite: choose one")
        if self.executor not in EXECUTORS:
            raise SweepError(f"--executor: {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.executor == "dask" and not self.scheduler:
            raise SweepError("--executor dask: needs --scheduler tcp://host:8786")
        if self.scheduler and self.executor != "dask":
            raise SweepError(
                f"--scheduler {self.scheduler}: used only with --executor dask "
                f"(--executor {self.executor} starts its own workers)"
            )
        if self.workers is not None and self.workers < 1:
            raise SweepError(f"--workers: {self.workers} must be at least 1")


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_sweep(config: SweepConfig, options: RunOptions | None = None, /, **fields) -> RunReport:
    """Run every unit of ``config`` into the dataset at ``options.out`` (a path or an fsspec
    URL); ``fields`` change single options (``run_sweep(config, out="x", workers=2)``)."""
    options = replace(options or RunOptions(), **fields)
    options.check()
    store = Store(options.out)
    plan = make_plan(config, base_dir=os.path.dirname(options.config_source) or None)
    _refuse_foreign_folder(store)
    lock = FolderLock(store).acquire()
    try:
        return _run_locked(plan, store, options)
    finally:
        lock.release()


def _run_locked(plan: Plan, store: Store, options: RunOptions) -> RunReport:
    """The run, the folder locked: units scheduled onto the executor, then, however it ended,
    workers stopped, temporaries cleaned, the manifest, ``_sweep.json`` and log written."""
    previous = _check_existing(store, plan, options)
    store.remove_temporaries()  # ours, from a killed run: the lock says none is live
    manifest = Manifest.load(store) if options.resume else Manifest()
    handlers = start_logging(store)
    ex = bar = meta = None
    report = RunReport(
        str(options.out), "running", plan.configurations, plan.n_units, failed=list(plan.failures)
    )
    clock = time.perf_counter()
    hangup = Hangup()
    try:
        whole = _whole_parts(store, manifest) if options.resume else {}
        workers = _workers(options, plan.n_units - len(whole))
        started = now()
        meta = start_meta(plan, previous, options.config_source, options.executor, workers, started)
        write_guarded(store.write_meta, meta)
        _log_start(plan, options, workers, len(whole))
        bar = Progress(plan.configurations, tty=options.progress, failed=len(plan.failures))
        if options.fail_fast and plan.failures:
            log.warning(
                "--fail-fast: %d units failed while planning; none is run", len(plan.failures)
            )
            report.status = "failed"
        else:
            ex = make_executor(
                options.executor, plan, store, workers, options.scheduler, options.dask_processes
            )
            scheduler = Scheduler(plan, ex, store, manifest, whole, report, bar, options.fail_fast)
            report.status = scheduler.run()
    except OutputFull as exc:
        report.status, report.reason = "stopped", str(exc)
    except KeyboardInterrupt:  # before or after the scheduling loop, which takes its own
        report.status = "interrupted"
    finally:
        hangup.restore(report)
        settled = report.status in ("complete", "failed")
        if ex is not None:
            ex.shutdown(abandon=not settled)
        if settled or options.executor == "processes":  # no worker of ours is left writing
            _clean(store)
        if report.status == "running":  # an exception escaped the loop
            report.status = "crashed"
        report.seconds = time.perf_counter() - clock
        if bar is not None:
            bar.close(last_line=report.status != "stopped")  # that ends in one line
        _finish(store, manifest, report, meta)
        stop_logging(handlers)
        try:
            store.upload_log()
        except OSError as exc:
            log.debug("the log could not be uploaded: %s", exc)
    return report


class Hangup:
    """SIGHUP (an ssh session dropped, a terminal closed) stops the run as Ctrl-C does, so
    ``_sweep.json`` says "interrupted" and why, instead of the process dying mid-record."""

    def __init__(self) -> None:
        self.seen = False
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGHUP, self._handle)

    def _handle(self, signum, frame) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def restore(self, report: RunReport) -> None:
        """The previous handler back; a hangup seen is the run's reason, in the log."""
        if self.previous is not None:
            signal.signal(signal.SIGHUP, self.previous)
            self.previous = None
        if self.seen:
            report.reason = report.reason or "the terminal hung up (SIGHUP)"
            log.warning("%s: stopped as for Ctrl-C, keeping every finished unit", report.reason)


def _log_start(plan: Plan, options: RunOptions, workers: int, whole: int) -> None:
    """The log's first lines: units that failed while planning, then what runs where."""
    for failure in plan.failures:  # the log file; the terminal gets them once, at the end
        log.info("%s failed: %s", failure["unit"], failure["error"])
    if plan.failures:
        log.warning("%d units failed while planning (listed at the end)", len(plan.failures))
    log.info(
        "sweep %r: %d configurations in %d units to %s, %s with %d workers%s",
        plan.config.name,
        plan.configurations,
        plan.n_units,
        options.out,
        options.executor,
        workers,
        f", resuming ({whole} whole part files)" if options.resume else "",
    )


def _clean(store: Store) -> None:
    """Remove the temporaries of workers killed mid-write (never a reason to fail the run)."""
    try:
        store.remove_temporaries()
    except OSError as exc:
        log.info("temporary files not removed: %s", exc)


def _finish(store: Store, manifest: Manifest, report: RunReport, meta: dict | None) -> None:
    """Record the end: the manifest, then ``_sweep.json``; on a full disk, one line, no more."""
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
    try:
        write_guarded(manifest.flush, store, True)
    except OutputFull as exc:  # the parts it misses are written again by --resume
        report.status, report.reason = "stopped", report.reason or str(exc)
    if meta is None:
        return
    try:
        write_guarded(store.write_meta, finish_meta(meta, report))
    except OutputFull as exc:
        report.status, report.reason = "stopped", report.reason or str(exc)


def _workers(options: RunOptions, units_to_run: int) -> int:
    """``--workers`` (default: the CPUs), capped at the units to run and at
    ``WORKERS_PER_CPU`` per CPU, saying so."""
    cpus = default_workers()
    workers = cpus if options.workers is None else options.workers
    if options.executor == "dask":
        return workers  # the cluster decides
    cap = max(1, min(units_to_run, WORKERS_PER_CPU * cpus))
    if workers > cap:
        why = (
            f"{units_to_run} units to run"
            if cap == max(1, units_to_run)
            else f"{WORKERS_PER_CPU} per CPU, {cpus} CPUs"
        )
        if options.workers is not None:
            log.warning("--workers %d: capped at %d (%s)", workers, cap, why)
        workers = cap
    return workers


# --- existing results, resume -------------------------------------------------------------------


def _refuse_foreign_folder(store: Store) -> None:
    """``--out`` is the sweep's own: a folder holding other files (and no sweep) is refused."""
    try:
        foreign = store.foreign_file()
        is_sweep = store.exists(META_FILE) or store.has_results()
    except OSError as exc:
        raise SweepError(f"output {store.url}: cannot be read ({exc.strerror or exc})") from None
    if foreign is not None and not is_sweep:
        raise SweepError(
            f"output {store.url}: not empty and not a sweep (it holds {foreign!r}); "
            "choose a new or empty folder"
        )


def _check_existing(store: Store, plan: Plan, options: RunOptions) -> dict | None:
    """Refuse to mix results: a dataset is overwritten only when asked, and resumed only when
    it was run with the same config, the plugins still give the same inputs and the code that
    wrote it is the same (unless ``allow_version_change``)."""
    previous = store.read_meta()
    if not store.has_results():
        return previous if options.resume else None
    if options.overwrite:
        log.info("--overwrite: removing the sweep in %s", store.url)
        store.clear()
        return None
    if not options.resume:
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
            f"--resume: {store.url} holds a sweep of another config: {'; '.join(difference)}; "
            f"`sweep run --out {shlex.quote(str(store.url))} --resume` (no CONFIG) resumes it as "
            "it was started"
        )
    difference = config_difference(previous.get("plan", {}), plan.fingerprint())
    if difference:
        raise SweepError(
            f"--resume: {store.url} was run when the plugins gave other inputs: "
            + "; ".join(difference)
        )
    used = plan_plugins(plan)
    difference = version_difference(recorded_versions(previous), code_versions(), used)
    if difference and not options.allow_version_change:
        raise SweepError(
            f"--resume: {store.url} was written by other code: {'; '.join(difference)} "
            "(--allow-version-change mixes them; --overwrite starts again)"
        )
    if difference:
        log.warning("--allow-version-change: resuming across %s", "; ".join(difference))
    return previous


def _whole_parts(store: Store, manifest: Manifest) -> dict[str, int]:
    """The part files that can be believed, with their rows; every other one is named and
    removed (its unit runs again)."""
    if manifest.problem:
        log.warning("%s: %s; every part is written again", store.url, manifest.problem)
    whole, bad = manifest.sort_parts(store)
    for rel, reason in bad.items():
        log.warning("part %s: %s; writing it again", rel, reason)
        store.delete(rel)
    manifest.forget([rel for rel in list(manifest.parts) if rel not in whole])
    return whole
