"""The store layer: part files, the manifest of whole parts, their summary files and the
sweep's record. It imports only :mod:`sweep.core`."""

from sweep._moved import forward

# ``sweep.store`` was the module of ``Store`` and the part paths before 0.2.
__getattr__ = forward(
    "sweep.store",
    "sweep.store.parts",
    frozenset({"Store", "part_path", "PART_RE", "writer_options"}),
)
