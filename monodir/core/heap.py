"""The C library's heap (glibc only): hand freed memory back to the system.

Large temporaries freed by a task can stay resident in glibc's heap (its mmap threshold rises
after the first large blocks are freed, and later ones come from the heap), scattered
between live blocks where the top-of-heap trim does not reach them. ``malloc_trim`` also
releases whole free pages inside the heap.
"""

from __future__ import annotations

import ctypes
import functools


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


@functools.cache
def glibc() -> ctypes.CDLL | None:
    """This process's C library (loaded once), or ``None`` where it is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    if hasattr(libc, "mallinfo2"):
        libc.mallinfo2.restype = _Mallinfo2
    return libc


def free_heap_bytes() -> int:
    """Free bytes inside the heap (0 where unknown: not glibc, or older than 2.33)."""
    libc = glibc()
    try:
        return int(libc.mallinfo2().fordblks) if libc is not None else 0
    except AttributeError:
        return 0


def trim_heap(min_free: int) -> bool:
    """``malloc_trim(0)`` when more than ``min_free`` bytes of the heap are free; returns
    whether it trimmed (small amounts are left: faulting the pages in again would cost more
    than they weigh; nothing is done where the C library is not glibc)."""
    libc = glibc()
    if libc is None or free_heap_bytes() < min_free:
        return False
    return bool(libc.malloc_trim(0))
