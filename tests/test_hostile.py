"""Hostile inputs (issue 22): links that lead out of ``--out``, damaged locks, names that carry
shell or terminal commands, inputs that never end. Each is one line, never a write outside the
folder, a command run, a hang or a traceback. Marker ``faults``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from small_sweep import small_config, write_map

from sweep.cli import main
from sweep.core.env import env_bytes, env_duckdb_memory
from sweep.core.errors import SweepError, ValidationError
from sweep.core.memmap import MAX_BANKS, MemoryMap
from sweep.formats.bootlog import parse_boot_log
from sweep.formats.loaders import load_memory_map, memory_map_from_boot_log
from sweep.run import lease
from sweep.run.driver import run_sweep
from sweep.run.lock import FolderLock
from sweep.store.parts import Store

pytestmark = pytest.mark.faults


# --- item 2: links out of --out -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["_sweep.lock", "_sweep.log", "_sweep.json", "_manifest.json"])
def test_a_linked_own_file_is_refused_and_its_target_untouched(tmp_path, name):
    out, victim = tmp_path / "out", tmp_path / "victim.txt"
    out.mkdir()
    victim.write_text("precious\n")
    (out / name).symlink_to(victim)
    with pytest.raises(SweepError, match=rf"{name} is a symbolic link; a sweep writes only inside"):
        FolderLock(Store(str(out))).acquire()
    assert victim.read_text() == "precious\n"


def test_a_lock_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / "_sweep.lock")
    started = time.monotonic()
    with pytest.raises(SweepError, match=r"_sweep.lock is not a regular file; remove it"):
        FolderLock(Store(str(out))).acquire()
    assert time.monotonic() - started < 2


def test_resume_through_a_linked_partition_folder_writes_nothing_outside(tmp_path):
    config = small_config(write_map(tmp_path))
    out = tmp_path / "out"
    report = run_sweep(config, out=str(out), workers=1, progress=False)
    assert report.status == "complete"
    elsewhere = tmp_path / "elsewhere"
    (out / "granule-4096" / "va_bits-48").rename(elsewhere)
    (out / "granule-4096" / "va_bits-48").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "part-000001.parquet").write_bytes(b"damaged")  # --resume would rewrite it
    (elsewhere / "unrelated.txt").write_text("keep me\n")
    before = sorted((p.name, p.stat().st_size) for p in elsewhere.iterdir())
    with pytest.raises(SweepError, match=r"granule-4096/va_bits-48 is a symbolic link"):
        run_sweep(config, out=str(out), workers=1, progress=False, resume=True)
    assert sorted((p.name, p.stat().st_size) for p in elsewhere.iterdir()) == before


def test_out_itself_may_be_a_link(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    config = small_config(write_map(tmp_path))
    report = run_sweep(config, out=str(tmp_path / "link"), workers=1, progress=False)
    assert report.status == "complete" and report.rows_written == 64
    assert (tmp_path / "real" / "_sweep.json").is_file()


# --- item 8: a damaged lock or lease ----------------------------------------------------------


@pytest.mark.parametrize(
    "content", [b"[]", b"5", b'{"pid": "\\u001b[2J", "host": 1}', b"\xff" * 5000, b"{" * 5000]
)
def test_a_damaged_lock_file_is_taken_over(tmp_path, content):
    out = tmp_path / "out"
    out.mkdir()
    (out / "_sweep.lock").write_bytes(content)
    with FolderLock(Store(str(out))):
        holder = json.loads((out / "_sweep.lock").read_text())
    assert holder["pid"] == os.getpid()
    assert not (out / "_sweep.lock").exists()  # a clean release leaves no lock file


@pytest.mark.parametrize(
    ("holder", "why"),
    [
        ({"host": "h", "pid": 10**30, "expires": 1e18}, "it names no holder and expiry"),
        ({"host": "h", "pid": -1, "expires": 1e18}, "it names no holder and expiry"),
        ({"host": "h", "pid": 5, "expires": "nan"}, "it names no holder and expiry"),
        ({"host": "h", "pid": 5, "expires": "inf"}, "s ahead, past any lease"),
        ({"host": "h", "pid": 5, "expires": 10.0**300}, "s ahead, past any lease"),
        ({"host": socket.gethostname(), "pid": 2**31 - 2, "expires": "in 60 s"}, "pid"),
    ],
)
def test_a_damaged_lease_is_stale_never_a_traceback(holder, why):
    if holder["expires"] == "in 60 s":  # a live lease of a pid that is gone: timed at run time
        holder = dict(holder, expires=time.time() + 60)
    assert why in lease.stale(holder)
    assert lease._who(holder).startswith("pid ")


def test_a_lease_holder_is_printed_without_its_control_characters():
    who = lease._who({"pid": 1, "host": "evil\x1b]0;title\x07\nforged", "expires": "x"})
    assert who == "pid 1 on host evil\\x1b]0;title\\x07\\x0aforged"


# --- item 3: every-page and many banks ----------------------------------------------------------

MANY_BANKS = """
import resource, sys
import numpy as np
from sweep.core.memmap import MAX_BANKS, MemoryMap
from sweep.model import runs
from sweep.plan.plugins import get_layouts
g, n = 4096, int(sys.argv[1])
m = MemoryMap("many", [(0x8000_0000 + i * 48 * g, 16 * g) for i in range(n)])
pages = np.repeat(np.array([b for b, _ in m.banks], dtype=np.int64), 4)
out = runs._Evaluator(m, g, 48, get_layouts()["linux-6.9"], False)(pages)
assert len(out["levels"]) == len(pages)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10)
"""


def test_every_page_memory_stays_bounded_with_many_banks():
    """20k banks, 80k pages: 1.6 * 10^9 page-bank cells, about 3 GB in one builder call."""
    run = subprocess.run(
        [sys.executable, "-c", MANY_BANKS, "20000"], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert int(run.stdout.split()[-1]) < 1024  # MiB


def test_a_map_of_too_many_banks_is_refused_in_one_line(tmp_path):
    g, n = 4096, MAX_BANKS + 1
    with pytest.raises(ValidationError, match=r"'huge': 32,769 banks; a map holds at most 32,768"):
        MemoryMap("huge", [(0x8000_0000 + i * 2 * g, g) for i in range(n)])
    path = tmp_path / "huge.toml"
    path.write_text('name = "huge"\n' + '[[banks]]\nbase = 0x8000_0000\nsize = "4K"\n' * n)
    started = time.monotonic()
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert time.monotonic() - started < 2  # refused before tomllib reads it
    inline = ", ".join(["{ base = 0x8000_0000, size = 4096 }"] * n)
    path.write_text(f'name = "huge"\nbanks = [{inline}]\n')
    assert "more than 32,768 banks" in CliRunner().invoke(main, ["maps", str(path)]).output
    assert out.exit_code == 2 and out.output == (
        f"sweep: error: {path}: more than 32,768 banks (base = ...), the most a map holds\n"
    )


def test_a_unit_of_a_many_bank_map_is_built_in_small_batches():
    from sweep.run.task import BUILD_BATCH_ROWS, batch_rows

    one = MemoryMap("one", [(0x8000_0000, 1 << 30)])
    many = MemoryMap("many", [(0x8000_0000 + i * 8192, 4096) for i in range(30000)])
    assert batch_rows([one]) == BUILD_BATCH_ROWS
    assert batch_rows([one, many]) == (1 << 27) // 30000


# --- item 4 and issue 21 item 11: boot logs, long and with any line ends ----------------------

KERNELBOOT = Path(__file__).parent / "data" / "kernelboot"


@pytest.mark.parametrize("ends", [b"\n", b"\r\n", b"\r\r\n", b"\r"])
def test_a_console_with_any_line_ends_reads_alike(tmp_path, ends):
    text = (KERNELBOOT / "6.1-versal-4G.log").read_bytes().replace(b"\r\n", b"\n")
    path = tmp_path / "console.log"
    path.write_bytes(text.replace(b"\n", ends))
    memory_map = load_memory_map(path)
    assert [(b.base, b.size) for b in memory_map.banks] == [(0, 2 << 30), (0x8_0000_0000, 2 << 30)]
    plain = parse_boot_log(text.decode())
    assert parse_boot_log(path.read_bytes().decode()) == plain
    assert plain.idmap_pa == 0xEED000 and plain.hyp_va_start == 0xA67000000000


def test_a_log_of_many_boots_reads_in_linear_time():
    boot = (
        "[    0.000000] Linux version 6.1.0\n[    0.000000] Early memory node ranges\n"
        "[    0.000000]   node   0: [mem 0x0000000040000000-0x00000000bfffffff]\n"
        "[    0.100000] Brought up 1 node, 1 CPU\n"
    )
    started = time.monotonic()
    memory_map = memory_map_from_boot_log(boot * 100_000, "many")  # 15 MB, was 60-78 s
    assert time.monotonic() - started < 15
    assert [(b.base, b.size) for b in memory_map.banks] == [(0x4000_0000, 2 << 30)]


# --- item 10: inputs that never end, numbers that never end -------------------------------------


def test_proc_kmsg_is_refused_at_once():
    """As root ``/proc/kmsg`` opens and its read waits for the next kernel message; a sweep
    refuses it at once. (Not root: it cannot be opened, also one line.)"""
    started = time.monotonic()
    out = CliRunner().invoke(main, ["maps", "/proc/kmsg"])
    assert time.monotonic() - started < 5
    assert out.exit_code == 2 and len(out.output.splitlines()) == 1
    if os.access("/proc/kmsg", os.R_OK):
        assert "/proc/kmsg: waits for data (a kernel interface or a device, not a file)" in (
            out.output
        )
    else:
        assert "/proc/kmsg: cannot read: Permission denied" in out.output


def test_an_integer_of_5000_digits_is_one_line(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text("a = " + "9" * 5000 + "\n")
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"{path}: a number too long to be read (Exceeds the limit (4300 digits)" in out.output


# --- item 7: outputs that keep nothing ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("memory://sweep", "is this process's memory"),
        ("simplecache::file:///tmp/x", "is a chained URL"),
        ("http://localhost:1/x", "is read-only over HTTP"),
        ("ftp://host/x", "is not a store a sweep keeps its results in (ftp://)"),
    ],
)
def test_an_output_that_keeps_nothing_is_refused(url, why):
    out = CliRunner().invoke(main, ["run", "memory_maps=juno", "--out", url])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert out.output.startswith(f"sweep: error: --out {url}: {why}")


# --- item 9: names with terminal controls --------------------------------------------------------


def test_a_name_with_control_characters_is_refused_in_one_escaped_line(tmp_path):
    path = tmp_path / "evil.toml"
    path.write_text(
        'name = "juno\\u001b[2J\\nFAKE LINE"\n[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n'
    )
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert out.exit_code == 2
    assert "\x1b" not in out.output and len(out.output.splitlines()) == 1
    assert "name 'juno\\x1b[2J\\nFAKE LINE': " in out.output
    assert "control characters" in out.output
    with pytest.raises(ValidationError, match=r"'juno\\x1b\[2J': has control characters"):
        MemoryMap("juno\x1b[2J", [(0x8000_0000, 1 << 30)])  # a plugin's, or an API user's


def test_maps_prints_a_description_with_its_control_characters_escaped(tmp_path):
    path = tmp_path / "evil.toml"
    path.write_text(
        'name = "juno-x"\ndescription = "x\\u001b]0;title\\u0007\\nFAKE"\n'
        'source = "\\u009b31m"\n[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n'
    )
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert out.exit_code == 0, out.output
    assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\x9b" not in out.stdout
    lines = out.stdout.splitlines()
    assert lines[0] == "juno-x  [file]  x\\x1b]0;title\\x07\\x0aFAKE"
    assert lines[1] == "    source: \\x9b31m"


def test_a_size_of_5000_digits_in_a_map_is_one_line_naming_file_and_bank(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(f'name = "big"\n[[banks]]\nbase = 0x8000_0000\nsize = "{"9" * 5000}G"\n')
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert f"{path}: line 2 (bank 0): size: '999999999999999999999999'... (5,001 characters)" in (
        out.output
    )


@pytest.mark.parametrize("value", ["lots", "-5", "9" * 5000, "1.5G"])
def test_a_bad_byte_count_in_the_environment_is_one_line(monkeypatch, value):
    monkeypatch.setenv("SWEEP_LOAD_WARN_BYTES", value)
    with pytest.raises(SweepError, match=r"^SWEEP_LOAD_WARN_BYTES='.*': expected a byte count"):
        env_bytes("SWEEP_LOAD_WARN_BYTES", 2 << 30)
    monkeypatch.setenv("SWEEP_LOAD_WARN_BYTES", "3G")
    assert env_bytes("SWEEP_LOAD_WARN_BYTES", 2 << 30) == 3 << 30


@pytest.mark.parametrize("value", ["lots", "1 gigabyte", "-1GB"])
def test_a_bad_memory_limit_in_the_environment_is_one_line(monkeypatch, value):
    monkeypatch.setenv("SWEEP_MEMORY_LIMIT", value)
    with pytest.raises(SweepError, match=r"^SWEEP_MEMORY_LIMIT='.*': expected a memory size"):
        env_duckdb_memory("SWEEP_MEMORY_LIMIT", "1GB")
    monkeypatch.setenv("SWEEP_MEMORY_LIMIT", "512MiB")
    assert env_duckdb_memory("SWEEP_MEMORY_LIMIT", "1GB") == "512MiB"


def test_a_device_tree_blob_larger_than_linux_boots_is_refused_unparsed(tmp_path):
    path = tmp_path / "huge.dtb"
    path.write_bytes(b"\xd0\x0d\xfe\xed" + (3 << 20).to_bytes(4, "big") + bytes(3 << 20))
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert out.exit_code == 2
    assert out.output == (
        f"sweep: error: {path}: 3,145,736 bytes; arm64 Linux boots a device tree blob of at most"
        " 2 MiB (MAX_FDT_SIZE, asm/boot.h)\n"
    )


def test_the_report_never_writes_through_a_link_left_beside_it(tmp_path):
    from sweep.read.report import write_report

    config = small_config(write_map(tmp_path))
    run_sweep(config, out=str(tmp_path / "out"), workers=1, progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / ".r.html.partial").symlink_to(victim)
    page = write_report(tmp_path / "out", tmp_path / "r.html")
    assert victim.read_text() == "precious\n"
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_a_boot_log_cannot_drive_the_terminal_through_verify_boot(tmp_path):
    text = (KERNELBOOT / "6.1-versal-4G.log").read_text()
    text = text.replace("Machine model: ", "Machine model: \x1b]0;pwned\x07\x1b[2J", 1)
    assert "\x1b]0;pwned" in text
    path = tmp_path / "evil.log"
    path.write_text(text)
    out = CliRunner().invoke(main, ["verify-boot", str(path)])
    assert "\x1b" not in out.output and "\x07" not in out.output
    assert "\\x1b]0;pwned\\x07\\x1b[2J" in out.output


def test_an_override_of_5000_digits_is_one_line():
    out = CliRunner().invoke(main, ["run", "--dry-run", "unit_rows=" + "9" * 5000])
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert len(out.output.splitlines()) == 1 and out.output.startswith("sweep: error: ")
    assert ": unit_rows: expected a positive integer" in out.output  # names the key
    assert len(out.output) < 500 and "(5,012 characters)" in out.output  # and stays short


@pytest.mark.parametrize("ends", [b"\r\n", b"\r\r\n"])
def test_verify_boot_and_maps_read_a_crlf_console(tmp_path, ends):
    text = (KERNELBOOT / "6.1-versal-4G.log").read_bytes().replace(b"\r\n", b"\n")
    path = tmp_path / "serial.log"
    path.write_bytes(text.replace(b"\n", ends))
    out = CliRunner().invoke(main, ["verify-boot", str(path)])
    assert out.exit_code == 0, out.output
    assert "all fields agree" in out.output
    maps = CliRunner().invoke(main, ["maps", str(path)])
    assert maps.exit_code == 0 and "0x000800000000-0x00087fffffff  2G" in maps.output


@pytest.mark.parametrize("command", [["query", "ftp://127.0.0.1:1/x", "boards"], ["verify"]])
def test_a_store_that_cannot_be_reached_is_one_line(command):
    args = command if len(command) > 1 else [*command, "ftp://127.0.0.1:1/x"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 2 and "Traceback" not in out.output
    assert out.output == "sweep: error: Connection refused\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("blank.toml", "\n" * 200_000 + "x"),  # _TOML_HINT's ^\s* ran across every blank line
        ("blank.log", "\n" * 200_000 + "x"),
        ("pcpu.log", "pcpu-alloc: " * 100_000),  # 'pcpu-alloc: .*alloc=' backtracked (70 s/240 KB)
        ("comments.dts", "/* */" * 100_000 + "x"),  # a regex of comments never returned at 1000
        ("blank.dts", "/dts-v1/;\n" + "\n" * 200_000 + "/ { };\n"),  # ^\s*#\s*include, re.M
    ],
)
def test_a_long_or_blank_input_is_read_in_linear_time(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    started = time.monotonic()
    out = CliRunner().invoke(main, ["maps", str(path)])
    assert time.monotonic() - started < 10
    assert out.exit_code == 2 and len(out.output.splitlines()) == 1
    started = time.monotonic()
    parse_boot_log(text)
    assert time.monotonic() - started < 10
