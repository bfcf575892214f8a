"""Small things a person trips on in the first hour (issue 9 item 6), each as they meet it."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from sweep.cli import main
from sweep.core.errors import ValidationError
from sweep.core.memmap import parse_address
from sweep.formats.loaders import load_memory_map, memory_map_from_iomem
from sweep.plan.config import DEFAULT_CONFIG, apply_overrides, load_config
from sweep.read.results import parse_filters


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sweep: error: "), result.stderr
    return lines[0]


# --- -h ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], *([name] for name in sorted(main.commands))])
def test_dash_h_is_help_everywhere(command):
    result = CliRunner().invoke(main, [*command, "-h"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: ")


# --- addresses as the kernel prints them -----------------------------------------------------


def test_address_as_the_kernel_prints_it_is_hex():
    # "kvm [1]: IDMAP page: 40eed000" (tests/data/kernelboot/6.1-virt-3G.log).
    assert parse_address("40eed000") == 0x40EE_D000
    assert parse_address("0x40eed000") == 0x40EE_D000
    assert parse_address(0x40EE_D000) == 0x40EE_D000
    assert parse_address("1G") == 1 << 30
    assert parse_address("0") == 0


def test_decimal_looking_address_is_refused_saying_how_to_write_it():
    with pytest.raises(ValidationError) as info:
        parse_address("40000000", "--idmap")
    assert str(info.value) == (
        "--idmap: '40000000' could be hex (as the kernel prints addresses) or decimal;"
        " write 0x40000000 for hex, 0x2625a00 for the decimal 40,000,000, or a size such as 1G"
    )


def test_explain_idmap_as_printed_by_the_kernel():
    args = ["explain", "--map", "juno", "--granule", "4K", "--va-bits", "39", "--layout", "merged"]
    result = CliRunner().invoke(main, [*args, "--idmap", "8008a000"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("juno: 4K granule, VA_BITS 39, layout merged,")
    assert "idmap 0x8008a000" in result.output.splitlines()[0]
    error = one_line_error(CliRunner().invoke(main, [*args, "--idmap", "80080000"]))
    assert "write 0x80080000 for hex" in error


def test_memory_map_base_string_is_read_as_the_kernel_prints_it(tmp_path):
    path = tmp_path / "board.toml"
    path.write_text('[[banks]]\nbase = "8000a000"\nsize = "1G"\n')
    assert load_memory_map(path).banks[0].base == 0x8000_A000
    path.write_text('[[banks]]\nbase = "80000000"\nsize = "1G"\n')
    with pytest.raises(ValidationError, match=r"bank 0.*write 0x80000000 for hex"):
        load_memory_map(path)


def test_query_filter_on_an_address_column():
    assert parse_filters(["idmap_pa=40eed000"]) == {"idmap_pa": 0x40EE_D000}
    assert parse_filters(["margin=0x80000,1G"]) == {"margin": [0x80000, 1 << 30]}
    with pytest.raises(ValidationError, match="filter idmap_pa: '40000000' could be hex"):
        parse_filters(["idmap_pa=40000000"])


def test_address_override_keeps_what_was_typed():
    # TOML would read 40000000 as decimal; an address key keeps the text for parse_address.
    raw = apply_overrides({}, ["placement.addresses=40000000,40eed000"])
    assert raw["placement"]["addresses"] == ["40000000", "40eed000"]
    assert apply_overrides({}, ["placement.addresses=40eed000"])["placement"]["addresses"] == (
        "40eed000"
    )


def test_listed_addresses_in_a_config_and_an_override(tmp_path):
    path = tmp_path / "list.toml"
    listed = 'addresses = ["8008a000", 0x8010_0000]'
    path.write_text(f'memory_maps = ["juno"]\n[placement]\nkind = "list"\n{listed}\n')
    assert load_config(path).placement["addresses"] == ["8008a000", 0x8010_0000]
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ValidationError) as info:
        load_config(path, ["placement.addresses=80000000"])
    assert str(info.value) == (
        "override 'placement.addresses=80000000': placement.addresses[0]: '80000000' could be"
        " hex (as the kernel prints addresses) or decimal; write 0x80000000 for hex,"
        " 0x4c4b400 for the decimal 80,000,000, or a size such as 1G"
    )


# --- errors name the override ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("granules=8K", "override 'granules=8K': granules: '8K' is not one of 4K, 16K, 64K"),
        ("placement.step=3K", "override 'placement.step=3K': placement.step:"),
        ("tag.seed=-1", "override 'tag.seed=-1': tag.seed: expected an integer"),
    ],
)
def test_an_override_s_error_names_the_override(override, expected):
    with pytest.raises(ValidationError) as info:
        load_config(DEFAULT_CONFIG, ["placement.kind=stride", "placement.step=2M", override])
    assert str(info.value).startswith(expected), str(info.value)
    assert str(DEFAULT_CONFIG) not in str(info.value)


def test_the_same_mistake_in_the_file_names_the_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('memory_maps = ["juno"]\ngranules = ["8K"]\n')
    with pytest.raises(ValidationError) as info:
        load_config(path, ["layouts=merged"])
    assert str(info.value) == f"{path}: granules: '8K' is not one of 4K, 16K, 64K"


# --- empty inputs, missing folders -----------------------------------------------------------


def test_an_empty_iomem_file_says_it_is_empty(tmp_path):
    path = tmp_path / "board.iomem"
    path.write_text("")
    with pytest.raises(ValidationError) as info:
        load_memory_map(path)
    assert str(info.value) == f"{path}: the file is empty (expected a /proc/iomem dump)"
    with pytest.raises(ValidationError, match=r"^board: the /proc/iomem dump is empty$"):
        memory_map_from_iomem("\n\n", "board")


def test_report_into_a_missing_folder_is_one_line(tmp_path):
    out = tmp_path / "missing" / "report.html"
    result = CliRunner().invoke(main, ["report", str(tmp_path), "--out", str(out)])
    error = one_line_error(result)
    assert error == (
        f"sweep: error: --out {str(out)!r}: no folder {str(out.parent)!r} to write it in"
    )
    assert not out.parent.exists()


def test_a_wrong_executor_is_one_line_even_in_a_dry_run():
    result = CliRunner().invoke(main, ["run", "--dry-run", "--executor", "dask-locale"])
    assert one_line_error(result) == (
        "sweep: error: --executor: 'dask-locale' is not one of processes, dask, dask-local"
    )
