"""apt for Debian suites the machine does not list, with its own configuration and state.

The tools fetch kernels and kernel sources from suites beyond the system's (sid for 7.2,
trixie-backports for 7.0-7.3, trixie for 6.12). They must leave the system's sources alone, so
each suite gets a private apt tree under the cache: its own `sources.list`, lists, archives and
status file, named to apt through `APT_CONFIG` (apt.conf(5): `Dir::Etc::SourceList`,
`Dir::State`, `Dir::Cache`). The system's keyring still signs them.

    python3 tools/debian_apt.py SUITE PACKAGE... [--cache DIR] [--arch arm64]
        downloads each package's .deb into the cache and prints its path

Used as a module: `download(suite, package, cache)` and `candidates(suite, pattern, cache)`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
SUITES = ("bookworm", "bookworm-backports", "trixie", "trixie-backports", "sid")
# Lists older than this are fetched again (sid moves daily).
STALE_SECONDS = 12 * 3600


class AptError(Exception):
    """apt could not do what was asked; the message says what and why, in one line."""


def default_cache() -> Path:
    return Path(os.environ.get("VA_SWEEP_APT_CACHE", Path.home() / ".cache/va-sweep/apt"))


def _tree(suite: str, cache: Path) -> Path:
    if suite not in SUITES:
        raise AptError(f"suite {suite!r} is not one of {', '.join(SUITES)}")
    root = cache / suite
    for sub in (
        "etc/preferences.d",
        "etc/apt.conf.d",
        "state/lists/partial",
        "cache/archives/partial",
        "state/status.d",
    ):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "etc/sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n")
    status = root / "state/status"
    if not status.exists():
        status.write_text("")
    (root / "apt.conf").write_text(
        "\n".join(
            [
                'APT::Architecture "amd64";',
                'APT::Architectures { "amd64"; "arm64"; };',
                f'Dir::Etc::SourceList "{root}/etc/sources.list";',
                f'Dir::Etc::SourceParts "{root}/etc/empty.d";',
                f'Dir::Etc::Preferences "{root}/etc/preferences";',
                f'Dir::Etc::PreferencesParts "{root}/etc/preferences.d";',
                f'Dir::Etc::Parts "{root}/etc/apt.conf.d";',
                f'Dir::State "{root}/state";',
                f'Dir::State::Lists "{root}/state/lists";',
                f'Dir::State::status "{status}";',
                f'Dir::Cache "{root}/cache";',
                f'Dir::Cache::Archives "{root}/cache/archives";',
                'Acquire::Languages "none";',
                'Acquire::Check-Valid-Until "false";',
                "",
            ]
        )
    )
    (root / "etc/empty.d").mkdir(exist_ok=True)
    return root


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "APT_CONFIG": str(root / "apt.conf"), "LC_ALL": "C"}


def update(suite: str, cache: Path | None = None, force: bool = False) -> Path:
    """Fetch the suite's package lists into its private tree (once in STALE_SECONDS)."""
    root = _tree(suite, cache or default_cache())
    stamp = root / "state/updated"
    if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < STALE_SECONDS:
        return root
    done = subprocess.run(
        ["apt-get", "update", "-q"], env=_env(root), text=True, capture_output=True
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AptError(f"apt-get update for {suite} failed: {tail}")
    stamp.write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    return root


def candidates(suite: str, pattern: str, cache: Path | None = None) -> list[str]:
    """Package names in SUITE matching the apt-cache regex PATTERN, sorted."""
    root = update(suite, cache)
    done = subprocess.run(
        ["apt-cache", "search", "--names-only", pattern],
        env=_env(root),
        text=True,
        capture_output=True,
    )
    if done.returncode != 0:
        raise AptError(f"apt-cache search {pattern!r} in {suite} failed: {done.stderr.strip()}")
    return sorted(line.split(" - ", 1)[0] for line in done.stdout.splitlines() if line)


def version(suite: str, package: str, cache: Path | None = None) -> str:
    """The candidate version of PACKAGE in SUITE."""
    root = update(suite, cache)
    done = subprocess.run(
        ["apt-cache", "policy", package], env=_env(root), text=True, capture_output=True
    )
    for line in done.stdout.splitlines():
        if line.strip().startswith("Candidate:"):
            found = line.split(":", 1)[1].strip()
            if found and found != "(none)":
                return found
    raise AptError(f"package {package} is not in {suite}")


def download(suite: str, package: str, cache: Path | None = None) -> Path:
    """PACKAGE's .deb from SUITE, downloaded once into the cache; returns its path."""
    cache = cache or default_cache()
    root = update(suite, cache)
    target = root / "debs"
    target.mkdir(exist_ok=True)
    name = package.split(":")[0]
    have = sorted(target.glob(f"{name}_*.deb"))
    if have:
        return have[-1]
    done = subprocess.run(
        ["apt-get", "download", "-q", package],
        env=_env(root),
        text=True,
        capture_output=True,
        cwd=target,
    )
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise AptError(f"apt-get download {package} from {suite} failed: {tail}")
    have = sorted(target.glob(f"{name}_*.deb"))
    if not have:
        raise AptError(f"apt-get download {package} from {suite} left no .deb")
    return have[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", choices=SUITES)
    parser.add_argument("packages", nargs="+")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args(argv)
    try:
        for package in args.packages:
            print(download(args.suite, package, args.cache))
    except AptError as error:
        print(f"debian_apt: {error}", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
