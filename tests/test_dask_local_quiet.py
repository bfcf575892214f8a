"""Issue 21, item 8: ``--executor dask-local`` ends without the workers' "Failed to communicate
with scheduler during heartbeat" tracebacks: the local cluster's workers stop before its
scheduler, and their own logs are left to the driver's one-line reports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from small_sweep import write_map

pytest.importorskip("distributed")

TESTS = Path(__file__).resolve().parent


def test_dask_local_ends_quietly(tmp_path):
    map_file = write_map(tmp_path)
    config = tmp_path / "c.toml"
    config.write_text(
        f'name = "c"\nmemory_maps = ["{map_file}"]\ngranules = ["4K"]\nva_bits = [39, 48]\n'
        'layouts = ["linux-4.8"]\nunit_rows = 16\n[placement]\nkind = "stride"\nstep = "64M"\n'
    )
    script = tmp_path / "run.py"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\n"
        "from sweep.cli import main\n"
        "if __name__ == '__main__':  # dask's worker processes import this module again\n"
        "    main(sys.argv[1:], prog_name='sweep')\n"
    )
    command = [sys.executable, str(script), "run", str(config), "--out", str(tmp_path / "o")]
    run = subprocess.run(
        [*command, "--executor", "dask-local", "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines[-1].startswith("sweep complete: 4 units written (64 rows")
    assert "Traceback" not in run.stderr and "heartbeat" not in run.stderr
    assert all(line.startswith("sweep") for line in lines), lines
