"""``sweep verify-boot`` against real booted kernels' EL2 tables, read back from QEMU.

``tests/data/kernelboot/walks/`` holds the consoles of Debian's 6.1 to 7.3 kernels (4K and 16K,
1 to 8 GiB, 1 and 4 CPUs, nVHE and protected) and the tables ``tools/boot-kernels --walk`` read
from each (its README names the command). The model's boot-time tables must agree per level,
and a protected boot's printed reservation with ``kvm_hyp_reserve``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.verify import UnknownEra, verify_boot, verify_boot_file

WALKS = Path(__file__).resolve().parent / "data" / "kernelboot" / "walks"
LOGS = sorted(
    p.with_name(p.name.removesuffix(".walk.json") + ".log") for p in WALKS.glob("*.walk.json")
)


def walk_of(log: Path) -> Path:
    return log.with_name(log.name.removesuffix(".log") + ".walk.json")


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_every_walk_agrees_per_level(log):
    report = verify_boot_file(log, tables=walk_of(log))
    assert report.agree, report.format()
    fields = {c.field for c in report.checks}
    mode = "pKVM" if "-pkvm-" in log.name else "nVHE"
    assert f"EL2 {mode} boot tables_l3" in fields and f"EL2 {mode} boot table_pages" in fields
    if mode == "pKVM":  # the printed Reserved N MiB, against kvm_hyp_reserve
        assert "pKVM reserved" in fields
    assert report.boot.protected == (mode == "pKVM")


def test_the_walks_cover_the_kernels_and_shapes():
    names = [p.stem for p in LOGS]
    assert len(names) >= 40
    for part in ("6.1-", "6.12-", "6.19-16k", "7.0-", "7.2-", "7.3-", "-pkvm-", "-nvhe-", "-8G-"):
        assert any(part in n for n in names), part
    assert any("-4c-" in n for n in names) and any("16k" in n for n in names)


def test_a_tampered_walk_disagrees_naming_the_level(tmp_path):
    log = WALKS / "6.1-nvhe-3G-1c-max.log"
    walk = json.loads(walk_of(log).read_text())
    walk["tables_l3"] += 1
    walk["table_pages"] += 1
    tampered = tmp_path / "w.json"
    tampered.write_text(json.dumps(walk))
    report = verify_boot_file(log, tables=tampered)
    assert report.disagreeing() == ["EL2 nVHE boot tables_l3", "EL2 nVHE boot table_pages"]
    result = CliRunner().invoke(main, ["verify-boot", str(log), "--tables", str(tampered)])
    assert result.exit_code == 1 and "DISAGREE on: EL2 nVHE boot tables_l3" in result.output


def test_a_tampered_reservation_disagrees(tmp_path):
    text = (WALKS / "7.3-pkvm-3G-1c-a72.log").read_text()
    assert "Reserved 24 MiB" in text
    report = verify_boot(text.replace("Reserved 24 MiB", "Reserved 22 MiB"))
    assert report.disagreeing() == ["pKVM reserved"]


def test_a_build_without_a_profile_is_refused_naming_it(tmp_path):
    text = (
        (WALKS / "6.1-nvhe-3G-1c-max.log").read_text().replace("6.1.0-57-arm64", "6.1.0-99-arm64")
    )
    log = tmp_path / "x.log"
    log.write_text(text)
    result = CliRunner().invoke(
        main, ["verify-boot", str(log), "--tables", str(walk_of(WALKS / "6.1-nvhe-3G-1c-max.log"))]
    )
    assert result.exit_code == 2
    assert "no kernel profile for 6.1.0-99-arm64" in result.stderr


def test_a_log_whose_era_cannot_be_told_is_refused(tmp_path):
    text = (WALKS / "7.3-nvhe-3G-1c-max.log").read_text()
    lines = [line for line in text.splitlines() if "Linux version" not in line]
    with pytest.raises(UnknownEra, match="no 'Linux version' line"):
        verify_boot("\n".join(lines))
    log = tmp_path / "x.log"
    log.write_text("\n".join(lines))
    result = CliRunner().invoke(main, ["verify-boot", str(log)])
    assert result.exit_code == 1 and result.stderr.startswith("sweep: error: cannot tell")


@pytest.mark.parametrize(
    ("log", "v"), [("7.3-16k-nvhe-3G-1c-nolpa2", 47), ("7.0-16k-nvhe-3G-1c-nolpa2", 47)]
)
def test_7x_below_48_bits_reads_vabits_from_the_build(log, v):
    """A 7.x tag sits at bit 47 whatever VA_BITS below 48: the build's profile (a 52-bit kernel,
    no LPA2 on this CPU) says 47, and the log agrees."""
    report = verify_boot_file(WALKS / f"{log}.log")
    assert report.va_bits == v and report.agree, report.format()


def test_a_va_bits_no_build_runs_agrees_with_its_eras_rule_only():
    """16K 7.3 without LPA2, checked as if it ran VA_BITS 36: 7.0's rule puts the tag at bit 47
    as the kernel did (the range agrees; only VA_BITS itself is against the build's 47); 6.9's
    at bit 35 (the range start disagrees)."""
    text = (WALKS / "7.3-16k-nvhe-3G-1c-nolpa2.log").read_text()
    new = verify_boot(text, va_bits=36, layout="linux-7.0")
    assert new.disagreeing() == ["VA_BITS"]
    old = verify_boot(text, va_bits=36, layout="linux-6.9")
    assert "HYP VA start" in old.disagreeing()
    # and the 6.19 kernel's log the other way round
    text = (WALKS / "6.19-16k-nvhe-3G-1c-nolpa2.log").read_text()
    assert verify_boot(text).agree
    assert "HYP VA start" in verify_boot(text, layout="linux-7.0").disagreeing()


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_every_leaf_at_the_alias_is_a_mapping_the_model_lists(log):
    """Outside the image and the pool, a walk's leaves at the HYP alias are exactly the per-CPU
    regions and (pKVM 6.10+ on an SVE CPU) the SVE states, in allocation order: cut so, they
    give the placement (``walk_allocations``), and no mapping of the kernel's is left over."""
    report = verify_boot_file(log, tables=walk_of(log))
    (pages,) = [c for c in report.checks if c.field.endswith("table_pages")]
    assert pages.model.endswith("(per-CPU regions at the walk's leaf PAs)"), pages.model


STRADDLING = {"7.3-pkvm-1G-4c-max": ("EL2 pKVM boot tables_l3", 0x459F_8000, 0x45A0_B000)}
"""Walks whose per-CPU regions the allocator put across a 2 MiB boundary (first, end of the
cluster, read from the walk): one L3 table more than the placement rule (``first_free``), which
puts them 24 MiB past the image's end, on a boundary."""


@pytest.mark.parametrize("log", LOGS, ids=lambda p: p.stem)
def test_the_placement_rule_alone_agrees_but_where_the_allocator_straddled(log, tmp_path):
    counts_only = tmp_path / "w.json"
    walk = json.loads(walk_of(log).read_text())
    counts_only.write_text(json.dumps({k: v for k, v in walk.items() if k != "leaves"}))
    report = verify_boot_file(log, tables=counts_only)
    if log.stem not in STRADDLING:
        assert report.agree, report.format()
        return
    field, first, end = STRADDLING[log.stem]
    assert report.disagreeing() == [field, field.replace("tables_l3", "table_pages")]
    leaves = {int(x["pa"], 16): int(x["size"], 16) for x in walk["leaves"]}
    assert first in leaves and first >> 21 != (end - 1) >> 21  # the cluster crosses 2 MiB
    (l3,) = [c for c in report.checks if c.field == field]
    assert int(l3.kernel) == int(l3.model) + 1
