"""Bounded, out-of-order processing of a request stream.

A reader thread takes a slot before it reads each request, so at most ``max_in_flight`` requests
of a stream are held at once; while no slot is free it stops reading and gRPC's flow control
holds the client back. Responses are yielded as soon as each item finishes.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")



class InFlightIds:
    """The ids of a stream's requests being processed now, so that a repeated one can be refused."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, item_id: str) -> bool:
        with self._lock:
            if item_id in self._ids:
                return False
            self._ids.add(item_id)
            return True

    def release(self, item_id: str) -> None:
        with self._lock:
            self._ids.discard(item_id)


class _ReaderDone:
    def __init__(self, submitted: int) -> None:
        self.submitted = submitted


def process_stream(requests: Iterator[RequestT], handle: Callable[[RequestT], ResponseT],
                   executor: Executor, max_in_flight: int) -> Iterator[ResponseT]:
    """Yields ``handle(request)`` for every request, in completion order. ``handle`` must not raise."""
    slots = threading.BoundedSemaphore(max_in_flight)
    finished: queue.Queue = queue.Queue()
    stop = threading.Event()

    def read() -> None:
        submitted = 0
        try:
            for request in requests:
                while not slots.acquire(timeout=0.5):
                    if stop.is_set():
                        return
                if stop.is_set():
                    slots.release()
                    return
                executor.submit(handle, request).add_done_callback(finished.put)
                submitted += 1
        except Exception:  # the client cancelled or the stream broke: stop reading, finish the rest
            pass
        finally:
            finished.put(_ReaderDone(submitted))

    threading.Thread(target=read, name="stream-reader", daemon=True).start()
    yielded, expected = 0, None
    try:
        while expected is None or yielded < expected:
            item = finished.get()
            if isinstance(item, _ReaderDone):
                expected = item.submitted
                continue
            slots.release()
            yielded += 1
            if item.cancelled():  # the server is stopping (its stream executor cancels what waits): no answer
                continue
            yield item.result()
    finally:
        stop.set()
