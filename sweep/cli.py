"""The ``sweep`` command line: thin click commands over the library modules.

A user mistake (any ``SweepError``) prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from sweep.errors import SweepError


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SweepError as exc:
            click.echo(f"sweep: error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="va-sweep")
def main() -> None:
    """Sweep arm64 kernel configurations for KVM's EL2 idmap/runtime overlap and table size."""


# --- plugins and memory maps (sweep.plugins, sweep.loaders) ---------------------------------


# --- run (sweep.config, sweep.driver, sweep.store) -------------------------------------------


# --- results: report, explain, diff (sweep.results, sweep.report, sweep.explain) -------------


# --- verify-boot (sweep.verify) --------------------------------------------------------------


if __name__ == "__main__":
    main()
