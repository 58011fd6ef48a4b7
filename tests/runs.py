"""Hand-built `tts generate --trace` / `tts aggregate` records for the report and plot tests.

Texts are real strings tokenised by the tiny byte-level tokenizer (`--model tiny-random`), so a
report can turn the ids back into text without any model weights; the per-token signals are
seeded random numbers, chosen by each test.
"""
from __future__ import annotations

import numpy as np
import orjson


def tokenizer():
    from strategies.models import load_tokenizer

    return load_tokenizer("tiny-random")


def sample(tok, i: int, text: str, pred, finish: str = "stop", rng=None, conf=None, trace: bool = True, **extra) -> dict:
    """One sample whose trace ids spell `text`; per-token signals random unless `conf` is given."""
    rng = rng or np.random.default_rng(i)
    ids = tok.encode(text, add_special_tokens=False)
    n = len(ids)
    c = np.asarray(conf, dtype=float) if conf is not None else np.round(rng.uniform(1, 15, n), 4)
    lp = np.round(-rng.exponential(1.0, n), 4)
    ent = np.round(rng.uniform(0, 3, n), 4)
    sc = np.round(rng.uniform(0, 10, n), 4)
    s = {"i": i, "text": text, "finish": finish, "n_tokens": n, "logprob": float(lp.sum()),
         "mean_logprob": round(float(lp.mean()), 4), "entropy": round(float(ent.mean()), 4),
         "self_certainty": round(float(sc.mean()), 4), "confidence": round(float(c.mean()), 4),
         "pred": pred, **extra}
    if trace:
        s["trace"] = {"ids": ids, "logprob": lp.tolist(), "entropy": ent.tolist(),
                      "self_certainty": sc.tolist(), "confidence": c.tolist()}
    return s


def write_jsonl(path, records) -> str:
    with open(path, "wb") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
    return str(path)
