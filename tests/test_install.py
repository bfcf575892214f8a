"""What ``pip install .`` (not editable) gives: ``sweep run`` and ``sweep columns`` from any folder.

The package is installed with ``--target`` into a temporary folder (no dependencies, no build
isolation: the test venv has them) and run from another empty folder, so nothing of the
checkout is on the path: the default config and the board files must be package data.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    # A copy of what a clone has, so that the build's own files (build/, *.egg-info) land there.
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, source / name)
    for name in ("sweep", "plugins"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-cache-dir",
            "--target",
            str(target),
            str(source),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    return target


def sweep_cli(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SWEEP_PLUGINS")}
    env["PYTHONPATH"] = str(installed)
    return subprocess.run(
        [sys.executable, "-m", "sweep.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
    )


def test_the_installed_package_is_the_one_run(installed, tmp_path):
    code = "import sweep, sweep_plugins.boards as b; print(sweep.__file__); print(b.__file__)"
    env = {**os.environ, "PYTHONPATH": str(installed)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert all(line.startswith(str(installed)) for line in out.stdout.split()), out.stdout


def test_sweep_columns_from_an_empty_folder(installed, tmp_path):
    result = sweep_cli(installed, tmp_path, "columns", "margin")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:3] == ["margin", "uint64", "4"]


def test_sweep_run_from_an_empty_folder_runs_the_packaged_default(installed, tmp_path):
    dry = sweep_cli(installed, tmp_path, "run", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    result = sweep_cli(installed, tmp_path, "run", "--workers", "1", "--out", "out")
    assert result.returncode == 0, result.stderr
    rows = pd.read_parquet(tmp_path / "out")
    # The default: 26 boards x (3 + 4 + 3 Kconfig VA_BITS) x 7 kernel eras (4.6, 4.8, 4.17, 5.12,
    # 6.2, 6.9, 7.0) x 1 block setting (false: pages, as every kernel maps) of all of DRAM, one
    # kernel-load idmap each; and nVHE's and pKVM's boot sets (4 CPUs) where a shipped profile
    # is of the era and granule: 4K in 5.12 (6.1), 6.9 (6.12) and 7.0 (7.3), 16K in 6.9 (6.19)
    # and 7.0 (7.3): 26 x 2 x (3 eras x 3 VA_BITS + 2 eras x 4 VA_BITS).
    assert len(rows) == 26 * 10 * 7 * 1 + 26 * 2 * (3 * 3 + 2 * 4)
    boot = rows[rows["mappings"] != "all-dram"]
    assert set(boot["kernel"].astype(str)) == {
        "6.1.0-57-arm64", "6.12.118+deb12-arm64", "7.3.4+deb13-arm64",
        "6.19.14+deb13-arm64-16k", "7.3.4+deb13-arm64-16k",
    }  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
