"""Keep freed memory in the process (glibc malloc) so a CPU training step does not fault its pages back in.

PyTorch's CPU tensors come from malloc. glibc serves blocks above M_MMAP_THRESHOLD (128 KiB at start,
raised on the fly up to 32 MiB) with fresh mmap pages, and hands the top of the heap back to the OS once
more than M_TRIM_THRESHOLD is free. A training step frees its activations and allocates them again on
the next step, so without tuning many steps pay a page fault (zero-fill) per 4 KiB of activations (the
setting alone made an eager backbone step 1.01-1.21x faster on a 2-core VM). Raising both thresholds
keeps the pages mapped; the price is that the process holds on to freed heap (up to the 1 GiB trim
threshold) instead of returning it to the OS.

`keep_freed_memory()` is called by the `skelcl` commands and by pretrain() / finetune(); set
SKELCL_MALLOC=default in the environment to leave glibc's defaults alone. No effect outside glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap; a free heap top of up to 1 GiB stays mapped

_done: bool | None = None


def _libc():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version") else None
    except OSError:
        return None


def keep_freed_memory(threshold: int = THRESHOLD) -> bool:
    """Raise glibc's mmap and trim thresholds to `threshold` bytes; True when set (now or before), False
    on a non-glibc system or with SKELCL_MALLOC=default. Safe to call more than once."""
    global _done
    if _done is not None:
        return _done
    if os.environ.get("SKELCL_MALLOC", "tuned") == "default":
        _done = False
        return _done
    libc = _libc()
    if libc is None:
        _done = False
        return _done
    # glibc versions that cap the mmap threshold at 32 MiB (HEAP_MAX_SIZE / 2) refuse a larger value
    mmap_set = libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) or libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
    _done = bool(mmap_set) and bool(libc.mallopt(M_TRIM_THRESHOLD, int(threshold)))
    return _done
