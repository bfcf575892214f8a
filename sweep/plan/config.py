"""Sweep configs: a TOML file plus ``key=value`` overrides, checked before anything runs.

The format is docs/model.md section 8. Overrides follow the shape of Hydra's grammar so that a
one-off change never needs a file edit: dotted keys reach into tables (``placement.step=2M``),
commas make lists (``granules=4K,64K``), values are read as TOML literals when they are (``48``,
``0x8000_0000``, ``true``) and as plain strings otherwise (``kconfig``, ``juno-r2``). Every
mistake is one line naming the key and the rule.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweep.core.eras import renamed_note, resolve
from sweep.core.errors import ValidationError
from sweep.core.kconfig import GRANULE_LIST, GRANULE_NAMES
from sweep.core.memmap import (
    VA_BITS_MAX,
    VA_BITS_MIN,
    check_va_bits,
    parse_granule,
)
from sweep.core.text import shortened
from sweep.formats.files import decode_text, load_toml, origin_of, read_input
from sweep.plan.kernels import ABSENT, check_cpus, check_kernels, check_mappings
from sweep.plan.plugins import registry

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")
"""The sweep ``sweep run`` runs when no config is given: package data, so that it is there
after ``pip install .`` whatever the working directory (``configs/`` holds more examples)."""

DEFAULT_UNIT_ROWS = 500_000
"""Rows per work unit, and so per part file (one row group): inside Parquet's 100k-1M sweet spot,
and small enough that a worker peaks near 300 MiB (``bench/bench_driver.py``)."""

TABLE_KEYS = ("placement", "tag")


ADDRESS_KEYS = ("placement.addresses",)
"""Override keys whose values are addresses: kept as typed (``40eed000`` is hex, as the kernel
prints it; ``40000000`` is refused as ambiguous), never read as TOML's decimal integers."""


def find_default_config() -> Path:
    """The default config shipped inside the package (``sweep/plan/default.toml``)."""
    if not DEFAULT_CONFIG.is_file():
        raise ValidationError(
            f"config: no CONFIG given and the packaged {DEFAULT_CONFIG} is missing"
        )
    return DEFAULT_CONFIG


MAX_CONFIG_BYTES = 16 << 20
"""A config is a few lines; more than this is a wrong file (``/dev/zero``, a dataset)."""


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The raw TOML table of a config file (``-``: standard input); a missing file, anything
    but a regular file, non-UTF-8 text or bad TOML is one line naming it."""
    try:
        data = read_input(path, "config", MAX_CONFIG_BYTES)
        origin = origin_of(path)
        text = decode_text(data, origin, "a TOML config")
        return load_toml(text, origin)
    except ValidationError as exc:
        message = str(exc).replace(": TOML syntax error: ", ": invalid TOML: ", 1)
        message = message.replace(": no such config", ": cannot read: no such file", 1)
        raise ValidationError(f"config {message}") from None


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
    except (tomllib.TOMLDecodeError, RecursionError, ValueError):  # too deep or too long
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
        if key in ADDRESS_KEYS:
            items = [v.strip() for v in value.split(",") if v.strip()]
            target[parts[-1]] = items if "," in value else value.strip()
        else:
            target[parts[-1]] = parse_value(value)
    return out


def overridden_keys(overrides: Iterable[str]) -> dict[str, str]:
    """Dotted key -> the ``key=value`` text that set it last, so errors name the override."""
    return {item.partition("=")[0].strip(): item for item in overrides}


def load_config(
    path: str | os.PathLike | None = None, overrides: Iterable[str] = ()
) -> SweepConfig:
    """Read, override and validate a sweep config; the result is what ``_sweep.json`` records."""
    path = find_default_config() if path is None else Path(path)
    overrides = list(overrides)
    raw = apply_overrides(read_config_file(path), overrides)
    return validate_config(raw, source=str(path), overridden=overridden_keys(overrides))


@dataclass(frozen=True)
class SweepConfig:
    """A validated sweep config (docs/model.md section 8): what a plan is made from.

    Frozen, so a plan cannot change under a running sweep; ``as_dict`` is the form recorded in
    ``_sweep.json`` and compared by ``--resume``.
    """

    name: str
    description: str
    memory_maps: tuple[str, ...]
    granules: tuple[int, ...]
    va_bits: str | tuple[int, ...]
    """``"kconfig"`` (Linux's choices, ``sweep.core.kconfig``) or VA_BITS used at every granule."""
    layouts: tuple[str, ...]
    block_mappings: tuple[bool, ...]
    placement: dict[str, Any]
    """The ``[placement]`` table as given: ``kind`` and the placement plugin's parameters."""
    tag_seed: int
    unit_rows: int
    mappings: tuple[str, ...] = ABSENT["mappings"]
    """Mapping sets (``sweep.model.bootrows.MAPPING_SETS``): all of DRAM, or a boot set."""
    cpus: tuple[int, ...] = ABSENT["cpus"]
    """CPU counts a boot set is built for."""
    kernels: tuple[str, ...] = ABSENT["kernels"]
    """Kernel builds boot sets may use: shipped releases, ``shipped``, or profile files."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form, with the TOML file's keys (``tag = {seed = ...}``); the boot-set keys
        only when they differ from their absent defaults, so older sweeps resume unchanged."""
        extra = {k: list(getattr(self, k)) for k, v in ABSENT.items() if getattr(self, k) != v}
        return {
            "name": self.name,
            "description": self.description,
            "memory_maps": list(self.memory_maps),
            "granules": list(self.granules),
            "va_bits": self.va_bits if isinstance(self.va_bits, str) else list(self.va_bits),
            "layouts": list(self.layouts),
            "block_mappings": list(self.block_mappings),
            "placement": copy.deepcopy(self.placement),
            "tag": {"seed": self.tag_seed},
            "unit_rows": self.unit_rows,
            **extra,
        }


@dataclass
class _Checking:
    """What the per-key validators share: where the config came from, the plugins' registry,
    and the keys already checked (``va_bits = "kconfig"`` needs the granules)."""

    source: str
    registry: Any
    done: dict[str, Any]
    overridden: Mapping[str, str]
    """Dotted key -> the override that set it: an error about it names the override."""

    def origin(self, key: str) -> str:
        """The config file, or the override (``override 'granules=8K'``) that set ``key``: the
        one for exactly that key, else one for a table above or a key below it."""
        if key in self.overridden:
            return f"override {shortened(repr(self.overridden[key]), 70)}"
        for dotted, item in self.overridden.items():
            if key.startswith(dotted + ".") or dotted.startswith(key + "."):
                return f"override {shortened(repr(item), 70)}"
        return self.source

    def bad(self, key: str, rule: str) -> ValidationError:
        return ValidationError(f"{self.origin(key)}: {key}: {shortened(rule, 240)}")


def _check_name(value: Any, c: _Checking) -> str:
    value = Path(c.source).stem if value is None else value
    if not isinstance(value, str) or not value:
        raise c.bad("name", f"expected a non-empty string, got {value!r}")
    return value


def _check_description(value: Any, c: _Checking) -> str:
    value = "" if value is None else value
    if not isinstance(value, str):
        raise c.bad("description", f"expected a string, got {value!r}")
    return value


def _check_memory_maps(value: Any, c: _Checking) -> tuple[str, ...]:
    maps = _as_list(value)
    if not maps or not all(isinstance(m, str) and m for m in maps):
        raise c.bad("memory_maps", "expected a list of map names, globs or paths, e.g. ['juno']")
    return tuple(maps)


def _check_granules(value: Any, c: _Checking) -> tuple[int, ...]:
    granules: list[int] = []
    for item in _as_list(list(GRANULE_NAMES.values()) if value is None else value):
        try:
            granule = parse_granule(item)
        except ValidationError:
            raise c.bad("granules", f"{item!r} is not one of {GRANULE_LIST}") from None
        if granule not in granules:
            granules.append(granule)
    if not granules:
        raise c.bad("granules", "the list is empty")
    return tuple(granules)


def _check_va_bits(value: Any, c: _Checking) -> str | tuple[int, ...]:
    if value is None or value == "kconfig":  # every granule has its choices (sweep.core.kconfig)
        return "kconfig"
    try:
        values = [check_va_bits(v) for v in _as_list(value)]
    except ValidationError:
        values = []
    if not values:
        raise c.bad(
            "va_bits",
            f"expected 'kconfig' or a list of integers {VA_BITS_MIN}..{VA_BITS_MAX}, got {value!r}",
        )
    return tuple(sorted(set(values)))


def _check_layouts(value: Any, c: _Checking) -> tuple[str, ...]:
    known = c.registry.layouts
    layouts = _as_list(list(known) if value in (None, "all") else value)
    for k, layout in enumerate(layouts):
        note = renamed_note(layout) if isinstance(layout, str) else None
        if note is not None and resolve(layout) in known:
            log.warning("config: %s", note)
            layout = layouts[k] = resolve(layout)
        if layout not in known:
            names = ", ".join(known) or "none registered"
            raise c.bad("layouts", f"{layout!r} is not a registered layout (known: {names})")
    if not layouts:
        raise c.bad("layouts", "the list is empty")
    return tuple(dict.fromkeys(layouts))


def _check_block_mappings(value: Any, c: _Checking) -> tuple[bool, ...]:
    blocks = _as_list([False, True] if value is None else value)
    if not blocks or not all(isinstance(b, bool) for b in blocks):
        raise c.bad("block_mappings", f"expected a list of true/false, got {value!r}")
    return tuple(dict.fromkeys(blocks))


def _check_placement(value: Any, c: _Checking) -> dict[str, Any]:
    placement = {"kind": "kernel-load"} if value is None else value
    if not isinstance(placement, dict):
        raise c.bad("placement", f"expected a table with kind = ..., got {placement!r}")
    kind = placement.get("kind")
    if kind not in c.registry.placements:
        known = ", ".join(c.registry.placements) or "none registered"
        raise c.bad("placement.kind", f"{kind!r} is not a registered placement (known: {known})")
    check = c.registry.placement_checks.get(kind)
    if check is not None:  # the placement plugin owns its parameters
        try:
            check(dict(placement))
        except ValidationError as exc:
            # The plugin's message starts with the key at fault: name the override that set it.
            key = str(exc).split(":", 1)[0].split("[", 1)[0]
            key = key if key.startswith("placement.") else "placement"
            raise ValidationError(f"{c.origin(key)}: {exc}") from None
    return _jsonable(dict(placement), f"{c.origin('placement')}: placement")


def _check_tag(value: Any, c: _Checking) -> int:
    tag = {} if value is None else value
    if not isinstance(tag, dict):
        raise c.bad("tag", f"expected a table with seed = ..., got {tag!r}")
    for key in tag:
        if key != "seed":
            raise c.bad(f"tag.{key}", "unknown key (known: seed)")
    seed = tag.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 64:
        raise c.bad("tag.seed", f"expected an integer 0..2^64-1, got {seed!r}")
    return seed


def _check_unit_rows(value: Any, c: _Checking) -> int:
    rows = DEFAULT_UNIT_ROWS if value is None else value
    if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
        raise c.bad("unit_rows", f"expected a positive integer, got {rows!r}")
    return rows


_VALIDATORS = {
    "name": _check_name,
    "description": _check_description,
    "memory_maps": _check_memory_maps,
    "granules": _check_granules,
    "va_bits": _check_va_bits,
    "layouts": _check_layouts,
    "block_mappings": _check_block_mappings,
    "mappings": check_mappings,
    "cpus": check_cpus,
    "kernels": check_kernels,
    "placement": _check_placement,
    "tag": _check_tag,
    "unit_rows": _check_unit_rows,
}
"""One validator per top-level key, in the order they run (``va_bits`` needs ``granules``)."""

TOP_KEYS = tuple(_VALIDATORS)


def validate_config(
    raw: Mapping[str, Any], source: str = "config", overridden: Mapping[str, str] | None = None
) -> SweepConfig:
    """Check every key's type and value; the normalised config (granules as bytes etc.).

    Checks that need the plugins (layout names, placement kinds) are made
    here too, so a typo stops the run before any file is written.
    """

    checking = _Checking(source, registry(), {}, overridden or {})
    unknown = [k for k in raw if k not in _VALIDATORS]
    if unknown:
        raise checking.bad(unknown[0], f"unknown key (known: {', '.join(TOP_KEYS)})")
    for key, check in _VALIDATORS.items():
        checking.done[key] = check(raw.get(key), checking)
    done = checking.done
    return SweepConfig(**{k: v for k, v in done.items() if k != "tag"}, tag_seed=done["tag"])


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
