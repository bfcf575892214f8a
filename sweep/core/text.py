"""Names made safe to print: a name comes from a file or a plugin, and a terminal obeys what it
is sent (clear the screen, set the title, a newline that forges an output line).

:func:`printable` escapes every control character (C0, DEL, C1) and the Unicode marks that
reorder or hide text (bidi overrides, zero-width), as ``\\x1b`` / ``\\u202e``, so the name stays
readable and its bytes visible; :func:`control_characters` says whether a name has any, for
the places that refuse them.
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object, keep: str = "") -> str:
    """``text`` as a string with its control characters escaped (``str`` of a non-string),
    but for those in ``keep`` (``"\\n"`` for a message of several lines)."""
    text = text if isinstance(text, str) else str(text)
    return _CONTROL.sub(lambda m: m.group() if m.group() in keep else _escape(m), text)


def control_characters(text: str) -> bool:
    """Whether ``text`` holds a character :func:`printable` would escape."""
    return _CONTROL.search(text) is not None


def shortened(text: str, most: int) -> str:
    """``text``, or its first ``most`` characters and how long it was (a value of 5,000 digits
    in an error line)."""
    return text if len(text) <= most else f"{text[:most]}... ({len(text):,} characters)"
