"""Shared fixtures: ``compute`` runs one configuration through the reference or the builder."""

from __future__ import annotations

import pytest

from sweep.api import build_row
from sweep.model import MemoryMap
from sweep.reference import compute_row


def _via_reference(memory_map: MemoryMap, **config) -> dict:
    return compute_row(memory_map, **config)


def _via_builder(memory_map: MemoryMap, **config) -> dict:
    return build_row(memory_map, **config)


@pytest.fixture(params=["reference", "builder"])
def compute(request):
    """``compute(memory_map, granule=, va_bits=, layout=, block_mappings=, idmap_pa=)`` -> row."""
    return {"reference": _via_reference, "builder": _via_builder}[request.param]
