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


@main.command("plugins")
def plugins_command() -> None:
    """List every plugin: the hooks it implements, its version and source, and its error."""
    from sweep.plugins import plugin_info

    for row in plugin_info():
        version = f" {row['version']}" if row["version"] else ""
        dist = f" ({row['distribution']})" if row["distribution"] else ""
        click.echo(f"{row['name']}{version}{dist} [{row['kind']}]")
        if row["path"]:
            click.echo(f"    source: {row['path']}")
        if row["hooks"]:
            click.echo(f"    hooks:  {', '.join(row['hooks'])}")
        if row["error"]:
            click.echo(f"    ERROR:  {row['error']}")


@main.command("maps")
@click.argument("specs", nargs=-1)
def maps_command(specs: tuple[str, ...]) -> None:
    """List memory maps with their banks: all registered ones, or those SPECS select (names,
    globs such as 'qemu-virt-*', family:NAME, memory-map files or directories)."""
    from sweep.memory_maps import select_memory_maps
    from sweep.plugins import registry

    reg = registry()
    maps = select_memory_maps(list(specs)) if specs else reg.memory_maps
    for name, memory_map in maps.items():
        family = reg.families.get(name, "file" if name not in reg.memory_maps else "")
        click.echo(f"{name}  [{family or '-'}]  {memory_map.description}".rstrip())
        if memory_map.source:
            click.echo(f"    source: {memory_map.source}")
        for bank in memory_map.banks:
            click.echo(f"    {bank.base:#014x}-{bank.end - 1:#014x}  {_size_text(bank.size)}")


def _size_text(size: int) -> str:
    for shift, suffix in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{suffix}"
    return f"{size:#x} bytes"


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
