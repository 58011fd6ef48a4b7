"""Our sampler alone on one `tts bench` workload, for before/after comparisons of the code.

    python -m benchmarks.ab_engine fixed|realistic|soft [--model M] [--device D] [--dtype T]

Prints one JSON line. To compare two versions of the code, run it alternately from both
checkouts (PYTHONPATH=<checkout>) in one command: the transformers side of `tts bench` does not
depend on our code, so our side alone says whether a change moved the ratio.
"""
from __future__ import annotations

import argparse

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=["fixed", "realistic", "soft"])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args()
    from strategies.generators.discrete import Discrete, DiscreteParams
    from tts_cli import benchmark as b
    from tts_cli.models import load

    loaded = load(a.model, a.device, a.dtype)
    if a.workload == "soft":
        r = b.bench_soft(loaded)
        out = {k: r[k] for k in ("workload", "soft_tok_s", "discrete_tok_s", "ratio")}
    else:
        n_prompts, n, max_new, ignore_eos, temp = b.WORKLOADS[a.workload]
        prompts = b.gsm8k_prompts(n_prompts)
        gen = Discrete(DiscreteParams(temperature=temp))
        b.time_tts(loaded, gen, prompts[:1], 2, 4, True, 64)   # warm-up, as tts bench does
        t = b.time_tts(loaded, gen, prompts, n, max_new, ignore_eos, 64)
        out = {"workload": a.workload, "tokens": t.tokens, "seconds": round(t.seconds, 3), "tok_s": round(t.tok_s, 2)}
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
