"""The Dask executor on in-process clusters: lost futures, a cluster with no worker, and the
plugins a worker loads by name. tests/test_cluster.py runs real worker processes and kills them.
"""

from __future__ import annotations

import json
import os
import signal

import pytest
from small_sweep import small_config, write_map

from sweep.core.errors import SweepError
from sweep.run.executors import WorkerKilled
from sweep.run.task import make_plan
from sweep.store.parts import Store

distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from sweep.run import executors_dask  # noqa: E402
from sweep.run.driver import run_sweep  # noqa: E402
from sweep.run.executors_dask import DaskExecutor, loaded_plugins, missing_plugins  # noqa: E402


@pytest.fixture
def config(tmp_path):
    return small_config(write_map(tmp_path))


def test_a_cancelled_future_is_a_lost_unit_not_a_crash(config, tmp_path):
    """Dask's own ``wait`` raises ``FuturesCancelledError`` for a cancelled future (what crashed
    the sweep when the plan's holders died); the executor counts it finished and lost, which
    the driver retries."""
    plan = make_plan(config)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        ex = DaskExecutor(plan, Store(str(tmp_path / "out")), 1, cluster.scheduler_address)
        try:
            future = ex.submit(next(plan.units()))
            ex.client.cancel(future)
            with pytest.raises(distributed.client.FuturesCancelledError):
                distributed.wait([future], timeout=10)
            done, pending = ex.wait({future}, timeout=10)
            assert (done, pending) == ({future}, set())
            outcome = ex.outcome(future)
            assert isinstance(outcome, WorkerKilled)
            assert "cancelled" in str(outcome)
        finally:
            ex.shutdown()


def _kill_this_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_worker_comes_back_as_a_lost_unit(config, tmp_path):
    """A task that kills its worker process: with no retry allowed, Dask gives up with
    ``KilledWorker``, which the executor turns into ``WorkerKilled``."""
    plan = make_plan(config)
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
    ):
        ex = DaskExecutor(plan, Store(str(tmp_path / "out")), 1, cluster.scheduler_address)
        try:
            future = ex.client.submit(_kill_this_process, pure=False)
            done, pending = set(), {future}
            for _ in range(60):
                done, pending = ex.wait(pending, timeout=1.0)
                if done:
                    break
            assert done == {future}
            outcome = ex.outcome(future)
            assert isinstance(outcome, WorkerKilled)
            assert "KilledWorker" in str(outcome)
        finally:
            ex.shutdown()


def test_a_cluster_with_no_worker_stops_the_run_in_one_line(config, tmp_path, monkeypatch):
    monkeypatch.setattr(executors_dask, "NO_WORKER_SECONDS", 1.0)
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None) as cluster:
        address = cluster.scheduler_address
        with pytest.raises(SweepError) as stopped:
            run_sweep(
                config,
                out=str(tmp_path / "out"),
                executor="dask",
                scheduler=address,
                progress=False,
            )
    assert str(stopped.value) == (
        f"{address}: no Dask worker for 1 s; start workers, then run again with --resume"
    )
    meta = json.loads((tmp_path / "out" / "_sweep.json").read_text())
    assert meta["status"] == "crashed"
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_a_worker_loads_exactly_the_plugins_it_is_sent(config):
    """What a fresh worker does with the sweep's plugin names: load those (and only those) by
    name, and name the ones it cannot load."""
    from sweep.plan.plugins import registry, reset

    everything = loaded_plugins()
    assert "sweep_plugins.placements" in everything
    fewer = [name for name in everything if name != "sweep_plugins.placements"]
    try:
        assert missing_plugins(fewer) == []
        assert loaded_plugins() == fewer
        assert "stride" not in registry().placements  # that plugin is not there any more
        assert missing_plugins([*fewer, "not-installed-here"]) == ["not-installed-here"]
        assert missing_plugins(everything) == []
        assert loaded_plugins() == everything
        assert "stride" in registry().placements
    finally:
        reset()
