"""strategies/cpu.py: the glibc allocator setting is applied once, and can be turned off."""
import subprocess
import sys

import pytest

CHECK = """
from strategies import cpu
first = cpu.tune_malloc()
print(first, cpu.tune_malloc())
"""


@pytest.mark.parametrize("env,want", [({}, None), ({"TTS_MALLOC": "system"}, "False False")])
def test_tune_malloc_runs_once_and_respects_the_opt_out(env, want):
    import os

    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True,
                         env={**os.environ, **env}).stdout.split()
    if want is None:
        # glibc accepts the settings (True); elsewhere mallopt is missing (False). Never twice.
        assert out[1] == "False" and out[0] in ("True", "False")
        if sys.platform.startswith("linux"):
            import platform
            if platform.libc_ver()[0] == "glibc":
                assert out[0] == "True"
    else:
        assert " ".join(out) == want


def _anon_huge_kib(start: int, size: int) -> int | None:
    """AnonHugePages of the mappings overlapping [start, start + size), from /proc/self/smaps (the
    advised part is a mapping of its own: madvise splits the one it falls in). None: no such file."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        head = line.split()[0]
        if "-" in head and ":" not in head:
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < start + size and start < hi
        elif inside and head == "AnonHugePages:":
            total += int(line.split()[1])
    return total


def test_the_cache_is_zeroed_and_in_huge_pages_where_the_kernel_grants_them():
    import torch

    from strategies.cache import KVCache

    cache = KVCache(layers=2, slots=8, kv_heads=2, head_dim=64, max_positions=4096, dtype=torch.float32,
                    device=torch.device("cpu"))
    cache.ensure_capacity(2048)   # 8 MiB per tensor
    k = cache.k[0]
    assert k.shape == (8, 2, 2048, 64) and not k.any()
    try:
        mode = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
    except OSError:
        pytest.skip("no transparent huge pages here")
    if "[never]" in mode:
        pytest.skip("transparent huge pages are off on this machine")
    huge = _anon_huge_kib(k.data_ptr(), k.numel() * k.element_size())
    assert huge is not None and huge >= 4096, f"{huge} KiB of the cache in huge pages"
