"""Reading a user's input file (a config, a memory map) so that a wrong path never hangs.

Only a regular file is read, or standard input when the path is ``-`` (on purpose); the size
limit is checked while reading, so a file that grows is cut off too. A FIFO is opened without
waiting for a writer and refused; a device (``/dev/zero``), a socket or a directory is refused;
each in one line naming the file.
"""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from sweep.core.errors import ValidationError

STDIN = "-"
CHUNK = 1 << 20
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def origin_of(path: str | os.PathLike) -> str:
    """How error lines name the input: the path, or ``<stdin>`` for ``-``."""
    return "<stdin>" if str(path) == STDIN else str(path)


def read_input(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The bytes of a regular file (or of standard input for ``-``), at most ``limit`` of them.

    ``what`` names the input in errors (``"memory-map file"``, ``"config"``).
    """
    origin = origin_of(path)
    if str(path) == STDIN:
        return _bounded(sys.stdin.buffer.read, origin, what, limit)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below)
        fd = os.open(Path(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ValidationError(f"{origin}: no such {what}") from None
    except IsADirectoryError:
        raise ValidationError(f"{origin}: is a directory, not a {what}") from None
    except OSError as exc:
        raise ValidationError(f"{origin}: cannot read: {exc.strerror or exc}") from None
    try:
        mode = os.fstat(fd).st_mode
        for test, kind in _KINDS:
            if test(mode):
                if kind == "a directory":
                    raise ValidationError(f"{origin}: is a directory, not a {what}")
                raise ValidationError(
                    f"{origin}: is {kind}, not a regular file (a {what} is read from a regular"
                    f" file, or from standard input as {STDIN})"
                )
        # Still non-blocking: a regular file reads as ever, while a kernel interface that waits
        # for data (/proc/kmsg, a tty) says EAGAIN at once instead of hanging the run.
        return _bounded(lambda n: _read_now(fd, n, origin, what), origin, what, limit)
    except OSError as exc:
        raise ValidationError(f"{origin}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _read_now(fd: int, n: int, origin: str, what: str) -> bytes:
    try:
        return os.read(fd, n)
    except BlockingIOError:  # EAGAIN: nothing there yet, and a file never says that
        raise ValidationError(
            f"{origin}: waits for data (a kernel interface or a device, not a file); a {what} is"
            f" read from a regular file: save it first (cat {origin} > file), or pass it as"
            f" {STDIN}"
        ) from None


def _bounded(read, origin: str, what: str, limit: int) -> bytes:
    chunks, total = [], 0
    while total <= limit:
        chunk = read(min(CHUNK, limit + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise ValidationError(f"{origin}: more than {_size(limit)}: too large for a {what}")


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n} bytes"


def decode_text(data: bytes, origin: str, what: str) -> str:
    """UTF-8 text, or one line naming the first line that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(f"{origin}: line {line}: not UTF-8 text, so not {what}") from None


_SPACE = re.compile(r"\s*")


def after_comments(text: str) -> int:
    """Where ``text`` starts once leading whitespace and C comments (``//`` to the end of the
    line, ``/* ... */``) are skipped: one pass, where a regular expression of comments that
    fails backtracks without end (``"/* */" * 1000`` never returned)."""
    i = 0
    while True:
        i = _SPACE.match(text, i).end()
        if text.startswith("//", i):
            end = text.find("\n", i)
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2) + 1
        else:
            return i
        if end <= 0:
            return len(text)
        i = end + 1


def load_toml(text: str, origin: str) -> dict[str, Any]:
    """``tomllib.loads``, with a syntax error or nesting too deep for the parser in one line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"{origin}: TOML syntax error: {exc}") from None
    except ValueError as exc:  # an integer of more than 4300 digits (sys.int_info)
        raise ValidationError(
            f"{origin}: a number too long to be read ({str(exc).split(';')[0]}); no address or"
            " size of the model has more than 16 digits"
        ) from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ValidationError(
            f"{origin}: TOML nested too deeply (arrays or inline tables hundreds of levels deep)"
        ) from None
