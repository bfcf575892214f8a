"""Read what a booting arm64 kernel says about its memory and its EL2 layout.

A serial console or ``dmesg`` holds, among thousands of lines, the few facts the model needs:
the DRAM banks (``Early memory node ranges``; ``sweep.formats.loaders.memory_map_from_boot_log``
reads them as a memory map), and, from KVM in nVHE mode with its debug
messages on, the HYP tree's input size, the idmap page and the HYP VA range. Timestamps,
``kernel:`` syslog prefixes and carriage returns from serial captures are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sweep.core.errors import ValidationError
from sweep.core.text import printable

BOOT_OPTIONS = 'nokaslr kvm-arm.mode=nvhe dyndbg="file arch/arm64/kvm/* +p"'
"""Kernel command-line options that make KVM print its EL2 layout (``kvm_debug`` lines, in
nVHE mode) and keep the linear map where the model puts it (no ``memstart_offset_seed``)."""


class BootLogError(ValidationError):
    """The text is not a kernel boot log, or lacks the lines a check needs."""


# arch/arm64/kvm/mmu.c, kvm_mmu_init(): kvm_debug("Using %u-bit virtual addresses at EL2\n"),
# kvm_debug("IDMAP page: %lx\n"), kvm_debug("HYP VA range: %lx:%lx\n", kern_hyp_va(PAGE_OFFSET),
# kern_hyp_va((unsigned long)high_memory - 1)).
_EL2_BITS_RE = re.compile(r"Using (\d+)-bit virtual addresses at EL2")
_IDMAP_RE = re.compile(r"IDMAP page: (?:0x)?([0-9a-fA-F]+)\b")
_HYP_RANGE_RE = re.compile(r"HYP VA range: (?:0x)?([0-9a-fA-F]+):(?:0x)?([0-9a-fA-F]+)\b")
# init/version.c: "Linux version %s (...)" with UTS_RELEASE first.
_RELEASE_RE = re.compile(r"Linux version (\S+)")
# mm/mm_init.c (mm/page_alloc.c before 6.5), free_area_init(): pr_info("Early memory node
# ranges\n") then pr_info("  node %3d: [mem %#018Lx-%#018Lx]\n", nid, start, end - 1).
_NODES_HEADER = "Early memory node ranges"
# mm/percpu.c, pcpu_dump_alloc_info(): "pcpu-alloc: s%zu r%zu d%zu u%zu alloc=%zu*%zu" where
# the last figure is the allocation atom, PAGE_SIZE on arm64 (pcpu_embed_first_chunk).
_PCPU = "pcpu-alloc: "
_PCPU_ATOM_RE = re.compile(r"\balloc=\d+\*(\d+)")  # searched after _PCPU: one pass per line
# arch/arm64/kernel/cpufeature.c: "52-bit Virtual Addressing (LPA2)" / "(LVA)" capabilities.
_VA52_RE = re.compile(r"CPU features: detected: 52-bit Virtual Addressing \((LPA2|LVA)\)")
_MACHINE_RE = re.compile(r"Machine model: (.+)$")
_COMMAND_LINE_RE = re.compile(r"Kernel command line: (.*)$")
# arch/arm64/kvm/arm.c, kvm_arm_init(): "VHE mode initialized successfully" when KVM runs at
# EL2 itself (no HYP tables; 7.x: "VHE+NV2 mode ..." with nested virtualization); "Hyp mode
# ..." (6.1), "Hyp nVHE mode ..." / "Hyp hVHE mode ..." (6.12+) otherwise, and "Protected nVHE
# mode ..." / "Protected hVHE mode ..." (6.10+ hVHE) for pKVM, which builds its own EL2 tree.
_VHE_RE = re.compile(r"(?<![\w])VHE(?:\+NV2)? mode initialized successfully")
_PROTECTED_RE = re.compile(r"Protected (?:n|h)?VHE(?:\+NV2)? mode initialized successfully")
# arch/arm64/kvm/pkvm.c, kvm_hyp_reserve(): kvm_info("Reserved %lld MiB at 0x%llx\n").
_RESERVED_RE = re.compile(r"kvm \[\d+\]: Reserved (\d+) MiB at 0x([0-9a-fA-F]+)")
# kernel/smp.c smp_init(): pr_info("Brought up %d node%s, %d CPU%s\n", ...).
_CPUS_RE = re.compile(r"Brought up \d+ nodes?, (\d+) CPUs?")
# arch/arm64/kernel/fpsimd.c sve_setup(): the largest SVE vector length, in bytes.
_SVE_RE = re.compile(r"SVE: maximum available vector length (\d+) bytes")
# arch/arm64/kernel/cpufeature.c: Cortex-A57/A72 (spectre_v3a_unsafe_list, proton-pack.c).
_SPECTRE_V3A = "detected: Spectre-v3a"
_TIMESTAMP_RE = re.compile(r"^(?:<\d+>)?\s*\[\s*\d+\.\d+\]\s?")


@dataclass
class BootLog:
    """The facts one boot printed; ``None`` where the log does not say."""

    release: str | None = None
    machine: str | None = None
    command_line: str | None = None
    has_memory_nodes: bool = False
    """The ``Early memory node ranges`` block is there (``sweep.formats.loaders`` reads its
    banks)."""
    el2_va_bits: int | None = None
    idmap_pa: int | None = None
    hyp_va_start: int | None = None
    hyp_va_end: int | None = None
    page_size: int | None = None
    """PAGE_SIZE as the log shows it (pcpu-alloc atom, else a ``-16k``/``-64k`` release)."""
    page_size_source: str | None = None
    va52: str | None = None
    """``"LPA2"`` or ``"LVA"`` when the kernel reports 52-bit virtual addressing in use."""
    vhe: bool = False
    """KVM came up in VHE mode (it then prints no HYP layout)."""
    protected: bool = False
    """KVM came up in protected mode (pKVM): EL2 runs a tree of its own."""
    reserved: tuple[int, int] | None = None
    """pKVM's pool as ``kvm_hyp_reserve`` printed it: (bytes, physical address)."""
    cpus: int | None = None
    """CPUs brought up (each gets an EL2 stack and per-CPU region)."""
    sve_vector_bytes: int = 0
    """The CPUs' largest SVE vector (0 without SVE): pKVM keeps a host SVE state per CPU."""
    spectre_v3a: bool = False
    """A Spectre-v3a CPU (Cortex-A57/A72): EL2 maps its vectors at a private VA."""

    @property
    def has_kvm_layout(self) -> bool:
        return None not in (self.el2_va_bits, self.idmap_pa, self.hyp_va_start, self.hyp_va_end)


def console_lines(text: str) -> list[str]:
    """The lines of a console capture as a terminal shows them, numbered as an editor does:
    lines end in LF, CRLF, CR CR LF (a capture of a capture) or, with no LF at all, CR (or CR
    CR); within a line, what a CR overwrote is gone."""
    if "\n" not in text:
        return re.split(r"\r\r?", text)
    return [line.rstrip("\r").rpartition("\r")[2] for line in text.split("\n")]


def _lines(text: str) -> list[str]:
    return [_TIMESTAMP_RE.sub("", line) for line in console_lines(text)]


# mm/mm_init.c: pr_info("  node %3d: [mem %#018Lx-%#018Lx]\n", nid, start, end - 1)
NODE_RANGE_RE = re.compile(r"\bnode\s+(\d+): \[mem (0x[0-9a-fA-F]+)-(0x[0-9a-fA-F]+)\]")


def memory_node_blocks(text: str, origin: str) -> list[list[tuple[int, int, int]]]:
    """Each ``Early memory node ranges`` block of a log as (line, start, inclusive end) per
    ``node N:`` line, in one pass over the lines (a log of 10^5 boots reads in seconds)."""
    blocks: list[list[tuple[int, int, int]]] = []
    block: list[tuple[int, int, int]] | None = None
    header = 0
    for number, line in enumerate(console_lines(text), 1):
        if block is not None:
            if match := NODE_RANGE_RE.search(line):
                start, end = int(match.group(2), 16), int(match.group(3), 16)
                if end < start:
                    raise BootLogError(
                        f"{origin}: line {number}: range ends at {end:#x}, before its start"
                        f" {start:#x}"
                    )
                block.append((number, start, end))
                continue
            blocks.append(_whole(block, origin, header))
            block = None
        if _NODES_HEADER in line:
            block, header = [], number
    if block is not None:
        blocks.append(_whole(block, origin, header))
    return blocks


def _whole(block: list, origin: str, header: int) -> list:
    if not block:
        raise BootLogError(
            f"{origin}: line {header}: '{_NODES_HEADER}' is not followed by"
            " 'node N: [mem A-B]' lines"
        )
    return block


def _atom(line: str) -> re.Match | None:
    """The ``alloc=N*ATOM`` after ``pcpu-alloc:`` (a ``pcpu-alloc: .*alloc=`` pattern would
    backtrack from every ``pcpu-alloc:`` of a long line: a 240 KB line took 70 s)."""
    return _PCPU_ATOM_RE.search(line, line.index(_PCPU))


def parse_boot_log(text: str) -> BootLog:
    """Every fact the model can use from one boot's console text.

    A text that holds several boots (``Linux version`` more than once) is refused: its lines
    could mix two boots' random tags.
    """
    log = BootLog()
    lines = _lines(text)
    releases = [m.group(1) for line in lines if (m := _RELEASE_RE.search(line))]
    if len(releases) > 1:
        raise BootLogError(
            f"the log holds {len(releases)} boots ('Linux version' appears {len(releases)} "
            "times); keep the lines of one boot only"
        )
    log.release = printable(releases[0]) if releases else None  # printed: no terminal controls
    for line in lines:
        if _NODES_HEADER in line:
            log.has_memory_nodes = True
        elif (m := _EL2_BITS_RE.search(line)) and log.el2_va_bits is None:
            log.el2_va_bits = int(m.group(1))
        elif (m := _IDMAP_RE.search(line)) and log.idmap_pa is None:
            log.idmap_pa = int(m.group(1), 16)
        elif (m := _HYP_RANGE_RE.search(line)) and log.hyp_va_start is None:
            log.hyp_va_start, log.hyp_va_end = int(m.group(1), 16), int(m.group(2), 16)
        elif _PCPU in line and (m := _atom(line)) and log.page_size is None:
            log.page_size, log.page_size_source = int(m.group(1)), "pcpu-alloc atom"
        elif m := _VA52_RE.search(line):
            log.va52 = m.group(1)
        elif (m := _MACHINE_RE.search(line)) and log.machine is None:
            log.machine = printable(m.group(1).strip())
        elif (m := _COMMAND_LINE_RE.search(line)) and log.command_line is None:
            log.command_line = printable(m.group(1).strip())
        elif _PROTECTED_RE.search(line):
            log.protected = True
        elif _VHE_RE.search(line):
            log.vhe = True
        elif (m := _RESERVED_RE.search(line)) and log.reserved is None:
            log.reserved = (int(m.group(1)) << 20, int(m.group(2), 16))
        elif (m := _CPUS_RE.search(line)) and log.cpus is None:
            log.cpus = int(m.group(1))
        elif m := _SVE_RE.search(line):
            log.sve_vector_bytes = int(m.group(1))
        elif _SPECTRE_V3A in line:
            log.spectre_v3a = True
    if log.page_size is None and log.release:
        # Debian names its flavours after the page size: linux-image-*-arm64-16k, ...-64k.
        for suffix, size in (("-16k", 16384), ("-64k", 65536)):
            if log.release.endswith(suffix):
                log.page_size, log.page_size_source = size, f"release ends in {suffix}"
    return log
