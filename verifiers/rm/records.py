"""`tts score` without the command line: add a reward model's scores to `tts generate` records.

Each sample with text gains `reward` (higher = better) and, from a PRM, `step_rewards` (one score
per step, steps being the text split at `step_sep`, blank pieces dropped); the record gains a
`score` object saying which model, format, reduction and separator produced them. Everything
else is left as it was. A sample without text, or a record without samples, passes through
unscored with a note. Records are scored `chunk` at a time: every sample of a chunk is rendered
and checked (context length) before its first forward pass.
"""
from __future__ import annotations

import sys
from typing import Callable, Iterable, Iterator

from strategies.evaluation.compute import non_embedding_params
from verifiers.rm.base import RewardInputError, RewardModel, reduce_steps


class RecordError(ValueError):
    """A record that cannot be scored; `line` is its input line when known."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.line = line


def steps_of(text: str, sep: str) -> list[str]:
    """The steps of a response: its pieces between separators, surrounding whitespace removed,
    blank pieces dropped."""
    return [p.strip() for p in text.split(sep) if p.strip()]


def sig(x: float) -> float:
    # 6 significant digits rather than the 4 decimals of other fields: a product of many step
    # probabilities can be far below 1e-4, and rewards only order samples
    return float(f"{x:.6g}")


def _prompt(rec: dict, line: int):
    if isinstance(rec.get("messages"), list) and rec["messages"]:
        return rec["messages"]
    if isinstance(rec.get("prompt"), str) and rec["prompt"].strip():
        return rec["prompt"]
    raise RecordError("the record has neither `prompt` nor `messages`: nothing to score the samples against", line)


def score_records(records: Iterable[tuple[int, dict]], rm: RewardModel, model_name: str, *,
                  reduce: str = "last", step_sep: str = "\n\n", batch_size: int = 8, chunk: int = 32,
                  on_tokens: Callable[[int], None] | None = None,
                  note: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Yield each record (given as (line, record)) with rewards added, in input order."""
    note = note or (lambda msg: print(msg, file=sys.stderr))
    info = {"rm": model_name, "kind": rm.kind, **rm.info()}
    if rm.kind == "prm":
        info.update(reduce=reduce, step_sep=step_sep)
    # what scoring costs, for tts eval --x flops: the reward model's non-embedding parameters and,
    # per record, the tokens it read (docs/format.md, `cost`)
    info_cost = {"role": "reward", "model": f"rm:{model_name}", "params": non_embedding_params(rm.model)}
    buf: list[tuple[int, dict]] = []
    for item in records:
        buf.append(item)
        if len(buf) >= chunk:
            yield from _chunk(buf, rm, info, info_cost, reduce, step_sep, batch_size, on_tokens, note)
            buf = []
    yield from _chunk(buf, rm, info, info_cost, reduce, step_sep, batch_size, on_tokens, note)


def _chunk(buf, rm, info, info_cost, reduce, step_sep, batch_size, on_tokens, note):
    todo = []      # (sample, encoded input, line)
    read: dict[int, int] = {}   # id(record) -> tokens the reward model reads for it
    for line, rec in buf:
        samples = rec.get("samples")
        if not isinstance(samples, list) or not samples:
            note(f"tts: note: line {line}: no samples to score; passed through")
            continue
        prompt = _prompt(rec, line)
        for s in samples:
            text = s.get("text") if isinstance(s, dict) else None
            if not isinstance(text, str) or not text.strip():
                note(f"tts: note: line {line}: sample {s.get('i', '?') if isinstance(s, dict) else '?'} "
                     "has no text; passed through unscored")
                continue
            try:
                enc = rm.encode_item(prompt, steps_of(text, step_sep) if rm.kind == "prm" else text)
            except RewardInputError as e:
                raise RecordError(f"sample {s.get('i', '?')}: {e}", line) from None
            todo.append((s, enc))
            read[id(rec)] = read.get(id(rec), 0) + len(enc[0] if isinstance(enc, tuple) else enc)
    if todo:
        scores = rm.score_encoded([enc for _, enc in todo], batch_size, on_tokens)
        for (s, _), sc in zip(todo, scores):
            if rm.kind == "prm":
                s["reward"] = sig(reduce_steps(sc, reduce))
                s["step_rewards"] = [sig(x) for x in sc]
            else:
                s["reward"] = sig(sc)
    for _, rec in buf:
        if isinstance(rec.get("samples"), list) and rec["samples"]:
            rec["score"] = dict(info)
        if id(rec) in read:
            cost = rec.setdefault("cost", {})
            other = [o for o in cost.get("other") or [] if not (isinstance(o, dict) and o.get("role") == "reward"
                                                                   and o.get("model") == info_cost["model"])]
            cost["other"] = other + [{**info_cost, "tokens": read[id(rec)]}]
        yield rec
