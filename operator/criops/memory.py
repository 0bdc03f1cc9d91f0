"""Freed heap memory given back to the system.

glibc's malloc keeps memory that a burst of work freed (1000 new RuntimeNodes
handled at once) mapped in the process, in free chunks below the top of its
heap that it only returns when asked: malloc_trim(0) does, in well under a
millisecond. The probe loop calls `trim` on each tick. Elsewhere than glibc
(musl has no malloc_trim) it does nothing.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):
        return None


MALLOC_TRIM = _malloc_trim()


def trim() -> bool:
    """Give freed heap memory back to the system; False when the C library cannot."""
    if MALLOC_TRIM is None:
        return False
    MALLOC_TRIM(0)
    return True
