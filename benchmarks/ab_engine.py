"""Our sampler alone on one `tts bench` workload, for before/after comparisons of the code.

    python -m benchmarks.ab_engine fixed|realistic|peer-realistic|soft [--model M] [--device D] [--dtype T]
        [--matmul auto|packed|weight_major|module] [--reps N]

peer-realistic is `tts bench --against vllm --workload realistic`'s side of ours: 4 prompts x 16
samples, each row its own seeded length, EOS ignored. --matmul forces the decode step's products
(strategies/linear.py); TTS_MALLOC=system leaves glibc's allocator alone (strategies/cpu.py).

Prints one JSON line. To compare two versions of the code, run it alternately from both
checkouts (PYTHONPATH=<checkout>) in one command: the transformers side of `tts bench` does not
depend on our code, so our side alone says whether a change moved the ratio.
"""
from __future__ import annotations

import argparse

import orjson


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workload", choices=["fixed", "realistic", "peer-realistic", "soft"])
    ap.add_argument("--matmul", default="auto")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args()
    from strategies.generators.discrete import Discrete, DiscreteParams
    from strategies import benchmark as b
    from strategies.models import load

    if a.matmul != "auto":
        import strategies.decoder as dec
        dec.default_matmul = lambda *args, **kw: a.matmul
    loaded = load(a.model, a.device, a.dtype)
    if a.workload == "soft":
        r = b.bench_soft(loaded)
        out = {k: r[k] for k in ("workload", "soft_tok_s", "discrete_tok_s", "ratio")}
        print(orjson.dumps(out).decode(), flush=True)
        return
    limits = None
    if a.workload == "peer-realistic":
        n_prompts, n, max_new, temp = b.PEER_WORKLOADS["realistic"]
        ignore_eos, limits = True, b.trace_lengths(n_prompts * n, max_new)
    else:
        n_prompts, n, max_new, ignore_eos, temp = b.WORKLOADS[a.workload]
    prompts = b.gsm8k_prompts(n_prompts)
    gen = Discrete(DiscreteParams(temperature=temp))
    b.time_tts(loaded, gen, prompts[:1], 2, 4, True, 64)   # warm-up, as tts bench does
    for _ in range(a.reps):
        t = b.time_tts(loaded, gen, prompts, n, max_new, ignore_eos, 64, limits=limits)
        out = {"workload": a.workload, "matmul": a.matmul, "tokens": t.tokens, "seconds": round(t.seconds, 3),
               "tok_s": round(t.tok_s, 2)}
        print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
