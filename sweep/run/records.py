"""``_sweep.json``: what a sweep is (config, plan, versions) and the history of its runs.

Written by the driver; read by :func:`sweep.store.record.read_meta`, for the readers too.
Each run appends an entry with the versions it ran with and its end state; a run that was killed
(its entry still says "running" when the next run takes the folder's lock) is marked "killed".
``--resume`` refuses to mix parts written by other code (:func:`version_difference`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import sys
from datetime import UTC, datetime

import numpy
import pyarrow

from sweep import __version__
from sweep.plan.plugins import pm, registry
from sweep.run.task import ALGORITHM_VERSION, Plan
from sweep.store.record import read_meta  # noqa: F401 (the driver reads it here too)

COMPARED_VERSIONS = ("package", "plugins", "pyarrow", "algorithm")
"""What ``--resume`` holds equal: the code that decides a part's bytes and rows."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_versions() -> dict:
    """The versions a run records: the compared ones and, for the record, Python and numpy."""
    return {
        "package": __version__,
        "plugins": {p["name"]: p["version"] for p in plugin_versions()},
        "pyarrow": pyarrow.__version__,
        "algorithm": ALGORITHM_VERSION,
        "python": sys.version.split()[0],
        "numpy": numpy.__version__,
    }


def version_difference(previous: dict, current: dict, used: set[str] | None = None) -> list[str]:
    """``name: old -> new`` for each compared version that changed (plugins one by one; with
    ``used``, only the plugins that feed the sweep: installing or breaking an unrelated one
    changes none of its rows)."""
    out = []
    for key in COMPARED_VERSIONS:
        old, new = previous.get(key), current.get(key)
        if key == "plugins" and isinstance(old, dict) and isinstance(new, dict):
            names = set(old) | set(new)
            for name in sorted(names if used is None else names & used):
                if old.get(name, "absent") != new.get(name, "absent"):
                    out.append(
                        f"plugin {name}: {old.get(name, 'absent')} -> {new.get(name, 'absent')}"
                    )
        elif old != new:
            out.append(f"{key}: {old} -> {new}")
    return out


def plan_plugins(plan: Plan) -> set[str]:
    """The plugins that feed ``plan``: those registering its granules, VA_BITS, maps, layouts
    and placement kind (``Registry.owner``), and va-sweep's own."""
    owner = registry().owner
    keys = [("granule", g) for g in plan.config.granules]
    keys += [("va_bits", g) for g in plan.config.granules]
    keys += [("map", name) for name in plan.memory_maps]
    keys += [("layout", layout.name) for layout in plan.layouts]
    keys.append(("placement", plan.config.placement.get("kind")))
    used = {owner[key] for key in keys if key in owner}
    return used | {name for name, _ in pm.list_name_plugin() if _is_ours(name)}


def _is_ours(name: str) -> bool:
    return str(name).split(".")[0] in ("sweep", "sweep_plugins")


def recorded_versions(meta: dict) -> dict:
    """The versions the sweep in ``meta`` was started with (older records: rebuilt from the
    fields they had)."""
    if isinstance(meta.get("versions"), dict) and "package" in meta["versions"]:
        return meta["versions"]
    return {
        "package": (meta.get("package") or {}).get("version"),
        "plugins": {p["name"]: p.get("version") for p in meta.get("plugins", [])},
        "pyarrow": (meta.get("versions") or {}).get("pyarrow"),
        "algorithm": None,
    }


def start_meta(
    plan: Plan, previous: dict | None, source: str, executor: str, workers: int, started: str
) -> dict:
    """The record a run starts with: the previous runs (a "running" one marked killed) and a
    new one with this run's versions."""
    versions = code_versions()
    runs = [dict(run) for run in (previous or {}).get("runs", [])]
    for run in runs:
        if run.get("status") == "running":
            run["status"] = "killed"  # we hold the folder's lock: its run is gone
    runs.append(
        {
            "started": started,
            "finished": None,
            "status": "running",
            "executor": executor,
            "workers": workers,
            "versions": versions,
        }
    )
    first = previous or {}
    return {
        "name": plan.config.name,
        "status": "running",
        "started": first.get("started", started),
        "finished": None,
        # absolute, so that --resume from another folder finds the maps the config names
        "config_source": source if source in ("", "-") else os.path.abspath(source),
        "config": plan.config.as_dict(),
        "plan": plan.fingerprint(),
        "package": {"name": "va-sweep", "version": versions["package"]},
        "plugins": plugin_versions(),
        # the versions the sweep was started with: what every --resume is held to
        "versions": recorded_versions(first) if previous else versions,
        "runs": runs,
        "counts": {},
        "failed": [],
    }


def finish_meta(meta: dict, report) -> dict:
    """``meta`` with the run's end state and counts (``report`` is the driver's RunReport)."""
    finished = now()
    meta.update(
        status=report.status,
        finished=finished,
        counts={
            "configurations": report.configurations,
            "units": report.units,
            "units_done": report.units_written + report.units_skipped,
            "rows_done": report.rows_written + report.rows_skipped,
            "units_failed": len(report.failed),
            "bytes_written_this_run": report.bytes_written,
        },
        failed=report.failed,
    )
    meta["runs"][-1].update(
        finished=finished,
        status=report.status,
        units_written=report.units_written,
        rows_written=report.rows_written,
    )
    if report.reason:
        meta["runs"][-1]["reason"] = report.reason
    return meta


def plugin_versions() -> list[dict]:
    """Each loaded plugin with the version of the distribution it comes from, and its file."""
    out = []
    for name, plugin in pm.list_name_plugin():
        module = sys.modules.get(getattr(plugin, "__module__", "") or "", plugin)
        module_name = getattr(plugin, "__name__", None) or getattr(module, "__name__", name)
        top = str(module_name).split(".")[0]
        version = None
        if top in ("sweep", "sweep_plugins"):
            version = __version__
        elif _owners().get(top):
            try:
                version = importlib.metadata.version(_owners()[top][0])
            except importlib.metadata.PackageNotFoundError:
                version = None
        source = getattr(plugin, "__file__", None) or getattr(module, "__file__", None)
        out.append({"name": name, "version": version, "source": source})
    return out


@functools.cache
def _owners() -> dict:
    """Top-level module -> the distributions that install it: read only when a plugin comes
    from outside va-sweep (it reads every installed distribution's metadata, 0.25 s), once."""
    try:
        return importlib.metadata.packages_distributions()
    except Exception:  # a broken installed distribution should not stop a sweep
        return {}
