"""The configurations a sweep gives each (memory map, placement): its combinations.

Per granule: every layout x mapping set x (for a boot set) CPU count x (for all of DRAM) block
setting. A boot set is what one kernel build maps (docs/model.md section 10), so its rows need
the build of the layout's era at that granule (``sweep.plan.kernels.kernel_for``): a layout and
granule without one have no boot-set rows, and the plan lists them (``skipped``) so that no
reader takes a missing cell for an empty one. Boot sets map pages as the kernel does; the block
setting is a what-if of all of DRAM only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sweep.core.memmap import granule_name
from sweep.model.bootrows import MAPPING_SETS, BootKernel
from sweep.model.layout import Layout
from sweep.plan.kernels import kernel_for, load_kernels


@dataclass(frozen=True)
class Combos:
    """One granule's combinations, in row order, as parallel arrays."""

    layout_index: np.ndarray  # int64
    block_mappings: np.ndarray  # bool
    mappings: np.ndarray  # int8, into MAPPING_SETS
    cpus: np.ndarray  # int64 (0 for all of DRAM)
    kernel_index: np.ndarray  # int64 (-1 for all of DRAM)

    def __len__(self) -> int:
        return len(self.layout_index)

    def take(self, combo: np.ndarray | int) -> dict[str, np.ndarray]:
        """The inputs of combination(s) ``combo``; a boot input that every combination shares
        (a sweep of all of DRAM) is one element, which the builder takes for every row."""
        return {
            name: values[:1] if name in SHARED and _one_value(values) else values[combo]
            for name, values in vars(self).items()
        }


SHARED = ("mappings", "cpus", "kernel_index")
"""Inputs ``Combos.take`` gives once when every combination holds the same."""


def _one_value(values: np.ndarray) -> bool:
    return len(values) > 0 and bool((values == values[0]).all())


def combos_for(
    layouts: Sequence[Layout],
    blocks: Sequence[bool],
    mappings: Sequence[str],
    cpus: Sequence[int],
    kernels: Sequence[BootKernel],
    granule: int,
    every_page: bool = False,
) -> tuple[Combos, list[str]]:
    """The combinations at ``granule`` and, for each boot set left out, one line saying why
    (every-page sweeps all of DRAM only: a boot set's tables change wherever an image section
    crosses a level-2 chunk, which its breakpoints do not follow)."""
    rows, skipped = [], []
    for k, layout in enumerate(layouts):
        era = getattr(layout, "era", None)
        for name in mappings:
            code = MAPPING_SETS.index(name)
            if code == 0:
                rows += [(k, bool(b), 0, 0, -1) for b in blocks]
                continue
            kernel = -1 if era is None or era.two_trees else kernel_for(kernels, era.name, granule)
            if every_page:
                skipped.append(f"{name}: {layout.name} at {granule_name(granule)}: every-page "
                               "sweeps all-dram only (use a stride placement)")  # fmt: skip
                continue
            if kernel < 0:
                skipped.append(f"{name}: {layout.name} at {granule_name(granule)}: {_why(era)}")
                continue
            rows += [(k, False, code, c, kernel) for c in cpus]
    arrays = np.array(rows, dtype=np.int64).reshape(-1, 5).T
    combos = Combos(arrays[0], arrays[1].astype(bool), arrays[2].astype(np.int8), *arrays[3:])
    return combos, skipped


def _why(era) -> str:
    if era is None:
        return "a plugin layout names no kernel era, so no kernel build"
    if era.two_trees:
        return "4.6-4.7 kept two trees; boot sets are modelled from 4.8"
    return "no kernel profile of that era and granule in `kernels` (see `sweep kernel-profile`)"


def plan_combos(
    config, layouts: Sequence[Layout], every_page: bool = False
) -> tuple[tuple[BootKernel, ...], dict[int, Combos], list[str]]:
    """A sweep's kernel builds (loaded only when it has boot sets), each granule's
    combinations, and the boot sets left out."""
    wanted = set(config.mappings) - {"all-dram"}
    kernels = tuple(load_kernels(config.kernels)) if wanted else ()
    combos, skipped = {}, []
    for granule in config.granules:
        combos[granule], why = combos_for(
            layouts, config.block_mappings, config.mappings, config.cpus, kernels, granule,
            every_page,
        )  # fmt: skip
        skipped += why
    return kernels, combos, skipped
