"""Every .dtb Debian's arm64 kernels ship (6.1 and 6.12) against an independent reading.

The reference reads each blob with ``fdtget`` (device-tree-compiler, libfdt) and applies
``early_init_dt_scan_memory`` of Linux 6.x (``drivers/of/fdt.c``) to what it printed: children
of the root whose ``device_type`` compares equal to ``"memory"`` (``strcmp``: up to the first
NUL), a ``status`` that is absent, ``"okay"`` or ``"ok"`` (``of_fdt_device_is_available``),
``linux,usable-memory`` before ``reg``, the root's ``#address-cells``/``#size-cells`` or 1/1
(``OF_ROOT_NODE_*_DEFAULT``, ``drivers/of/of_private.h``), whole entries only, size 0 skipped.
Nothing of ``sweep.formats.fdt`` is used. The loader must give the same banks for every file, or,
where the reference finds none (firmware fills the memory in at boot), its one-line error.

The blobs are fetched with apt by ``tools/fetch-dtbs`` (cached, never committed). Run with
``python3 -m pytest -m corpus tests/test_dtb_corpus.py -s`` (``.ci/run`` does).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path

import pytest

from sweep.core.errors import ValidationError
from sweep.core.memmap import PA_LIMIT
from sweep.formats.loaders import load_memory_map

pytestmark = pytest.mark.corpus

FETCH = Path(__file__).parents[1] / "tools" / "fetch-dtbs"
MISSING = "MISSING"


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Path]]:
    """Series -> its .dtb files, fetched once into the cache by tools/fetch-dtbs."""
    if shutil.which("fdtget") is None:
        pytest.skip("fdtget is not installed (Debian package device-tree-compiler)")
    run = subprocess.run([str(FETCH)], capture_output=True, text=True, timeout=1800)
    if run.returncode != 0:
        pytest.skip(f"tools/fetch-dtbs failed (exit {run.returncode}): {run.stderr.strip()[-300:]}")
    out = {}
    for line in run.stdout.splitlines():
        series, folder = line.split(" ", 1)
        out[series] = sorted(Path(folder).rglob("*.dtb"))
    return out


def fdtget(path: Path, options: list[str], pairs: list[str]) -> list[str]:
    run = subprocess.run(
        ["fdtget", *options, str(path), *pairs], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, f"fdtget {' '.join(options)} {path}: {run.stderr.strip()}"
    return run.stdout.splitlines()


def _bytes(line: str) -> bytes | None:
    """A property printed by ``fdtget -t bx`` (hex bytes), or None when it is missing."""
    if line == MISSING:
        return None
    return bytes(int(b, 16) for b in line.split())


def reference_banks(path: Path) -> list[tuple[int, int]]:
    """The (base, size) entries Linux 6.x adds to memblock from this blob, via fdtget."""
    children = fdtget(path, ["-l"], ["/"])
    pairs = [a for child in children for a in (f"/{child}", "device_type", f"/{child}", "status")]
    values = fdtget(path, ["-t", "bx", "-d", MISSING], pairs) if pairs else []
    memory = []
    for i, child in enumerate(children):
        device_type, status = _bytes(values[2 * i]), _bytes(values[2 * i + 1])
        if device_type is None or device_type.split(b"\0")[0] != b"memory":
            continue
        if status is not None and status.split(b"\0")[0] not in (b"okay", b"ok"):
            continue
        memory.append(child)
    if not memory:
        return []
    pairs = ["/", "#address-cells", "/", "#size-cells"]
    for child in memory:
        pairs += [f"/{child}", "linux,usable-memory", f"/{child}", "reg"]
    values = [_bytes(v) for v in fdtget(path, ["-t", "bx", "-d", MISSING], pairs)]
    address_cells = 1 if values[0] is None else int.from_bytes(values[0][:4], "big")
    size_cells = 1 if values[1] is None else int.from_bytes(values[1][:4], "big")
    step = 4 * (address_cells + size_cells)
    banks = []
    for i in range(len(memory)):
        usable, reg = values[2 + 2 * i], values[3 + 2 * i]
        prop = usable if usable is not None else reg
        if prop is None or step == 0:
            continue
        for at in range(0, len(prop) - step + 1, step):
            mask = (1 << 64) - 1  # of_read_number folds the cells into a u64
            base = int.from_bytes(prop[at : at + 4 * address_cells], "big") & mask
            size = int.from_bytes(prop[at + 4 * address_cells : at + step], "big") & mask
            if size:
                banks.append((base, size))
    return banks


def _union(banks: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping banks merged into one, as Linux's memblock_add keeps them (issue 21)."""
    out: list[tuple[int, int]] = []
    for base, size in sorted(banks):
        if out and base < out[-1][0] + out[-1][1]:
            end = max(out[-1][0] + out[-1][1], base + size)
            out[-1] = (out[-1][0], end - out[-1][0])
        else:
            out.append((base, size))
    return out


def test_every_debian_dtb_reads_as_fdtget_and_linux_read_it(corpus, caplog):
    caplog.set_level(
        logging.ERROR, logger="sweep.formats.loaders"
    )  # skips are expected by the thousand
    files = [p for paths in corpus.values() for p in paths]
    assert len(files) > 1000, {s: len(p) for s, p in corpus.items()}
    boards, with_banks, refused, errors, agreeing, disagreeing = set(), 0, [], 0, 0, []
    for path in files:
        boards.add(path.name)
        expected = reference_banks(path)
        try:
            got = sorted((b.base, b.size) for b in load_memory_map(path).banks)
            error = None
        except ValidationError as exc:
            got, error = None, str(exc)
        if expected and max(b + s for b, s in expected) <= PA_LIMIT:
            with_banks += 1
            ok = got == _union(expected)  # overlapping banks merged, as memblock_add does
        elif expected:  # the reference has banks the model refuses: past 2^52
            refused.append(path.name)
            ok = error is not None and "past 2^52" in error
        else:
            errors += 1
            ok = (
                error is not None
                and "\n" not in error
                and error.startswith(f"{path}: ")
                and ("no DRAM bank left" in error or "has no memory node" in error)
            )
        if ok:
            agreeing += 1
        else:
            disagreeing.append(f"{path}: reference {expected}, loader {got or error}")
    counts = ", ".join(f"{series}: {len(paths)}" for series, paths in corpus.items())
    print(
        f"\ndtb corpus: {len(files)} files ({counts}), {len(boards)} boards,"
        f" {with_banks} with banks, {errors} with none (one-line error), {len(refused)} refused"
        f" past 2^52 ({', '.join(refused)}), {agreeing} agreeing"
    )
    assert not disagreeing, f"{len(disagreeing)} disagree, e.g. {disagreeing[:3]}"
