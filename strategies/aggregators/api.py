"""Aggregation of `tts generate` records: the library behind `tts aggregate`.

    from strategies.aggregators.api import parse_methods, aggregate_records
    methods = parse_methods(["majority", "rpc", "deepconf:keep=0.1"], ["borda.p=1"])
    for rec in aggregate_records(records, methods):
        print(rec["aggregates"]["rpc"]["answer"])
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

from strategies.aggregators import REGISTRY
from strategies.aggregators.base import Aggregator, Batch, PoolError, decide
from verifiers import AnswerGroups, extract_answer, group_answers, normalize_answer
from verifiers.extract import TURN_MARKERS

from strategies.sample_fields import SAMPLE_SIGNALS as SIGNALS
from strategies.sample_fields import left_out


# --- method specs ---------------------------------------------------------------------------

def _split_opt(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"option {text!r} is not key=value")
    return key.strip(), value.strip()


def parse_methods(specs: Iterable[str], opts: Iterable[str] = ()) -> list[tuple[str, Aggregator]]:
    """(label, aggregator) per spec `NAME[:key=value,...]`.

    `opts` are `key=value` (for every chosen method that has the option) or `NAME.key=value`;
    options inside a spec win. The label is the spec as written, so the same method can run twice
    with different options (`-a deepconf:keep=0.1 -a deepconf:keep=0.9`).
    """
    specs = [s.strip() for s in specs]
    parsed = []
    for spec in specs:
        name, _, inline = spec.partition(":")
        if name not in REGISTRY:
            raise ValueError(f"unknown method {name!r}; choose from {', '.join(REGISTRY)}")
        own = dict(_split_opt(kv) for kv in inline.split(",")) if inline else {}
        parsed.append((spec, name, own))
    general: dict[str, dict[str, str]] = {}
    for text in opts:
        key, value = _split_opt(text)
        target, dot, key = key.rpartition(".")
        takers = [name for _, name, _ in parsed
                  if (not dot or name == target) and key in REGISTRY[name].options]
        if not takers:
            where = f"method {target!r}" if dot else "any chosen method"
            raise ValueError(f"option {key!r} does not apply to {where}")
        for name in takers:
            general.setdefault(name, {})[key] = value
    return [(label, REGISTRY[name](**{**general.get(name, {}), **own})) for label, name, own in parsed]


def method_from_entry(label: str, entry: dict) -> Aggregator:
    """Rebuild the aggregator that produced an `aggregates` entry (its label and options)."""
    name = label.partition(":")[0]
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r} in aggregates")
    return REGISTRY[name](**(entry.get("opts") or {}))


# --- pools -----------------------------------------------------------------------------------

@dataclass
class Pool:
    """One problem's samples, ready to aggregate: answers as classes, signals as arrays."""
    groups: AnswerGroups
    preds: list                       # per-sample answer strings (None: no answer)
    index: list                       # per-sample `i` (what `used` reports)
    fields: dict[str, np.ndarray]     # per-sample signals (N,), NaN where absent
    text: np.ndarray                  # (N,) text ids, equal for identical texts
    samples: list                     # the record's samples that vote (methods may derive more signals)
    position: int | None = None       # the record's position in its stream (for errors)
    prepared: set = field(default_factory=set)
    stopped_tokens: float = 0.0       # tokens of samples a pruner stopped (they do not vote)

    @property
    def size(self) -> int:
        return len(self.preds)

    @property
    def n_tokens(self) -> float:
        """Tokens generated for the problem, those of pruned samples included."""
        return float(np.nansum(self.fields["n_tokens"])) + self.stopped_tokens


# What `truncated` may be: how samples cut off by the token limit (finish == "length") count.
#   marked (default): only through an answer the text marks explicitly (\boxed{}, ####, "the answer
#     is", "Final Answer:"), never through the last-number fallback: a cut-off text's last number
#     is wherever generation stopped ("... 7. Add the number of" answers 7).
#   extract: like any other sample (the fallback included).
#   ignore: never (no answer, never correct).
TRUNCATED = ("marked", "extract", "ignore")
DEFAULT_TRUNCATED = "marked"


def cut_off(sample: dict) -> bool:
    """The sample ended because it reached --max-new-tokens (its answer may be a fragment)."""
    return sample.get("finish") == "length"


def _pred(sample: dict, extract: str, truncated: str | None = DEFAULT_TRUNCATED, stop=TURN_MARKERS):
    """The sample's answer (normalised) or None.

    A sample's own `pred` is kept (pools from other tools keep their answers), except where the
    `truncated` rule decides for a cut-off sample: `ignore` gives None; `marked` gives None unless
    the text marks an answer; `extract` reads the text again when the recorded pred is null (a
    `marked` or `ignore` aggregation wrote that). `truncated=None` means as recorded: each
    sample's `pred`, and the default rule for samples without one.
    """
    text = sample.get("text")
    recorded = "pred" in sample
    if not cut_off(sample) or (truncated is None and recorded):
        if recorded:
            return normalize_answer(sample["pred"])
        return normalize_answer(extract_answer(text, extract, stop))
    rule = truncated or DEFAULT_TRUNCATED
    if rule == "ignore":
        return None  # never votes, and never counts as correct
    if recorded and sample["pred"] is not None and rule == "extract":
        return normalize_answer(sample["pred"])
    got = extract_answer(text, extract, stop, marked=rule == "marked")
    if got is not None and recorded and sample["pred"] is not None:
        return normalize_answer(sample["pred"])  # marked: the text marks an answer; theirs stands
    return normalize_answer(got)


def answer_of(sample: dict, extract: str = "auto"):
    """A sample's answer as every aggregator reads it by default (normalised; None: none), e.g. for
    a controller that votes while samples are generated."""
    return _pred(sample, extract)


# the per-token signal each per-sample field summarises (a run's `signals` labels these)
FIELD_SIGNAL = {"mean_logprob": "logprob", "logprob": "logprob", "entropy": "entropy",
                "self_certainty": "self_certainty", "confidence": "confidence"}
_warned: set = set()


def check_signals(rec: dict, methods: Iterable[Aggregator], position: int | None = None) -> None:
    """A run whose `signals` are not all exact (e.g. vLLM's entropy and self-certainty bounds):
    say once on stderr which method reads an approximated signal; refuse (PoolError) a method
    whose signal the run could not compute at all."""
    labels = (rec.get("run") or {}).get("signals") if isinstance(rec.get("run"), dict) else None
    if not labels:
        return
    for m in methods:
        for field_name in m.reads():
            sig = FIELD_SIGNAL.get(field_name)
            label = labels.get(sig, "exact") if sig else "exact"
            if label == "exact":
                continue
            if label == "unavailable":
                e = PoolError(f"method {m.name} needs `{sig}`, which this run's backend could not compute "
                              f"(run.signals); use a run from --backend native")
                e.position = position
                raise e
            key = (m.name, sig, label)
            if key not in _warned:
                _warned.add(key)
                print(f"tts: note: method {m.name} reads `{sig}`, which this run only approximates "
                      f"({label}; run.signals)", file=sys.stderr)


def _signal(sample: dict, name: str) -> float:
    v = sample.get(name)
    if v is None and name == "mean_logprob" and sample.get("logprob") is not None and sample.get("n_tokens"):
        v = sample["logprob"] / sample["n_tokens"]
    try:
        return np.nan if v is None else float(v)
    except (TypeError, ValueError):
        raise PoolError(f"sample field {name!r} is not a number: {v!r}") from None


def _text_ids(samples: list) -> np.ndarray:
    ids: dict = {}
    out = np.empty(len(samples), dtype=np.int64)
    for j, s in enumerate(samples):
        t = s.get("text")
        out[j] = ids.setdefault(t, len(ids)) if isinstance(t, str) else len(samples) + j
    return out


def _add_method_fields(pool: Pool, method: Aggregator) -> None:
    key = (method.name, tuple(sorted(method.opts.items())))
    if key in pool.prepared:
        return
    for j, s in enumerate(pool.samples):
        if pool.preds[j] is None:
            continue  # samples without an answer never vote
        for name, value in method.sample_fields(s).items():
            pool.fields.setdefault(name, np.full(pool.size, np.nan))[j] = value
    for need in method.needs:
        missing = [j for j, p in enumerate(pool.preds) if p is not None and np.isnan(pool.fields[need][j])]
        if missing:
            raise PoolError(f"method {method.name} needs `{need}` in every sample with an answer "
                            f"(sample {missing[0]} has none)")
    pool.prepared.add(key)


def prepare(pools: Iterable[Pool], methods: Iterable[Aggregator]) -> None:
    """Give every pool the per-sample signals the methods derive; PoolError (with the record's
    position) if a method lacks what it needs."""
    methods = list(methods)
    for pool in pools:
        try:
            for m in methods:
                _add_method_fields(pool, m)
        except PoolError as e:
            e.position = pool.position
            raise


def build_pool(samples: list, methods: Iterable[Aggregator] = (), extract: str = "auto",
               position: int | None = None, truncated: str | None = DEFAULT_TRUNCATED,
               include_stopped: bool = False, stop=TURN_MARKERS) -> Pool:
    """A Pool from a record's `samples`; raises PoolError naming what a method lacks.

    truncated: how samples cut off by the token limit answer (TRUNCATED: "marked", the default,
    only through an explicit answer marker; "extract" like any other; "ignore" never; None: as
    recorded in their `pred`). stop: the new-turn markers texts are cut at before extraction.
    Samples a pruner stopped (`finish` in sample_fields.STOPPED) or kept out of the vote
    (`below_threshold`) are left out unless `include_stopped`; their tokens still count in
    `n_tokens`. A survivor's `cluster_size` (DeepPrune with
    representatives) becomes its `votes` weight, which majority honours.
    """
    if truncated is not None and truncated not in TRUNCATED:
        raise ValueError(f"truncated={truncated!r}: choose from {', '.join(TRUNCATED)}")
    if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
        e = PoolError("`samples` must be a list of objects")
        e.position = position
        raise e
    stopped_tokens = 0.0
    if not include_stopped:
        stopped = [s for s in samples if left_out(s)]
        if stopped:
            stopped_tokens = float(sum(s.get("n_tokens") or 0 for s in stopped))
            samples = [s for s in samples if not left_out(s)]
    try:
        preds = [_pred(s, extract, truncated, stop) for s in samples]
        fields = {name: np.array([_signal(s, name) for s in samples], dtype=np.float64) for name in SIGNALS}
    except PoolError as e:
        e.position = position
        raise
    fields["votes"] = np.array([float(s.get("cluster_size") or 1) for s in samples], dtype=np.float64)
    index = [s.get("i", j) for j, s in enumerate(samples)]
    pool = Pool(group_answers(preds), preds, index, fields, _text_ids(samples), samples, position,
                stopped_tokens=stopped_tokens)
    prepare([pool], methods)
    return pool


def stack(pools: list[Pool], need_used: bool = True, jobs: int = 1) -> Batch:
    """One Batch row per pool, padded to the largest pool (padding has class -1)."""
    R = len(pools)
    K = max((p.size for p in pools), default=0)
    cls = np.full((R, K), -1, dtype=np.int64)
    text = np.full((R, K), -1, dtype=np.int64)
    names = set().union(*(p.fields for p in pools)) if pools else set()
    fields = {name: np.full((R, K), np.nan) for name in names}
    for r, p in enumerate(pools):
        cls[r, :p.size] = p.groups.ids
        text[r, :p.size] = p.text
        for name, values in p.fields.items():
            fields[name][r, :p.size] = values
    n_classes = max((len(p.groups.reps) for p in pools), default=0)
    return Batch(cls, max(n_classes, 1), fields, text, need_used, jobs)


# --- aggregation -----------------------------------------------------------------------------

def _entry(pool: Pool, r: int, d, used: np.ndarray, opts: dict) -> dict:
    reps = pool.groups.reps
    present = np.flatnonzero(d.present[r])
    return {
        "answer": reps[d.answer[r]] if d.answer[r] >= 0 else None,
        "confidence": float(d.confidence[r]),
        "scores": {reps[c]: float(d.scores[r, c]) for c in present},
        "used": [pool.index[j] for j in np.flatnonzero(used[r, :pool.size])],
        "opts": dict(opts),
    }


def aggregate_pools(pools: list[Pool], methods: list[tuple[str, Aggregator]], jobs: int = 1) -> list[dict]:
    """The `aggregates` object of every pool, all pools of a method computed in one batch."""
    prepare(pools, [m for _, m in methods])
    batch = stack(pools, jobs=jobs)
    out = [dict() for _ in pools]
    for label, method in methods:
        raw, used = method.score(batch)
        d = decide(raw, batch.cls, batch.n_classes)
        for r, pool in enumerate(pools):
            out[r][label] = _entry(pool, r, d, used, method.opts)
    return out


def aggregate_records(records: Iterable[dict], methods: list[tuple[str, Aggregator]],
                      extract: str = "auto", chunk: int = 256, jobs: int = 1,
                      truncated: str = DEFAULT_TRUNCATED, stop=TURN_MARKERS) -> Iterator[dict]:
    """Yield each record with `pred` on its samples and `aggregates` added, in input order.

    Cut-off samples are written with the `pred` the `truncated` rule gave them (null under
    "ignore", and under "marked" when the text marks no answer), whatever they had, so that
    `tts eval` and later re-aggregations see the same choice.

    Records without `samples` (e.g. an `error` from generate) pass through unchanged. Records are
    aggregated `chunk` at a time so that RPC's fits run batched. A PoolError carries the position
    of the offending record in `records`.
    """
    buf: list[dict] = []
    start = 0
    for rec in records:
        buf.append(rec)
        if len(buf) >= chunk:
            yield from _aggregate_chunk(buf, start, methods, extract, jobs, truncated, stop)
            start += len(buf)
            buf = []
    yield from _aggregate_chunk(buf, start, methods, extract, jobs, truncated, stop)


def _aggregate_chunk(records, start, methods, extract, jobs, truncated=DEFAULT_TRUNCATED, stop=TURN_MARKERS):
    todo = [(j, r) for j, r in enumerate(records) if "samples" in r]
    for j, r in todo:
        check_signals(r, [m for _, m in methods], start + j)
    pools = [build_pool(r["samples"], [m for _, m in methods], extract, start + j, truncated, stop=stop)
             for j, r in todo]
    results = aggregate_pools(pools, methods, jobs) if pools else []
    for (j, rec), pool, aggs in zip(todo, pools, results):
        for s, pred in zip(pool.samples, pool.preds):  # stopped samples get no pred
            if cut_off(s):
                s["pred"] = pred  # the truncated rule decided it
            s.setdefault("pred", pred)
        rec["aggregates"] = {**(rec.get("aggregates") or {}), **aggs}
    yield from records
