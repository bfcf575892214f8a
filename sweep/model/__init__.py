"""The model layer: docs/model.md sections 1-6 as pure numpy (the builder), and the scalar
reference it is held to. It imports only :mod:`sweep.core`."""

from sweep._moved import forward

# ``sweep.model`` was the vocabulary module before 0.2: its names still resolve, with a warning.
__getattr__ = forward(
    "sweep.model",
    "sweep.core.memmap",
    frozenset(
        "Bank GRANULES GRANULE_LIST MemoryMap PA_LIMIT SIZE_SUFFIXES VA_BITS_MAX VA_BITS_MIN "
        "bank_containing check_va_bits granule_name level_shift levels min_block_level "
        "parse_address parse_granule parse_size".split()
    ),
)
