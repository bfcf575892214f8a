"""A real boot's EL2 tables and pKVM reservation, as the model gives them (``verify-boot``).

From a console (parsed by ``sweep.formats.bootlog``) this takes what the kernel chose at
boot: the DRAM, the idmap page, the HYP VA range (the alias offset), the CPUs brought up, the
mode (``Protected ... mode initialized``), SVE and Spectre-v3a, and the build (``Linux
version``), whose kernel profile (``plugins/kernels/``, or ``--profile``) says where its
sections lie. ``sweep.model.bootmap`` then lists what ``init_hyp_mode``
(nVHE) or ``recreate_hyp_mappings`` (pKVM) maps and counts the tables per level; the pKVM pool
is ``kvm_hyp_reserve``'s (``sweep.model.pkvm_reserve``). A walk of the real tables
(``tools/boot-kernels --walk``) is compared level by level.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from sweep.core.eras import era_of_version
from sweep.core.errors import ValidationError
from sweep.formats.bootlog import BootLog, BootLogError
from sweep.formats.kernel_profile import KernelProfile, load_profile
from sweep.model import bootmap, pkvm_reserve
from sweep.plan.kernels import boot_kernel, shipped_profiles

TABLE_FIELDS = ("tables_lm1", "tables_l0", "tables_l1", "tables_l2", "tables_l3", "table_pages")


def profile_for(release: str | None, given: str | Path | None = None) -> KernelProfile:
    """The profile of the build that printed the log: ``given``, else the shipped one."""
    if given is not None:
        try:
            return load_profile(Path(given))
        except (OSError, ValueError) as exc:
            raise ValidationError(f"--profile {given}: {exc}") from None
    if release is None:
        raise BootLogError("cannot tell the kernel build: the log has no 'Linux version' line")
    known = shipped_profiles()
    if release not in known:
        raise BootLogError(
            f"no kernel profile for {release}: make one from its System.map and .config with "
            "`sweep kernel-profile --system-map FILE --config FILE -o P.toml` and pass "
            f"--profile P.toml (shipped: {', '.join(sorted(known))})"
        )
    return load_profile(known[release])


@dataclass(frozen=True)
class BootSet:
    """The model's EL2 tables at boot for one console, and the pKVM reservation."""

    mode: str
    cpus: int
    tables: dict[str, int]
    reserve_bytes: int
    reserve_base: int
    placement: str = "first free + 24 MiB"
    """Where the per-CPU regions and SVE states lie: ``bootmap.first_free``'s rule, or the
    PAs of a walk's leaves (``walk_allocations``)."""


def boot_set(
    boot: BootLog,
    banks: list[tuple[int, int]],
    profile: KernelProfile,
    leaves: list[tuple[int, int, int]] = (),
) -> BootSet:
    """What the kernel whose console gave ``boot`` mapped at EL2 once KVM was up (module doc);
    with a walk's ``leaves``, the per-CPU regions and SVE states where its allocator put them."""
    image = boot_kernel(profile).image
    version = image.version
    era = era_of_version(profile.version)
    cpus = boot.cpus or 1
    mode = "pkvm" if boot.protected else "nvhe"
    reserve = pkvm_reserve.reserve_parts(
        era.name, profile.granule, [b for b, _ in banks], [s for _, s in banks]
    )
    size = reserve["reserve_bytes"] if mode == "pkvm" else 0
    base = bootmap.pool_base(banks, size, profile.granule) if size else 0
    delta = (boot.hyp_va_start - banks[0][0]) % (1 << 64)
    image_pa = image.image_pa(boot.idmap_pa)
    sve = bootmap.sve_state_bytes(version, boot.sve_vector_bytes) if mode == "pkvm" else 0
    sve = sve if version >= bootmap.HOST_SVE_SINCE else 0
    found = walk_allocations(
        leaves, delta, (image_pa, image_pa + image.end), (base, base + size),
        [image.percpu_bytes] * cpus + [sve] * (cpus if sve else 0), profile.granule,
    )  # fmt: skip
    placed = {"percpu_pa": found[:cpus], "sve_pa": found[cpus:]} if found else {}
    tables = bootmap.boot_tables(
        mode, image, profile.granule, boot.el2_va_bits, delta, image_pa, banks, cpus,
        reserve_base=base, reserve_size=size, vectors=boot.spectre_v3a, sve_bytes=sve, **placed,
    )  # fmt: skip
    where = "the walk's leaf PAs" if found else BootSet.placement
    return BootSet(mode, cpus, tables, reserve["reserve_bytes"], base, where)


def walk_allocations(leaves, delta: int, image: tuple, pool: tuple, sizes: list[int], g: int):
    """The PAs of the page allocations ``sizes`` (in the kernel's order: each CPU's region,
    then each SVE state) in a walk: its leaves at the HYP alias (``va - pa == delta``) outside
    the image and the pool, cut in that order; None when they are not exactly that."""
    runs = sorted(
        (pa, pa + size)
        for va, pa, size in leaves
        if (va - pa) % (1 << 64) == delta
        and not image[0] <= pa < image[1]
        and not pool[0] <= pa < max(pool[1], pool[0] + 1)
    )
    if not runs or not sizes:
        return None
    out, k, pos = [], 0, runs[0][0]
    for size in (-(-n // g) * g for n in sizes):
        if pos + size > runs[k][1]:  # the next allocation begins the next run, or none fits
            if pos != runs[k][1] or k + 1 == len(runs):
                return None
            k, pos = k + 1, runs[k + 1][0]
        if pos + size > runs[k][1]:
            return None
        out.append(pos)
        pos += size
    return out if k + 1 == len(runs) and pos == runs[k][1] else None


def read_walk(path: str | Path) -> tuple[dict[str, int], list[tuple[int, int, int]]]:
    """A walk's table counts, a JSON object with ``tables_lm1`` .. ``tables_l3`` and
    ``table_pages`` (``tools/boot-kernels --walk`` writes it; other keys are ignored), and its
    leaf ranges ``(va, pa, size)`` (``leaves``): optional, none when absent or unreadable,
    since the counts are what is compared."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"--tables {path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValidationError(f"--tables {path}: expected a JSON object of table counts")
    out = {}
    for key in TABLE_FIELDS:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValidationError(f"--tables {path}: {key} must be a count (got {value!r})")
        out[key] = value
    try:
        leaves = [(int(x["va"], 16), int(x["pa"], 16), int(x["size"], 16))
                  for x in data.get("leaves") or []]  # fmt: skip
    except (ValueError, TypeError, KeyError):
        leaves = []
    return out, leaves
