"""Sweep configs: a TOML file plus ``key=value`` overrides, checked before anything runs.

The format is MODEL.md section 8. Overrides follow the shape of Hydra's grammar so that a
one-off change never needs a file edit: dotted keys reach into tables (``placement.step=2M``),
commas make lists (``granules=4K,64K``), values are read as TOML literals when they are (``48``,
``0x8000_0000``, ``true``) and as plain strings otherwise (``kconfig``, ``juno-r2``). Every
mistake is one line naming the key and the rule.
"""

from __future__ import annotations

import copy
import json
import os
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sweep.errors import ValidationError
from sweep.model import VA_BITS_MAX, VA_BITS_MIN, granule_name, parse_granule, parse_size

DEFAULT_CONFIG = Path("configs") / "default.toml"
"""Where ``sweep run`` looks first when no config is given (relative to the working directory)."""

DEFAULT_UNIT_ROWS = 500_000
"""Rows per work unit, and so per part file (one row group): inside Parquet's 100k-1M sweet spot,
and small enough that a worker peaks near 300 MiB (``bench/bench_driver.py``)."""

TOP_KEYS = (
    "name",
    "description",
    "memory_maps",
    "granules",
    "va_bits",
    "layouts",
    "block_mappings",
    "placement",
    "tag",
    "unit_rows",
)
LIST_KEYS = ("memory_maps", "granules", "layouts", "block_mappings")
TABLE_KEYS = ("placement", "tag")


def find_default_config() -> Path:
    """``configs/default.toml`` in the working directory, else the one beside the package source."""
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    beside = Path(__file__).resolve().parent.parent / DEFAULT_CONFIG
    if beside.is_file():
        return beside
    raise ValidationError(f"config: no CONFIG given and {DEFAULT_CONFIG} not found")


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw TOML table of a config file; a missing file or bad TOML is one line naming it."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationError(f"config {path}: cannot read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"config {path}: invalid TOML: {exc}") from None


def parse_value(text: str) -> Any:
    """One override value: a TOML literal if it is one, a list if it has commas, else a string."""
    literal = _toml_literal(text)
    if literal is not _NOT_TOML:
        return literal
    if "," in text:
        return [parse_value(item.strip()) for item in text.split(",") if item.strip()]
    return text.strip()


_NOT_TOML = object()


def _toml_literal(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return _NOT_TOML


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each ``key=value`` applied in order (dotted keys reach tables)."""
    out = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(f"override {item!r}: expected key=value, e.g. granules=4K,64K")
        parts = key.split(".")
        if parts[0] not in TOP_KEYS:
            raise ValidationError(f"override {key!r}: unknown key (known: {', '.join(TOP_KEYS)})")
        if len(parts) > 1 and parts[0] not in TABLE_KEYS:
            raise ValidationError(f"override {key!r}: {parts[0]!r} is not a table")
        if len(parts) == 1 and parts[0] in TABLE_KEYS:
            raise ValidationError(
                f"override {key!r}: {parts[0]} is a table; set its fields, e.g. {parts[0]}.kind=..."
            )
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValidationError(f"override {key!r}: {part!r} is not a table")
        target[parts[-1]] = parse_value(value)
    return out


def load_config(path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> dict:
    """Read, override and validate a sweep config; the result is what ``_sweep.json`` records."""
    path = find_default_config() if path is None else Path(path)
    raw = apply_overrides(read_config_file(path), overrides)
    return validate_config(raw, source=str(path))


def validate_config(raw: Mapping[str, Any], source: str = "config") -> dict:
    """Check every key's type and value; return the normalised config (granules as bytes etc.).

    Checks that need the plugins (layout names, placement kinds, granules registered) are made
    here too, so a typo stops the run before any file is written.
    """
    from sweep.plugins import registry

    reg = registry()

    def bad(key: str, rule: str) -> ValidationError:
        return ValidationError(f"{source}: {key}: {rule}")

    unknown = [k for k in raw if k not in TOP_KEYS]
    if unknown:
        raise bad(unknown[0], f"unknown key (known: {', '.join(TOP_KEYS)})")

    cfg: dict[str, Any] = {}
    name = raw.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise bad("name", f"expected a non-empty string, got {name!r}")
    cfg["name"] = name
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise bad("description", f"expected a string, got {description!r}")
    cfg["description"] = description

    maps = _as_list(raw.get("memory_maps"))
    if not maps or not all(isinstance(m, str) and m for m in maps):
        raise bad("memory_maps", "expected a list of map names, globs or paths, e.g. ['juno-r2']")
    cfg["memory_maps"] = maps

    granules = []
    for value in _as_list(raw.get("granules", ["4K", "16K", "64K"])):
        try:
            granule = parse_granule(value)
        except ValidationError:
            raise bad("granules", f"{value!r} is not one of 4K, 16K, 64K") from None
        if granule not in reg.granules:
            raise bad("granules", f"{granule_name(granule)} is not registered by any plugin")
        if granule not in granules:
            granules.append(granule)
    if not granules:
        raise bad("granules", "the list is empty")
    cfg["granules"] = granules

    va_bits = raw.get("va_bits", "kconfig")
    if va_bits == "kconfig":
        missing = [granule_name(g) for g in granules if not reg.va_bits.get(g)]
        if missing:
            raise bad("va_bits", f"'kconfig' but no plugin registers VA_BITS for {missing[0]}")
    else:
        values = _as_list(va_bits)
        if not values or not all(
            isinstance(v, int) and not isinstance(v, bool) and VA_BITS_MIN <= v <= VA_BITS_MAX
            for v in values
        ):
            raise bad(
                "va_bits",
                f"expected 'kconfig' or a list of integers {VA_BITS_MIN}..{VA_BITS_MAX}, "
                f"got {va_bits!r}",
            )
        va_bits = sorted(set(values))
    cfg["va_bits"] = va_bits

    layouts = raw.get("layouts", "all")
    if layouts == "all":
        layouts = list(reg.layouts)
    layouts = _as_list(layouts)
    for layout in layouts:
        if layout not in reg.layouts:
            known = ", ".join(reg.layouts) or "none registered"
            raise bad("layouts", f"{layout!r} is not a registered layout (known: {known})")
    if not layouts:
        raise bad("layouts", "the list is empty")
    cfg["layouts"] = list(dict.fromkeys(layouts))

    blocks = _as_list(raw.get("block_mappings", [False, True]))
    if not blocks or not all(isinstance(b, bool) for b in blocks):
        raise bad("block_mappings", f"expected a list of true/false, got {raw['block_mappings']!r}")
    cfg["block_mappings"] = list(dict.fromkeys(blocks))

    placement = raw.get("placement", {"kind": "kernel-load"})
    if not isinstance(placement, dict):
        raise bad("placement", f"expected a table with kind = ..., got {placement!r}")
    kind = placement.get("kind")
    if kind not in reg.placements:
        known = ", ".join(reg.placements) or "none registered"
        raise bad("placement.kind", f"{kind!r} is not a registered placement (known: {known})")
    if "step" in placement:
        step = parse_size(placement["step"], f"{source}: placement.step")
        if step <= 0 or step % 4096:
            raise bad("placement.step", f"{placement['step']!r} is not a positive multiple of 4K")
    cfg["placement"] = _jsonable(dict(placement), f"{source}: placement")

    tag = raw.get("tag", {})
    if not isinstance(tag, dict):
        raise bad("tag", f"expected a table with seed = ..., got {tag!r}")
    for key in tag:
        if key != "seed":
            raise bad(f"tag.{key}", "unknown key (known: seed)")
    seed = tag.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise bad("tag.seed", f"expected an integer 0..2^64-1, got {seed!r}")
    cfg["tag"] = {"seed": seed}

    unit_rows = raw.get("unit_rows", DEFAULT_UNIT_ROWS)
    if isinstance(unit_rows, bool) or not isinstance(unit_rows, int) or unit_rows < 1:
        raise bad("unit_rows", f"expected a positive integer, got {unit_rows!r}")
    cfg["unit_rows"] = unit_rows
    return cfg


def _as_list(value: Any) -> list:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _jsonable(value: dict, what: str) -> dict:
    """Placement parameters go to plugins and to ``_sweep.json``: they must survive JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ValidationError(
            f"{what}: values must be numbers, strings, booleans or lists"
        ) from None


def config_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Lines ``key: old -> new`` for each key that differs (dotted into tables), for --resume."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += [f"{key}.{line}" for line in config_difference(a, b)]
        elif a != b:
            lines.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return lines
