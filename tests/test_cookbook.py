"""The morning-after cookbook (docs/cookbook.md) is run as a doctest: every output it shows is
what the code prints today, so it cannot go stale (issue 21)."""

from __future__ import annotations

import doctest
import os
from pathlib import Path

COOKBOOK = Path(__file__).resolve().parents[1] / "docs" / "cookbook.md"


def test_the_cookbook_runs_and_prints_what_it_shows():
    here = os.getcwd()
    try:
        result = doctest.testfile(
            str(COOKBOOK),
            module_relative=False,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False,
        )
    finally:
        os.chdir(here)  # the cookbook works in a folder of its own
    assert result.attempted > 20
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples differ"
