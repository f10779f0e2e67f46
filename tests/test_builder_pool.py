"""Builder processes: results in the items' order, item i built by process i % n, errors and deaths raised, clean stops."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
from atomforge.builder_pool import BuilderError, BuilderPool


class Build:
    """Squares an item and says which process did; raises at `fail`, kills its process at `die`."""

    def __init__(self, fail: int | None = None, die: int | None = None):
        self.fail, self.die = fail, die

    def __call__(self, item: int) -> tuple[int, int]:
        if item == self.fail:
            raise KeyError(f"item {item} is bad")
        if item == self.die:
            os.kill(os.getpid(), signal.SIGKILL)
        return item * item, os.getpid()


@pytest.mark.parametrize("workers,in_flight", [(1, 1), (2, 2), (3, 1)])
def test_results_in_order_each_item_built_by_its_process(workers, in_flight):
    with BuilderPool(Build(), workers, in_flight) as pool:
        results = list(pool.map(range(20)))
    assert [square for square, _ in results] == [i * i for i in range(20)]
    pids = [pid for _, pid in results]
    assert os.getpid() not in pids
    assert all(pids[i] == pids[i % workers] for i in range(20)) and len(set(pids)) == workers
    assert not multiprocessing.active_children()


def test_an_error_in_a_build_is_raised_with_its_process_traceback():
    with BuilderPool(Build(fail=5), 2) as pool:
        seen = []
        with pytest.raises(KeyError, match="item 5 is bad") as raised:
            for square, _ in pool.map(range(10)):
                seen.append(square)
    assert seen == [i * i for i in range(5)]  # every result before the failing item, in order
    assert isinstance(raised.value.__cause__, BuilderError)
    assert "in loader builder process" in str(raised.value.__cause__) and "raise KeyError" in str(raised.value.__cause__)
    assert not multiprocessing.active_children()


def test_a_dead_process_is_an_error_naming_its_exit_code():
    with pytest.raises(BuilderError, match=f"exited with code -{int(signal.SIGKILL)}"):
        with BuilderPool(Build(die=3), 2) as pool:
            list(pool.map(range(10)))
    assert not multiprocessing.active_children()


def test_stopping_early_stops_the_processes():
    with BuilderPool(Build(), 2, in_flight=3) as pool:
        for square, _ in pool.map(range(1000)):
            if square > 10:
                break
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("workers,in_flight", [(0, 1), (1, 0)])
def test_a_pool_needs_a_process_and_an_item_in_flight(workers, in_flight):
    with pytest.raises(ValueError, match="num_workers >= 1 and in_flight >= 1"):
        BuilderPool(Build(), workers, in_flight)
