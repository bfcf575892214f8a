"""Dask distributed as an executor: units run on a cluster's workers, wherever they are.

A Dask worker shares nothing with the sweep's process and may die or be replaced at any time,
so each task carries all it needs:

- the plan travels with every task as pickled bytes and its digest (a few KiB); a worker keeps
  the last few it unpickled, by digest. Nothing lives only on some workers, so no result is
  lost with its holders (a plan scattered once was cancelled for every unit when the workers
  holding it died; issue 13);
- the names of the plugins loaded in the sweep's process: the worker loads the same ones by
  name (built-ins and entry points), and a unit on a worker that lacks one fails naming it. The
  executor asks every worker up front, so a missing plugin is one line before any work;
- a future lost with its worker (``KilledWorker`` after Dask's own retries, a cancelled future)
  comes back as :class:`~sweep.run.executors.WorkerKilled`, which the driver retries a bounded
  number of times like a unit whose pool process was killed.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import os
import pickle
import socket
import threading
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from sweep.core.errors import SweepError
from sweep.plan import plugins
from sweep.run.executors import UnitResult, WorkerKilled, run_unit

if TYPE_CHECKING:
    from sweep.run.task import Plan, Unit
    from sweep.store.parts import Store

log = logging.getLogger("sweep.worker")

# --- the worker side ---------------------------------------------------------------------------

NO_WORKER_SECONDS = 300.0
"""A run whose cluster has had no worker this long stops, keeping every finished unit."""

_PLANS: OrderedDict[str, Plan] = OrderedDict()
_PLANS_KEPT = 2
_PLUGINS_LOCK = threading.Lock()


def plan_payload(plan: Plan) -> tuple[bytes, str]:
    """The plan as bytes and their digest: what every task carries."""
    blob = pickle.dumps(plan, protocol=pickle.HIGHEST_PROTOCOL)
    return blob, hashlib.blake2b(blob, digest_size=16).hexdigest()


def _plan(blob: bytes, digest: str) -> Plan:
    plan = _PLANS.get(digest)
    if plan is None:
        plan = _PLANS[digest] = pickle.loads(blob)
        while len(_PLANS) > _PLANS_KEPT:
            _PLANS.popitem(last=False)
    _PLANS.move_to_end(digest)
    return plan


def loaded_plugins() -> list[str]:
    """Names of the plugins registered in this process (blocked names excluded)."""
    return plugins.loaded()


def missing_plugins(names: list[str]) -> list[str]:
    """Load exactly the plugins ``names`` here, by name (a worker inherits none of the sweep's
    process); returns those that cannot be loaded on this machine."""

    wanted = sorted(names)
    with _PLUGINS_LOCK:
        if plugins.loaded() == wanted:
            return []  # this worker runs in the sweep's process, or loaded them already
        return plugins.load_exactly(wanted)


def _where() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def _probe(names: list[str]) -> list[str]:
    """Run once on every worker at the start: the plugins it cannot load."""
    return missing_plugins(names)


def run_dask_unit(
    blob: bytes, digest: str, plugins: list[str], store: Store, unit: Unit
) -> UnitResult:
    """The task: load the sweep's plugins and plan here, then build and write the unit."""
    missing = missing_plugins(plugins)
    if missing:
        return UnitResult(
            unit.id,
            unit.path,
            unit.rows,
            error=f"plugin(s) {', '.join(missing)} not installed on worker {_where()}",
            worker=_where(),
        )
    return run_unit(unit, _plan(blob, digest), store)


# --- the sweep's side --------------------------------------------------------------------------


class DaskExecutor:
    """Dask distributed: a scheduler at ``scheduler`` (``tcp://host:8786``) or a LocalCluster.

    Dask moves a task off a worker that died; after ``distributed.scheduler.allowed-failures``
    deaths it gives up with ``KilledWorker``, and the driver retries the unit itself.
    """

    restart_on_kill = False
    """Dask replaces dead workers itself: the driver only resubmits the lost units."""

    def __init__(
        self,
        plan: Plan,
        store: Store,
        workers: int,
        scheduler: str | None = None,
        processes: bool = True,
    ) -> None:
        try:
            from distributed import Client, LocalCluster  # lazy: the [dask] extra
        except ImportError:
            raise SweepError(
                "executor dask: needs dask distributed (pip install 'va-sweep[dask]')"
            ) from None
        self.store = store
        self.cluster = None
        self.where = scheduler or "a local Dask cluster"
        if scheduler:
            try:
                self.client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError) as exc:
                raise SweepError(f"--scheduler {scheduler}: cannot connect: {exc}") from None
        else:
            self.cluster = LocalCluster(  # its workers' own logs: only what is critical, since
                n_workers=workers,  # the driver reports every failure and loss itself, and
                threads_per_worker=1,  # a worker still beating as the scheduler closes at the
                processes=processes,  # end printed "Failed to communicate with scheduler
                dashboard_address=None,  # during heartbeat" tracebacks (issue 21)
                silence_logs=logging.CRITICAL,
            )
            self.client = Client(self.cluster)
        try:
            self.blob, self.digest = plan_payload(plan)
            self.plugins = loaded_plugins()
            self._check_workers()
        except BaseException:
            self.shutdown()
            raise
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})) or workers)
        self._attempt = 0
        self._idle_since: float | None = None

    def _check_workers(self) -> None:
        """Every worker connected now must load the sweep's plugins: one line if one cannot."""
        try:
            answers = self.client.run(_probe, self.plugins, on_error="return")
        except (OSError, TimeoutError) as exc:
            raise SweepError(f"{self.where}: cannot reach the workers: {exc}") from None
        for worker, missing in sorted(answers.items()):
            if isinstance(missing, BaseException):
                raise SweepError(
                    f"{self.where}: worker {worker} cannot load the plugins: "
                    f"{type(missing).__name__}: {missing}"
                )
            if missing:
                raise SweepError(
                    f"{self.where}: worker {worker} cannot load plugin(s) {', '.join(missing)} "
                    "(install the same plugins, as entry points in group 'sweep', on every worker)"
                )

    def submit(self, unit: Unit):
        if self.client.status not in ("running", "connecting"):
            raise SweepError(f"{self.where}: the Dask client is {self.client.status}")
        self._attempt += 1
        return self.client.submit(
            run_dask_unit,
            self.blob,
            self.digest,
            self.plugins,
            self.store,
            unit,
            key=f"sweep-unit-{unit.id}-{self._attempt}",
            pure=False,
        )

    def wait(self, futures: set, timeout: float) -> tuple[set, set]:
        """The finished futures and the others; a cancelled one counts as finished (Dask's
        ``wait`` raises ``FuturesCancelledError`` for it instead). A cluster left with no
        worker for ``NO_WORKER_SECONDS`` stops the run (it would wait for ever)."""
        from distributed import wait  # lazy: the [dask] extra

        try:
            wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, cf.CancelledError):
            pass
        done = {f for f in futures if f.status != "pending"}
        if done or self.client.scheduler_info().get("workers"):
            self._idle_since = None
        elif self._idle_since is None:
            self._idle_since = time.monotonic()
        elif time.monotonic() - self._idle_since > NO_WORKER_SECONDS:
            raise SweepError(
                f"{self.where}: no Dask worker for {NO_WORKER_SECONDS:.0f} s; "
                "start workers, then run again with --resume"
            )
        return done, set(futures) - done

    @staticmethod
    def outcome(future) -> UnitResult | Exception:
        """The unit's result, or ``WorkerKilled`` when Dask lost it with a worker."""
        from distributed import KilledWorker  # lazy: the [dask] extra

        try:
            return future.result()
        except (KilledWorker, cf.CancelledError) as exc:
            return WorkerKilled(f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a failure outside run_unit's own guard (e.g. unpickling)
            return exc

    def restart(self) -> None:
        """Dask replaces dead workers itself."""

    def shutdown(self, abandon: bool = False) -> None:
        """The local cluster is closed before the client: its workers stop before its
        scheduler (``SpecCluster.close``), so none beats against a closed scheduler."""
        if self.cluster is not None:
            self.cluster.close()
        self.client.close()
