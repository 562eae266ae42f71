"""Process-level tuning for CPU work with large tensors."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3


def keep_freed_memory() -> bool:
    """Stops glibc from handing large freed blocks back to the kernel after every tensor.

    With the defaults each training step re-faults hundreds of MB of fresh pages; on the 2-core
    machines measured here that was a third of the step time (5.0 s → 3.6 s per DeepLabV3+ step).
    Returns False where the C library is not glibc.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    large = 1 << 30
    return all(mallopt(option, value) == 1 for option, value in (
        (_M_MMAP_THRESHOLD, 512 << 20), (_M_TRIM_THRESHOLD, large), (_M_TOP_PAD, 64 << 20)))
