"""The process-wide CPU pool: order, errors, and no pool task outliving the call that made it."""

import threading
import time

import pytest

from prelabel_models import parallel


def test_map_all_returns_every_result_in_order_and_uses_the_pool():
    threads: set[str] = set()

    def square(value: int) -> int:
        threads.add(threading.current_thread().name)
        time.sleep(0.01)  # long enough that the pool's threads take part
        return value * value

    assert parallel.map_all(square, range(6)) == [0, 1, 4, 9, 16, 25]
    assert threading.current_thread().name in threads, "the calling thread works on an item itself"
    assert any(name.startswith("prelabel-cpu") for name in threads), "the pool takes the other items"


def test_an_error_in_the_callers_item_is_raised_only_after_the_pool_items_finish():
    finished = threading.Event()

    def work(item: str) -> str:
        if item == "fails":
            raise ValueError("broken piece")
        time.sleep(0.2)
        finished.set()
        return item

    with pytest.raises(ValueError, match="broken piece"):
        parallel.map_all(work, ["fails", "slow"])
    assert finished.is_set(), "map_all returned while a pool task was still running"


def test_an_error_in_a_pool_item_reaches_the_caller():
    def work(item: int) -> int:
        if item == 2:
            raise RuntimeError("piece 2 failed")
        return item

    with pytest.raises(RuntimeError, match="piece 2 failed"):
        parallel.map_all(work, [0, 1, 2])
