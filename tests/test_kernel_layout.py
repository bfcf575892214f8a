"""The model's HYP VA range, era by era, against the kernel's own ``kvm_compute_layout``.

``tools/kernel-pgtable/build --oracles layout`` compiles ``arch/arm64/kvm/va_layout.c`` of Debian's
6.12 and 7.3 (and 6.1) unmodified in userspace. Given the machine the model computes (clipped
DRAM, ``memstart_addr``, the idmap page, the random bits), each prints the ``HYP VA range`` its
kernel would: the start must be the row's ``hyp_va_min`` and the end its ``hyp_dram_last``, for
the era of that kernel (6.1: ``linux-5.12``; 6.12: ``linux-6.9``; 7.3: ``linux-7.0``), on seeded
random memory maps at every granule and ``VA_BITS`` a kernel runs. The other era's row must
differ wherever the two eras' rules differ (``V < 48`` between 6.9 and 7.0).
"""

from __future__ import annotations

import random
import subprocess

import pandas as pd
import pytest
from conftest import kernel_oracles

from sweep import MemoryMap, build
from sweep.core.eras import KCONFIG_VA_BITS
from sweep.core.errors import ValidationError
from sweep.model.reference import prepare

pytestmark = pytest.mark.kernel

ERA = {"6.1": "linux-5.12", "6.12": "linux-6.9", "7.3": "linux-7.0"}
ROWS = 3000
G = 1 << 30


@pytest.fixture(scope="module")
def layouts() -> dict[str, str]:
    return kernel_oracles("layout", ",".join(ERA))["layout"]


def random_configs(seed: int, rows: int) -> tuple[dict[str, MemoryMap], list[dict]]:
    """1 to 4 banks below 2^44 (every V above 44 keeps them whole; lower ones clip), the idmap in
    one of them, random tag bits half the time."""
    rng = random.Random(seed)
    maps, configs = {}, []
    while len(configs) < rows:
        granule = rng.choice((4096, 16384, 65536))
        va_bits = rng.choice((*KCONFIG_VA_BITS[granule], 52))
        base, banks = rng.randrange(0, 64) * (G // 4), []
        for _ in range(rng.randint(1, 4)):
            size = rng.choice((64 << 20, 512 << 20, G, 3 * G, 16 * G, 200 * G))
            banks.append((base, size))
            base += size + rng.randrange(0, 1 << rng.randint(20, 43), granule)
        name = f"m{len(configs)}"
        try:
            memory_map = MemoryMap(name, banks)
            start, end = rng.choice(memory_map.trimmed(granule))
        except (ValidationError, IndexError):
            continue
        config = dict(
            memory_map=name,
            granule=granule,
            va_bits=va_bits,
            block_mappings=False,
            idmap_pa=rng.randrange(start, end) // granule * granule,
            tag_random=0 if rng.random() < 0.5 else rng.getrandbits(64),
        )
        maps[name] = memory_map
        configs.append(config)
    return maps, configs


def kernel_ranges(binary: str, maps: dict, configs: list[dict], era: str) -> list[tuple]:
    """The kernel's ``HYP VA range`` for each configuration, on the machine the model clips."""
    lines = []
    for config in configs:
        args = {k: v for k, v in config.items() if k != "memory_map"}
        c = prepare(maps[config["memory_map"]], layout=era, **args)
        v = c.va_bits
        lines.append(
            f"{v} {v} {c.granule} {c.banks[0][0]:#x} {c.banks[-1][1]:#x} {c.phys_offset:#x} "
            f"{c.idmap_pa:#x} {config['tag_random']:#x}"
        )
    done = subprocess.run(
        [binary], input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    out = []
    for line in done.stdout.splitlines():
        fields = line.split()
        assert fields[0] == "ok", line
        out.append((int(fields[5], 0), int(fields[6], 0)))
    assert len(out) == len(configs)
    return out


@pytest.mark.parametrize("kernel", list(ERA))
def test_the_eras_range_is_the_kernels(layouts, kernel):
    maps, configs = random_configs(20261205 + len(kernel), ROWS)
    frame = pd.DataFrame(configs).astype({"idmap_pa": "uint64", "tag_random": "uint64"})
    rows = build(frame.assign(layout=ERA[kernel]), maps)
    want = kernel_ranges(layouts[kernel], maps, configs, ERA[kernel])
    got = list(zip(rows["hyp_va_min"].tolist(), rows["hyp_dram_last"].tolist(), strict=True))
    wrong = [(c, g, w) for c, g, w in zip(configs, got, want, strict=True) if g != w]
    assert not wrong, f"{len(wrong)} of {len(configs)} differ, e.g. {wrong[:3]}"
    assert len({c["granule"] for c in configs}) == 3 and len({c["va_bits"] for c in configs}) >= 6


def test_below_48_bits_6_9_and_7_0_differ_as_the_kernels_do(layouts):
    """Where ``V < 48`` the two eras give different ranges, and each matches only its own
    kernel: the era boundary itself is held to the sources."""
    maps, configs = random_configs(7, 600)
    configs = [c for c in configs if c["va_bits"] < 48]
    frame = pd.DataFrame(configs).astype({"idmap_pa": "uint64", "tag_random": "uint64"})
    old = build(frame.assign(layout="linux-6.9"), maps)["hyp_va_min"].tolist()
    new = build(frame.assign(layout="linux-7.0"), maps)["hyp_va_min"].tolist()
    k612 = [s for s, _ in kernel_ranges(layouts["6.12"], maps, configs, "linux-6.9")]
    k73 = [s for s, _ in kernel_ranges(layouts["7.3"], maps, configs, "linux-7.0")]
    assert old == k612 and new == k73
    assert all(a != b for a, b in zip(old, new, strict=True))  # region bit V-1 vs 47
