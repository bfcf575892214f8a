"""Which memory maps a sweep uses: names, globs, families and files, in one list of specs.

A spec is, tried in this order:

- ``family:NAME``: every registered map of a family (``family:board``, ``family:qemu-virt``);
- an exact registered name (``juno``);
- a glob over registered names (``qemu-virt-*``, ``single-2^4?``);
- a path to a memory-map file of any kind ``sweep.load_memory_map`` reads, a directory of them
  (``configs/memory-maps/``), or a glob of such files (``boards/*.dtb``); relative paths are
  taken from ``base_dir`` (the config file's folder) when they exist there, else from the
  working directory.

Maps come back in the order the specs name them, each once. A spec that matches nothing is a
one-line error that lists the nearest names.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
from collections.abc import Iterable
from pathlib import Path

from sweep.errors import ValidationError
from sweep.loaders import SUFFIX_KINDS, load_memory_map
from sweep.model import MemoryMap

GLOB_CHARS = "*?["
SKIPPED_IN_DIRECTORIES = ("README*", "*.md", ".*", "_*")
"""Files in a memory-map directory that are not maps: docs, hidden files, editor leftovers."""


def select_memory_maps(
    specs: Iterable[str] | str, base_dir: Path | None = None
) -> dict[str, MemoryMap]:
    """The maps ``specs`` select, by name, in order (see the module docstring for the forms)."""
    from sweep.plugins import registry

    reg = registry()
    if isinstance(specs, str):
        specs = [specs]
    selected: dict[str, MemoryMap] = {}
    origin: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise ValidationError(f"memory_maps: {spec!r} is not a name, glob, family:NAME or path")
        spec = spec.strip()
        for memory_map in _resolve(spec, reg.memory_maps, reg.families, base_dir):
            _add(selected, origin, memory_map, spec, reg.memory_maps)
    return selected


def _add(
    selected: dict[str, MemoryMap],
    origin: dict[str, str],
    memory_map: MemoryMap,
    spec: str,
    registered: dict[str, MemoryMap],
) -> None:
    name = memory_map.name
    known = selected.get(name) or registered.get(name)
    if known is not None and _sorted(known) != _sorted(memory_map):
        where = origin.get(name, "a built-in plugin")
        raise ValidationError(
            f"memory_maps: {spec!r} gives a map named {name!r} whose banks differ from the one"
            f" from {where}; rename one (the name field of a TOML file)"
        )
    if name not in selected:
        selected[name] = memory_map
        origin[name] = repr(spec)


def _resolve(
    spec: str, registered: dict[str, MemoryMap], families: dict[str, str], base_dir: Path | None
) -> list[MemoryMap]:
    if spec.startswith("family:"):
        family = spec[len("family:") :]
        members = [m for name, m in registered.items() if families.get(name) == family]
        if not members:
            known = ", ".join(sorted(set(families.values()))) or "none"
            raise ValidationError(f"memory_maps: family {family!r} has no maps (families: {known})")
        return members
    if spec in registered:
        return [registered[spec]]
    if any(c in spec for c in GLOB_CHARS):
        names = fnmatch.filter(registered, spec)
        if names:
            return [registered[n] for n in names]
    path = Path(spec).expanduser()
    candidates = [path]
    if base_dir is not None and not path.is_absolute():
        # the config file's folder first, then the working directory (command-line overrides)
        candidates.insert(0, Path(base_dir) / path)
    is_glob = any(c in spec for c in GLOB_CHARS)
    for candidate in candidates if is_glob else ():
        files = sorted(Path(p) for p in glob.glob(str(candidate)) if Path(p).is_file())
        if files:
            return [load_memory_map(p) for p in files]
    path = next((c for c in candidates if c.exists()), candidates[0])
    if not is_glob and path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not _skipped(p))
        if not files:
            raise ValidationError(f"memory_maps: directory {str(path)!r} holds no memory-map files")
        return [load_memory_map(p) for p in files]
    if not is_glob and (path.exists() or "/" in spec or path.suffix in SUFFIX_KINDS):
        return [load_memory_map(path)]
    near = difflib.get_close_matches(spec, list(registered), n=5, cutoff=0.5)
    hint = f"near matches: {', '.join(near)}" if near else "see `sweep maps` for the names"
    raise ValidationError(
        f"memory_maps: {spec!r} is not a registered memory map, family:NAME, glob or existing"
        f" file ({hint})"
    )


def _sorted(memory_map: MemoryMap) -> list[tuple[int, int]]:
    return sorted((bank.base, bank.size) for bank in memory_map.banks)


def _skipped(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in SKIPPED_IN_DIRECTORIES)
