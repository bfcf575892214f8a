"""The import graph is visible at the top of each module: an import inside a function must say
why it is there (a ``# lazy: ...`` comment on its line), so the layering of docs/architecture.md
can be read off the module headers and a new deferred import is a decision, not a habit."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*(ROOT / "sweep").glob("*.py"), *(ROOT / "plugins").glob("*.py")])


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


@pytest.mark.parametrize("path", MODULES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_function_level_import_says_why(path):
    unexplained = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for number, line in function_level_imports(path)
        if "# lazy:" not in line
    ]
    assert not unexplained, "imports inside functions without a '# lazy: reason':\n" + "\n".join(
        unexplained
    )
