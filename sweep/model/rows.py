"""A checked batch of rows (docs/model.md section 1), as the builder takes it.

Every input is one value per row or one value shared by all rows (numpy broadcasting does the
rest). Rows that come in long runs of one map, granule, VA_BITS, layout and block setting (a
work unit) are cut into runs, each with those values shared (``Rows.run``); how a batch is cut
to compute is :mod:`sweep.model.grouping`.
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
    if values.shape[-1] <= 1:
        return values
    if values.strides[-1] == 0:
        return values[..., :1]
    ends = values[..., [0, -1]]  # a varying column most often differs there: no full pass
    if ends.min() == ends.max() and values.min() == values.max():
        return values[..., :1]
    return values


MIN_RUN_KEYS = 4
"""Rows a run of equal keys must hold on average for ``per_distinct`` to count run by run."""
SAMPLE_ROWS = 1 << 12
"""Rows ``per_distinct`` tells apart first: when most of them differ (random tags), it counts
every row without telling the others apart (a unit of many boards: 25,702 of 26,000 differ)."""


def per_distinct(n: int, count, keys: tuple, arrays: tuple) -> dict:
    """``count(*arrays)`` (arrays whose last axis is the rows) computed once per distinct
    ``keys``: rows with equal keys get equal counts (the builder's runtime tree: map and
    granule, blocks, root level, clipped DRAM, ``delta`` modulo the root's entry size), so a
    work unit or a board corpus counts each tree once.

    Rows in runs of equal keys (a unit of many boards, board by board) are counted once a
    run; others are told apart by a 64-bit hash of their keys, then checked equal to their
    representative key by key; when most rows differ (random tags: seen on the first
    ``SAMPLE_ROWS``, before any pass over the others), all rows are counted.
    """
    keys = [key for key in keys if len(key) > 1]
    if n > 2 * SAMPLE_ROWS and keys:
        head = [key[:SAMPLE_ROWS] for key in keys]
        if _runs(SAMPLE_ROWS, head) * MIN_RUN_KEYS > SAMPLE_ROWS:
            if 2 * len(pd.unique(_mixed(SAMPLE_ROWS, head))) > SAMPLE_ROWS:
                return count(*arrays)
    keys = [key for key in keys if (key != key[0]).any()]  # shared: no help
    if not keys:  # one runtime tree for all rows (a work unit without random tags)
        return count(*(values[..., :1] for values in arrays))
    starts = _runs(n, keys, starts=True)
    if len(starts) * MIN_RUN_KEYS <= n:
        lengths = np.diff(np.append(starts, n))
        counts = count(*(take(values, starts) for values in arrays))
        return {
            level: values if values.shape[-1] == 1 else np.repeat(values, lengths, axis=-1)
            for level, values in counts.items()
        }
    inverse, distinct = pd.factorize(_mixed(n, keys))
    if 2 * len(distinct) > n:
        return count(*arrays)
    first = np.empty(len(distinct), dtype=I64)
    first[inverse[::-1]] = np.arange(n - 1, -1, -1)
    if not all((key[first][inverse] == key).all() for key in keys):
        return count(*arrays)  # a hash collision: never seen, but then count every row
    counts = count(*(take(values, first) for values in arrays))
    return {level: take(values, inverse) for level, values in counts.items()}


def _runs(n: int, keys: list, starts: bool = False):
    """How many runs of equal keys ``n`` rows hold (with ``starts``: where each starts)."""
    changes = np.zeros(n, dtype=bool)
    changes[0] = True
    for key in keys:
        changes[1:] |= key[1:] != key[:-1]
    return np.flatnonzero(changes) if starts else int(np.count_nonzero(changes))


def _mixed(n: int, keys: list) -> np.ndarray:
    """A 64-bit hash of each row's keys (equal keys, equal hashes)."""
    mixed = np.zeros(n, dtype=np.uint64)
    for key in keys:
        mixed ^= key.astype(I64, copy=False).view(np.uint64)
        mixed *= np.uint64(0x9E37_79B9_7F4A_7C15)
        mixed ^= mixed >> np.uint64(29)
    return mixed


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
