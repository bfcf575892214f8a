"""A checked batch of rows (docs/model.md section 1), as the builder takes it.

Every input is one value per row or one value shared by all rows (numpy broadcasting does the
rest). Rows that come in long runs of one map, granule, VA_BITS, layout and block setting (a
work unit) are cut into runs, each with those values shared (``Rows.run``); rows that do not,
but fall in few such groups (a mixed batch given to ``sweep.build``), are computed group by
group (``grouping``): only the idmap pages and tags are put in group order, and each output
value is put back in its row's place. Rows of many small groups (a unit of many boards) are put
in layout order the same way, with only the layout and block setting shared: each piece then
computes one layout and one kind of tree, never both kinds for every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sweep.core.errors import ValidationError
from sweep.core.memmap import PA_LIMIT, MemoryMap, check_va_bits, va_bits_in_range
from sweep.model.banks import granule_codes
from sweep.model.layout import Layout

I64 = np.int64
RUN_FIELDS = (
    "map_index", "granule", "va_bits", "layout_index", "block_mappings", "mappings", "cpus",
    "kernel_index",
)  # fmt: skip
"""What a work unit's rows share in runs (a segment): map, granule, VA_BITS, layout, blocks,
mapping set, CPUs and kernel build."""
PER_ROW = ("idmap_pa", "tag_random")
"""What each row has of its own."""
WIDE_FIELDS = ("map_index", "granule", "va_bits", "layout_index", "cpus", "kernel_index")
"""Integers a batch copies in the dtype it was given (a frame's int8 or int32: an eighth to a
half of an int64 copy's bytes) and a piece computes with in int64 (``wide``)."""
MIN_RUN_ROWS = 1024
"""Rows a run of equal ``RUN_FIELDS`` must hold on average for a batch to be computed run by
run, each run's values shared (one element): then banks, clipping, layouts and the runtime tree
are one element too and only what depends on the idmap page is per row. Shorter runs are put
in group order (a shuffled batch of few configurations) or layout order (a board corpus, a unit
of many boards) when those groups hold as many rows on average, else computed per row."""


@dataclass(frozen=True)
class Rows:
    """A checked batch of ``len(idmap_pa)`` rows. Every other array holds one element per row
    or a single element that all rows share: numpy broadcasting does the rest, so a value
    shared by a work unit costs one element, and no function here asks which it is. A piece
    taken to compute (``rows[part]``, ``run``) holds its ``WIDE_FIELDS`` in int64."""

    map_index: np.ndarray
    granule: np.ndarray
    va_bits: np.ndarray
    layout_index: np.ndarray
    block_mappings: np.ndarray
    idmap_pa: np.ndarray
    """int64, aligned down to the row's granule."""
    tag_random: np.ndarray
    """uint64."""
    mappings: np.ndarray
    """int8 code into ``sweep.model.bootrows.MAPPING_SETS``: 0 all of DRAM, else a boot set."""
    cpus: np.ndarray
    """CPUs a boot set maps stacks and per-CPU regions for (0 for all of DRAM)."""
    kernel_index: np.ndarray
    """Index into the builder's kernel builds (``BootKernel``), -1 for none."""

    @classmethod
    def of(
        cls,
        memory_maps: Sequence[MemoryMap],
        map_index,
        granule,
        va_bits,
        layouts: Sequence[Layout],
        layout_index,
        block_mappings,
        idmap_pa,
        tag_random=None,
        *,
        mappings=0,
        cpus=0,
        kernels: Sequence = (),
        kernel_index=-1,
    ) -> Rows:
        """Check a batch (docs/model.md section 1): each argument one value or one per row."""
        idmap = np.asarray(idmap_pa).reshape(-1)
        n = len(idmap)
        granule = _column("granule", granule, n, None)
        granule_codes(granule)  # raises, naming the first that is not a granule
        va_bits = _column("va_bits", va_bits, n, None)
        bad = ~va_bits_in_range(va_bits)
        if bad.any():
            check_va_bits(int(va_bits[np.flatnonzero(bad)[0]]))  # raises, naming the first
        blocks = np.asarray(block_mappings)
        if blocks.dtype != bool:
            if not np.isin(blocks, [0, 1]).all():
                raise ValidationError("block_mappings: values must be true/false (or 0/1)")
            blocks = blocks.astype(bool)
        return cls(
            map_index=_index("memory map", map_index, n, len(memory_maps)),
            granule=granule,
            va_bits=va_bits,
            layout_index=_index("layout", layout_index, n, len(layouts)),
            block_mappings=_column("block_mappings", blocks, n, bool),
            idmap_pa=_aligned_idmap(idmap, granule.astype(I64, copy=False)),
            tag_random=_tags(tag_random, n),
            **_boot_inputs(mappings, cpus, kernels, kernel_index, granule, n),
        )

    def __len__(self) -> int:
        return len(self.idmap_pa)

    def __getitem__(self, part: slice) -> Rows:
        """Rows ``part``, a piece to compute: its ``WIDE_FIELDS`` in int64."""
        return Rows(**{name: wide(name, take(values, part)) for name, values in vars(self).items()})

    def run(self, part: slice) -> Rows:
        """Rows ``part``, all in one run of equal ``RUN_FIELDS``, with those values shared."""
        first = slice(part.start or 0, (part.start or 0) + 1)
        shared = {name: wide(name, take(getattr(self, name), first)) for name in RUN_FIELDS}
        return Rows(**{name: take(getattr(self, name), part) for name in PER_ROW}, **shared)


def wide(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` of field ``name`` as a piece holds them: ``WIDE_FIELDS`` in int64."""
    return values.astype(I64, copy=False) if name in WIDE_FIELDS else values


def take(values: np.ndarray, rows) -> np.ndarray:
    """``values[..., rows]``, or ``values`` when its one element (last axis) is shared."""
    return values if values.shape[-1] == 1 else values[..., rows]


def full(values: np.ndarray, n: int, dtype) -> np.ndarray:
    """A column of ``n`` rows in ``dtype``: shared values repeated, the same dtype's reused."""
    values = np.asarray(values)
    if values.shape == (n,) and values.dtype == np.dtype(dtype):
        return values
    if values.size == 1:  # a fill, which numpy does without a cast per element
        return np.full(n, values.reshape(-1)[0], dtype=dtype)
    if values.shape == (n,) and values.dtype.kind in "iu" and np.dtype(dtype).kind in "iu":
        if values.dtype.itemsize == np.dtype(dtype).itemsize:
            return values.view(dtype)  # int64 <-> uint64: the model's values are below 2^63
    return np.broadcast_to(values, (n,)).astype(dtype)


def shared_if_equal(values: np.ndarray) -> np.ndarray:
    """One element when every row holds the same value (the tree size of a unit whose idmap
    pages all fit in VA_BITS, the alias offset of an untagged layout, the level where pages far
    from every mapping stop their walk): what follows from it is then computed once."""
    if values.shape[-1] > 1 and (values.strides[-1] == 0 or values.min() == values.max()):
        return values[..., :1]
    return values


MIN_RUN_KEYS = 4
"""Rows a run of equal keys must hold on average for ``per_distinct`` to count run by run."""


def per_distinct(n: int, count, keys: tuple, arrays: tuple) -> dict:
    """``count(*arrays)`` (arrays whose last axis is the rows) computed once per distinct
    ``keys``: rows with equal keys get equal counts (the builder's runtime tree: map and
    granule, blocks, root level, clipped DRAM, ``delta`` modulo the root's entry size), so a
    work unit or a board corpus counts each tree once.

    Rows in runs of equal keys (a unit of many boards, board by board) are counted once a
    run; others are told apart by a 64-bit hash of their keys, then checked equal to their
    representative key by key; when most rows differ (random tags), all rows are counted.
    """
    keys = [key for key in keys if len(key) > 1 and (key != key[0]).any()]  # shared: no help
    if not keys:  # one runtime tree for all rows (a work unit without random tags)
        return count(*(values[..., :1] for values in arrays))
    changes = np.zeros(n, dtype=bool)
    changes[0] = True
    for key in keys:
        changes[1:] |= key[1:] != key[:-1]
    starts = np.flatnonzero(changes)
    if len(starts) * MIN_RUN_KEYS <= n:
        lengths = np.diff(np.append(starts, n))
        counts = count(*(take(values, starts) for values in arrays))
        return {
            level: values if values.shape[-1] == 1 else np.repeat(values, lengths, axis=-1)
            for level, values in counts.items()
        }
    mixed = np.zeros(n, dtype=np.uint64)
    for key in keys:
        mixed ^= key.astype(I64, copy=False).view(np.uint64)
        mixed *= np.uint64(0x9E37_79B9_7F4A_7C15)
        mixed ^= mixed >> np.uint64(29)
    inverse, distinct = pd.factorize(mixed)
    if 2 * len(distinct) > n:
        return count(*arrays)
    first = np.empty(len(distinct), dtype=I64)
    first[inverse[::-1]] = np.arange(n - 1, -1, -1)
    if not all((key[first][inverse] == key).all() for key in keys):
        return count(*arrays)  # a hash collision: never seen, but then count every row
    counts = count(*(take(values, first) for values in arrays))
    return {level: take(values, inverse) for level, values in counts.items()}


# --- Checking the inputs (section 1) ----------------------------------------------------------


def _column(name: str, values, n: int, dtype=I64) -> np.ndarray:
    """One value per row, or one value (shape ``(1,)``) shared by all rows; in ``dtype``, or
    (None) in the integer dtype given."""
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in ("b" if dtype is bool else "iu"):
        raise ValidationError(f"{name}: expected integers, got dtype {values.dtype}")
    if len(values) not in (1, n):
        raise ValidationError(f"{name}: {len(values)} values for {n} rows")
    if dtype is None:  # the batch's own copy (a result's columns may be these), not wider
        return values.copy()
    return values.astype(dtype, copy=False)


def _index(what: str, index, n: int, count: int) -> np.ndarray:
    index = _column(f"{what} index", index, n, None)
    if count == 0 or index.min(initial=0) < 0 or index.max(initial=0) >= count:
        raise ValidationError(f"{what} index: values must lie in 0..{count - 1}")
    return index


def _aligned_idmap(idmap: np.ndarray, granule: np.ndarray) -> np.ndarray:
    if idmap.dtype.kind not in "iu":
        raise ValidationError(f"idmap_pa: expected integers, got dtype {idmap.dtype}")
    if idmap.dtype.kind == "i" and (idmap < 0).any():
        raise ValidationError(f"idmap_pa: {int(idmap[idmap < 0][0])} is negative")
    wide = idmap.astype(np.uint64, copy=False)
    if (wide >= PA_LIMIT).any():
        raise ValidationError(f"idmap_pa: {int(wide[wide >= PA_LIMIT][0]):#x} is not below 2^52")
    return wide.view(I64) & -granule  # granules are powers of two


def _tags(tag_random, n: int) -> np.ndarray:
    if tag_random is None:
        return np.zeros(1, dtype=np.uint64)
    tags = _column("tag_random", tag_random, n, np.asarray(tag_random).dtype)
    if tags.dtype.kind == "i" and (tags < 0).any():
        raise ValidationError("tag_random: values must not be negative")
    return tags.astype(np.uint64, copy=False)


def _boot_inputs(mappings, cpus, kernels: Sequence, kernel_index, granule, n: int) -> dict:
    """Section 10's inputs: the mapping set (a code), the CPU count and the kernel build; a
    boot set needs a build of the row's granule and at least one CPU."""
    mappings = _column("mappings", mappings, n, np.int8)
    if mappings.min(initial=0) < 0 or mappings.max(initial=0) > 2:
        raise ValidationError("mappings: codes must be 0 (all-dram), 1 (nvhe-boot), 2 (pkvm-boot)")
    cpus = _column("cpus", cpus, n, None)
    kernel_index = _column("kernel index", kernel_index, n, None)
    if kernel_index.max(initial=-1) >= len(kernels) or kernel_index.min(initial=0) < -1:
        raise ValidationError(f"kernel index: values must lie in -1..{len(kernels) - 1}")
    boot = np.broadcast_to(mappings != 0, (n,))
    if boot.any():
        bad_cpus = boot & (np.broadcast_to(cpus, (n,)) < 1)
        if bad_cpus.any():
            raise ValidationError("cpus: a boot mapping set needs at least one CPU")
        index = np.broadcast_to(kernel_index, (n,))
        if (boot & (index < 0)).any():
            raise ValidationError("kernel: a boot mapping set needs a kernel build")
        kernel_granule = np.array([k.image.granule for k in kernels] or [0], I64)
        wrong = boot & (kernel_granule[np.maximum(index, 0)] != np.broadcast_to(granule, (n,)))
        if wrong.any():
            i = int(np.flatnonzero(wrong)[0])
            raise ValidationError(
                f"kernel {kernels[index[i]].name}: a {kernels[index[i]].image.granule}-byte "
                f"granule build, but the row's granule is {int(np.broadcast_to(granule, (n,))[i])}"
            )
    return {"mappings": mappings, "cpus": cpus, "kernel_index": kernel_index}


@dataclass(frozen=True)
class Groups:
    """Rows cut into runs of equal ``RUN_FIELDS``, each computed with those values shared."""

    bounds: list[int]
    """Where each run starts in computing order, and the end."""
    order: np.ndarray | None = None
    """The rows in computing order (group by group, stable), or None: in input order."""
    code: np.ndarray | None = None
    """With ``order``: each row's group (its index in ``bounds``), in input order."""
    first: list[int] | None = None
    """With ``order``: the groups by their first row in the input, the order they are computed
    in (so an error names the first bad row of the first group that holds one)."""
    shared: tuple[str, ...] = RUN_FIELDS
    """What each group's rows share (one element in its pieces); the other fields are put in
    order with the idmap pages."""

    def runs(self, rows: Rows):
        """``(group, start, end, rows)`` of each run, its ``shared`` fields one element and
        ``start:end`` its place in computing order; only the other fields are put in order."""
        if self.order is None:
            for k, (lo, hi) in enumerate(zip(self.bounds, self.bounds[1:], strict=False)):
                yield k, lo, hi, rows.run(slice(lo, hi))
            return
        tags = shared_if_equal(rows.tag_random)  # no tags: one element, not put in order
        own = (*PER_ROW, *(name for name in RUN_FIELDS if name not in self.shared))
        values = {name: tags if name == "tag_random" else getattr(rows, name) for name in own}
        moved = {name: wide(name, take(v, self.order)) for name, v in values.items()}
        for k in self.first:
            lo, hi, row = self.bounds[k], self.bounds[k + 1], int(self.order[self.bounds[k]])
            first = slice(row, row + 1)
            shared = {name: wide(name, take(getattr(rows, name), first)) for name in self.shared}
            yield k, lo, hi, Rows(**shared, **{x: take(v, slice(lo, hi)) for x, v in moved.items()})


MAX_KEY = 1 << 16
"""Keys ``grouping`` counts with ``bincount``; wider combinations are factorized first."""


def grouping(rows: Rows) -> Groups | None:
    """How to compute ``rows`` run by run: in place when they come in runs of equal
    ``RUN_FIELDS`` of ``MIN_RUN_ROWS`` rows on average (a work unit's segments); put in group
    order (stable) when they are not but fall in that few groups (a shuffled batch of a few
    configurations); else in layout order (``_by_layout``: a unit of many boards, a board
    corpus); None when none of these (a small batch): then per row."""
    n = len(rows)
    key, size = _group_key(rows)
    if size is None:
        return _by_layout(rows)
    if key is None:  # every field shared: one run
        return Groups([0, n])
    starts = np.flatnonzero(key[1:] != key[:-1]) + 1
    if (len(starts) + 1) * MIN_RUN_ROWS <= max(n, MIN_RUN_ROWS):
        return Groups([0, *starts.tolist(), n])
    if n < 2 * MIN_RUN_ROWS:
        return None
    counts = np.bincount(key, minlength=size)
    if np.count_nonzero(counts) * MIN_RUN_ROWS > n:
        return _by_layout(rows)
    return _ordered(key, counts)


def _by_layout(rows: Rows) -> Groups | None:
    """Rows of many small groups in layout order, layout and block setting shared, when
    these fall in groups of ``MIN_RUN_ROWS`` rows on average. Each piece then computes one
    kind of tree (section 5: both trees of 4.6-4.7, or one merged tree, never both for every
    row) and one layout's formula: a unit of 2,000 boards built at ~430 ns a row, was ~730."""
    n = len(rows)
    if n < 2 * MIN_RUN_ROWS or rows.layout_index.shape[-1] <= 1:
        return None
    key = rows.layout_index.astype(np.int32) * 2 + rows.block_mappings
    counts = np.bincount(key)
    if np.count_nonzero(counts) * MIN_RUN_ROWS > n:
        return None
    return _ordered(key, counts, ("layout_index", "block_mappings"))


def _ordered(key: np.ndarray, counts: np.ndarray, shared=RUN_FIELDS) -> Groups:
    """The rows in the order of ``key`` (stable), a group per value present in ``counts``."""
    present = np.flatnonzero(counts)
    small = np.int8 if len(present) < 1 << 7 else np.int16 if len(present) < 1 << 15 else I64
    dense = np.zeros(len(counts), dtype=small)
    dense[present] = np.arange(len(present))
    code = dense.take(key)  # radix sorts by small keys
    order = np.argsort(code, kind="stable")
    bounds = [0, *np.cumsum(counts[present]).tolist()]
    first = np.argsort(order[bounds[:-1]]).tolist()  # stable: a group's first row comes first
    return Groups(bounds, order, code.astype(np.intp, copy=False), first, tuple(shared))


def _group_key(rows: Rows) -> tuple[np.ndarray | None, int | None]:
    """One integer per row, equal exactly where every ``RUN_FIELDS`` value is, below ``size``
    (int32 arithmetic: keys stay below ``MAX_KEY``); ``(None, 1)`` when no field varies;
    ``(None, None)`` when a field alone has more than ``n / MIN_RUN_ROWS`` values (neither
    runs nor groups then)."""
    n, key, size = len(rows), None, 1
    for name in RUN_FIELDS:
        values = getattr(rows, name)
        if values.shape[-1] <= 1:  # shared (or no rows)
            continue
        if values.dtype == bool:
            values = values.view(np.uint8)
        low, high = int(values.min()), int(values.max())
        if low == high:
            continue
        if name == "granule":  # checked: 4K, 16K or 64K
            values, low, high = values >> 12, low >> 12, high >> 12
        radix = high - low + 1
        if radix <= MAX_KEY:
            # modulo 2^32, exact: the differences are below MAX_KEY
            codes = np.subtract(values, np.int64(low), dtype=np.int32, casting="unsafe")
        else:
            codes, uniques = pd.factorize(values)
            radix = len(uniques)
            if radix * MIN_RUN_ROWS > n:
                return None, None
        if key is not None and size * radix > MAX_KEY:
            key, uniques = pd.factorize(key)
            size = len(uniques)
        if key is None:
            key = codes.astype(np.int32, copy=False)
        else:
            key *= radix
            key += codes
        size *= radix
    if size > MAX_KEY:
        key, uniques = pd.factorize(key)
        size = len(uniques)
    return key, size
