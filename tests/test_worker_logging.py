"""Issue 21, item 17: why workers log straight to ``_sweep.log`` and not through
multiprocessing-logging (docs/architecture.md, "Logging from workers").

multiprocessing-logging sends every worker's records through one ``multiprocessing.Queue``; a
worker killed while it holds the queue's lock (mid-``put``) leaves it held, and every other
worker's next log line, then the pool, waits forever. Here each forked worker appends to the
file itself (``O_APPEND``, one write per record), so nothing a worker can die holding is shared.
"""

from __future__ import annotations

import logging
import logging.handlers
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from small_sweep import write_map

from sweep.run.progress import start_logging, stop_logging
from sweep.store.parts import Store

TESTS = Path(__file__).resolve().parent


def test_no_queue_or_lock_is_shared_with_workers(tmp_path):
    handlers = start_logging(Store(str(tmp_path / "out")))
    try:
        found = []
        for handler in logging.getLogger("sweep").handlers:
            found += [handler, *getattr(handler, "handlers", [])]
        assert not [h for h in found if isinstance(h, logging.handlers.QueueHandler)]
        assert "multiprocessing_logging" not in sys.modules
        files = [h for h in found if isinstance(h, logging.FileHandler)]
        assert len(files) == 1 and files[0].mode == "a"
    finally:
        stop_logging(handlers)


SCRIPT = """
import logging, os, signal, sys, threading, time
sys.path.insert(0, {tests!r})
from test_driver import WrappedLayout, install_layouts
log = logging.getLogger("sweep.tests.chatty")

def chatty(batch):
    # The first unit to run is killed mid-logging, from another thread, at a random moment.
    if not os.path.exists({marker!r}):
        open({marker!r}, "w").close()
        threading.Timer(0.02, os.kill, (os.getpid(), signal.SIGKILL)).start()
        while True:
            log.info("worker %d logging a long line %s", os.getpid(), "x" * 200)
    for _ in range(200):
        log.info("worker %d logging", os.getpid())

install_layouts([WrappedLayout("chatty", chatty)], "chatty")
from sweep.cli import main
main(sys.argv[1:], prog_name="sweep")
"""


@pytest.mark.faults
def test_a_worker_killed_while_logging_never_hangs_the_run(tmp_path):
    map_file = write_map(tmp_path)
    script = tmp_path / "run.py"
    script.write_text(
        textwrap.dedent(SCRIPT).format(tests=str(TESTS), marker=str(tmp_path / "killed"))
    )
    config = tmp_path / "c.toml"
    config.write_text(
        f'name = "chatty"\nmemory_maps = ["{map_file}"]\ngranules = ["4K"]\nva_bits = [39, 48]\n'
        'layouts = ["chatty"]\nunit_rows = 8\n[placement]\nkind = "stride"\nstep = "64M"\n'
    )
    out = tmp_path / "out"
    run = subprocess.run(
        [sys.executable, str(script), "run", str(config), "--out", str(out), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails here, rather than holding the suite
    )
    assert run.returncode == 0, run.stderr
    assert "sweep complete:" in run.stderr and ", 0 failed," in run.stderr
    log = (out / "_sweep.log").read_text(errors="replace")
    assert "a worker was killed by the OS; rebuilding the pool" in log
    assert "sweep complete" in log.splitlines()[-1]
