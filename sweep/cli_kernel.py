"""The commands about one real kernel build: ``sweep verify-boot``, ``sweep kernel-profile`` and
``sweep boot-tables``.

Registered on the ``sweep`` group by ``sweep.cli`` (which keeps a ``SweepError`` to one line).
"""

from __future__ import annotations

import sys

import click

from sweep.core.errors import SweepError
from sweep.core.kconfig import GRANULE_LIST


@click.command("verify-boot")
@click.argument("log", type=click.Path(dir_okay=False))
@click.option(
    "--granule", default=None, help=f"One of {GRANULE_LIST} (default: what the log shows)."
)
@click.option(
    "--va-bits", type=int, default=None, help="VA_BITS the kernel ran with (default: from the log)."
)
@click.option(
    "--layout",
    default=None,
    help="Kernel era to check (default: the era of the log's 'Linux version' line).",
)
@click.option(
    "--tables",
    type=click.Path(dir_okay=False),
    default=None,
    help="A walk of the real EL2 tables (JSON with tables_lm1..tables_l3, table_pages), "
    "compared per level with the model's boot-time tables.",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Kernel profile of the build (default: the shipped one for its release).",
)
def verify_boot_command(
    log: str,
    granule: str | None,
    va_bits: int | None,
    layout: str | None,
    tables: str | None,
    profile: str | None,
) -> None:
    """Compare a kernel boot LOG (console or dmesg) with the model; exit 0 only if all agree.

    Exit 1 on any disagreement, or when the log's kernel era cannot be told."""
    from sweep.verify import UnknownEra, verify_boot_file  # lazy: `sweep -h` stays fast

    try:
        report = verify_boot_file(
            log, granule=granule, va_bits=va_bits, layout=layout, tables=tables, profile=profile
        )
    except UnknownEra as exc:
        click.echo(f"sweep: error: {exc}", err=True)
        sys.exit(1)
    click.echo(report.format())
    sys.exit(0 if report.agree else 1)


@click.command("kernel-profile")
@click.option("--system-map", required=True, type=click.Path(dir_okay=False, exists=True))
@click.option(
    "--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True)
)
@click.option("--release", default=None, help="uname -r of the build (default: from the names).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="TOML to write.")
def kernel_profile_command(system_map: str, config_path: str, release: str | None, out: str):
    """Make a kernel profile (what EL2 maps of a build) from its System.map and .config."""
    from pathlib import Path  # lazy: as above

    from sweep.formats.kernel_profile import dump_profile, profile_from_files  # lazy: as above

    try:
        profile = profile_from_files(Path(system_map), Path(config_path), release)
    except ValueError as exc:
        raise SweepError(str(exc)) from None
    dump_profile(profile, Path(out), f"made by: sweep kernel-profile --system-map {system_map}")
    click.echo(f"{out}: {profile.release}, {profile.granule // 1024}K, VA_BITS {profile.va_bits}")


@click.command("boot-tables")
@click.option("--map", "map_name", required=True, help="Memory-map plugin name or file.")
@click.option("--granule", required=True, help=f"One of {GRANULE_LIST}.")
@click.option("--va-bits", type=int, required=True, help="VA_BITS the kernel runs with.")
@click.option("--layout", required=True, help="Kernel era (linux-5.12, linux-6.9, linux-7.0).")
@click.option("--idmap", required=True, help="Physical address of the idmap page (hex).")
@click.option(
    "--mappings",
    default="nvhe-boot",
    show_default=True,
    help="The boot set: nvhe-boot (init_hyp_mode) or pkvm-boot (recreate_hyp_mappings).",
)
@click.option("--cpus", type=int, default=4, show_default=True, help="CPUs brought up.")
@click.option("--kernel", required=True, help="A shipped kernel release (uname -r).")
def boot_tables_command(map_name, granule, va_bits, layout, idmap, mappings, cpus, kernel):
    """One configuration's boot-time EL2 mappings, their tables per level, and its row."""
    from sweep.core.memmap import parse_address  # lazy: as above
    from sweep.explain import resolve_memory_map  # lazy: as above
    from sweep.explain_boot import boot_tables, render  # lazy: as above

    memory_map = resolve_memory_map(map_name)
    result = boot_tables(
        memory_map, granule, va_bits, layout, parse_address(idmap, "--idmap"), mappings, cpus,
        kernel,
    )  # fmt: skip
    click.echo(render(result))
