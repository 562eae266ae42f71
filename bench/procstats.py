"""CPU time and peak memory of another process, from Linux's /proc (no extra dependency)."""

from __future__ import annotations

import os
import time
from pathlib import Path


class ProcessStats:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._cpu0, self._wall0 = 0.0, 0.0

    def _cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks  # utime + stime

    def start(self) -> None:
        self._cpu0, self._wall0 = self._cpu_seconds(), time.perf_counter()

    def cpu_cores(self) -> float:
        """Average cores busy since ``start``."""
        return (self._cpu_seconds() - self._cpu0) / max(time.perf_counter() - self._wall0, 1e-9)

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0
