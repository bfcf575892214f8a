"""What ``sweep run`` starts from, and what ``--dry-run`` prints, before any unit runs.

The config is a file, the packaged default, or, for ``--resume`` with no CONFIG, the one in
``--out``'s ``_sweep.json`` (as Ray Tune's ``Tuner.restore(path)`` needs only the path); a
memory-map file given as the config is named as such. A dry run prints counts and sizes from
the plan alone, and with ``--resume`` how many units the folder already holds whole.
"""

from __future__ import annotations

import sys

from sweep.core.errors import SweepError
from sweep.core.memmap import granule_name
from sweep.core.sizes import human_size
from sweep.plan.config import (
    SweepConfig,
    apply_overrides,
    find_default_config,
    load_config,
    overridden_keys,
    read_config_file,
    validate_config,
)
from sweep.run.task import Plan
from sweep.store.encoding import DISK_BYTES_PER_PART, DISK_BYTES_PER_ROW, MEMORY_BYTES_PER_ROW
from sweep.store.manifest import Manifest
from sweep.store.parts import META_FILE, Store
from sweep.store.record import check_meta


def run_config(
    paths: list[str], overrides: list[str], out: str, resume: bool
) -> tuple[SweepConfig, str]:
    """The config a ``sweep run`` runs, and the file it came from (its folder resolves
    relative memory-map paths)."""
    if len(paths) > 1:
        raise SweepError(f"run: one CONFIG expected, got {', '.join(paths)}")
    if resume and not paths:
        recorded = recorded_config(out, overrides)
        if recorded is None:  # a mistyped --out must not start the default sweep
            raise SweepError(
                f"--resume: {out} holds no sweep to resume (no {META_FILE}); give the CONFIG "
                "to start one there, or the --out of the sweep to finish"
            )
        return recorded
    source = paths[0] if paths else str(find_default_config())
    if source == "-" and sys.stdin.isatty():  # say so, rather than wait in silence
        print("sweep: reading the config from standard input (end it with Ctrl-D)", file=sys.stderr)
    return _load_config(source, overrides), source


def _load_config(source: str, overrides: list[str]) -> SweepConfig:
    """The config at ``source``; a memory-map file given in its place says so in one line."""
    try:
        return load_config(source, overrides)
    except SweepError:
        try:
            is_map = source != "-" and "banks" in read_config_file(source)
        except SweepError:
            is_map = False
        if is_map:
            raise SweepError(
                f"config {source}: this is a memory map (it has [[banks]]), not a sweep config; "
                f"give it as memory_maps={source}"
            ) from None
        raise


def recorded_config(out: str, overrides: list[str]) -> tuple[SweepConfig, str] | None:
    """The config the sweep in ``out`` was started with (its ``_sweep.json``), ``overrides``
    applied, and the config file it came from: what ``sweep run --out DIR --resume`` with no
    CONFIG resumes (as Ray Tune's ``Tuner.restore(path)`` needs only the path). None when
    ``out`` holds no sweep's record."""
    where = f"{out}/{META_FILE}"
    try:
        meta = Store(out).read_meta()
    except OSError as exc:
        raise SweepError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if meta is None:
        return None
    meta = check_meta(meta, where)
    if not isinstance(meta.get("config"), dict):
        raise SweepError(f"{where}: holds no config to resume; give the CONFIG it was run with")
    raw = apply_overrides(meta["config"], overrides)
    config = validate_config(raw, source=where, overridden=overridden_keys(overrides))
    return config, meta.get("config_source") or where


def describe_plan(plan: Plan) -> str:
    """What ``sweep run --dry-run`` prints: counts and sizes, from the plan alone."""

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
        f"mappings:       {', '.join(cfg.mappings)}{_boot_sets(plan)}",
        f"placement:      {', '.join(f'{k}={v}' for k, v in cfg.placement.items())}",
        f"configurations: {rows:,}",
        f"units:          {plan.n_units:,} (up to {plan.unit_rows:,} rows each, a part file each)",
        _estimate(plan),
    ]
    lines += [f"no boot rows:   {line}" for line in plan.skipped]
    for failure in plan.failures:
        lines.append(f"would fail:     {failure['unit']}: {failure['error']}")
    return "\n".join(lines)


def _boot_sets(plan: Plan) -> str:
    """The CPU counts and kernel builds boot sets are made for, when there are any."""
    if not plan.kernels:
        return ""
    cpus = ", ".join(map(str, plan.config.cpus))
    return f" (cpus {cpus}; kernels: {', '.join(k.name for k in plan.kernels)})"


def describe_resume(plan: Plan, out: str) -> str:
    """What ``--dry-run --resume`` adds: how many units ``out`` already holds whole, read only."""
    store = Store(out)
    whole, _bad = Manifest.load(store).sort_parts(store)
    done = [u for u in plan.units() if u.path in whole]
    rows = sum(u.rows for u in done)
    return (
        f"resume:         {len(done):,} of {plan.n_units:,} units already whole in {out} "
        f"({rows:,} rows); {plan.n_units - len(done):,} to run"
    )


def _estimate(plan: Plan) -> str:
    """The size line of a dry run. Every-page rows are runs of equal pages, found only as the
    units run: far fewer rows than pages (one 6.7x10^9-page sweep wrote 3.5 M rows, 2.3 MB)."""
    rows = plan.configurations
    if plan.runs:
        return (
            f"estimated size: {rows:,} pages written as runs of equal pages: the rows are known "
            f"only as units run (typically thousands of pages a row); at least "
            f"{_bytes(plan.n_units * DISK_BYTES_PER_PART)} on disk, the parts' own overhead"
        )
    return (
        f"estimated size: {rows:,} rows, {_bytes(rows * MEMORY_BYTES_PER_ROW)} in memory, "
        f"about {_bytes(rows * DISK_BYTES_PER_ROW + plan.n_units * DISK_BYTES_PER_PART)} on "
        "disk (zstd)"
    )


def _bytes(n: float) -> str:
    return human_size(n, grouping=True)
