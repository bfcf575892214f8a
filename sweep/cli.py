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


@main.command("verify-boot")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option("--granule", default=None, help="4K, 16K or 64K (default: what the log shows).")
@click.option(
    "--va-bits", type=int, default=None, help="VA_BITS the kernel ran with (default: from the log)."
)
@click.option("--layout", default="tagged-48", show_default=True, help="HYP VA layout to check.")
def verify_boot_command(log: str, granule: str | None, va_bits: int | None, layout: str) -> None:
    """Compare a kernel boot LOG (console or dmesg) with the model; exit 0 only if all agree."""
    from sweep.verify import verify_boot_file

    report = verify_boot_file(log, granule=granule, va_bits=va_bits, layout=layout)
    click.echo(report.format())
    sys.exit(0 if report.agree else 1)


if __name__ == "__main__":
    main()
