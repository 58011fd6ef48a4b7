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

The key/value cache is also asked for transparent huge pages (`huge_zeros`). A decode step writes
each row's new key and value into its own slot: scattered 128–256-byte writes, each on a different
4 KiB page, so every one also costs a TLB miss and a page walk; in 2 MiB pages the same writes
took 40% less time (docs/performance.md, "Huge pages for the cache"). This is `madvise` through
ctypes (Linux; a no-op elsewhere, or where the kernel has transparent huge pages off).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

import torch

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MADV_DONTNEED, MADV_HUGEPAGE = 4, 14
HUGE_PAGE = 2 << 20
_done = False
_libc = None


def _c_library():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
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


def _madvise(start: int, end: int, advice: int) -> bool:
    """madvise over [start, end) (page-aligned by the caller); False where it cannot be asked."""
    madvise = getattr(_c_library(), "madvise", None)
    if madvise is None or end <= start:
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return madvise(start, end - start, advice) == 0


def _inside(t: torch.Tensor, nbytes: int, page: int) -> tuple[int, int]:
    """The whole `page`-sized pages inside t's first `nbytes` bytes of memory."""
    start = t.data_ptr()
    return -(-start // page) * page, (start + nbytes) // page * page


def advise_huge_pages(t: torch.Tensor) -> bool:
    """Ask the kernel to back the whole 2 MiB pages inside `t`'s memory with huge pages; pages
    touched after this fault in as huge pages. False where it could not be asked (not Linux, a
    tensor under 2 MiB, huge pages off)."""
    if t.device.type != "cpu" or os.environ.get("TTS_MALLOC") == "system":
        return False
    return _madvise(*_inside(t, t.numel() * t.element_size(), HUGE_PAGE), MADV_HUGEPAGE)


def huge_zeros(shape, dtype, device) -> torch.Tensor:
    """torch.zeros, in huge pages on a CPU where the kernel grants them (advised before the
    zeros touch the memory, so the pages fault in huge)."""
    if torch.device(device).type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    t = torch.empty(shape, dtype=dtype)
    advise_huge_pages(t)
    return t.zero_()


def discard_pages(tensor) -> int:
    """Tell the kernel the whole pages inside `tensor`'s memory are no longer needed; returns the
    bytes advised. For a tensor about to be dropped whose memory outlives it: transformers loads
    safetensors weights as a private mapping of the file, shared by all of a model's tensors and
    unmapped only when the last of them goes, so a dropped weight's pages would otherwise stay
    resident (and in the RSS) for the model's life. Only pages wholly inside the tensor are
    advised, so its neighbours are untouched; the caller must hold the only reference to it
    (an advised private page reads back as the file's bytes, or zeros). Linux only; elsewhere 0."""
    if not hasattr(mmap, "MADV_DONTNEED") or tensor.device.type != "cpu":
        return 0
    lo, hi = _inside(tensor, tensor.untyped_storage().nbytes(), mmap.PAGESIZE)
    return hi - lo if _madvise(lo, hi, MADV_DONTNEED) else 0
