"""Sweep configs: the TOML file, key=value overrides, and one-line errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sweep.core.errors import ValidationError
from sweep.plan.config import (
    apply_overrides,
    config_difference,
    load_config,
    parse_value,
    validate_config,
)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "sweep" / "plan" / "default.toml"


def test_default_config_is_the_documented_sweep():
    cfg = load_config(DEFAULT)
    assert cfg.memory_maps == ("family:board",)
    assert cfg.granules == (4096, 16384, 65536)
    assert cfg.va_bits == "kconfig"
    assert cfg.layouts == (
        "linux-4.6", "linux-4.8", "linux-4.17", "linux-5.12", "linux-6.2", "linux-6.9", "linux-7.0"
    )  # fmt: skip
    assert cfg.block_mappings == (False,)  # blocks are a what-if: no kernel maps these with them
    assert cfg.placement == {"kind": "kernel-load"}
    assert cfg.tag_seed == 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_validates(path):
    assert load_config(path).name


@pytest.mark.parametrize(
    "text, value",
    [
        ("4K,64K", ["4K", "64K"]),
        ("48", 48),
        ("39,48", [39, 48]),
        ("0x8000_0000", 0x8000_0000),
        ("false", False),
        ("true,false", [True, False]),
        ("kconfig", "kconfig"),
        ("2M", "2M"),
        ('"a,b"', "a,b"),
        ("[1, 2]", [1, 2]),
        ("family:board", "family:board"),
    ],
)
def test_override_values(text, value):
    assert parse_value(text) == value


def test_overrides_reach_tables_and_become_lists():
    cfg = load_config(
        DEFAULT,
        [
            "granules=4K,64K",
            "va_bits=48",
            "layouts=linux-4.17",
            "block_mappings=true",
            "placement.kind=stride",
            "placement.step=2M",
            "tag.seed=7",
            "memory_maps=juno",
            "unit_rows=1000",
        ],
    )
    assert cfg.granules == (4096, 65536)
    assert cfg.va_bits == (48,)
    assert cfg.layouts == ("linux-4.17",)
    assert cfg.block_mappings == (True,)
    assert cfg.placement == {"kind": "stride", "step": "2M"}
    assert cfg.tag_seed == 7
    assert cfg.memory_maps == ("juno",)
    assert cfg.unit_rows == 1000


def test_overrides_do_not_touch_the_original():
    raw = {"placement": {"kind": "kernel-load"}}
    out = apply_overrides(raw, ["placement.kind=stride"])
    assert raw == {"placement": {"kind": "kernel-load"}}
    assert out["placement"]["kind"] == "stride"


@pytest.mark.parametrize(
    "override, message",
    [
        ("granuls=4K", "override 'granuls': unknown key"),
        ("granules", "override 'granules': expected key=value"),
        ("placement=stride", "override 'placement': placement is a table"),
        ("name.x=1", "override 'name.x': 'name' is not a table"),
        ("granules=8K", "granules: '8K' is not one of 4K, 16K, 64K"),
        ("va_bits=60", "va_bits: expected 'kconfig' or a list of integers 32..52, got 60"),
        ("va_bits=auto", "va_bits: expected 'kconfig' or a list"),
        ("layouts=tagged,bogus", "layouts: 'bogus' is not a registered layout"),
        ("block_mappings=maybe", "block_mappings: expected a list of true/false"),
        ("placement.kind=nowhere", "placement.kind: 'nowhere' is not a registered placement"),
        ("placement.step=3000", "placement.step: not a key of placement kind 'kernel-load'"),
        ("tag.seed=-1", "tag.seed: expected an integer 0..2^64-1, got -1"),
        ("tag.salt=1", "tag.salt: unknown key (known: seed)"),
        ("unit_rows=0", "unit_rows: expected a positive integer, got 0"),
        ("memory_maps=[]", "memory_maps: expected a list of map names"),
    ],
)
def test_bad_overrides_are_one_line_naming_the_key(override, message):
    with pytest.raises(ValidationError) as info:
        load_config(DEFAULT, [override])
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_bad_files_name_the_file(tmp_path):
    with pytest.raises(ValidationError, match=r"config .*nothere.toml: cannot read"):
        load_config(tmp_path / "nothere.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text('name = "x"\ngranules = [4K]\n')
    with pytest.raises(ValidationError, match=r"broken.toml: invalid TOML: .*line 2"):
        load_config(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('memory_maps = ["juno"]\nlayout = "tagged"\n')
    with pytest.raises(ValidationError, match=r"unknown.toml: layout: unknown key"):
        load_config(unknown)


def test_name_defaults_to_the_file_stem(tmp_path):
    path = tmp_path / "my-sweep.toml"
    path.write_text('memory_maps = ["juno"]\n')
    cfg = load_config(path)
    assert cfg.name == "my-sweep"
    # Everything else takes the defaults of docs/model.md section 8.
    assert cfg.granules == (4096, 16384, 65536)
    assert cfg.block_mappings == (False, True)


def test_difference_names_each_changed_key():
    old = validate_config({"memory_maps": ["juno"], "granules": ["4K"]})
    new = validate_config({"memory_maps": ["juno"], "granules": ["4K", "64K"], "tag": {"seed": 3}})
    assert config_difference(old.as_dict(), new.as_dict()) == [
        "granules: [4096] -> [4096, 65536]",
        "tag.seed: 0 -> 3",
    ]
    assert config_difference(old.as_dict(), old.as_dict()) == []
