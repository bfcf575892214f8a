"""Intervals of an every-page group refined by samples (:mod:`sweep.model.runs`): each evaluated
at its first, middle and last page, and those whose samples do not fit one run halved until they
do. A generator of the builder calls it needs (``Asks``): the groups of a unit
share the calls.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import numpy as np

from sweep.model.builder import NUMPY_DTYPES
from sweep.model.intervals import AFFINE, OUTPUTS, diff, take

I64 = np.int64
MAX_ROUNDS = 64
BATCH = 1 << 17
"""Pages the builder evaluates at once (its scratch memory stays near 130 MiB)."""
WINDOW = BATCH // 3
"""Intervals sampled at once (three pages each at most): one builder call's worth."""

Asks = Generator["np.ndarray | int | dict", "dict | None", Any]
"""A group's work: it yields pages to evaluate (and is sent their outputs), once a window how
many intervals it is about to hold (and is sent None when there is room) and that window's runs,
numpy columns (``sweep.model.windows.join``; sent None)."""


def refine(first, end, g, known=None) -> Asks:
    """Evaluate each interval at its first, middle and last page and halve those whose samples
    do not fit one run, until all do; intervals in ``known`` (an earlier result) are reused."""
    n = len(first)
    if known is None:
        have = np.zeros(n, dtype=bool)
        a, c = empty(OUTPUTS, n), empty(AFFINE, n)
    else:
        kf, ke, a, c = known
        idx = np.minimum(np.searchsorted(kf, first), len(kf) - 1)
        have = (kf[idx] == first) & (ke[idx] == end)
        for columns in (a, c):
            for name in columns:  # one column at a time: the old one goes at once
                columns[name] = columns[name][idx]
    todo = np.flatnonzero(~have)
    bad = [np.zeros(0, dtype=I64)]
    for start in range(0, len(todo), WINDOW):
        rows = todo[start : start + WINDOW]
        ok = yield from _sample(first[rows], end[rows], g, a, c, rows)
        bad.append(rows[~ok])
    bad = np.concatenate(bad)
    if not len(bad):
        return first, end, a, c
    pieces = yield from _halve(first[bad], end[bad], g)
    # Each bad interval's pieces take its place: one gather a column.
    count = np.ones(n, dtype=I64)
    count[bad] = np.diff(np.searchsorted(pieces[0], np.append(first[bad], end[bad][-1])))
    source = np.repeat(np.arange(n), count)
    source[np.repeat(count > 1, count)] = n + np.arange(len(pieces[0]))
    first = np.concatenate([first, pieces[0]])[source]
    end = np.concatenate([end, pieces[1]])[source]
    for columns, more in ((a, pieces[2]), (c, pieces[3])):
        for name in columns:
            columns[name] = np.concatenate([columns[name], more[name]])[source]
    return first, end, a, c


def _halve(first, end, g) -> Asks:
    """Intervals whose samples disagree, halved round after round until every piece's agree:
    the pieces, in order, with their samples (``first, end, a, c``)."""
    done = []
    for _ in range(MAX_ROUNDS - 1):
        mid = first + (end - first) // g // 2 * g
        first, end = np.concatenate([first, mid]), np.concatenate([mid, end])
        order = np.argsort(first, kind="stable")
        first, end = first[order], end[order]
        n = len(first)
        a, c = empty(OUTPUTS, n), empty(AFFINE, n)
        ok = np.ones(n, dtype=bool)
        for start in range(0, n, WINDOW):
            rows = np.arange(start, min(start + WINDOW, n))
            ok[rows] = yield from _sample(first[rows], end[rows], g, a, c, rows)
        done.append((first[ok], end[ok], take(a, ok), take(c, ok)))
        first, end = first[~ok], end[~ok]
        if not len(first):
            first, end, a, c = zip(*done, strict=True)
            order = np.argsort(np.concatenate(first), kind="stable")
            a, c = (
                {name: np.concatenate([x[name] for x in y])[order] for name in y[0]} for y in (a, c)
            )
            return np.concatenate(first)[order], np.concatenate(end)[order], a, c
    raise RuntimeError("every-page: intervals did not converge")  # pragma: no cover


def _sample(first, end, g, a, c, rows) -> Asks:
    """Evaluate intervals at their first, middle and last page (each page once: a one-page
    interval is one sample, a two-page one two), store the first page's outputs in ``a`` and
    the last page's affine ones in ``c`` at ``rows``; whether each interval fits one run."""
    pages = (end - first) // g
    by_size = [np.flatnonzero(pages == 1), np.flatnonzero(pages == 2), np.flatnonzero(pages > 2)]
    one, two, more = (len(k) for k in by_size)
    order = np.concatenate(by_size)  # so that each kind's samples are slices
    f, e, pages = first[order], end[order], pages[order]
    values = yield np.concatenate([f, e[one:] - g, f[one + two :] + pages[one + two :] // 2 * g])
    n = len(f)
    head, tail = slice(0, n), slice(n, n + two + more)  # first pages; last pages but of one
    mid = slice(n + two + more, n + two + 2 * more)
    ok = np.ones(n, dtype=bool)
    where = rows[order]
    for name in OUTPUTS:
        v = values[name]
        if v.size == 1:  # one value at every sample: they agree
            a[name][where] = v[0]
            if name in c:
                c[name][where] = v[0]
            continue
        a[name][where] = v[head]
        if name not in c:
            ok[one:] &= v[one:n] == v[tail]
            ok[one + two :] &= v[one + two : n] == v[mid]
            continue
        last = np.concatenate([v[:one], v[tail]])
        c[name][where] = last
        total = diff(v[:n], last)
        span = np.maximum(pages - 1, 1)
        slope = total // span
        ok &= total == slope * span
        ok[one + two :] &= diff(v[one + two : n], v[mid]) == slope[one + two :] * (
            pages[one + two :] // 2
        )
    back = np.empty(n, dtype=bool)
    back[order] = ok
    return back


def empty(names, n: int) -> dict[str, np.ndarray]:
    return {name: np.empty(n, dtype=NUMPY_DTYPES[name]) for name in names}
