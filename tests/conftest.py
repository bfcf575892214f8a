"""Shared fixtures: ``compute`` runs one configuration through the reference or the builder."""

from __future__ import annotations

import pandas as pd
import pytest

from sweep.model import MemoryMap
from sweep.reference import compute_row


def _via_reference(memory_map: MemoryMap, **config) -> dict:
    return compute_row(memory_map, **config)


def _via_builder(memory_map: MemoryMap, **config) -> dict:
    from sweep.builder import build

    row = {"memory_map": memory_map.name, "tag_random": 0, **config}
    out = build(pd.DataFrame([row]), {memory_map.name: memory_map})
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.iloc[0].items()}


@pytest.fixture(params=["reference", "builder"])
def compute(request):
    """``compute(memory_map, granule=, va_bits=, layout=, block_mappings=, idmap_pa=)`` -> row."""
    return {"reference": _via_reference, "builder": _via_builder}[request.param]
