"""Issue 21, items 13 and 14: map names usable on the command line, two files of one name named,
a memory map given as the config, and the small things (filters, --limit, --sql, seeds, hints)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner
from small_sweep import T1G, small_config, write_map

from sweep.cli import main
from sweep.core.errors import ValidationError
from sweep.core.memmap import parse_address
from sweep.plan.config import validate_config
from sweep.plan.memory_maps import MapWarning, select_memory_maps
from sweep.read import results
from sweep.run.driver import run_sweep

BANK = '[[banks]]\nbase = 0x8000_0000\nsize = "1G"\n'


@pytest.mark.parametrize(
    "name, rule",
    [
        ("a,b", "must not hold ','"),
        ("family:x", "must not begin with 'family:'"),
        ("board*", "must not hold '*', '?' or '['"),
        (" padded", "must not be empty or begin or end with a space"),
    ],
)
def test_a_name_the_command_line_cannot_reach_is_refused(tmp_path, name, rule):
    path = tmp_path / "m.toml"
    path.write_text(f"name = {json.dumps(name)}\n{BANK}")
    with pytest.raises(ValidationError) as info:
        select_memory_maps([str(path)])
    assert str(info.value) == f"{path}: name {name!r}: {rule}" + (
        " (it separates values on the command line)" * ("," in name)
        + " (that selects a family of maps)" * name.startswith("family:")
        + " (they make it a glob)" * ("*" in name)
    )


def test_one_name_in_two_files_with_other_banks_names_both_files(tmp_path):
    (tmp_path / "a.toml").write_text(f'name = "x"\n{BANK}')
    (tmp_path / "b.toml").write_text('name = "x"\n[[banks]]\nbase = 0x9000_0000\nsize = "1G"\n')
    with pytest.raises(ValidationError) as info:
        select_memory_maps([str(tmp_path)])
    message = str(info.value)
    assert repr(str(tmp_path / "a.toml")) in message and repr(str(tmp_path / "b.toml")) in message
    assert message.count(repr(str(tmp_path))) == 0  # the files, not the folder twice


def test_one_map_in_two_files_is_swept_once_saying_so(tmp_path):
    (tmp_path / "a.toml").write_text(f'name = "x"\n{BANK}')
    (tmp_path / "b.toml").write_text(f'name = "x"\n{BANK}')
    with pytest.warns(MapWarning, match=r"b\.toml' and '.*a\.toml' both give the map 'x'"):
        assert list(select_memory_maps([str(tmp_path)])) == ["x"]


def test_a_memory_map_given_as_the_config_says_so(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text(T1G)
    got = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert got.exit_code == 2
    assert got.stderr == (
        f"sweep: error: config {path}: this is a memory map (it has [[banks]]), not a sweep "
        f"config; give it as memory_maps={path}\n"
    )


# --- item 14 ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    out = root / "out"
    assert run_sweep(small_config(write_map(root)), out=str(out), workers=1, progress=False).ok
    return out


def test_a_filter_given_as_a_string_of_digits_is_that_integer(small):
    frame = results.load(small, va_bits="39", columns=["va_bits"])
    assert len(frame) == 32 and set(frame.va_bits) == {39}
    with pytest.raises(ValidationError, match=r"filter va_bits='x9': expected an integer"):
        results.load(small, va_bits="x9")


def test_a_negative_limit_is_refused(small):
    got = CliRunner().invoke(main, ["query", str(small), "level-counts", "--limit", "-1"])
    assert got.exit_code == 2 and got.stderr == "sweep: error: --limit -1: must be 0 or more\n"


@pytest.mark.parametrize(
    "sql, kind",
    [
        ("COPY (SELECT 1) TO 'x.csv'", "COPY"),
        ("CREATE TABLE t AS SELECT 1", "CREATE"),
        ("ATTACH 'x.db'", "ATTACH"),
        ("SET memory_limit = '9GB'", "SET"),
    ],
)
def test_sql_is_one_select_and_never_writes(small, tmp_path, monkeypatch, sql, kind):
    monkeypatch.chdir(tmp_path)
    got = CliRunner().invoke(main, ["query", str(small), "--sql", sql])
    assert got.exit_code == 2, got.output
    assert f"--sql: a {kind} statement; --sql runs one SELECT" in got.stderr
    assert list(tmp_path.iterdir()) == []


def test_sql_with_two_statements_is_refused(small):
    got = CliRunner().invoke(main, ["query", str(small), "--sql", "SELECT 1; SELECT 2"])
    assert got.exit_code == 2 and "--sql: 2 statements; give one SELECT" in got.stderr
    ok = CliRunner().invoke(
        main, ["query", str(small), "--sql", "WITH x AS (SELECT 1 AS n) SELECT n FROM x"]
    )
    assert ok.exit_code == 0, ok.output


def test_a_random_placement_needs_its_seed(tmp_path):
    raw = {
        "name": "r",
        "memory_maps": [str(write_map(tmp_path))],
        "granules": ["4K"],
        "layouts": ["linux-4.8"],
        "placement": {"kind": "random", "count": 3},
    }
    with pytest.raises(ValidationError, match=r"placement.seed: missing \(random needs count"):
        validate_config(raw)


def test_the_hint_for_a_decimal_address_names_both_readings():
    with pytest.raises(ValidationError) as info:
        parse_address("2147483648", "base")
    assert "write 0x2147483648 for hex, 0x80000000 for the decimal 2,147,483,648" in str(info.value)


def test_verify_messages(small, tmp_path):
    import shutil

    out = Path(shutil.copytree(small, tmp_path / "out"))
    part = out / "granule-4096" / "va_bits-48" / "part-000000.parquet"
    part.write_bytes(part.read_bytes() + b"more")
    got = CliRunner().invoke(main, ["verify", str(out)])
    assert "(larger: replaced or appended to)" in got.output and "truncated?" not in got.output
    assert got.output.splitlines()[-1] == f"8 part files checked, 1 problem in {out}"
    folder = tmp_path / "file"
    folder.write_text("x")
    missing = CliRunner().invoke(main, ["verify", str(folder)])
    assert missing.exit_code == 2 and "output" not in missing.stderr


def test_query_help_has_whole_sentences():
    got = CliRunner().invoke(main, ["query", "--help"], terminal_width=200)
    listed = got.output.split("Named queries:")[1].strip().splitlines()
    assert len(listed) == 12
    for line in listed:
        assert line.rstrip().endswith("."), line
        assert "``" not in line and "WORST_ORDER" not in line


def test_scheduler_and_dry_run_resume_are_not_ignored(tmp_path):
    warnings.simplefilter("ignore")
    map_file = write_map(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(
        f'name = "c"\nmemory_maps = ["{map_file}"]\ngranules = ["4K"]\nva_bits = [48]\n'
        'layouts = ["linux-4.8"]\n[placement]\nkind = "stride"\nstep = "256M"\n'
    )
    got = CliRunner().invoke(
        main, ["run", str(config), "--dry-run", "--executor", "dask-local", "--scheduler", "x"]
    )
    assert got.exit_code == 2 and "--scheduler x: used only with --executor dask" in got.stderr
    resumed = CliRunner().invoke(
        main, ["run", str(config), "--dry-run", "--resume", "--out", str(tmp_path / "o")]
    )
    assert resumed.exit_code == 0
    assert "resume:         0 of 1 units already whole" in resumed.output


def test_a_config_read_from_a_terminal_says_so_first(tmp_path, monkeypatch, capsys):
    import io
    import sys

    from sweep.run.startup import run_config

    class Terminal(io.BytesIO):
        def isatty(self) -> bool:
            return True

    map_file = write_map(tmp_path)
    text = (
        f'name = "t"\nmemory_maps = ["{map_file}"]\ngranules = ["4K"]\nva_bits = [48]\n'
        'layouts = ["linux-4.8"]\n[placement]\nkind = "stride"\nstep = "256M"\n'
    )
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(Terminal(text.encode())))
    config, source = run_config(["-"], [], str(tmp_path / "o"), resume=False)
    assert config.name == "t" and source == "-"
    assert capsys.readouterr().err == (
        "sweep: reading the config from standard input (end it with Ctrl-D)\n"
    )
