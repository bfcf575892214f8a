"""A board corpus planned on two cores (``sweep.plan.halves``) gives what loading one file after
another gives: the same maps in the same order, the first bad file's error at its turn, and
the same again when the helper dies, cannot send what it found, or may not be forked."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from sweep.core.errors import ValidationError
from sweep.plan import halves
from sweep.plan.memory_maps import select_memory_maps

PARENT = os.getpid()


def _squares(items):
    for item in items:
        if item == "bad":
            raise ValidationError(f"item {item!r} is bad")
        yield (item * item, os.getpid())


def _values(found):
    return [value for value, _ in found]


HELPERS: list[int] = []


MAY_FORK = halves._may_fork


@pytest.fixture(autouse=True)
def _small(monkeypatch):
    # A helper from 8 items, whatever this machine's CPUs and the threads earlier tests left
    # running (a tqdm monitor): the helpers here only compute and pickle.
    monkeypatch.setattr(halves, "FORK_FROM", 8)
    monkeypatch.setattr(halves, "_may_fork", lambda: True)
    fork = os.fork

    def recorded():
        pid = fork()
        if pid:
            HELPERS.append(pid)
        return pid

    HELPERS.clear()
    monkeypatch.setattr(os, "fork", recorded)


def _no_child_left():
    """Every helper forked was waited for: none is left running or a zombie."""
    assert HELPERS
    for pid in HELPERS:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_the_second_half_is_loaded_by_a_helper_in_order():
    found = list(halves.in_two_halves(list(range(20)), _squares))
    assert _values(found) == [k * k for k in range(20)]
    pids = [pid for _, pid in found]
    assert set(pids[:10]) == {PARENT} and PARENT not in pids[10:]
    _no_child_left()


def test_few_items_are_loaded_here():
    found = list(halves.in_two_halves(list(range(7)), _squares))
    assert {pid for _, pid in found} == {PARENT}


@pytest.mark.parametrize("where", [3, 15])
def test_the_first_bad_item_raises_at_its_turn(where):
    items: list = list(range(20))
    items[where] = "bad"
    if where > 10:
        items[18] = "bad"  # a later bad one is never reached
    seen = []
    with pytest.raises(ValidationError, match="item 'bad' is bad"):
        for value, _ in halves.in_two_halves(items, _squares):
            seen.append(value)
    assert seen == [k * k for k in range(where)]
    _no_child_left()


def _dies_in_the_helper(items):
    for item in items:
        if os.getpid() != PARENT:
            os.kill(os.getpid(), signal.SIGKILL)
        yield item


def test_a_helper_that_dies_leaves_its_half_to_the_planner():
    assert list(halves.in_two_halves(list(range(20)), _dies_in_the_helper)) == list(range(20))
    _no_child_left()


def _unpicklable(items):
    for item in items:
        yield (lambda item=item: item) if os.getpid() != PARENT else item


def test_a_helper_that_cannot_send_what_it_found_leaves_its_half_to_the_planner():
    found = list(halves.in_two_halves(list(range(20)), _unpicklable))
    assert found == list(range(20))  # all loaded here, none of the helper's lambdas
    _no_child_left()


def test_no_helper_while_another_thread_runs(monkeypatch):
    monkeypatch.setattr(halves, "_may_fork", MAY_FORK)
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not halves._may_fork()
        found = list(halves.in_two_halves(list(range(20)), _squares))
    finally:
        stop.set()
        thread.join()
    assert {pid for _, pid in found} == {PARENT} and not HELPERS


def test_a_map_folder_loads_the_same_maps_and_the_same_error(tmp_path):
    for k in range(30):
        base, size = 0x8000_0000 + (k << 32), k + 1 << 20
        (tmp_path / f"m{k:02d}.toml").write_text(
            f'name = "m{k:02d}"\n[[banks]]\nbase = {base}\nsize = {size}\n'
        )
    maps = select_memory_maps([str(tmp_path)])
    assert list(maps) == [f"m{k:02d}" for k in range(30)]
    assert [[(b.base, b.size) for b in m.banks] for m in maps.values()] == [
        [(0x8000_0000 + (k << 32), k + 1 << 20)] for k in range(30)
    ]
    (tmp_path / "m21.toml").write_text('name = "m21"\n[[banks]]\nbase = 0\nsize = -1\n')
    (tmp_path / "m25.toml").write_text("not toml [")
    with pytest.raises(ValidationError, match=r"m21\.toml: line 2 \(bank 0\): bank at 0x0 has"):
        select_memory_maps([str(tmp_path)])
    _no_child_left()
