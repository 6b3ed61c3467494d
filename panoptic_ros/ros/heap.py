"""Process memory of a long-running node: glibc malloc trimming (a no-op elsewhere).

ROS-free; the node calls :meth:`HeapTrimmer.after_frame` after each frame and
:func:`release_free_heap` at deactivate.
"""

from __future__ import annotations

import ctypes
import os


def _libc_malloc_trim():
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_heap() -> bool:
    """Return malloc's free memory to the system (``malloc_trim(0)``; glibc only).

    Returns:
        whether it could (glibc).
    """
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def _resident_anon() -> int | None:
    """Resident anonymous memory of this process, bytes (``/proc/self/statm``; Linux)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            fields = f.read().split()
        return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class HeapTrimmer:
    """Trims malloc after a frame once freed memory left resident passes a limit.

    Why: each thread that allocates has its own glibc arena, and the worker's arena keeps the
    freed blocks of a frame's peak (network activations, fusion, id maps at the input's size)
    as a cache that glibc seldom returns; over lifecycle cycles a second arena can fill the
    same way. Measured with ``bench/bench_soak.py`` (demo model on the CPU, 2 cores): after
    50 frames of 1920x1080 malloc held ~340 MiB free and the node's RSS was +416 MiB over
    imports + model (trimmed: +57 to +94 MiB). At 640x480 with a 128 MiB limit (never
    passed) RSS stepped up ~+30 MiB in 2 of 2 soak runs during 100 lifecycle cycles; with
    64 MiB it stayed flat (+6 MiB), the limit passed about once in 20 frames. Cost: the next
    frame pages the memory in again, 5-8 % of a 1080p frame on the CPU.

    Args:
        limit: growth of resident anonymous memory since activation or the last trim, bytes,
            above which :meth:`after_frame` trims.
    """

    LIMIT = 64 * 2**20

    def __init__(self, limit: int = LIMIT) -> None:
        self.limit = limit
        self._low = _resident_anon()

    def after_frame(self) -> bool:
        """Trim if resident anonymous memory grew past the limit; whether it trimmed."""
        anon = _resident_anon()
        if anon is None or self._low is None or anon - self._low <= self.limit:
            return False
        trimmed = release_free_heap()
        self._low = _resident_anon()  # live memory that grew (a bigger model) moves it up
        return trimmed
