"""Process settings that make the decode loop faster on a CPU, and the release of memory a
dropped weight leaves behind (`discard_pages`).

glibc serves every allocation above its mmap threshold (128 KiB at first, raised adaptively) with
a fresh mmap and returns it to the kernel when freed, so the [rows, vocabulary] tensors a step
allocates (12 MiB at 64 rows of a 49k vocabulary) are page-faulted in again on every step; a
decode run spent 8–9 s of kernel time in 2.3 million page faults. Fixing the threshold at its
ceiling (32 MiB) and keeping up to 1 GiB of freed heap mapped lets those buffers be reused, as
CUDA's caching allocator does on a GPU (the measured effect is in docs/performance.md, "Freed
buffers kept"). Allocations above 32 MiB (weights, caches) are still mapped and
unmapped as before.

This is glibc's `mallopt` through ctypes: process-wide, below Python's and torch's APIs, and a
no-op where the C library is not glibc. `TTS_MALLOC=system` leaves the allocator alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MADV_DONTNEED = 4
_done = False
_libc = None


def _c_library():
    """The C library, loaded once (False where it cannot be); its madvise typed for pointers."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        except (OSError, AttributeError):
            _libc = False
    return _libc


def tune_malloc() -> bool:
    """Apply the settings once per process; True when glibc accepted them."""
    global _done
    if _done or os.environ.get("TTS_MALLOC") == "system":
        return False
    _done = True
    mallopt = getattr(_c_library(), "mallopt", None)
    if mallopt is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(mallopt(M_TRIM_THRESHOLD, 1 << 30))


def discard_pages(tensor) -> int:
    """Tell the kernel the whole pages inside `tensor`'s memory are no longer needed; returns the
    bytes advised. For a tensor about to be dropped whose memory outlives it: transformers loads
    safetensors weights as a private mapping of the file, shared by all of a model's tensors and
    unmapped only when the last of them goes, so a dropped weight's pages would otherwise stay
    resident (and in the RSS) for the model's life. Only pages wholly inside the tensor are
    advised, so its neighbours are untouched; the caller must hold the only reference to it
    (an advised private page reads back as the file's bytes, or zeros). Linux only; elsewhere 0."""
    libc = _c_library()
    if not hasattr(mmap, "MADV_DONTNEED") or tensor.device.type != "cpu" or not libc:
        return 0
    page = mmap.PAGESIZE
    start, end = tensor.data_ptr(), tensor.data_ptr() + tensor.untyped_storage().nbytes()
    lo, hi = -(-start // page) * page, end // page * page
    if hi <= lo or libc.madvise(lo, hi - lo, MADV_DONTNEED) != 0:
        return 0
    return hi - lo
