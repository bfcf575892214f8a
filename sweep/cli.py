"""The ``sweep`` command line: thin click commands over the library modules.

A user mistake (any ``SweepError``) prints one line and exits 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import click

from sweep.cli_kernel import boot_tables_command, kernel_profile_command, verify_boot_command
from sweep.core.errors import SweepError
from sweep.core.kconfig import GRANULE_LIST
from sweep.core.sizes import short_size
from sweep.core.text import printable


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")  # each warning once, whatever filters said
                warnings.showwarning = _one_line_warning
                return super().invoke(ctx)
        except SweepError as exc:
            click.echo(f"sweep: error: {printable(exc, keep=chr(10))}", err=True)
            sys.exit(2)
        except ValueError as exc:  # int("9" * 5000) anywhere an input is read (sys.int_info)
            if "integer string conversion" not in str(exc):
                raise
            click.echo(f"sweep: error: a number of more than 4300 digits: {exc}", err=True)
            sys.exit(2)
        except OSError as exc:  # a host that does not resolve, a store that went away
            where = f" ({printable(exc.filename)})" if exc.filename else ""
            click.echo(f"sweep: error: {printable(exc.strerror or exc)}{where}", err=True)
            sys.exit(2)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning of ours (a part left out, missing units) is one line on stderr, like an
    error; others keep Python's form."""
    if category.__module__.startswith("sweep."):
        click.echo(f"sweep: warning: {message}", err=True)
    else:
        click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="va-sweep")
def main() -> None:
    """Sweep arm64 kernel configurations for KVM's EL2 idmap/runtime overlap and table size."""


# --- plugins and memory maps (sweep.plan.plugins, sweep.formats.loaders) --------------------------


@main.command("plugins")
def plugins_command() -> None:
    """List every plugin: the hooks it implements, its version and source, and its error."""
    from sweep.plan.plugins import plugin_info  # lazy: `sweep -h` stays fast

    for row in plugin_info():
        version = f" {row['version']}" if row["version"] else ""
        dist = f" ({row['distribution']})" if row["distribution"] else ""
        click.echo(printable(f"{row['name']}{version}{dist} [{row['kind']}]"))
        if row["path"]:
            click.echo(f"    source: {printable(row['path'])}")
        if row["hooks"]:
            click.echo(f"    hooks:  {', '.join(row['hooks'])}")
        if row["error"]:
            click.echo(f"    ERROR:  {printable(row['error'])}")


@main.command("maps")
@click.argument("specs", nargs=-1)
def maps_command(specs: tuple[str, ...]) -> None:
    """List memory maps with their banks: all registered ones, or those SPECS select (names,
    globs such as 'qemu-virt-*', family:NAME, memory-map files or directories)."""
    from sweep.plan.memory_maps import select_memory_maps  # lazy: `sweep -h` stays fast
    from sweep.plan.plugins import registry  # lazy: `sweep -h` stays fast

    reg = registry()
    maps = select_memory_maps(list(specs), catalog=reg) if specs else reg.memory_maps
    for name, memory_map in maps.items():
        family = reg.families.get(name, "file" if name not in reg.memory_maps else "")
        shown = f"{name}  [{family or '-'}]  {memory_map.description}".rstrip()
        click.echo(printable(shown))  # a name from a file reaches no terminal raw
        if memory_map.source:
            click.echo(f"    source: {printable(memory_map.source)}")
        for bank in memory_map.banks:
            click.echo(f"    {bank.base:#014x}-{bank.end - 1:#014x}  {_size_text(bank.size)}")


def _size_text(size: int) -> str:
    return short_size(size, "T") or f"{size:#x} bytes"


@main.command("columns")
@click.argument("names", nargs=-1)
def columns_command(names: tuple[str, ...]) -> None:
    """Every column of a result row (or the NAMES given): dtype, docs/model.md section, meaning."""
    from sweep.core.columns import RUN_SCHEMA, SCHEMA  # lazy: `sweep -h` stays fast

    every = (*SCHEMA, *RUN_SCHEMA)
    chosen = [c for c in every if not names or c.name in names]
    unknown = sorted(set(names) - {c.name for c in every})
    if unknown:
        raise SweepError(f"columns: no column {', '.join(unknown)} (sweep columns lists them)")
    width = max(len(c.name) for c in chosen)
    click.echo(f"{'column':<{width}}  {'dtype':<8}  section  meaning")
    notes = {"extra": " [added by va-sweep]", "run": " [every-page rows only]"}
    for c in chosen:
        what = " (true: a what-if, no kernel maps these with blocks)" * (c.name == "block_mappings")
        note = notes.get(c.kind, "")
        click.echo(f"{c.name:<{width}}  {c.dtype:<8}  {c.section:>7}  {c.meaning}{what}{note}")


# --- run (sweep.plan.config, sweep.run.driver, sweep.store.parts) ---------------------------------


@main.command("run", context_settings={"ignore_unknown_options": False})
@click.argument("args", nargs=-1, metavar="[CONFIG] [KEY=VALUE]...")
@click.option(
    "--out",
    default="results",
    show_default=True,
    help="Dataset folder (or fsspec URL such as s3://bucket/sweep).",
)
@click.option("--workers", type=int, default=None, help="Worker processes [default: CPUs].")
@click.option("--resume", is_flag=True, help="Run only the units with no part file yet.")
@click.option("--overwrite", is_flag=True, help="Replace the sweep already in --out.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed unit.")
@click.option("--dry-run", is_flag=True, help="Print counts and sizes; run nothing.")
@click.option(
    "--executor",
    default="processes",
    show_default=True,
    help="Where units run: a local process pool, or Dask (a wrong name lists them).",
)
@click.option("--scheduler", default=None, help="Dask scheduler address (tcp://host:8786).")
@click.option(
    "--allow-version-change",
    is_flag=True,
    help="--resume a sweep written by other versions of the code or plugins.",
)
def run_command(
    args: tuple[str, ...],
    out: str,
    workers: int | None,
    resume: bool,
    overwrite: bool,
    fail_fast: bool,
    dry_run: bool,
    executor: str,
    scheduler: str | None,
    allow_version_change: bool,
) -> None:
    """Run a sweep CONFIG (default: the packaged sweep/plan/default.toml) into a Parquet dataset.

    KEY=VALUE overrides change the config for this run: granules=4K,64K
    placement.kind=stride placement.step=2M tag.seed=7. Exits 1 listing failed units.
    """
    from sweep.plan.placements import writes_runs  # lazy: `sweep -h` stays fast
    from sweep.plan.plugins import registry  # lazy: as above
    from sweep.run.driver import RunOptions, run_sweep  # lazy: `sweep -h` stays fast
    from sweep.run.lock import check_output  # lazy: `sweep -h` stays fast
    from sweep.run.startup import (  # lazy: `sweep -h` stays fast
        describe_plan,
        describe_resume,
        run_config,
    )
    from sweep.run.task import make_plan  # lazy: `sweep -h` stays fast

    check_output(out)  # memory://, http://, simplecache::...: refused before any work
    overrides = [a for a in args if "=" in a]
    paths = [a for a in args if "=" not in a]
    config, source = run_config(paths, overrides, out, resume)
    options = RunOptions(
        out=out,
        workers=workers,
        resume=resume,
        overwrite=overwrite,
        fail_fast=fail_fast,
        executor=executor,
        scheduler=scheduler,
        config_source=source,
        allow_version_change=allow_version_change,
    )
    options.check()  # a wrong option is one line, dry run or not
    if dry_run:
        plan = make_plan(config, os.path.dirname(source) or None)
        click.echo(describe_plan(plan))
        if resume:
            click.echo(describe_resume(plan, out))
        sys.exit(1 if plan.failures else 0)  # "would fail" lines: the run would exit 1 too
    runs = writes_runs(registry().placements.get(config.placement.get("kind")))
    _finish(run_sweep(config, options), out, "pages, as runs" if runs else "rows")


def _finish(report, out: str, rows: str = "rows") -> None:
    """Say how the run (its ``sweep.run.scheduling.RunReport``) ended, and exit as it did: 1 when
    stopped for room or a unit failed (each listed), 130 when interrupted; else return."""
    if report.status == "stopped":
        click.echo(
            f"sweep: error: output {out}: {report.reason}; stopped, keeping the "
            f"{report.units_written + report.units_skipped:,} units done; make room, then "
            "run again with --resume",
            err=True,
        )
        sys.exit(1)
    click.echo(
        f"sweep {report.status}: {report.units_written:,} units written "
        f"({report.rows_written:,} {rows}, {report.bytes_written:,} bytes), "
        f"{report.units_skipped:,} already done, {len(report.failed)} failed, "
        f"in {report.seconds:.1f} s -> {out}",
        err=True,
    )
    if report.failed:
        click.echo(f"sweep: {len(report.failed)} units failed:", err=True)
        for failure in report.failed:
            click.echo(f"  {failure['unit']}: {failure['error']}", err=True)
    if report.status == "interrupted":
        click.echo("sweep: interrupted; run again with --resume to finish", err=True)
        sys.exit(130)
    if not report.ok:
        sys.exit(1)


@main.command("verify")
@click.argument("directory")
@click.option(
    "--partial-ok",
    is_flag=True,
    help="Exit 0 for a sweep that is whole but not finished (missing or failed units).",
)
def verify_command(directory: str, partial_ok: bool) -> None:
    """Check the sweep in DIRECTORY, writing nothing: every part file against its manifest
    (size, SHA-256, Parquet footer, rows), and the parts against the plan and the runs in
    _sweep.json (units never written, failed units, a run that did not finish). Exits 1 when
    a part is bad or, unless --partial-ok, the sweep is incomplete."""
    from sweep.store.manifest import verify_sweep  # lazy: `sweep -h` stays fast

    verdict = verify_sweep(directory)
    click.echo("\n".join(verdict.lines(directory, partial_ok)))
    sys.exit(verdict.exit_code(partial_ok))


# --- results: report, explain, diff (sweep.read.results, sweep.read.report, sweep.explain) --------

STRICT_HELP = "Refuse a part the manifest does not vouch for (default: leave it out, warning)."


@main.command("report")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option(
    "--out",
    default="report.html",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="HTML file to write (one self-contained page).",
)
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def report_command(directory: str, out: str, strict: bool) -> None:
    """Write an HTML report (figures and worst cases) of the results in DIRECTORY."""
    from sweep.read.engine import strict_reads  # lazy: `sweep -h` stays fast
    from sweep.read.report import write_report  # lazy: `sweep -h` stays fast

    with strict_reads(strict):
        click.echo(f"wrote {write_report(directory, out)}")


class _QueryCommand(click.Command):
    """Lists the named queries in its help, importing them (and DuckDB) only then."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from sweep.read.queries import QUERY_HELP  # lazy: `sweep -h` stays fast

        with formatter.section("Named queries"):
            formatter.write_dl(list(QUERY_HELP.items()))


@main.command("query", cls=_QueryCommand)
@click.argument("directory", type=click.Path(file_okay=False))
@click.argument("args", nargs=-1)
@click.option("--sql", help="A SELECT over the table 'results' (the whole dataset, filtered).")
@click.option("--limit", type=int, default=None, help="At most N rows.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
@click.option("--raw", is_flag=True, help="Exact integers: no hex addresses, no size units.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write here (needed for parquet).")
@click.option("--strict", is_flag=True, help=STRICT_HELP)
def query_command(
    directory: str,
    args: tuple[str, ...],
    sql: str | None,
    limit: int | None,
    fmt: str,
    raw: bool,
    out: str | None,
    strict: bool,
) -> None:
    """Answer a named query, or --sql, over the results in DIRECTORY.

    ARGS: [NAME] [column=value[,value]...], e.g. `sweep query results unrunnable granule=4K`
    or `sweep query results layout=linux-6.9 --sql "SELECT memory_map, count(*) FROM results
    GROUP BY ALL"`.
    """
    from sweep.read.answers import run_query  # lazy: `sweep -h` stays fast
    from sweep.read.engine import strict_reads  # lazy: `sweep -h` stays fast

    with strict_reads(strict):
        run_query(directory, args, sql=sql, limit=limit, fmt=fmt, raw=raw, out=out)


@main.command("explain")
@click.option("--map", "map_name", required=True, help="Memory-map plugin name or file.")
@click.option("--granule", required=True, help=f"One of {GRANULE_LIST}.")
@click.option("--va-bits", type=int, required=True, help="VA_BITS the kernel runs with.")
@click.option("--layout", required=True, help="HYP VA layout (high-only, merged, tagged, ...).")
@click.option(
    "--blocks/--no-blocks",
    default=False,
    show_default=True,
    help="Let the table builder use block mappings.",
)
@click.option(
    "--idmap", required=True, help="Physical address of the idmap page (0x40eed000 or 40eed000)."
)
@click.option(
    "--tag-random", default="0", show_default=True, help="Random tag bits for the tagged layouts."
)
def explain_command(
    map_name: str,
    granule: str,
    va_bits: int,
    layout: str,
    blocks: bool,
    idmap: str,
    tag_random: str,
) -> None:
    """Print one configuration's HYP page tables the way ptdump does, then its row."""
    from sweep.core.memmap import parse_address  # lazy: `sweep -h` stays fast
    from sweep.explain import explain, render, resolve_memory_map  # lazy: `sweep -h` stays fast

    memory_map = resolve_memory_map(map_name)
    click.echo(
        render(
            explain(
                memory_map,
                granule,
                va_bits,
                layout,
                blocks,
                parse_address(idmap, "--idmap"),
                parse_address(tag_random, "--tag-random"),
            )
        )
    )


@main.command("diff")
@click.argument("dir_a", type=click.Path(file_okay=False))
@click.argument("dir_b", type=click.Path(file_okay=False))
@click.option("--ignore", default="", help="Input columns to leave out of the match, a,b,c.")
@click.option("--show", default=10, show_default=True, help="Differing rows to print.")
def diff_command(dir_a: str, dir_b: str, ignore: str, show: int) -> None:
    """Rows whose outputs differ between two runs, by board and column; exit 1 if any."""
    from sweep.read.diff import diff, format_diff  # lazy: `sweep -h` stays fast

    result = diff(dir_a, dir_b, ignore=[c for c in ignore.split(",") if c], show=show)
    click.echo(format_diff(result, dir_a, dir_b, show=show))
    sys.exit(0 if result.identical else 1)


# --- verify-boot, kernel-profile (sweep.cli_kernel) --------------------------------------------

main.add_command(verify_boot_command)
main.add_command(kernel_profile_command)
main.add_command(boot_tables_command)


if __name__ == "__main__":
    main()
