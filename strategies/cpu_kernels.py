"""The CPU decode step's small operations as one compiled pass each (cpu_kernels.cpp).

In bfloat16 the decode step's products run on the CPU's bf16 units and take about half the step;
the rest is ~50 small tensor operations a layer, each a dispatch and a parallel region costing
more than its arithmetic. `cpu_kernels.cpp` does each group of them in one pass: the residual
add with the next RMSNorm, the rotary embedding with the cache write, attention over a row's own
keys merged with its shared prompt's block, and SiLU × up; and the sampler's signals. The decoder
uses them on CPU when they build (`Decoder(kernels="cpu")`, the CPU default);
`TTS_CPU_KERNELS=torch` keeps the tensor-operation step.

The source is compiled on first use with the system's C++ compiler against this torch's headers
(`-march=native`: the machine's own vector units), about 10 s, and cached under
`$XDG_CACHE_HOME/tts/kernels` (`TTS_KERNEL_CACHE` overrides) by a hash of the source, torch's
version, the compiler and the CPU's flags. The ops are registered with torch's operator library
(`torch.ops.tts_cpu`), not through torch.utils.cpp_extension, which needs ninja. When no
compiler is found or the build fails, the decoder keeps the tensor-operation step and says so
once on stderr.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_suffix(".cpp")
TORCH = Path(torch.__file__).parent
FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-std=c++20", "-shared", "-fPIC"]


def _cache_dir() -> Path:
    base = os.environ.get("TTS_KERNEL_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tts" / "kernels"


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return ""


def _command(compiler: str, out: Path) -> list[str]:
    # torch's own headers and libraries, where torch.utils.cpp_extension would find them
    include = TORCH / "include"
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    return [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-I{include}",
            f"-I{include / 'torch' / 'csrc' / 'api' / 'include'}", str(SOURCE), "-o", str(out),
            f"-L{TORCH / 'lib'}", "-ltorch", "-ltorch_cpu", "-lc10"]


def _build() -> Path:
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on PATH")
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    key = hashlib.sha256("\0".join([SOURCE.read_text(), torch.__version__, version, " ".join(FLAGS),
                                    _cpu_flags()]).encode()).hexdigest()[:16]
    target = _cache_dir() / f"tts_cpu-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    print("tts: compiling the CPU decode kernels (once per machine, ~10 s)", file=sys.stderr)
    # built under a temporary name and renamed: processes building at once each finish whole
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run(_command(compiler, Path(tmp)), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


@lru_cache(maxsize=None)
def available() -> bool:
    """Whether torch.ops.tts_cpu is loaded (built first if needed); False, said once, if it cannot be."""
    if os.environ.get("TTS_CPU_KERNELS", "").lower() == "torch":
        return False
    try:
        torch.ops.load_library(str(_build()))
        return True
    except Exception as e:  # noqa: BLE001 - any failure means: the tensor-operation step
        print(f"tts: CPU decode kernels unavailable ({e}); using torch's operations", file=sys.stderr)
        return False


def supports(model) -> bool:
    """Whether the kernels compute this model's layers: SiLU MLPs and RMSNorms in float32 or bfloat16."""
    cfg = model.config
    act = getattr(cfg, "hidden_act", None) or getattr(cfg, "hidden_activation", None)
    dtype = model.get_input_embeddings().weight.dtype
    return act == "silu" and dtype in (torch.float32, torch.bfloat16)
