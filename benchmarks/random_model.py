"""Write a randomly initialised copy of a model directory (config + tokenizer, no weights needed).

For speed work on machines that have no weights (a lent GPU with no model hub): the architecture,
shapes and tokenizer are the real model's, so the decode loop does the real work.

    python -m benchmarks.random_model SRC_DIR OUT_DIR [--seed 0]

SRC_DIR needs config.json and the tokenizer files; generation_config.json is copied when present.
Random weights almost never sample EOS, so every row runs to its token limit.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where to initialise (cuda is much faster for large models)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    a = ap.parse_args()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(a.src, local_files_only=True)
    torch.manual_seed(a.seed)
    with torch.device(a.device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, a.dtype))
    a.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(a.out)
    for f in a.src.iterdir():
        if f.is_file() and f.name not in ("config.json", "model.safetensors"):
            shutil.copy(f, a.out / f.name)


if __name__ == "__main__":
    main()
