"""Giving memory freed by large requests back to the system once the server is idle.

glibc keeps what a process frees for its next allocations. After large messages and images
(raw 22-megapixel images over streams, 40-megapixel PNGs) an idle server stayed at 1.4-2.7 GB
against 0.38 GB at start, and ``malloc_trim(0)`` brought it to 0.3-0.5 GB (measured). Trimming
after every request would give back memory the next one needs at once, so it runs only once the
server has been idle for a while after a large request.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
LARGE_BYTES = 8 << 20  # a request whose message or decoded image is larger marks memory for trimming


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None with another C library (musl has none)."""
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim") if name else None
    except (OSError, AttributeError):
        return None


class RequestActivity:
    """Counts the requests in progress, the one count that both a shutdown (which waits for none
    to run) and the trimming (after a large one, once none has run for ``idle_seconds``) read."""

    def __init__(self, idle_seconds: float = IDLE_SECONDS) -> None:
        self._trim = _malloc_trim()
        self._idle_seconds = idle_seconds
        self._changed = threading.Condition()
        self._running = 0
        self._generation = 0  # counts requests started, so a timer knows whether one came meanwhile
        self._pending = False
        self.trims = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        """Marks one request as in progress for the duration of the block."""
        self.started()
        try:
            yield
        finally:
            self.ended()

    def started(self) -> None:
        with self._changed:
            self._running += 1
            self._generation += 1

    def large(self) -> None:
        self._pending = True

    @property
    def pending(self) -> bool:
        """Whether a large request's memory waits to be given back."""
        return self._pending

    def ended(self) -> None:
        with self._changed:
            self._running -= 1
            self._changed.notify_all()
            if self._running or not self._pending or self._trim is None:
                return
            generation = self._generation
        timer = threading.Timer(self._idle_seconds, self._trim_if_still_idle, (generation,))
        timer.daemon = True
        timer.start()

    def wait_idle(self, timeout: float) -> bool:
        """Waits until no request is in progress; False if some still are after ``timeout``."""
        with self._changed:
            return self._changed.wait_for(lambda: self._running == 0, timeout)

    def _trim_if_still_idle(self, generation: int) -> None:
        with self._changed:
            if self._running or generation != self._generation or not self._pending:
                return
            self._pending = False
            self._trim(0)
            self.trims += 1
        log.debug("gave freed memory back to the system after a large request")
