"""The result store: a Parquet dataset in granule/VA_BITS folders, one part file per work unit.

Written the way long-running writers do it: each part is written under a name starting with
``.``, flushed to disk and renamed into place (readers skip ``.`` and ``_`` names, so a crash
leaves no half file visible), no writer is held open across units, and the sweep's own records
sit beside the data in ``_sweep.json``, ``_sweep.log`` and ``_manifest.json``. A part file is
not believed because it exists: :mod:`sweep.store.manifest` checks it against its recorded checksum.

Parts go in ``granule-<bytes>/va_bits-<bits>/part-<index>.parquet``, each with its summary
beside it in ``_summary-<index>.parquet`` (:mod:`sweep.store.summary`), and hold every column of
``sweep.core.columns.ROW_COLUMNS``, the two folder keys included (constant in a file, so they cost a
few bytes, and their row-group statistics let readers skip the file: keep statistics on them).
The folders are not hive-style (``key=value``) on purpose: pyarrow's hive discovery, which
``pandas.read_parquet`` uses, reads such keys as dictionaries and refuses a file column of the
same name, so ``granule``/``va_bits`` came back as categories; this way every reader gets them as
int32/int8. The one reader of results (:mod:`sweep.read.engine`) picks folders by name.
Paths may be fsspec URLs (``s3://bucket/sweep``) where fsspec and its backend are installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from sweep.core.errors import SweepError
from sweep.store.encoding import PartWriter, part_bytes, summary_bytes
from sweep.store.partkey import (  # noqa: F401 (the part paths, re-exported)
    FOLDER_PREFIX,
    PART_GLOB,
    PART_RE,
    SUMMARY_PREFIX,
    SUMMARY_RE,
    PartKey,
    part_path,
    summary_path,
)
from sweep.store.summary import kept, merge, part_summary, summarize

PARTITION_COLUMNS = ("granule", "va_bits")
META_FILE = "_sweep.json"
LOG_FILE = "_sweep.log"
MANIFEST_FILE = "_manifest.json"
LOCK_FILE = "_sweep.lock"
OWN_FILES = (META_FILE, LOG_FILE, MANIFEST_FILE, LOCK_FILE)
"""The files a sweep keeps at its root beside the partition folders."""
PLACEHOLDERS = frozenset({".gitkeep", ".keep", ".DS_Store"})
"""Files that version control or a desktop leaves in an empty folder (the clone's ``results/``
holds ``.gitkeep``): they hold no data, so ``--out`` there is still an empty folder."""
TEMP_SUFFIX = ".tmp"
MERGE_EVERY = 64
"""Chunk summaries a streamed part holds before merging them into one."""
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"}
"""URL schemes whose writes are atomic (an object is visible only once whole): there a file is
written in place, not under a temporary name then copied and deleted (three requests more)."""


def _filesystem(url: str) -> tuple[pafs.FileSystem, str]:
    if "://" not in url or url.startswith("file://"):
        path = url.removeprefix("file://")
        return pafs.LocalFileSystem(), os.path.abspath(path)
    try:
        import fsspec  # lazy: fsspec only for URL stores
    except ImportError:
        raise SweepError(
            f"sweep folder {url!r}: a URL needs fsspec (pip install 'va-sweep[dask]') and its"
            " backend"
        ) from None
    try:
        fs, path = fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:
        raise SweepError(f"sweep folder {url!r}: {exc}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


class Store:
    """One dataset root; every write goes through here so local and remote behave alike."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = _filesystem(str(url))
        self.fsspec = getattr(getattr(self.fs, "handler", None), "fs", None)
        """The fsspec filesystem behind a URL (DuckDB reads through it), or None."""
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self.object_store = not self.local and str(url).split("://")[0] in OBJECT_STORES

    def __getstate__(self) -> dict:
        # A worker (on Dask, maybe elsewhere) must not resolve a relative path from its own cwd.
        return {"url": self.root if self.local else self.url}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["url"])

    def _abs(self, rel: str) -> str:
        return posixpath.join(self.root, rel)

    # --- writing, atomically and durably ---------------------------------------------------

    def write_bytes(self, rel: str, data: bytes | pa.Buffer) -> None:
        """Replace ``rel`` with ``data`` atomically: written under a hidden temporary name,
        flushed to disk (``fsync``), renamed into place, and the folder flushed after, so a
        crash or a power cut leaves the old file or the new one, never a torn one. On an object
        store (``OBJECT_STORES``) the upload itself is atomic and goes to ``rel`` at once."""
        final = self._abs(rel)
        folder, name = posixpath.split(final)
        temp = posixpath.join(folder, f".{name}.{os.getpid()}{TEMP_SUFFIX}")
        if self.object_store:  # an upload is atomic: the object appears whole or not at all
            f = self.fsspec.open(final, "wb")
            try:
                f.write(memoryview(data))
            except BaseException:
                f.discard()  # abandon the upload (closing would publish what was sent)
                raise
            f.close()
            return
        if not self.local:
            self.fs.create_dir(folder, recursive=True)
            try:
                with self.fs.open_output_stream(temp) as f:
                    f.write(data)
                self.fs.move(temp, final)
            except BaseException:
                _quietly(self.fs.delete_file, temp)
                raise
            return
        created = _make_dirs(folder, self.root)
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(temp, flags, 0o644)  # a link made in its place mid-run is not followed
            with os.fdopen(fd, "wb") as f:
                f.write(memoryview(data))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, final)
        except BaseException:
            _quietly(os.unlink, temp)
            raise
        for path in [folder, *created]:
            _fsync_dir(path)

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._abs(rel)) as f:
            return f.read()

    def delete(self, rel: str) -> None:
        self.fs.delete_file(self._abs(rel))

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._abs(rel)).type == pafs.FileType.File

    # --- parts -------------------------------------------------------------------------------

    def write_part(self, rel: str, rows: pa.Table | Iterable[pa.Table]) -> PartInfo:
        """Write one unit's rows to ``rel`` (see :func:`writer_options`), atomically and durably,
        and first its summary file beside it (:mod:`sweep.store.summary`), so that a part on
        disk always has the summary it was written with.

        ``rows`` is one table or a stream of tables, in row order (every-page runs, never held
        whole): each is encoded and summarized as it comes (:class:`PartWriter`, the summaries
        merged exactly: ``sweep.store.summary.merge``), and nothing is written until the stream
        ends, so a stream that fails midway leaves no file behind (nor an earlier one touched).

        Returns the rows, size and SHA-256 of both, for the manifest that later proves them whole.
        """
        data = None  # a table's is encoded once its summary is written (what it held is gone)
        if isinstance(rows, pa.Table):
            found = part_summary(rows)
        else:
            writer, summaries = PartWriter(), []
            for table in rows:
                summaries.append(summarize(table))
                writer.write(table)
                del table
                if len(summaries) >= MERGE_EVERY:  # a stream of many: its summary stays small
                    summaries = [merge(summaries)]
            data, count = writer.finish(), writer.rows
            found = kept(merge(summaries), count)
        side = summary_path(rel)
        summary = None
        if found is not None:
            side_data = summary_bytes(found)
            self.write_bytes(side, side_data)
            summary = SummaryInfo(found.num_rows, side_data.size, _sha256(side_data))
        elif self.exists(side):  # an earlier version of this part's: not to outlive it
            self.delete(side)
        if data is None:
            data, count = part_bytes(rows), rows.num_rows
        digest = _sha256(data)
        self.write_bytes(rel, data)
        return PartInfo(rows=count, bytes=data.size, sha256=digest, summary=summary)

    def parts(self) -> set[str]:
        """Relative paths of every part file on disk (temporary ``.`` files excluded)."""
        return {rel for rel in self._listing() if _is_part(rel)}

    def _listing(self) -> list[str]:
        return list(self.files())

    def files(self) -> dict[str, int]:
        """Every file under the root (relative path -> size in bytes), in one listing."""
        info = self.fs.get_file_info(self.root)
        if info.type == pafs.FileType.NotFound:
            return {}
        if info.type != pafs.FileType.Directory:
            raise SweepError(f"sweep folder {self.url!r}: exists and is not a directory")
        selector = pafs.FileSelector(self.root, recursive=True)
        root = self.root.rstrip("/") + "/"
        return {
            f.path[len(root) :]: f.size
            for f in self.fs.get_file_info(selector)
            if f.type == pafs.FileType.File
        }

    def remove_temporaries(self) -> list[str]:
        """Delete the temporary files a killed or failed run of ours left (parts, their
        summaries, ``_sweep.json``, the manifest); called only under the folder's lock, so no
        live run owns them."""
        stale = [rel for rel in self._listing() if _is_temporary(rel)]
        for rel in stale:
            _quietly(self.fs.delete_file, self._abs(rel))
        return stale

    def has_results(self) -> bool:
        """Whether any part file exists (a ``_sweep.json`` alone holds no results to lose)."""
        return any(_is_part(rel) for rel in self._listing())

    def foreign_file(self) -> str | None:
        """A file or folder at the top of the root that no sweep writes, or None: ``--out``
        into a folder holding other things is refused rather than mixed with them."""
        info = self.fs.get_file_info(self.root)
        if info.type != pafs.FileType.Directory:
            return None
        for entry in sorted(
            self.fs.get_file_info(pafs.FileSelector(self.root)), key=lambda e: e.path
        ):
            base = posixpath.basename(entry.path)
            ours = (
                PartKey.is_folder(base)
                if entry.type == pafs.FileType.Directory
                else base in OWN_FILES or base in PLACEHOLDERS or _is_temporary(base)
            )
            if not ours:
                return base
        return None

    def clear(self) -> None:
        """Remove this project's files only (partitions, ``_sweep.*``), for ``--overwrite``."""
        info = self.fs.get_file_info(self.root)
        if info.type != pafs.FileType.Directory:
            return
        for entry in self.fs.get_file_info(pafs.FileSelector(self.root)):
            base = posixpath.basename(entry.path)
            if entry.type == pafs.FileType.Directory and PartKey.is_folder(base):
                self.fs.delete_dir(entry.path)
            elif base in (META_FILE, LOG_FILE, MANIFEST_FILE):
                self.fs.delete_file(entry.path)

    # --- _sweep.json and _sweep.log ----------------------------------------------------------

    def read_json(self, name: str) -> dict | None:
        """``name`` (``_sweep.json``, the manifest) parsed, or None when it does not exist."""
        path = self._abs(name)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        with self.fs.open_input_stream(path) as f:
            try:
                return json.loads(f.read().decode())
            except ValueError as exc:
                raise SweepError(f"{self.url}/{name}: not valid JSON ({exc})") from None

    def write_json(self, name: str, value: dict[str, Any]) -> None:
        """Replace ``name`` atomically (a crash leaves the old one or the new one)."""
        self.write_bytes(name, (json.dumps(value, indent=1, sort_keys=False) + "\n").encode())

    def read_meta(self) -> dict | None:
        return self.read_json(META_FILE)

    def write_meta(self, meta: dict[str, Any]) -> None:
        self.write_json(META_FILE, meta)

    def log_path(self) -> str:
        """A local file the log handler appends to; for a remote store, copied up by
        :meth:`upload_log`."""
        if self.local:
            os.makedirs(self.root, exist_ok=True)
            return self._abs(LOG_FILE)
        if not hasattr(self, "_local_log"):
            fd, self._local_log = tempfile.mkstemp(prefix="sweep-", suffix=".log")
            os.close(fd)
            existing = self._abs(LOG_FILE)
            if self.fs.get_file_info(existing).type == pafs.FileType.File:
                with self.fs.open_input_stream(existing) as src, open(self._local_log, "wb") as dst:
                    dst.write(src.read())
        return self._local_log

    def upload_log(self) -> None:
        if self.local or not hasattr(self, "_local_log"):
            return
        with (
            open(self._local_log, "rb") as src,
            self.fs.open_output_stream(self._abs(LOG_FILE)) as dst,
        ):
            dst.write(src.read())


@dataclass(frozen=True)
class SummaryInfo:
    """What a part's summary file holds (:mod:`sweep.store.summary`): its manifest entry."""

    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class PartInfo:
    """What a written part holds: the manifest's entry for it, with its summary file's."""

    rows: int
    bytes: int
    sha256: str
    summary: SummaryInfo | None = None


def _sha256(data: pa.Buffer) -> str:
    return hashlib.sha256(memoryview(data)).hexdigest()


def _make_dirs(folder: str, root: str) -> list[str]:
    """``os.makedirs``, returning the parents of each folder it created (to be flushed)."""
    missing = []
    path = folder
    while not os.path.isdir(path) and path not in ("", "/"):
        missing.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    return [os.path.dirname(p) for p in missing]


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _quietly(fn, *args) -> None:
    try:
        fn(*args)
    except OSError:
        pass


def is_temporary(rel: str) -> bool:
    """Whether ``rel`` is a file a run writes under a temporary name (then renames)."""
    return _is_temporary(rel)


def _is_temporary(rel: str) -> bool:
    base = posixpath.basename(rel)
    ours = (".part-", f".{SUMMARY_PREFIX}", f".{META_FILE}.", f".{MANIFEST_FILE}.")
    return base.startswith(ours) and base.endswith(TEMP_SUFFIX)


def _is_part(rel: str) -> bool:
    return PartKey.parse(rel) is not None
