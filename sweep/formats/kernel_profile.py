"""Kernel profiles: the facts about one arm64 kernel build that decide what it maps at EL2.

A profile holds config values (granule, VA/PA bits, NR_CPUS) and the link-time offsets from
`_text` of the section markers that `arch/arm64/kernel/vmlinux.lds.S` defines around the hyp
sections (HYPERVISOR_TEXT, HYPERVISOR_RODATA_SECTIONS, HYPERVISOR_DATA_SECTION, the nVHE
per-CPU output section and BSS). From those it derives, in pages of the build's granule, what
nVHE `init_hyp_mode()` in `arch/arm64/kvm/arm.c` maps at boot: each range goes through
`create_hyp_mappings(kvm_ksym_ref(start), kvm_ksym_ref(end), prot)`, which maps the
page-aligned cover `[start & PAGE_MASK, PAGE_ALIGN(end))` at the linear-map alias.

Input: a System.map (`nm -n vmlinux` lines, or kallsyms recovered from the Image) and the
build's .config. Profiles are stored as TOML (`plugins/kernels/<release>.toml`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# Symbols a profile must have: without them the boot-time EL2 mappings cannot be derived.
ESSENTIAL = (
    "_text", "_stext", "_end",
    "__hyp_idmap_text_start", "__hyp_idmap_text_end",  # HYPERVISOR_TEXT
    "__hyp_text_start", "__hyp_text_end",
    "__hyp_rodata_start", "__hyp_rodata_end",  # HYPERVISOR_RODATA_SECTIONS
    "__start_rodata", "__end_rodata",  # RO_DATA, mapped whole at EL2
    "__init_begin", "__init_end",
    "__hyp_bss_start", "__hyp_bss_end", "__bss_start", "__bss_stop",
    "__per_cpu_start", "__per_cpu_end",
    "__kvm_nvhe___per_cpu_start", "__kvm_nvhe___per_cpu_end",  # HYPERVISOR_PERCPU_SECTION
)  # fmt: skip
# Recorded when present, absent otherwise (newer or older layouts).
OPTIONAL = (
    "__hyp_data_start", "__hyp_data_end",  # HYPERVISOR_DATA_SECTION: not in 6.12, in 6.18+
    "__kvm_nvhe___hyp_section_.hyp.data..percpu",
    "__kvm_nvhe___hyp_section_.hyp.data..ro_after_init",
    "__hyp_reloc_begin", "__hyp_reloc_end",
    "__idmap_text_start", "__idmap_text_end", "_etext", "_sdata", "_edata",
    "kvm_vgic_global_state",  # 6.2-6.18 pKVM maps its page (recreate_hyp_mappings)
    "__bp_harden_hyp_vecs",  # Spectre-v3a CPUs: mapped at a private VA (kvm_init_vector_slots)
)  # fmt: skip
SYMBOLS = ESSENTIAL + OPTIONAL

# Ranges nVHE init_hyp_mode() maps at the linear alias (arch/arm64/kvm/arm.c), name -> bounds.
REGIONS = {
    "hyp_idmap": ("__hyp_idmap_text_start", "__hyp_idmap_text_end"),
    "hyp_text": ("__hyp_text_start", "__hyp_text_end"),
    "hyp_rodata": ("__hyp_rodata_start", "__hyp_rodata_end"),
    "rodata": ("__start_rodata", "__end_rodata"),
    "hyp_data": ("__hyp_data_start", "__hyp_data_end"),
    "hyp_bss": ("__hyp_bss_start", "__hyp_bss_end"),
    "bss_after_hyp_bss": ("__hyp_bss_end", "__bss_stop"),
}
GRANULES = {"ARM64_4K_PAGES": 4096, "ARM64_16K_PAGES": 16384, "ARM64_64K_PAGES": 65536}
_MAP_LINE = re.compile(r"^([0-9a-fA-F]{8,16})\s+([A-Za-z?])\s+(\S+)\s*$")
_CONFIG_VERSION = re.compile(r"^# Linux/arm64 (\S+) Kernel Configuration", re.M)


@dataclass(frozen=True)
class KernelProfile:
    """One kernel build: config values and symbol offsets from `_text` (bytes)."""

    release: str
    version: str
    granule: int
    va_bits: int
    pa_bits: int
    nr_cpus: int
    offsets: dict[str, int]
    text_address: int | None = None
    package: str | None = None
    package_version: str | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def span_pages(self, start: str, end: str) -> int | None:
        """Pages `create_hyp_mappings()` maps for [start, end): 0 for an empty range."""
        if start not in self.offsets or end not in self.offsets:
            return None
        lo, hi = self.offsets[start], self.offsets[end]
        if hi <= lo:
            return 0
        return -(-hi // self.granule) - lo // self.granule

    @property
    def nvhe_percpu_bytes(self) -> int:
        """nvhe_percpu_size(): `__kvm_nvhe___per_cpu_end - __kvm_nvhe___per_cpu_start`."""
        return self.offsets["__kvm_nvhe___per_cpu_end"] - self.offsets["__kvm_nvhe___per_cpu_start"]

    @property
    def pages(self) -> dict[str, int]:
        """Sizes in granule pages of each boot-mapped region, the nVHE per-CPU region and totals.

        `nvhe_percpu` is what init_hyp_mode() maps per CPU (`nvhe_percpu_size()` rounded up);
        `nvhe_percpu_alloc` is the `__get_free_pages(nvhe_percpu_order())` block behind it.
        `image_total` is the union of the linear-alias ranges (they share edge pages).
        """
        out: dict[str, int] = {}
        covered: set[int] = set()
        for name, (start, end) in REGIONS.items():
            count = self.span_pages(start, end)
            if count is None:
                continue
            out[name] = count
            if count and name != "hyp_idmap":
                first = self.offsets[start] // self.granule
                covered.update(range(first, first + count))
        per_cpu = -(-self.nvhe_percpu_bytes // self.granule)
        out["nvhe_percpu"] = per_cpu
        out["nvhe_percpu_alloc"] = 1 << max(per_cpu - 1, 0).bit_length()
        out["image_total"] = len(covered)
        out["kernel_image"] = -(-self.offsets["_end"] // self.granule)
        return out

    def to_toml(self, header: str = "") -> str:
        """TOML text; `header` lines become leading comments. Pages are derived, for reading."""
        lines = [f"# {line}".rstrip() for line in header.splitlines()]
        lines += [f"release = {_q(self.release)}", f"version = {_q(self.version)}"]
        if self.package:
            lines.append(f"package = {_q(self.package)}")
        if self.package_version:
            lines.append(f"package_version = {_q(self.package_version)}")
        lines += [
            f"granule = {self.granule}",
            f"va_bits = {self.va_bits}",
            f"pa_bits = {self.pa_bits}",
            f"nr_cpus = {self.nr_cpus}",
        ]
        if self.text_address is not None:
            lines.append(f'text_address = "{self.text_address:#x}"')
        if self.sources:
            lines += ["", "[sources]"] + [f"{k} = {_q(v)}" for k, v in self.sources.items()]
        lines += ["", "[offsets]  # from _text, bytes"]
        order = sorted(self.offsets, key=lambda s: (self.offsets[s], s))
        lines += [f'{_q(s)} = "{self.offsets[s]:#x}"' for s in order]
        lines += ["", f"[pages]  # derived, {self.granule // 1024}K pages; checked on load"]
        lines += [f"{k} = {v}" for k, v in self.pages.items()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, name: str = "<string>") -> KernelProfile:
        """Parse `to_toml()` output; `name` (the file) appears in every error."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{name}: not TOML: {exc}") from None
        for key in ("release", "version", "granule", "va_bits", "pa_bits", "nr_cpus", "offsets"):
            if key not in data:
                raise ValueError(f"{name}: kernel profile has no key {key!r}")
        offsets = {k: _int(v, name, k) for k, v in data["offsets"].items()}
        _require(offsets, name)
        if data["granule"] not in GRANULES.values():
            raise ValueError(f"{name}: granule {data['granule']} is not 4096, 16384 or 65536")
        text_address = data.get("text_address")
        profile = cls(
            release=data["release"],
            version=data["version"],
            granule=data["granule"],
            va_bits=data["va_bits"],
            pa_bits=data["pa_bits"],
            nr_cpus=data["nr_cpus"],
            offsets=offsets,
            text_address=None if text_address is None else _int(text_address, name, "text_address"),
            package=data.get("package"),
            package_version=data.get("package_version"),
            sources=dict(data.get("sources", {})),
        )
        for key, value in data.get("pages", {}).items():
            if profile.pages.get(key) != value:
                raise ValueError(
                    f"{name}: pages.{key} = {value} but the offsets give {profile.pages.get(key)}"
                )
        return profile


def _q(text: str) -> str:
    """A TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _int(value: object, name: str, key: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return int(str(value), 16)
    except ValueError:
        raise ValueError(f"{name}: {key} = {value!r} is not a hex number") from None


def _require(offsets: dict[str, int], name: str) -> None:
    for symbol in ESSENTIAL:
        if symbol not in offsets:
            raise ValueError(f"{name}: no symbol {symbol} (needed for the EL2 mappings)")


def parse_system_map(text: str, name: str = "<System.map>") -> dict[str, int]:
    """Addresses of SYMBOLS from `nm -n` lines (`ADDR TYPE NAME`), as offsets from `_text`."""
    found: dict[str, int] = {}
    wanted = set(SYMBOLS)
    lines = 0
    for line in text.splitlines():
        match = _MAP_LINE.match(line)
        if not match:
            continue
        lines += 1
        if match[3] in wanted and match[3] not in found:
            found[match[3]] = int(match[1], 16)
    if lines == 0:
        raise ValueError(f"{name}: not a System.map (no 'ADDRESS TYPE SYMBOL' lines)")
    if "_text" not in found:
        raise ValueError(f"{name}: no symbol _text (needed for the EL2 mappings)")
    base = found["_text"]
    offsets = {sym: addr - base for sym, addr in found.items()}
    _require(offsets, name)
    return offsets | {"_text_address": base}


def parse_config(text: str, name: str = "<config>") -> dict[str, int | str]:
    """version, granule, va_bits, pa_bits, nr_cpus from a .config (arch/arm64/Kconfig)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line[len("CONFIG_") :].partition("=")
            values[key] = value.strip().strip('"')
    granules = [size for key, size in GRANULES.items() if values.get(key) == "y"]
    if len(granules) != 1:
        raise ValueError(f"{name}: no CONFIG_ARM64_4K/16K/64K_PAGES=y (not an arm64 .config?)")
    out: dict[str, int | str] = {"granule": granules[0]}
    for key, conf in (("va_bits", "ARM64_VA_BITS"), ("pa_bits", "ARM64_PA_BITS")):
        if conf not in values:
            raise ValueError(f"{name}: no CONFIG_{conf}")
        out[key] = int(values[conf])
    out["nr_cpus"] = int(values.get("NR_CPUS", "1"))  # !SMP: NR_CPUS is 1 (include/linux/threads.h)
    version = _CONFIG_VERSION.search(text)
    if version:
        out["version"] = version[1]
    return out


def profile_from_text(
    system_map: str,
    config: str,
    release: str,
    *,
    map_name: str = "<System.map>",
    config_name: str = "<config>",
    version: str | None = None,
    **extra: object,
) -> KernelProfile:
    """A profile from System.map and .config text; `extra` fills package, sources..."""
    offsets = parse_system_map(system_map, map_name)
    conf = parse_config(config, config_name)
    base = offsets.pop("_text_address")
    if version is None:
        if "version" not in conf:
            raise ValueError(f"{config_name}: no '# Linux/arm64 X Kernel Configuration' line")
        version = str(conf["version"])
    return KernelProfile(
        release=release,
        version=version,
        granule=int(conf["granule"]),
        va_bits=int(conf["va_bits"]),
        pa_bits=int(conf["pa_bits"]),
        nr_cpus=int(conf["nr_cpus"]),
        offsets=offsets,
        # Only a real link address: kallsyms recovered from an Image has a guessed base.
        text_address=base if base >= 0xFFFF000000000000 else None,
        **extra,  # type: ignore[arg-type]
    )


def release_from_name(path: Path) -> str | None:
    """uname -r from `System.map-R`, `config-R` or `/usr/lib/modules/R/config` names."""
    for prefix in ("System.map-", "config-"):
        if path.name.startswith(prefix):
            return path.name[len(prefix) :]
    if path.name in ("System.map", "config") and path.parent.parent.name == "modules":
        return path.parent.name
    return None


def profile_from_files(
    system_map: Path, config: Path, release: str | None = None, **extra: object
) -> KernelProfile:
    """A profile from a System.map and a .config on disk (release from their names if None)."""
    release = release or release_from_name(system_map) or release_from_name(config)
    if release is None:
        raise ValueError(f"{system_map}: cannot tell the release from the name; give --release")
    try:
        map_text = system_map.read_text(errors="replace")
        config_text = config.read_text(errors="replace")
    except OSError as exc:
        raise ValueError(f"{exc.filename}: {exc.strerror}") from None
    return profile_from_text(
        map_text, config_text, release, map_name=str(system_map), config_name=str(config), **extra
    )


def load_profile(path: Path) -> KernelProfile:
    """A profile from its TOML file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    return KernelProfile.from_toml(text, str(path))


def dump_profile(profile: KernelProfile, path: Path, header: str = "") -> None:
    """Write `profile` as TOML to `path`."""
    path.write_text(profile.to_toml(header))
