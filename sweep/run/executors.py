"""Where units run: a local process pool here, Dask distributed (:mod:`sweep.run.executors_dask`)
for more than one machine; :data:`EXECUTORS` names them all.

Both run the same task, :func:`run_unit`, which builds a unit's rows and writes its part file,
so a dataset is the same whichever executor wrote it. Both offer the small surface the driver's
scheduling loop needs: ``submit(unit)``, ``wait(futures, timeout)``, ``outcome(future)``,
``restart()``, ``shutdown(abandon)``.
"""

from __future__ import annotations

import concurrent.futures as cf
import ctypes
import errno
import gc
import logging
import multiprocessing
import os
import resource
import signal
import time
from collections.abc import Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pyarrow as pa

from sweep.core.env import env_bytes
from sweep.core.errors import SweepError
from sweep.plan import plugins
from sweep.run.lock import close_inherited
from sweep.run.progress import worker_logging
from sweep.run.task import Plan, Unit, unit_rows
from sweep.store.parts import Store, SummaryInfo

log = logging.getLogger("sweep.worker")


@dataclass
class UnitResult:
    """What a worker reports for one unit: rows, bytes and checksum written, or its error.

    ``fatal`` marks an error of the output itself (disk full, quota, read-only): the sweep stops.
    """

    unit_id: str
    path: str
    rows: int
    bytes: int = 0
    seconds: float = 0.0
    error: str | None = None
    worker: str = ""
    sha256: str = ""
    fatal: bool = False
    part_rows: int = 0
    """Rows in the part file (``rows`` counts configurations: for every-page, pages)."""
    summary: SummaryInfo | None = None
    """The part's summary file, for its manifest entry."""


class WorkerKilled(Exception):
    """The process running a unit died without reporting (SIGKILL, the OOM killer)."""


OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
"""Errors that no retry fixes: every later unit would fail alike, so the sweep stops at once."""


def output_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS


# --- the worker side ---------------------------------------------------------------------------

_STATE: dict = {}


def init_worker(plan: Plan, store: Store, ignore_sigint: bool = True) -> None:
    """Worker initializer: load the plan's plugins by name (a Dask worker, or a spawned process,
    inherits none), remember the plan and store, and leave Ctrl-C to the parent."""
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    keep_freed_memory()
    load_plugins_by_name(plan.plugins)
    if not store.local:  # a forked copy of the parent's fsspec client is not fork-safe
        store = Store(store.url)
    _STATE["plan"], _STATE["store"] = plan, store


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
KEEP_FREED_BYTES = 256 << 20
"""Freed memory a worker keeps for its next arrays, at most (its peak stays what it was)."""
MMAP_FROM_BYTES = 32 << 20


def keep_freed_memory() -> None:
    """Let glibc's malloc keep freed memory for reuse rather than hand it back to the OS.

    The builder allocates and frees many arrays of about a megabyte per chunk; by default glibc
    returns freed heap tops to the OS and the next array faults its pages in again, which made
    numpy operations up to 10x slower than their arithmetic (measured: 0.9 ms against 0.07 ms
    for one operation on 2^17 rows; ``bench/bench_driver.py``). Arrays above
    ``MMAP_FROM_BYTES`` still get pages of their own, returned when freed. No-op off glibc.
    """
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_FROM_BYTES)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES)
    except (OSError, AttributeError):  # not glibc
        pass


def load_plugins_by_name(names: Iterable[str]) -> None:
    """Make the same plugins load here as in the parent (no-op where they already have)."""
    plugins.load_exactly(names)


def run_unit(unit: Unit, plan: Plan | None = None, store: Store | None = None) -> UnitResult:
    """Build one unit and write its part file; a plugin's exception becomes the unit's error."""
    plan = plan or _STATE["plan"]
    store = store or _STATE["store"]
    worker = f"{multiprocessing.current_process().name} pid {os.getpid()}"
    started = time.perf_counter()
    try:
        rows = unit_rows(plan, unit)  # a table, or every-page's stream of them (part_rows None)
        if isinstance(rows, pa.Table) and unit.part_rows not in (None, rows.num_rows):
            raise RuntimeError(f"built {rows.num_rows} rows for a unit of {unit.part_rows}")
        info = store.write_part(unit.path, rows)
    except Exception as exc:
        fatal = output_error(exc)
        log.error(
            "unit %s failed on %s: %s: %s",
            unit.id,
            worker,
            type(exc).__name__,
            exc,
            exc_info=not fatal,
        )
        return UnitResult(
            unit.id,
            unit.path,
            unit.rows,
            error=f"{type(exc).__name__}: {exc}",
            worker=worker,
            fatal=fatal,
        )
    seconds = time.perf_counter() - started
    log.info(
        "unit %s: %d rows, %d bytes in %.2f s on %s",
        unit.describe(),
        unit.rows,
        info.bytes,
        seconds,
        worker,
    )
    return UnitResult(
        unit.id,
        unit.path,
        unit.rows,
        info.bytes,
        seconds,
        worker=worker,
        sha256=info.sha256,
        part_rows=info.rows,
        summary=info.summary,
    )


def _ping() -> int:
    return os.getpid()


# --- local processes ---------------------------------------------------------------------------

MAX_STARTS = 5
"""Tries at starting a pool whose new workers keep being killed, before the run gives up."""
STOP_GRACE = 5.0
"""Seconds a pool's workers get to exit (after SIGTERM, or after their last unit) before SIGKILL."""


def _init_pool_worker(plan: Plan, store: Store) -> None:
    """A forked pool worker: SIGTERM kills it (the driver's handler, inherited by a pool forked
    mid-run, would turn it into KeyboardInterrupt and keep it alive, blocked), Ctrl-C and SIGHUP
    are left to the driver (which lets running units finish), it holds no copy of the folder's
    lock, logs to ``_sweep.log`` alone, and dies with the driver."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a hangup is the driver's, as Ctrl-C is
    close_inherited()
    worker_logging()
    _die_with_parent()
    limit_memory()
    init_worker(plan, store, ignore_sigint=True)


ENV_WORKER_MEMORY = "SWEEP_WORKER_MEMORY"
"""Bytes of data a pool worker may map (``4G``): past it an allocation fails with MemoryError
and the unit fails, naming it, instead of the OS killing processes. Unset: no limit."""


def limit_memory() -> None:
    """``RLIMIT_DATA`` of this worker from :data:`ENV_WORKER_MEMORY`, if set."""
    limit = env_bytes(ENV_WORKER_MEMORY, 0)
    if limit:
        resource.setrlimit(
            resource.RLIMIT_DATA, (limit, resource.getrlimit(resource.RLIMIT_DATA)[1])
        )


def _die_with_parent() -> None:
    """Linux's PR_SET_PDEATHSIG: SIGKILL this worker when the driver dies, however it dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the worker notices the closed queue instead
        pass
    if os.getppid() == 1:  # the driver died before the call above
        os._exit(1)


class ProcessExecutor:
    """A ``fork`` process pool (explicit context; forked before the pool's own manager thread).

    Under fork the workers inherit the plugins and the plan; a worker that dies breaks the pool
    (``BrokenProcessPool``), and the driver rebuilds it with :meth:`restart`, which never waits
    on a worker that may be blocked: every old worker is terminated, joined with a bound, and
    killed if it is still there.
    """

    restart_on_kill = True

    def __init__(self, plan: Plan, store: Store, workers: int) -> None:
        env_bytes(ENV_WORKER_MEMORY, 0)  # a bad value: one line here, not a broken pool
        self.plan, self.store, self.workers = plan, store, workers
        self.context = multiprocessing.get_context("fork")
        self.pool: cf.ProcessPoolExecutor | None = None
        self.processes: list = []
        self._start()

    def _start(self) -> None:
        # Garbage the driver holds in reference cycles is collected here, not in a forked
        # worker: a DuckDB connection of an earlier reader in the same process, destroyed in a
        # worker, crashed it (its threads are not forked).
        gc.collect()
        self.pool = cf.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=self.context,
            initializer=_init_pool_worker,
            initargs=(self.plan, self.store),
        )
        self.processes = []
        # Fork every worker now, before the driver starts any thread of its own.
        ping = self.pool.submit(_ping)
        self.processes = list(self.pool._processes.values())
        ping.result()

    def _start_again(self) -> None:
        """A new pool; a worker killed while it starts (as the old one's were) means another."""
        for _ in range(MAX_STARTS):
            try:
                self._start()
                return
            except BrokenProcessPool:
                log.warning("a new worker was killed as the pool started; starting it again")
                self.shutdown(abandon=True)
        raise SweepError(f"the process pool could not be started {MAX_STARTS} times running")

    def pids(self) -> list[int]:
        """The live workers' process ids."""
        return [p.pid for p in self.processes if p.is_alive()]

    def submit(self, unit: Unit) -> cf.Future:
        try:
            return self.pool.submit(run_unit, unit)
        except BrokenProcessPool as exc:  # a worker died while idle: the driver rebuilds it
            future: cf.Future = cf.Future()
            future.set_exception(exc)
            return future

    @staticmethod
    def wait(futures: set, timeout: float) -> tuple[set, set]:
        done, pending = cf.wait(futures, timeout=timeout, return_when=cf.FIRST_COMPLETED)
        return done, pending

    @staticmethod
    def outcome(future) -> UnitResult | Exception:
        """The unit's result, or ``WorkerKilled`` when its process died under it."""
        try:
            return future.result()
        except BrokenProcessPool as exc:
            return WorkerKilled(str(exc))
        except Exception as exc:  # a failure outside run_unit's own guard (e.g. pickling)
            return exc

    def restart(self) -> None:
        self.shutdown(abandon=True)
        self._start_again()

    def shutdown(self, abandon: bool = False) -> None:
        """Stop the pool: after its last unit (``abandon=False``: idle workers exit by
        themselves), or at once. Bounded either way."""
        if self.pool is None:
            return
        pool, processes, self.pool = self.pool, self.processes, None
        pool.shutdown(wait=False, cancel_futures=True)
        if not abandon:
            _join(processes, STOP_GRACE)
        for process in processes:
            if process.is_alive():
                process.terminate()
        _join(processes, STOP_GRACE)
        for process in processes:
            # is_alive() can say yes for a moment while the pool's own thread reaps the process
            process.join(0.1)
            if process.is_alive():
                log.info("worker pid %d outlived SIGTERM; killing it", process.pid)
                process.kill()
        _join(processes, STOP_GRACE)


def _join(processes: list, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))


EXECUTORS = ("processes", "dask", "dask-local")
"""Every executor's name: the command line's choices and the driver's check."""


def make_executor(
    kind: str,
    plan: Plan,
    store: Store,
    workers: int,
    scheduler: str | None = None,
    dask_processes: bool = True,
):
    """``processes`` (the default), ``dask`` (with ``scheduler``) or ``dask-local``; the name
    and the scheduler were checked by ``RunOptions.check`` before any work."""
    if kind == "processes":
        return ProcessExecutor(plan, store, workers)
    from sweep.run.executors_dask import DaskExecutor  # lazy: distributed is an optional extra

    if kind == "dask":
        return DaskExecutor(plan, store, workers, scheduler=scheduler)
    return DaskExecutor(plan, store, workers, processes=dask_processes)
