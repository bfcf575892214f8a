"""Which kernel build a boot-set row describes: shipped profiles, or the user's own.

A boot mapping set (docs/model.md section 10) needs to know where one build's sections lie
and how large its per-CPU region is: a kernel profile (``plugins/kernels/``, made by
``tools/kernel-profiles`` from Debian's packages, or ``sweep kernel-profile`` from a user's
``System.map`` and ``.config``). A sweep's ``kernels`` key names the builds it may use; each
(era, granule) cell takes the newest of them that is of that era and granule. A cell without
one has no boot-set rows, and the plan says so (``Plan.skipped``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from sweep.core.eras import era_of_version
from sweep.core.errors import ValidationError
from sweep.formats.kernel_profile import KernelProfile, load_profile
from sweep.model.bootmap import BootImage
from sweep.model.bootrows import MAPPING_SETS, BootKernel

SHIPPED = "shipped"

ABSENT: dict[str, tuple] = {"mappings": ("all-dram",), "cpus": (4,), "kernels": (SHIPPED,)}
"""What a config without the boot-set keys means: all of DRAM, as before they existed."""
MAX_CPUS = 4096
"""``CONFIG_NR_CPUS``' largest value (``arch/arm64/Kconfig``)."""


def shipped_profiles() -> dict[str, Path]:
    """The kernel profiles va-sweep ships, by release (``uname -r``)."""
    folder = resources.files("sweep_plugins") / "kernels"
    return {p.name.removesuffix(".toml"): Path(str(p)) for p in folder.iterdir()
            if p.name.endswith(".toml")}  # fmt: skip


def version_tuple(version: str) -> tuple[int, ...]:
    """``"6.12.118"`` -> ``(6, 12, 118)`` (digits of each dotted part)."""
    out = []
    for part in version.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def boot_kernel(profile: KernelProfile) -> BootKernel:
    """A profile as the builder takes it (its offsets as ``bootmap.BootImage``)."""
    version = version_tuple(profile.version)[:2]
    image = BootImage.from_offsets(
        version,
        profile.granule,
        profile.offsets,
        vgic_state=profile.offsets.get("kvm_vgic_global_state"),
        bp_vecs=profile.offsets.get("__bp_harden_hyp_vecs"),
    )
    return BootKernel(profile.release, image, profile.version)


def load_kernels(specs: Iterable[str], where: str = "kernels") -> list[BootKernel]:
    """Each spec a shipped release, ``shipped`` (all of them) or a profile file's path."""
    known, out = shipped_profiles(), {}
    for spec in specs:
        paths = sorted(known.values()) if spec == SHIPPED else [known.get(spec) or Path(spec)]
        for path in paths:
            if spec not in known and spec != SHIPPED and not path.is_file():
                raise ValidationError(
                    f"{where}: {spec!r} is neither a shipped kernel profile "
                    f"({', '.join(sorted(known))}) nor a profile file"
                )
            try:
                kernel = boot_kernel(load_profile(path))
            except (ValueError, KeyError, TypeError) as exc:
                raise ValidationError(f"{where}: {path}: not a kernel profile ({exc})") from None
            if era_of_version(kernel.version) is None:
                raise ValidationError(f"{where}: {path}: version {kernel.version} is before 4.6")
            out.setdefault(kernel.name, kernel)
    return list(out.values())


def kernel_for(kernels: Sequence[BootKernel], era: str, granule: int) -> int:
    """Index of the newest build of ``era`` at ``granule`` in ``kernels``, or -1."""
    best, index = None, -1
    for k, kernel in enumerate(kernels):
        own = era_of_version(kernel.version)
        if own is None or own.name != era or kernel.image.granule != granule:
            continue
        key = version_tuple(kernel.version)
        if best is None or key > best:
            best, index = key, k
    return index


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list | tuple) else [value]


# --- The config keys (``sweep.plan.config`` runs these with its other validators) ----------


def check_mappings(value: Any, c) -> tuple[str, ...]:
    sets = _as_list(list(ABSENT["mappings"]) if value is None else value)
    bad = [x for x in sets if x not in MAPPING_SETS]
    if not sets or bad:
        raise c.bad("mappings", f"expected a list of {', '.join(MAPPING_SETS)}, got {value!r}")
    return tuple(dict.fromkeys(sets))


def check_cpus(value: Any, c) -> tuple[int, ...]:
    cpus = _as_list(list(ABSENT["cpus"]) if value is None else value)
    if not cpus or not all(type(x) is int and 1 <= x <= MAX_CPUS for x in cpus):
        raise c.bad("cpus", f"expected a list of CPU counts 1..{MAX_CPUS}, got {value!r}")
    return tuple(dict.fromkeys(cpus))


def check_kernels(value: Any, c) -> tuple[str, ...]:
    specs = _as_list(list(ABSENT["kernels"]) if value is None else value)
    if not specs or not all(isinstance(x, str) and x for x in specs):
        raise c.bad(
            "kernels", f"expected a list of kernel releases or profile files, got {value!r}"
        )
    if any(m != "all-dram" for m in c.done["mappings"]):
        load_kernels(specs, c.origin("kernels") + ": kernels")  # fails here, not in a worker
    return tuple(dict.fromkeys(specs))
