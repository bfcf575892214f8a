"""docs/model.md section 1 for many memory maps at once: banks as flat arrays plus offsets.

The banks of every memory map, trimmed to every granule, live in two flat ``int64`` arrays
(Arrow's list layout): the banks of map ``m`` at granule code ``c`` are
``start[offsets[k]:offsets[k + 1]]`` with ``k = m * 3 + c``. A row then reads its own banks by
its key, so rows of thousands of maps are one numpy pass, not one pass per map.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from sweep.core.errors import ValidationError
from sweep.core.memmap import GRANULES, MemoryMap, granule_name

I64 = np.int64


def granule_codes(granule: np.ndarray) -> np.ndarray:
    """0, 1, 2 for 4K, 16K, 64K (``GRANULES`` order); a ``ValidationError`` for anything else.
    By comparisons, not a search (``searchsorted`` is 20x slower on a batch of 10^6 rows)."""
    granule = np.asarray(granule)
    codes = np.zeros(granule.shape, dtype=np.int64)
    for g in GRANULES[:-1]:
        codes += granule > g
    bad = np.asarray(GRANULES).take(codes) != granule
    if bad.any():
        value = int(granule[np.flatnonzero(bad)[0]])
        raise ValidationError(f"granule: {value!r} is not one of 4096, 16384, 65536")
    return codes


@dataclass(frozen=True)
class TrimmedBanks:
    """Trimmed banks ``[start, end)`` of every (map, granule), sorted by key then base.

    ``start[offsets[k]:offsets[k + 1]]`` are the banks of key ``k = map * 3 + code``;
    ``slot_start[j, k]`` is the same bank ``j`` of key ``k``, padded with empty banks ``[0, 0)``
    (a small table from which each row gathers its own banks in one ``take`` per slot).
    """

    memory_maps: Sequence[MemoryMap]
    start: np.ndarray
    end: np.ndarray
    offsets: np.ndarray
    slot_start: np.ndarray
    slot_end: np.ndarray

    @classmethod
    def of(cls, memory_maps: Sequence[MemoryMap]) -> TrimmedBanks:
        """Trim every map's banks to every granule (``MemoryMap.trimmed``, vectorized): base
        rounded up, end rounded down, empties dropped, touching banks merged (memblock)."""
        counts = np.fromiter((len(m.banks) for m in memory_maps), I64, len(memory_maps))
        banks = chain.from_iterable(chain.from_iterable(m.banks for m in memory_maps))
        raw = np.fromiter(banks, I64, 2 * int(counts.sum())).reshape(-1, 2)  # (base, size)
        base, end = raw[:, 0], raw[:, 0] + raw[:, 1]
        owner = np.repeat(np.arange(len(memory_maps), dtype=I64), counts)
        order = np.lexsort((base, owner))
        base, end, owner = base[order], end[order], owner[order]
        starts, ends, keys = [], [], []
        for code, granule in enumerate(GRANULES):
            s = -(-base // granule) * granule
            e = end // granule * granule
            keep = e > s
            s, e, m = s[keep], e[keep], owner[keep]
            # A bank that starts where the previous one of its map ends continues it.
            new_run = np.ones(len(s), dtype=bool)
            new_run[1:] = (m[1:] != m[:-1]) | (s[1:] != e[:-1])
            first = np.flatnonzero(new_run)
            last = np.flatnonzero(np.append(new_run, True)[1:])  # before the next run
            starts.append(s[first])
            ends.append(e[last])
            keys.append(m[first] * 3 + code)
        key = np.concatenate(keys)
        order = np.argsort(key, kind="stable")
        key, start, end = key[order], np.concatenate(starts)[order], np.concatenate(ends)[order]
        offsets = np.searchsorted(key, np.arange(len(memory_maps) * 3 + 1))
        slot = np.arange(len(key)) - offsets[key]
        shape = (int(slot.max(initial=0)) + 1, len(offsets) - 1)
        slot_start, slot_end = np.zeros(shape, dtype=I64), np.zeros(shape, dtype=I64)
        slot_start[slot, key] = start
        slot_end[slot, key] = end
        return cls(memory_maps, start, end, offsets, slot_start, slot_end)

    def per_row(self, map_index: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's trimmed banks as ``(banks, rows)`` arrays ``start``, ``end``; rows with
        fewer banks than the most are padded with empty banks ``[0, 0)``."""
        key = map_index * 3 + code
        count = self.offsets[key + 1] - self.offsets[key]
        if (count == 0).any():
            row = np.flatnonzero(count == 0)[0]
            raise ValidationError(
                f"memory map {self.memory_maps[map_index[row]].name!r}: no bank is left after "
                f"trimming to {granule_name(GRANULES[code[row]])} granules"
            )
        slots = int(count.max())
        return self.slot_start[:slots].take(key, axis=1), self.slot_end[:slots].take(key, axis=1)

    def check_inside(
        self,
        start: np.ndarray,
        end: np.ndarray,
        idmap_pa: np.ndarray,
        map_index: np.ndarray,
        granule: np.ndarray,
    ) -> None:
        """docs/model.md section 1: ``idmap_pa`` must lie inside a trimmed bank."""
        inside = ((start <= idmap_pa) & (idmap_pa < end)).any(axis=0)
        if not inside.all():
            row = np.flatnonzero(~inside)[0]
            name = self.memory_maps[np.broadcast_to(map_index, inside.shape)[row]].name
            raise ValidationError(
                f"memory map {name!r}: idmap_pa {int(idmap_pa[row]):#x} is outside every "
                f"{granule_name(int(np.broadcast_to(granule, inside.shape)[row]))}-trimmed bank"
            )
