"""Input file formats: memory maps from TOML, device trees, ``/proc/iomem`` and boot logs, read
safely; kernel profiles. It imports only :mod:`sweep.core`."""
