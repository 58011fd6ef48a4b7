"""`tts prune --judge-auroc`: how well each judge tells same-answer prefix pairs from different ones
on a stored run, before paying for online pruning (DeepPrune's judge metric).

Pairs: every two samples of the same prompt that both have an extractable answer (samples
without one have no label); label = the answers are equivalent (verifiers.equivalent). Prefixes
are cut as online: `words:K` from the sample text, `tokens:K` by decoding the first K trace ids.
"""
from __future__ import annotations

import time

import numpy as np

from verifiers import equivalent, extract_answer, normalize_answer


def auroc(scores, labels) -> float:
    """P(score of a random positive > that of a random negative), ties counting 1/2 (Mann-Whitney)."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = s[y], s[~y]
    if not pos.size or not neg.size:
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).sum()
    eq = (pos[:, None] == neg[None, :]).sum()
    return float((gt + 0.5 * eq) / (pos.size * neg.size))


def tnr_at_fnr(scores, labels, fnr: float = 0.2) -> float:
    """True-negative rate at the highest threshold t (predict "same" when score >= t) whose
    false-negative rate is at most `fnr`."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    pos, neg = np.sort(s[y])[::-1], s[~y]
    if not pos.size or not neg.size:
        return float("nan")
    need = int(np.ceil((1.0 - fnr) * pos.size - 1e-12))  # positives that must score >= t
    t = pos[max(need, 1) - 1]
    return float(np.mean(neg < t))


def prefix_text(sample: dict, prefix, tokenizer) -> str:
    if prefix.kind == "tokens":
        ids = (sample.get("trace") or {}).get("ids")
        if ids is None:
            raise ValueError("--prefix tokens:K needs per-token traces (tts generate --trace)")
        return tokenizer.decode(ids[: prefix.k], skip_special_tokens=True)
    text = sample.get("text") or ""
    cut = prefix.cut(text)
    return text if cut is None else cut


def pairs_of(records, prefix, tokenizer=None, extract: str = "auto"):
    """(text pairs, labels, number of prompts)."""
    pairs, labels, prompts = [], [], 0
    for rec in records:
        samples = [s for s in rec.get("samples") or [] if s.get("finish") not in ("pruned", "low-confidence", "consensus")]
        answers = [normalize_answer(s["pred"]) if s.get("pred") is not None else
                   normalize_answer(extract_answer(s.get("text"), extract)) for s in samples]
        texts = [prefix_text(s, prefix, tokenizer) for s in samples]
        prompts += 1
        for a in range(len(samples)):
            for b in range(a + 1, len(samples)):
                if answers[a] is None or answers[b] is None:
                    continue
                pairs.append((texts[a], texts[b]))
                labels.append(equivalent(answers[a], answers[b]))
    return pairs, np.array(labels, dtype=bool), prompts


def judge_report(name: str, judge, pairs, labels, prompts: int) -> dict:
    t0 = time.perf_counter()
    scores = judge.score(pairs) if pairs else np.array([])
    secs = time.perf_counter() - t0
    return {"judge": name, "auroc": auroc(scores, labels), "tnr_at_fnr_0.2": tnr_at_fnr(scores, labels),
            "pairs": len(pairs), "same": int(labels.sum()), "different": int((~labels).sum()),
            "prompts": prompts, "judge_s": round(secs, 3),
            "judge_s_per_prompt": round(secs / max(prompts, 1), 4)}
