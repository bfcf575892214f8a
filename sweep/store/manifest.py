"""Which part files are whole: ``_manifest.json`` holds each part's rows, size and SHA-256.

A part file is not believed because it exists. The driver records what each worker wrote
(:class:`sweep.store.parts.PartInfo`) and writes the manifest atomically, at most once a
``FLUSH_SECONDS`` and at the end; a part counts as done only if it is in the manifest, its
bytes hash to the recorded checksum, it opens as Parquet and holds the recorded rows (which the
driver compares with its unit's), and so does its summary file when its entry lists one
(``"summary"``: rows, bytes, SHA-256; entries of older runs have none). A part written just
before a crash and not yet recorded is simply written again. ``sweep verify DIR`` runs the same
checks without writing anything. Readers believe a part without its summary file (a damaged
summary costs them time, never rows): :func:`trusted_parts` says which summaries they may read.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from sweep.core.errors import SweepError
from sweep.store.parts import (
    MANIFEST_FILE,
    META_FILE,
    OWN_FILES,
    PLACEHOLDERS,
    SUMMARY_RE,
    PartInfo,
    PartKey,
    Store,
    is_temporary,
    summary_path,
)
from sweep.store.record import incomplete, read_meta

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
        if not isinstance(parts, dict) or raw.get("format") != FORMAT:
            return cls(problem=f"{MANIFEST_FILE} is not a manifest of format {FORMAT}")
        for rel, entry in parts.items():
            if not _is_entry(entry):
                return cls(problem=f"{MANIFEST_FILE}: entry {rel!r:.80} is not rows, bytes, sha256")
        return cls(parts=parts)

    def record(self, rel: str, info: PartInfo) -> None:
        self.parts[rel] = {"rows": info.rows, "bytes": info.bytes, "sha256": info.sha256}
        if info.summary is not None:
            self.parts[rel]["summary"] = dataclasses.asdict(info.summary)
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
        """Why the part at ``rel`` or its summary file cannot be believed, or None when both are
        whole (what ``--resume`` and ``sweep verify`` ask: either one damaged rewrites both)."""
        why = self.check_part(store, rel)
        if why is None and (why := self.check_summary(store, rel)) is not None:
            why = f"its summary file {posixpath.basename(summary_path(rel))}: {why}"
        return why

    def check_part(self, store: Store, rel: str) -> str | None:
        """Why the part at ``rel`` cannot be believed, or None when it is whole."""
        entry = self.parts.get(rel)
        if entry is None:
            return "not in the manifest (written after its last update, or not by this sweep)"
        return _check_file(store, rel, entry)

    def check_summary(self, store: Store, rel: str) -> str | None:
        """Why the summary file of the part at ``rel`` is not the one its entry lists, or None
        (it is, or the entry lists none)."""
        entry = self.parts.get(rel, {}).get("summary")
        return None if entry is None else _check_file(store, summary_path(rel), entry)

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


@dataclass
class Verdict:
    """What ``sweep verify`` found: parts checked, damaged or foreign ones (always a failure),
    what the sweep lacks against its plan (a failure unless partial is accepted), and files
    that are not the sweep's (named, not a failure)."""

    checked: int
    problems: list[tuple[str, str]]
    incomplete: list[str]
    strangers: list[str]

    def lines(self, directory: str, partial_ok: bool = False) -> list[str]:
        """What ``sweep verify`` prints: each problem, what is missing, then the count."""
        out = [f"{rel}: {problem}" for rel, problem in self.problems]
        out += [f"incomplete: {line}" for line in self.incomplete]
        if self.strangers:
            out.append(f"not the sweep's (not read): {', '.join(self.strangers)}")
        if self.incomplete:
            accepted = (
                "accepted (--partial-ok)" if partial_ok else "exit 1 (--partial-ok accepts it)"
            )
            out.append(f"the sweep is incomplete: {accepted}")
        n = len(self.problems)
        out.append(f"{self.checked} part files checked, {n} problem{'s' * (n != 1)} in {directory}")
        return out

    def exit_code(self, partial_ok: bool = False) -> int:
        """1 for a bad part, or an incomplete sweep unless ``partial_ok``; else 0."""
        return 1 if self.problems or (self.incomplete and not partial_ok) else 0


def verify_sweep(url: str) -> Verdict:
    """The parts checked against the manifest, and the whole ones against the plan and the
    runs in ``_sweep.json``: units never written, a run that did not finish, failed units."""
    checked, problems = verify_dataset(url)
    store = Store(url)
    try:
        meta = read_meta(url)
    except SweepError as exc:
        problems.append((META_FILE, str(exc).removeprefix(f"{url}/{META_FILE}: ")))
        meta = None
    listed = Manifest.load(store).parts
    # A damaged part is a problem above, not a unit never written too; a foreign one is both.
    written = {rel for rel in store.parts() if rel in listed or not listed}
    lacking = incomplete(meta, written) if meta is not None else []
    strangers = sorted(rel for rel in store.files() if not _ours(rel) and not _is_part(rel))
    return Verdict(checked, problems, lacking, strangers)


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


def _check_file(store: Store, rel: str, entry: dict) -> str | None:
    """Why the file at ``rel`` is not the one ``entry`` (rows, bytes, SHA-256) lists, or None."""
    try:
        data = store.read_bytes(rel)
    except FileNotFoundError:
        return "missing"
    except OSError as exc:
        return f"cannot be read ({exc})"
    if len(data) != entry["bytes"]:
        how = "truncated" if len(data) < entry["bytes"] else "larger: replaced or appended to"
        return f"{len(data):,} bytes, the manifest says {entry['bytes']:,} ({how})"
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        return "its bytes do not match the manifest's SHA-256 (damaged)"
    try:
        rows = pq.ParquetFile(pa.BufferReader(data)).metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        return f"does not open as Parquet ({exc})"
    if rows != entry["rows"]:
        return f"holds {rows:,} rows, the manifest says {entry['rows']:,}"
    return None


def _is_entry(entry: object, summary: bool = True) -> bool:
    """Whether a manifest entry has the shape :meth:`Manifest.record` writes (its ``summary``,
    when present, the same shape)."""
    if not isinstance(entry, dict):
        return False
    counts = [entry.get("rows"), entry.get("bytes")]
    whole = all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts) and (
        isinstance(entry.get("sha256"), str)
    )
    return whole and ("summary" not in entry or summary and _is_entry(entry["summary"], False))


@dataclass
class Trusted:
    """What a reader may read of a results folder: the parts the manifest vouches for.

    ``left_out`` holds every other part file with why; ``strangers`` the files that are not a
    sweep's (neither a part nor one of its records); ``unchecked`` says why no part could be
    checked (no manifest, or an unreadable one): then every part is read, with that warning.
    ``summaries`` maps each believed part whose summary file is the one its entry lists to that
    file; ``bad_summaries`` names every other listed summary file with why (its part's rows
    answer instead).
    """

    parts: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    strangers: list[str] = field(default_factory=list)
    unchecked: str | None = None
    summaries: dict[str, str] = field(default_factory=dict)
    bad_summaries: dict[str, str] = field(default_factory=dict)

    def warnings(self, most: int = 20) -> list[str]:
        """One line per part left out (at most ``most``, then a count) and one for strangers."""
        lines = [f"{self.unchecked}; its part files are read unchecked"] * bool(self.unchecked)
        shown = sorted(self.left_out.items())
        lines += [f"part {rel} left out: {why}" for rel, why in shown[:most]]
        if len(shown) > most:
            lines.append(f"{len(shown) - most} more part files left out (sweep verify names them)")
        bad = sorted(self.bad_summaries.items())
        lines += [
            f"summary {rel} not read: {why}; its part's rows are read instead"
            for rel, why in bad[:most]
        ]
        if len(bad) > most:
            lines.append(f"{len(bad) - most} more summary files not read (sweep verify names them)")
        if self.strangers:
            more = f" and {len(self.strangers) - 5} more" if len(self.strangers) > 5 else ""
            lines.append(
                f"{len(self.strangers)} file(s) not of the sweep, not read: "
                f"{', '.join(self.strangers[:5])}{more}"
            )
        return lines


_VOUCHED: dict[tuple, bool] = {}
"""(path, size, mtime, SHA-256 expected) of local files already hashed in this process."""


def trusted_parts(store: Store, read: Callable[[str], bool] | None = None) -> Trusted:
    """The part files a reader may believe: each in ``_manifest.json`` with its size and (for a
    local folder, where reading is cheap, and a part ``read`` says will be read) its SHA-256;
    a remote part is held to its size. Their summary files are held to their entries alike.
    Reads only; called by every reader (:mod:`sweep.read.engine`)."""
    files = store.files()
    parts = sorted(rel for rel in files if PartKey.parse(rel) is not None)
    strangers = sorted(rel for rel in files if not _is_part(rel) and not _ours(rel))
    manifest = Manifest.load(store)
    if not parts:
        return Trusted([], strangers=strangers)
    if manifest.problem or MANIFEST_FILE not in files:
        why = manifest.problem or f"no {MANIFEST_FILE}"
        return Trusted(parts, strangers=strangers, unchecked=why)
    out = Trusted([], strangers=strangers)
    for rel in parts:
        entry = manifest.parts.get(rel)
        if entry is None:
            out.left_out[rel] = "not in the sweep's manifest (another run's or a copied file)"
            continue
        hashed = read is None or read(rel)
        check = functools.partial(manifest.check_part, store, rel)
        reason = _vouch(store, rel, files, entry, hashed, check)
        if reason is not None:
            out.left_out[rel] = reason
            continue
        out.parts.append(rel)
        if "summary" in entry:
            side = summary_path(rel)
            check = functools.partial(manifest.check_summary, store, rel)
            reason = _vouch(store, side, files, entry["summary"], hashed, check)
            if reason is None:
                out.summaries[rel] = side
            else:
                out.bad_summaries[side] = reason
    return out


def _is_part(rel: str) -> bool:
    return PartKey.parse(rel) is not None


def _ours(rel: str) -> bool:
    base = posixpath.basename(rel)
    top = "/" not in rel and (base in OWN_FILES or base in PLACEHOLDERS)
    return top or base in PLACEHOLDERS or is_temporary(rel) or SUMMARY_RE.fullmatch(rel) is not None


def _vouch(
    store: Store,
    rel: str,
    files: dict[str, int],
    entry: dict,
    hashed: bool,
    check: Callable[[], str | None],
) -> str | None:
    """Why ``rel`` is not the file ``entry`` lists, or None: held to its size, and (``hashed``,
    in a local folder) to ``check`` of its bytes, once per process while it is unchanged."""
    size = files.get(rel)
    if size is None:
        return "missing"
    if size != entry.get("bytes"):
        how = "truncated" if size < entry.get("bytes", 0) else "larger: replaced or appended to"
        return f"{size:,} bytes, the manifest says {entry.get('bytes', 0):,} ({how})"
    if not store.local or not hashed:
        return None
    path = posixpath.join(store.root, rel)
    try:
        key = (path, size, os.stat(path).st_mtime_ns, entry.get("sha256"))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if key not in _VOUCHED:
        reason = check()
        if reason is not None:
            return reason
        _VOUCHED[key] = True
    return None
