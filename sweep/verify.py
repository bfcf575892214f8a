"""Check the model against a real boot: what the kernel printed versus the row the model builds.

From a boot log (``sweep.formats.bootlog``) this takes the DRAM banks, the idmap page and the
random tag bits (the bits of the ``HYP VA range`` start between ``tag_lsb`` and ``VA_BITS - 2``,
which the kernel draws at every boot) as inputs, builds the model's row for that configuration, and
compares only what the kernel printed and the model did not take from it: the HYP tree's level
count, the range start (bit ``VA_BITS - 1`` and the low ``tag_lsb`` bits) and the range end (the
alias of the last DRAM byte). A ``--va-bits`` or ``--granule`` given on the command line is
checked against what the log shows (VA_BITS from the range start; the page size, and the idmap
page being one page of it), never silently preferred.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sweep.api import build_row
from sweep.bootset import TABLE_FIELDS, boot_set, profile_for, read_walk
from sweep.core.eras import BY_NAME, era_of_version, resolve
from sweep.core.errors import ValidationError
from sweep.core.kconfig import VA_BITS_CHOICES, granule_name, levels
from sweep.core.memmap import MemoryMap, parse_granule
from sweep.formats.bootlog import BOOT_OPTIONS, BootLog, BootLogError, parse_boot_log
from sweep.formats.files import read_input
from sweep.formats.loaders import MAX_FILE_BYTES, memory_map_from_boot_log
from sweep.model.pkvm_reserve import reserve_parts
from sweep.model.reference import compute_row


class UnknownEra(BootLogError):
    """The log does not say which kernel era printed it: refused (exit 1), never guessed."""


def layout_for_release(release: str | None) -> tuple[str, str]:
    """The kernel era of the kernel that printed the log (``sweep.core.eras``), and why; a log
    whose era cannot be told is refused rather than guessed."""
    era = era_of_version(release or "")
    if release is None:
        raise UnknownEra(
            "cannot tell the kernel era: the log has no 'Linux version' line; pass --layout "
            f"(one of {', '.join(BY_NAME)})"
        )
    if era is None:
        raise UnknownEra(
            f"cannot tell the kernel era of {release!r}: the model's eras start at 4.6; "
            "pass --layout"
        )
    return era.name, f"Linux {release}: {era.name} is Linux {era.kernels}"


@dataclass(frozen=True)
class FieldCheck:
    """One compared field: what the kernel printed, what the model computed, as text and value."""

    field: str
    kernel: str
    model: str
    agree: bool


@dataclass
class VerifyReport:
    """The configuration recovered from the log, the model's row, and every field compared."""

    boot: BootLog
    memory_map: MemoryMap
    granule: int
    granule_source: str
    va_bits: int
    va_bits_source: str
    layout: str
    layout_source: str
    idmap_pa: int
    """The log's ``IDMAP page`` (an input, aligned down to the granule as the model takes it)."""
    tag_random: int
    row: dict
    checks: list[FieldCheck] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        return all(check.agree for check in self.checks)

    def disagreeing(self) -> list[str]:
        return [check.field for check in self.checks if not check.agree]

    def format(self) -> str:
        """A plain-text table a user can paste into a bug report."""
        banks = ", ".join(f"[{b.base:#x}-{b.end - 1:#x}]" for b in self.memory_map.banks)
        lines = [
            f"kernel:     {self.boot.release or 'unknown release'}"
            + (f" on {self.boot.machine}" if self.boot.machine else ""),
            f"memory:     {banks}",
            f"granule:    {granule_name(self.granule)} ({self.granule_source})",
            f"VA_BITS:    {self.va_bits} ({self.va_bits_source})",
            f"layout:     {self.layout} ({self.layout_source})",
            f"idmap_pa:   {self.idmap_pa:#x} (input: the log's IDMAP page"
            + (
                f" {self.boot.idmap_pa:#x}, aligned down to the granule)"
                if self.boot.idmap_pa != self.idmap_pa
                else ")"
            ),
            f"tag_random: {self.tag_random:#x} (from the range start; the era keeps its tag bits)",
        ]
        if self.boot.command_line is not None and "nokaslr" not in self.boot.command_line:
            lines.append(
                "note:       booted without nokaslr: a randomised linear map (KASLR) moves the"
                " range, which the model does not follow"
            )
        lines.append("")
        header = ("field", "kernel", "model", "agree")
        rows = [header] + [
            (c.field, c.kernel, c.model, "yes" if c.agree else "NO") for c in self.checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            cells = (cell.ljust(w) for cell, w in zip(r, widths, strict=True))
            lines.append("  ".join(cells).rstrip())
        verdict = (
            "all fields agree" if self.agree else "DISAGREE on: " + ", ".join(self.disagreeing())
        )
        lines += ["", verdict]
        return "\n".join(lines)


def missing_kvm_lines_message(boot: BootLog) -> str | None:
    """Why the log cannot be checked, in one line naming the boot options to add; None if it can."""
    if not boot.has_memory_nodes:
        return (
            "the log has no 'Early memory node ranges' lines: copy the console (or `dmesg`) "
            "from its first line"
        )
    if boot.has_kvm_layout:
        return None
    missing = [
        text
        for text, value in (
            ("'Using N-bit virtual addresses at EL2'", boot.el2_va_bits),
            ("'IDMAP page'", boot.idmap_pa),
            ("'HYP VA range'", boot.hyp_va_start),
        )
        if value is None
    ]
    why = "KVM ran in VHE mode, which has no HYP page tables; " if boot.vhe else ""
    return (
        f"the log has no KVM {', '.join(missing)} line{'s' if len(missing) > 1 else ''}: "
        f"{why}boot with `{BOOT_OPTIONS} loglevel=8` added to the kernel command line "
        "(at EL2: on QEMU, -M virt,virtualization=on), then copy the log again"
    )


def _granule_of(boot: BootLog, given: int | str | None) -> tuple[int, str]:
    """The granule given, else the page size the log shows (4K assumed), and its source."""
    if given is not None:
        return parse_granule(given), "given"
    if boot.page_size in VA_BITS_CHOICES:
        return boot.page_size, str(boot.page_size_source)
    return 4096, "the log does not show the page size: assumed"


def _va_bits_of(boot: BootLog, given: int | None, layout: str) -> tuple[int, str]:
    """VA_BITS given, else inferred from the log; a given one says when the log cannot tell."""
    if given is None:
        return _infer_va_bits(boot, layout)
    try:
        _infer_va_bits(boot, layout)
    except BootLogError:
        return given, "given; the log cannot tell"
    return given, "given"


def _infer_va_bits(boot: BootLog, layout: str | None = None) -> tuple[int, str]:
    """VA_BITS the kernel ran with (``vabits_actual``).

    ``kvm_compute_layout`` (arch/arm64/kvm/va_layout.c) sets bit ``vabits_actual - 1`` of the
    tag when the idmap is below it, so that bit is the top bit of the range start; from 7.0
    the bit is ``max(48, vabits_actual) - 1``, which tells 48 from 52 but nothing below 48:
    then the build's profile (its ``CONFIG_ARM64_VA_BITS``) must say.
    """
    start = boot.hyp_va_start
    top = start.bit_length()
    if boot.va52:
        return 52, f"the log says '52-bit Virtual Addressing ({boot.va52})'"
    era = BY_NAME.get(resolve(layout)) if layout else None
    if era is not None and era.tag_at_hyp_va_bits and top <= 48:
        return _va_bits_of_build(boot)
    if top and boot.idmap_pa < 1 << (top - 1):
        return top, "top bit of the range start; the idmap is low"
    raise BootLogError(
        f"cannot tell VA_BITS from the log: the idmap page {boot.idmap_pa:#x} is not below bit "
        f"{top - 1} of the range start {start:#x}; pass --va-bits"
    )


def _va_bits_of_build(boot: BootLog) -> tuple[int, str]:
    """A 7.x kernel's ``vabits_actual`` from its profile: its ``VA_BITS``, or for a 52-bit
    build on a CPU without LPA2/LVA (no '52-bit Virtual Addressing' line), 48 (47 at 16K)."""
    try:
        profile = profile_for(boot.release)
    except BootLogError:
        raise BootLogError(
            f"cannot tell VA_BITS from a 7.x log: the HYP VA tag sits at bit 47 below 48 bits "
            f"and there is no kernel profile for {boot.release}; pass --va-bits"
        ) from None
    if profile.va_bits != 52:
        return profile.va_bits, f"CONFIG_ARM64_VA_BITS of {boot.release} (its profile)"
    actual = 47 if profile.granule == 16384 else 48
    return actual, f"{boot.release} is a 52-bit build; no LPA2/LVA in the log: {actual}"


def _granule_check(boot: BootLog, granule: int, source: str) -> FieldCheck | None:
    """The page size against the log: the size it shows (when the granule was given) and the
    IDMAP page, which the kernel prints page-aligned. None when there is nothing to check."""
    shown = boot.page_size if source == "given" else None
    aligned = boot.idmap_pa % granule == 0
    if shown is None and aligned:
        return None
    facts = []
    if shown is not None:
        facts.append(f"{granule_name(shown)} ({boot.page_size_source})")
    if not aligned:
        facts.append(f"IDMAP page {boot.idmap_pa:#x} is not {granule_name(granule)}-aligned")
    return FieldCheck(
        "granule",
        "; ".join(facts),
        f"{granule_name(granule)} ({source})",
        aligned and shown in (None, granule),
    )


def _va_bits_check(
    boot: BootLog, va_bits: int, source: str, granule: int, layout: str
) -> FieldCheck | None:
    """VA_BITS against the log: a given value against what the range start says (None when the
    log cannot tell), an inferred one against the VA_BITS Linux can be built with."""
    if not source.startswith("given"):
        choices = VA_BITS_CHOICES[granule]
        return FieldCheck(
            "VA_BITS",
            f"{va_bits}",
            f"one of {', '.join(map(str, choices))} at {granule_name(granule)}",
            va_bits in choices,
        )
    try:
        shown, why = _infer_va_bits(boot, layout)
    except BootLogError:
        return None
    return FieldCheck("VA_BITS", f"{shown} ({why})", f"{va_bits} (given)", shown == va_bits)


def recover_tag_random(start: int, va_bits: int) -> int:
    """The random tag bits, as a raw ``tag_random``: the range start below its region bit.

    The layout keeps only bits ``region - 2 .. tag_lsb`` of it (docs/model.md §3; the region
    bit is ``VA_BITS - 1``, from 7.0 ``max(48, VA_BITS) - 1``), so passing the lower bits
    through changes nothing, and this needs no knowledge of ``tag_lsb`` or of the era: bits
    of the start above ``VA_BITS - 2`` that an era does not insert are masked by its formula.
    """
    return start & ((1 << 51) - 1)


def model_row(
    memory_map: MemoryMap,
    granule: int,
    va_bits: int,
    layout: str,
    idmap_pa: int,
    tag_random: int,
    engine: str = "builder",
) -> dict:
    """The model's row from the vectorized builder, or with ``engine="reference"`` the scalar
    reference (the tests hold the two equal). Block mappings are on (as ``kvm_pgtable`` maps on
    6.x); no compared field depends on them.
    """
    if engine == "reference":
        return compute_row(memory_map, granule, va_bits, layout, True, idmap_pa, tag_random)

    return build_row(memory_map, granule, va_bits, layout, True, idmap_pa, tag_random)


def verify_boot(
    log_text: str,
    granule: int | str | None = None,
    va_bits: int | None = None,
    layout: str | None = None,
    name: str = "boot-log",
    engine: str = "builder",
    tables: str | Path | None = None,
    profile: str | Path | None = None,
) -> VerifyReport:
    """Compare one boot log with the model, field by field (see the module docstring).

    ``granule``, ``va_bits`` and ``layout`` default to what the log shows (the layout by the
    kernel release, ``layout_for_release``). A log that lacks the lines
    raises ``BootLogError`` whose message names the boot options to add. A protected-mode log's
    printed pKVM reservation is compared with ``kvm_hyp_reserve``'s; ``tables`` (a walk of the
    real EL2 tables) is compared per level with the boot-time tables of ``sweep.bootset``.
    """
    boot = parse_boot_log(log_text)
    problem = missing_kvm_lines_message(boot)
    if problem:
        raise BootLogError(f"{name}: {problem}")
    memory_map = memory_map_from_boot_log(log_text, name)
    granule, granule_source = _granule_of(boot, granule)
    if layout is None:
        layout, layout_source = layout_for_release(boot.release)
    else:
        layout_source = "given"
    va_bits, va_bits_source = _va_bits_of(boot, va_bits, layout)
    tag_random = recover_tag_random(boot.hyp_va_start, va_bits)
    row = model_row(memory_map, granule, va_bits, layout, boot.idmap_pa, tag_random, engine)

    checks = [
        check
        for check in (
            _granule_check(boot, granule, granule_source),
            _va_bits_check(boot, va_bits, va_bits_source, granule, layout),
        )
        if check is not None
    ]
    checks += _range_checks(boot, row, granule)
    checks += _pkvm_checks(boot, memory_map, granule, layout)
    if tables is not None:
        checks += _table_checks(boot, memory_map, tables, profile)
    return VerifyReport(
        boot=boot,
        memory_map=memory_map,
        granule=granule,
        granule_source=granule_source,
        va_bits=va_bits,
        va_bits_source=va_bits_source,
        layout=layout,
        layout_source=layout_source,
        idmap_pa=row["idmap_pa"],
        tag_random=tag_random,
        row=row,
        checks=checks,
    )


def _range_checks(boot: BootLog, row: dict, granule: int) -> list[FieldCheck]:
    """What the kernel printed and the model did not take from it (``kvm_mmu_init``,
    arch/arm64/kvm/mmu.c): the EL2 level count of ``hyp_va_bits`` and the HYP VA range."""
    start, end, bits = boot.hyp_va_start, boot.hyp_va_end, boot.el2_va_bits
    el2, model = levels(bits, granule), row["levels"]
    first, last = row["hyp_va_min"], row["hyp_dram_last"]
    return [
        FieldCheck("EL2 levels", f"{el2} ({bits}-bit EL2 VA)", f"{model} (levels)", el2 == model),
        FieldCheck("HYP VA start", f"{start:#x}", f"{first:#x} (hyp_va_min)", start == first),
        FieldCheck("HYP VA end", f"{end:#x}", f"{last:#x} (hyp_dram_last)", end == last),
    ]


def _table_checks(
    boot: BootLog,
    memory_map: MemoryMap,
    tables: str | Path,
    profile: str | Path | None,
) -> list[FieldCheck]:
    """A walk of the real EL2 tables against ``sweep.bootset``'s boot-time tables, per level."""
    walk, leaves = read_walk(tables)
    banks = [(b.base, b.size) for b in memory_map.banks]
    model = boot_set(boot, banks, profile_for(boot.release, profile), leaves)
    label = f"EL2 {'pKVM' if boot.protected else 'nVHE'} boot"
    shown = {f: str(model.tables[f]) for f in TABLE_FIELDS}
    shown["table_pages"] += f" (per-CPU regions at {model.placement})"
    return [FieldCheck(f"{label} {f}", str(walk[f]), shown[f], walk[f] == model.tables[f])
            for f in TABLE_FIELDS]  # fmt: skip


def _pkvm_checks(boot: BootLog, memory_map: MemoryMap, granule: int, layout: str) -> list:
    """A protected boot's ``Reserved N MiB`` against ``kvm_hyp_reserve`` for its DRAM."""
    if not boot.protected or boot.reserved is None:
        return []
    era = BY_NAME.get(resolve(layout))
    if era is None or not era.pkvm:
        return []
    parts = reserve_parts(
        era.name, granule, [b.base for b in memory_map.banks], [b.size for b in memory_map.banks]
    )
    size = parts["reserve_bytes"]
    return [
        FieldCheck(
            "pKVM reserved",
            f"{boot.reserved[0] >> 20} MiB at {boot.reserved[1]:#x}",
            f"{size >> 20} MiB ({parts['pages']} pages: kvm_hyp_reserve)",
            size == boot.reserved[0],
        )
    ]


def verify_boot_file(path: str | Path, **kwargs) -> VerifyReport:
    """``verify_boot`` on a file; the memory map is named after the file's stem."""
    try:  # a regular file (or - for stdin) of bounded size: /dev/zero or a FIFO is one line
        data = read_input(path, "boot log", MAX_FILE_BYTES)
    except ValidationError as exc:
        raise BootLogError(str(exc)) from None
    text = data.decode("utf-8", errors="replace")
    return verify_boot(text, name="stdin" if str(path) == "-" else Path(path).stem, **kwargs)
