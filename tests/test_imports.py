"""The import graph is visible at the top of each module: an import inside a function must say
why it is there (a ``# lazy: ...`` comment on its line), so the layering of docs/architecture.md
can be read off the module headers and a new deferred import is a decision, not a habit."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*(ROOT / "sweep").rglob("*.py"), *(ROOT / "plugins").glob("*.py")])


def function_level_imports(path: Path) -> list[tuple[int, str]]:
    """(line number, line text) of every import statement inside a function body."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import | ast.ImportFrom):
                    found.append((inner.lineno, lines[inner.lineno - 1]))
    return sorted(set(found))


def test_the_checker_sees_an_import_in_a_function(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    import json  # lazy: why\n    return json\n")
    assert function_level_imports(module) == [(4, "    import json  # lazy: why")]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_function_level_import_says_why(path):
    unexplained = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in function_level_imports(path)
        if "# lazy:" not in line
    ]
    assert not unexplained, "imports inside functions without a '# lazy: reason':\n" + "\n".join(
        unexplained
    )


def test_the_readers_load_no_module_of_the_model_plan_or_run_layers():
    """docs/architecture.md: the readers know only the files the store writes. Checked in a
    fresh interpreter, through the public entry points a user imports."""
    code = (
        "import sys, sweep.results, sweep.read.report, sweep.read.diff, sweep.read.answers\n"
        "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('sweep'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    assert "sweep.read.queries" in loaded  # the check sees what it should
    below = [m for m in loaded if m.split(".")[1:2] in (["model"], ["plan"], ["run"])]
    assert not below, below


def test_a_plugin_written_against_the_old_paths_still_loads():
    """Release 0.2 moved the modules into layer packages; the old paths a plugin may use keep
    working for one release, each with a DeprecationWarning naming the new path."""
    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    from sweep.layouts import Layout, LayoutBatch\n"
        "    from sweep.inputs import Progression\n"
        "    from sweep.model import MemoryMap, parse_address\n"
        "    from sweep.errors import ValidationError\n"
        "import sweep\n"
        "assert Layout is sweep.Layout and Progression is sweep.Progression\n"
        "assert MemoryMap is sweep.MemoryMap and ValidationError is sweep.ValidationError\n"
        "assert parse_address('40eed000') == 0x40EED000\n"
        "print(sorted({str(w.message).split(' moved')[0] for w in seen}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "['sweep.errors.ValidationError', 'sweep.inputs.Progression', 'sweep.layouts.Layout', "
        "'sweep.layouts.LayoutBatch', 'sweep.model.MemoryMap', 'sweep.model.parse_address']"
    )
