"""CPU time and peak memory of another process, from Linux's /proc (no extra dependency)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class ProcessStats:
    """Summed over ``pids`` (one server may be several processes)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._cpu0, self._wall0 = 0.0, 0.0

    def _cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime
        return total

    def start(self) -> None:
        self._cpu0, self._wall0 = self._cpu_seconds(), time.perf_counter()

    def cpu_cores(self) -> float:
        """Average cores busy since ``start``."""
        return (self._cpu_seconds() - self._cpu0) / max(time.perf_counter() - self._wall0, 1e-9)

    def peak_rss_mb(self) -> float:
        """Sum of each process's peak resident memory."""
        return self._status_mb("VmHWM:")

    def rss_mb(self) -> float:
        """Sum of each process's resident memory now: what a server keeps after a request."""
        return self._status_mb("VmRSS:")

    def _status_mb(self, field: str) -> float:
        total = 0.0
        for pid in self.pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field):
                    total += int(line.split()[1]) / 1024
        return total
