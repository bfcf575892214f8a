"""Which memory maps a sweep uses: names, globs, families and files, in one list of specs.

A spec is, tried in this order:

- ``family:NAME``: every registered map of a family (``family:board``, ``family:qemu-virt``);
- an exact registered name (``juno``);
- a glob over registered names (``qemu-virt-*``, ``single-2^4?``);
- a path to a memory-map file of any kind ``sweep.load_memory_map`` reads, a directory of them
  (``configs/memory-maps/``), or a glob of such files (``boards/*.dtb``); relative paths are
  taken from ``base_dir`` (the config file's folder) when they exist there, else from the
  working directory; ``-`` reads one map from standard input.

Maps come back in the order the specs name them, each once. A spec that matches nothing is a
one-line error that lists the nearest names.
"""

from __future__ import annotations

import difflib
import fnmatch
import glob
import operator
import os
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from sweep.core.errors import ValidationError
from sweep.core.memmap import MemoryMap
from sweep.formats import loaders
from sweep.formats.files import STDIN, read_input
from sweep.formats.loaders import SUFFIX_KINDS, load_memory_map
from sweep.plan.halves import in_two_halves
from sweep.plan.plugins import Registry, registry

GLOB_CHARS = "*?["
SKIPPED_IN_DIRECTORIES = ("README*", "*.md", ".*", "_*")
"""Files in a memory-map directory that are not maps: docs, hidden files, editor leftovers."""
_SKIPPED = re.compile(
    "|".join(fnmatch.translate(os.path.normcase(p)) for p in SKIPPED_IN_DIRECTORIES)
)
"""The same as one pattern (``fnmatch`` compiles one a call): a directory may hold thousands."""
_NAME = operator.attrgetter("name")
READ_AHEAD = 256, 1 << 20
"""Files, and bytes, read before the first of them is parsed: the reads together, then the
parsing, each phase's code stays in the CPU's caches (2,000 small maps load 15% faster);
bounded, so that a folder of large files is not held at once."""


def select_memory_maps(
    specs: Iterable[str] | str, base_dir: Path | None = None, catalog: Registry | None = None
) -> dict[str, MemoryMap]:
    """The maps ``specs`` select, by name, in order (see the module docstring for the forms).

    ``catalog`` is the plugin registry, looked up once by the caller that turns a config into a
    plan; without it the loaded plugins' registry is used."""
    reg = catalog if catalog is not None else registry()
    if isinstance(specs, str):
        specs = [specs]
    selected: dict[str, MemoryMap] = {}
    origin: dict[str, str] = {}
    for spec in specs:
        if not isinstance(spec, str) or not spec.strip():
            raise ValidationError(f"memory_maps: {spec!r} is not a name, glob, family:NAME or path")
        spec = spec.strip()
        for memory_map, where in _resolve(spec, reg.memory_maps, reg.families, base_dir):
            _add(selected, origin, memory_map, where, reg.memory_maps)
    return selected


class MapWarning(UserWarning):
    """Two files give one map (the same name, the same banks): one is used, and both named."""


def _add(
    selected: dict[str, MemoryMap],
    origin: dict[str, str],
    memory_map: MemoryMap,
    where: tuple[str, bool],
    registered: Mapping[str, MemoryMap],
) -> None:
    """Add one map (``where``: its file or spec, and whether it is a file); a name given twice
    with other banks is refused naming both, the same map from two files is said in a warning,
    never dropped silently."""
    name, (shown, is_file) = memory_map.name, where
    before = origin.get(name) or ("a built-in plugin" if name in registered else None)
    if before is not None and before != shown:
        known = selected.get(name) or registered[name]
        if _sorted(known) != _sorted(memory_map):
            raise ValidationError(
                f"memory_maps: {shown} gives a map named {name!r} whose banks differ from the"
                f" one from {before}; rename one (the name field of a TOML file)"
            )
        if is_file and name in selected:
            warnings.warn(
                f"memory_maps: {shown} and {before} both give the map {name!r} (the same banks);"
                " it is swept once",
                MapWarning,
                stacklevel=4,
            )
    selected.setdefault(name, memory_map)
    origin.setdefault(name, shown)


def _resolve(
    spec: str,
    registered: Mapping[str, MemoryMap],
    families: Mapping[str, str],
    base_dir: Path | None,
) -> list[tuple[MemoryMap, tuple[str, bool]]]:
    """The maps of one spec, each with where it came from (a file, or the spec quoted), trying
    each form of the module docstring in turn."""
    quoted = (repr(spec), False)
    if spec.startswith("family:"):
        return [(m, quoted) for m in _family(spec.removeprefix("family:"), registered, families)]
    if spec in registered:
        return [(registered[spec], quoted)]
    is_glob = any(c in spec for c in GLOB_CHARS)
    names = fnmatch.filter(registered, spec) if is_glob else []
    if names:
        return [(registered[n], quoted) for n in names]
    if spec == STDIN:
        return [(load_memory_map(STDIN), ("standard input", True))]
    files = _files(spec, base_dir, is_glob)
    if files is not None:
        maps = in_two_halves(files, _loaded)
        return [(m, (repr(str(p)), True)) for p, m in zip(files, maps, strict=True)]
    near = difflib.get_close_matches(spec, list(registered), n=5, cutoff=0.5)
    hint = f"near matches: {', '.join(near)}" if near else "see `sweep maps` for the names"
    raise ValidationError(
        f"memory_maps: {spec!r} is not a registered memory map, family:NAME, glob or existing"
        f" file ({hint})"
    )


def _family(
    family: str, registered: Mapping[str, MemoryMap], families: Mapping[str, str]
) -> list[MemoryMap]:
    members = [m for name, m in registered.items() if families.get(name) == family]
    if not members:
        known = ", ".join(sorted(set(families.values()))) or "none"
        raise ValidationError(f"memory_maps: family {family!r} has no maps (families: {known})")
    return members


def _files(spec: str, base_dir: Path | None, is_glob: bool) -> list[Path] | None:
    """The memory-map files a path spec names, or None when it names none (so: not a path).

    A relative path is tried in the config file's folder first, then in the working directory
    (where command-line overrides are meant)."""
    path = Path(spec).expanduser()
    candidates = [path]
    if base_dir is not None and not path.is_absolute():
        candidates.insert(0, Path(base_dir) / path)
    if is_glob:
        for candidate in candidates:
            files = sorted(Path(p) for p in glob.glob(str(candidate)) if Path(p).is_file())
            if files:
                return files
        return None
    path = next((c for c in candidates if c.exists()), candidates[0])
    if path.is_dir():
        with os.scandir(path) as entries:  # the kind of an entry without a stat of each
            files = sorted(  # by name, as Path orders children of one folder
                (path / e.name for e in entries if e.is_file() and not _skipped(e)), key=_NAME
            )
        if not files:
            raise ValidationError(f"memory_maps: directory {str(path)!r} holds no memory-map files")
        return files
    if path.exists() or "/" in spec or path.suffix in SUFFIX_KINDS:
        return [path]  # load_memory_map names what is wrong with it (missing, a FIFO, ...)
    return None


def _loaded(files: list[Path]) -> Iterator[MemoryMap]:
    """``load_memory_map`` of each file in turn, a batch read ahead (``READ_AHEAD``); a file
    that cannot be read fails at its turn, after the maps before it, as read one by one."""
    start = 0
    while start < len(files):
        batch: list[bytes | ValidationError] = []
        size = 0
        for path in files[start : start + READ_AHEAD[0]]:
            try:
                batch.append(read_input(path, loaders.MEMORY_MAP_FILE, loaders.MAX_FILE_BYTES))
            except ValidationError as exc:
                batch.append(exc)
                break
            size += len(batch[-1])
            if size >= READ_AHEAD[1]:
                break
        for path, data in zip(files[start : start + len(batch)], batch, strict=True):
            if isinstance(data, ValidationError):
                raise data
            yield load_memory_map(path, data)
        start += len(batch)


def _sorted(memory_map: MemoryMap) -> list[tuple[int, int]]:
    return sorted((bank.base, bank.size) for bank in memory_map.banks)


def _skipped(path: Path | os.DirEntry) -> bool:
    return _SKIPPED.match(os.path.normcase(path.name)) is not None  # as fnmatch.fnmatch
