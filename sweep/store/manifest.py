"""Which part files are whole: ``_manifest.json`` holds each part's rows, size and SHA-256.

A part file is not believed because it exists. The driver records what each worker wrote
(:class:`sweep.store.parts.PartInfo`) and writes the manifest atomically, at most once a
``FLUSH_SECONDS`` and at the end; a part counts as done only if it is in the manifest, its
bytes hash to the recorded checksum, it opens as Parquet and holds the recorded rows (which the
driver compares with its unit's). A part written just before a crash and not yet recorded is
simply written again. ``sweep verify DIR`` runs the same checks without writing anything.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core.errors import SweepError
from sweep.store.parts import MANIFEST_FILE, PartInfo, Store

FORMAT = 1
FLUSH_SECONDS = 1.0
"""The manifest is rewritten at most this often while units finish (and always at the end)."""


@dataclass
class Manifest:
    """Part path -> its entry; ``problem`` says why an unreadable manifest was set aside."""

    parts: dict[str, dict] = field(default_factory=dict)
    problem: str | None = None
    _flushed: float = 0.0
    _dirty: bool = False

    @classmethod
    def load(cls, store: Store) -> Manifest:
        try:
            raw = store.read_json(MANIFEST_FILE)
        except (SweepError, OSError, UnicodeDecodeError) as exc:
            return cls(problem=f"{MANIFEST_FILE} is unreadable ({exc})")
        if raw is None:
            return cls()
        parts = raw.get("parts") if isinstance(raw, dict) else None
        if raw.get("format") != FORMAT or not isinstance(parts, dict):
            return cls(problem=f"{MANIFEST_FILE} is not a manifest of format {FORMAT}")
        return cls(parts=parts)

    def record(self, rel: str, info: PartInfo) -> None:
        self.parts[rel] = {"rows": info.rows, "bytes": info.bytes, "sha256": info.sha256}
        self._dirty = True

    def forget(self, rels: Iterable[str]) -> None:
        for rel in rels:
            if self.parts.pop(rel, None) is not None:
                self._dirty = True

    def flush(self, store: Store, force: bool = False) -> None:
        """Write the manifest if it changed and ``FLUSH_SECONDS`` passed (or ``force``)."""
        now = time.monotonic()
        if not self._dirty or (not force and now - self._flushed < FLUSH_SECONDS):
            return
        store.write_json(
            MANIFEST_FILE, {"format": FORMAT, "parts": dict(sorted(self.parts.items()))}
        )
        self._dirty, self._flushed = False, now

    def check(self, store: Store, rel: str) -> str | None:
        """Why the part at ``rel`` cannot be believed, or None when it is whole."""
        entry = self.parts.get(rel)
        if entry is None:
            return "not in the manifest (written after its last update, or not by this sweep)"
        try:
            data = store.read_bytes(rel)
        except OSError as exc:
            return f"cannot be read ({exc})"
        if len(data) != entry["bytes"]:
            return f"{len(data):,} bytes, the manifest says {entry['bytes']:,} (truncated?)"
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return "its bytes do not match the manifest's SHA-256 (damaged)"
        try:
            rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
        except (pa.ArrowException, OSError) as exc:
            return f"does not open as Parquet ({exc})"
        if rows != entry["rows"]:
            return f"holds {rows:,} rows, the manifest says {entry['rows']:,}"
        return None

    def sort_parts(self, store: Store) -> tuple[dict[str, int], dict[str, str]]:
        """Every part file on disk, checked: (whole ones with their rows, bad ones with why)."""
        whole: dict[str, int] = {}
        bad: dict[str, str] = {}
        for rel in sorted(store.parts()):
            reason = self.check(store, rel)
            if reason is None:
                whole[rel] = self.parts[rel]["rows"]
            else:
                bad[rel] = reason
        return whole, bad


def verify_dataset(url: str) -> tuple[int, list[tuple[str, str]]]:
    """What ``sweep verify`` reports: (parts checked, [(part or file, problem)]). Reads only."""
    store = Store(url)
    if not store.exists("_sweep.json") and not store.parts():
        raise SweepError(f"verify {url}: not a sweep (no _sweep.json and no part files)")
    manifest = Manifest.load(store)
    problems: list[tuple[str, str]] = []
    if manifest.problem:
        problems.append((MANIFEST_FILE, manifest.problem))
    elif not store.exists(MANIFEST_FILE):
        problems.append((MANIFEST_FILE, "missing: no part can be checked"))
    whole, bad = manifest.sort_parts(store)
    problems += sorted(bad.items())
    on_disk = set(whole) | set(bad)
    problems += [
        (rel, "in the manifest but missing") for rel in sorted(manifest.parts) if rel not in on_disk
    ]
    return len(on_disk), problems
