"""The kernel's own layout and pKVM reservation code, compiled in userspace, on worked examples.

``tools/kernel-pgtable/build`` fetches Debian's ``linux-source-7.3``, ``-6.12`` and ``-6.1`` and
compiles, unmodified, ``arch/arm64/kvm/va_layout.c`` (``kvm_compute_layout``, and from 7.0
``kvm_hyp_va_bits``) and ``arch/arm64/include/asm/kvm_pkvm.h`` with ``kvm_hyp_reserve`` cut from
``arch/arm64/kvm/pkvm.c`` (protocols: tools/kernel-pgtable/README.md). The expected numbers
below are worked by hand from those sources; each comment says how.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import kernel_oracles

pytestmark = pytest.mark.kernel

KERNELS = ("7.3", "6.12", "6.1")
G = 1 << 30


@pytest.fixture(scope="module")
def oracles() -> dict:
    """{"layout": {kernel: binary}, "pkvm": {kernel: {granule: binary}}}, built on first use."""
    return kernel_oracles("layout,pkvm", ",".join(KERNELS))


def ask(binary: str, lines: list[str]) -> list[str]:
    done = subprocess.run(
        [binary], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# --- kvm_compute_layout ------------------------------------------------------------------------


def layout(oracles: dict, kernel: str, *machine: int) -> dict:
    (line,) = ask(oracles["layout"][kernel], [" ".join(hex(x) for x in machine)])
    fields = line.split()
    assert fields[0] == "ok", line
    names = ("hyp_va_bits", "tag_lsb", "tag_val", "va_mask", "start", "end", "dram", "physvirt")
    values = [None if f == "-" else int(f, 0) for f in fields[1:]]
    return dict(zip(names, values, strict=True))


# 4K, V = 39, one 2 GiB bank at 0x8000_0000, idmap 0x8008_0000 (docs/model.md example 1's
# machine). lin(p) = (p - 0x8000_0000) | 0xffff_ff80_0000_0000, so the first and last DRAM
# bytes differ in bits 30..0: tag_lsb = fls64(0x7fff_ffff) = 31, va_mask = 2^31 - 1.
JUNO = (39, 39, 4096, 0x8000_0000, 0x1_0000_0000, 0x8000_0000, 0x8008_0000)


@pytest.mark.parametrize("kernel", ["6.12", "6.1"])
def test_6x_layout_takes_the_region_bit_at_vabits_actual(oracles, kernel):
    # 6.x: hyp_va_msb = (idmap & BIT(38)) ^ BIT(38) = BIT(38); tag_val = BIT(38) >> 31 = 0x80.
    got = layout(oracles, kernel, *JUNO, 0)
    assert got == dict(
        hyp_va_bits=None,
        tag_lsb=31,
        tag_val=0x80,
        va_mask=0x7FFF_FFFF,
        start=0x40_0000_0000,
        end=0x40_7FFF_FFFF,
        dram=0x40_0000_0000,
        physvirt=0x8000_0000 - 0x40_0000_0000,
    )
    # All random bits set: GENMASK(37, 31) joins the region bit: tag 0x7f_8000_0000.
    got = layout(oracles, kernel, *JUNO, 2**64 - 1)
    assert (got["tag_val"], got["start"], got["end"]) == (0xFF, 0x7F_8000_0000, 0x7F_FFFF_FFFF)


def test_7x_layout_takes_the_region_bit_at_hyp_va_bits(oracles):
    # 7.x: kvm_hyp_va_bits() = max(IDMAP_VA_BITS = 48, 39) = 48; region bit BIT(47);
    # random bits GENMASK(46, 31).
    got = layout(oracles, "7.3", *JUNO, 0)
    assert got == dict(
        hyp_va_bits=48,
        tag_lsb=31,
        tag_val=0x1_0000,
        va_mask=0x7FFF_FFFF,
        start=0x8000_0000_0000,
        end=0x8000_7FFF_FFFF,
        dram=0x8000_0000_0000,
        physvirt=0x8000_0000 - 0x8000_0000_0000,
    )
    got = layout(oracles, "7.3", *JUNO, 2**64 - 1)
    assert (got["tag_val"], got["start"], got["end"]) == (0x1_FFFF, 0xFFFF_8000_0000, 2**48 - 1)


@pytest.mark.parametrize("kernel", KERNELS)
def test_at_48_bits_every_version_agrees(oracles, kernel):
    # V = 48: 6.x's vabits_actual and 7.x's hyp_va_bits are both 48. Tag 0x0123_4567_89ab_cdef:
    # bits 46..31 of it are 0x8acf, with the region bit 47: tag_val 0x18acf.
    got = layout(oracles, kernel, 48, 48, 4096, *JUNO[3:], 0x0123_4567_89AB_CDEF)
    assert (got["tag_lsb"], got["tag_val"]) == (31, 0x1_8ACF)
    assert (got["start"], got["end"]) == (0xC567_8000_0000, 0xC567_FFFF_FFFF)


@pytest.mark.parametrize("kernel", KERNELS)
def test_52_bit_kernel_on_48_bit_cpu(oracles, kernel):
    # VA_BITS 52, vabits_actual 48 (64K): arm64_memblock_init lowers memstart_addr by
    # _PAGE_OFFSET(48) - _PAGE_OFFSET(52) = 0xf_0000_0000_0000, so the linear map lands in the
    # 48-bit range; the layout is then the 48-bit one (region bit 47 in every version).
    memstart = (0x8000_0000 - 0xF_0000_0000_0000) % 2**64
    got = layout(
        oracles, kernel, 52, 48, 65536, 0x8000_0000, 0x1_0000_0000, memstart, 0x8008_0000, 0
    )
    assert (got["tag_lsb"], got["tag_val"], got["start"]) == (31, 0x1_0000, 0x8000_0000_0000)


@pytest.mark.parametrize("kernel", KERNELS)
def test_lx2160a(oracles, kernel):
    # docs/model.md example 5: banks 0x8000_0000-0xfbdf_ffff and 0x20_8000_0000-0x23_7fff_ffff,
    # idmap 0x81a2_4000, V = 39. lin(last) - lin(first) = 0x22_ffff_ffff: tag_lsb 38. 6.x:
    # tag_lsb == V - 1, no random bits, range 0x40_0000_0000:0x62_ffff_ffff. 7.x: the region
    # bit is 47 and bits 46..38 could take random bits (none here).
    got = layout(
        oracles, kernel, 39, 39, 4096, 0x8000_0000, 0x23_8000_0000, 0x8000_0000, 0x81A2_4000, 0
    )
    assert got["tag_lsb"] == 38 and got["va_mask"] == 2**38 - 1
    if kernel == "7.3":
        assert (got["start"], got["end"]) == (0x8000_0000_0000, 0x8022_FFFF_FFFF)
    else:
        assert (got["start"], got["end"]) == (0x40_0000_0000, 0x62_FFFF_FFFF)


# --- kvm_hyp_reserve ---------------------------------------------------------------------------


def reserve(oracles: dict, kernel: str, granule: int, banks: list[tuple[int, int]]) -> dict:
    line = f"48 8 {len(banks)} " + " ".join(f"{b:#x} {s:#x}" for b, s in banks)
    out = ask(oracles["pkvm"][kernel][str(granule)], [line])
    fields = out[0].split()
    assert fields[0] == "ok", out
    names = ("s1", "s2", "vm", "vmemmap", "selftest", "ffa", "pages", "size", "base")
    got = dict(zip(names, [None if f == "-" else int(f, 0) for f in fields[1:]], strict=True))
    assert out[1] == f"kvm [1]: Reserved {got['size'] >> 20} MiB at {got['base']:#x}"
    return got


# One 2 GiB bank at 0x8000_0000. __hyp_pgtable_max_pages(n) adds ceil(n / PTRS_PER_PTE) once per
# level: 5 levels from 6.9 (KVM_PGTABLE_FIRST_LEVEL -1 .. 3, at every granule), 4 in 6.1.
# 4K: 2 GiB = 524288 pages -> 1024 + 2 + 1 + 1 (+ 1); the 1 GiB of private (s1) or MMIO (s2)
# mappings -> 512 + 1 + 1 + 1 (+ 1); s2 adds 16 pages for concatenated PGDs.
# hyp_vm_table_pages: PAGE_ALIGN(255 * 8) -> 1 page. vmemmap: one sizeof(struct hyp_page) per
# page: 8 bytes in 7.3 (refcount, order, two 4-bit states, host_share_guest_count), 4 in 6.12.
# hyp_ffa_proxy_pages: 2 mailboxes + ceil((48 + 32 + 16 + 2048 * 16) / PAGE_SIZE).
# 6.1 backs the vmemmap of the reservation only (a fixed point): ceil(3102 * 4 / 4096) = 4
# pages + 4 (one table per level) = 8. hyp_mem_size is aligned up to PMD_SIZE.
ONE_BANK = [(0x8000_0000, 2 * G)]
RESERVE = {
    ("7.3", 4096): (1545, 1561, 1, 1024, 0, 11, 4142, 18 << 20),
    ("6.12", 4096): (1545, 1561, 1, 512, None, 11, 3630, 16 << 20),
    ("6.1", 4096): (1543, 1559, None, 8, None, None, 3110, 14 << 20),
    # 64K: 32768 pages -> 4+1+1+1+1 = 8; 1 GiB -> 2+1+1+1+1 = 6; vmemmap 32768 * 8 / 64K = 4;
    # FF-A: 2 + 1. 52 pages round up to one 512 MiB PMD.
    ("7.3", 65536): (14, 30, 1, 4, 0, 3, 52, 512 << 20),
    ("6.12", 65536): (14, 30, 1, 2, None, 3, 50, 512 << 20),
    # 16K: 131072 pages -> 64+1+1+1+1 = 68; 1 GiB -> 32+1+1+1+1 = 36; vmemmap 131072*8/16K = 64.
    ("7.3", 16384): (104, 120, 1, 64, 0, 5, 294, 32 << 20),
}


@pytest.mark.parametrize(("kernel", "granule"), sorted(RESERVE))
def test_reserve_one_bank(oracles, kernel, granule):
    got = reserve(oracles, kernel, granule, ONE_BANK)
    names = ("s1", "s2", "vm", "vmemmap", "selftest", "ffa", "pages", "size")
    assert tuple(got[n] for n in names) == RESERVE[kernel, granule]


def test_reserve_sums_per_region(oracles):
    # 7.3, 4K: 1 GiB, one lone page, 1 GiB. Page tables are bounded per region: 516 + 5 + 516,
    # + 516 for private mappings = 1553; s2 = 1037 + 16 + 516. The lone page's vmemmap entry
    # (bytes 0x600008..0x600010) still costs a whole page: 512 + 1 + 512.
    banks = [(0x8000_0000, G), (0xC000_1000, 0x1000), (0x8_8000_0000, G)]
    got = reserve(oracles, "7.3", 4096, banks)
    assert (got["s1"], got["s2"], got["vmemmap"]) == (1553, 1569, 1025)
    assert got["pages"] == 1553 + 1569 + 1 + 1025 + 11 and got["size"] == 18 << 20
