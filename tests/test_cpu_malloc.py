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
