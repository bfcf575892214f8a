"""``_sweep.json`` read back: one reader for paths and URLs, for the driver and the readers.

The run layer writes it (:mod:`sweep.run.records`); everything that only reads a results folder
comes here, so that reading needs no plan or plugin code. What is read is checked field by
field: a damaged or foreign ``_sweep.json`` is one line naming the field, never a traceback
deep in a reader, and never taken for a complete sweep.
"""

from __future__ import annotations

from sweep.core.errors import SweepError
from sweep.store.parts import META_FILE, PartKey, Store

FIELDS = {
    "name": str,
    "status": str,
    "config": dict,
    "plan": dict,
    "counts": dict,
    "failed": list,
    "runs": list,
    "versions": dict,
    "config_source": str,
}
"""The fields readers use, with their JSON types (absent or null is allowed: older records)."""
STATUSES = ("running", "complete", "failed", "interrupted", "stopped", "crashed", "killed")


def read_meta(url: str) -> dict:
    """The sweep's ``_sweep.json`` at ``url`` (a folder or an fsspec URL), checked, or ``{}``."""
    try:
        meta = Store(str(url)).read_meta()
    except OSError as exc:
        raise SweepError(f"{url}/{META_FILE}: cannot be read ({exc})") from None
    return check_meta(meta, f"{url}/{META_FILE}") if meta is not None else {}


def check_meta(meta: object, where: str) -> dict:
    """``meta`` if it has the shape of a sweep's record, else a ``SweepError`` naming the field."""
    if not isinstance(meta, dict):
        raise SweepError(f"{where}: not a sweep's record (a JSON {type(meta).__name__})")
    for name, kind in FIELDS.items():
        value = meta.get(name)
        if value is not None and not isinstance(value, kind):
            raise SweepError(
                f"{where}: field {name!r} holds {value!r:.40}, not a {kind.__name__} "
                "(not a sweep's record)"
            )
    if meta.get("status") is not None and meta["status"] not in STATUSES:
        raise SweepError(f"{where}: field 'status' is {meta['status']!r}, not a run's state")
    for failure in meta.get("failed") or []:
        if not isinstance(failure, dict) or not isinstance(failure.get("unit"), str):
            raise SweepError(f"{where}: field 'failed' holds {failure!r}, not a failed unit")
    units = planned_units(meta)
    if units is not None and (not isinstance(units, int) or units < 0):
        raise SweepError(f"{where}: field 'plan.units' is {units!r}, not a count of units")
    return meta


def planned_units(meta: dict) -> int | None:
    """How many units the sweep has, as recorded (None when the record does not say)."""
    return (meta.get("plan") or {}).get("units", (meta.get("counts") or {}).get("units"))


def incomplete(meta: dict, whole: set[str], most: int = 5, unknown_ok: bool = False) -> list[str]:
    """What the sweep in ``meta`` lacks beside the ``whole`` parts (relative paths), one line
    each: a run that did not finish, failed units, units never written. Empty when complete;
    ``unknown_ok``: a record that gives no status (or none at all) is not a line of its own."""
    present = {PartKey.parse(rel).unit_id for rel in whole}
    lines = []
    status = meta.get("status")
    if not meta or status is None:
        if not unknown_ok:
            lines.append(f"no sweep status in {META_FILE}: what it should hold is unknown")
    elif status not in ("complete", "failed"):  # "failed": finished, its failures below
        shown = "running (a run is going on, or was killed)" if status == "running" else status
        lines.append(f"the sweep did not finish: its last run is {shown}")
    failed = [f["unit"] for f in meta.get("failed") or [] if f["unit"] not in present]
    if failed:
        lines.append(f"{len(failed)} failed unit(s): {names(failed, most)}")
    planned = planned_units(meta)
    lost = len([u for u in failed if not u.startswith("plan:")])
    missing = planned - len(present) - lost if planned is not None else 0
    if missing > 0:
        gaps = unit_gaps(present)
        named = f": {names(gaps, most)}" if gaps else ""
        lines.append(f"{missing} of {planned} unit(s) missing (no whole part file){named}")
    return lines


def names(units: list[str], most: int = 5) -> str:
    """The first ``most`` names, then how many more."""
    more = f" and {len(units) - most} more" if len(units) > most else ""
    return ", ".join(units[:most]) + more


def unit_gaps(present: set[str]) -> list[str]:
    """Units missing between present ones of a folder (their index is skipped)."""
    by_folder: dict[str, set[int]] = {}
    for unit in present:
        folder, _, index = unit.rpartition("/")
        by_folder.setdefault(folder, set()).add(int(index))
    return [
        f"{folder}/{i:06d}"
        for folder, indices in sorted(by_folder.items())
        for i in range(max(indices))
        if i not in indices
    ]
