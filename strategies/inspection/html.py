"""The HTML trace report: one self-contained file (no network) per set of records.

The page is built by a Jinja2 template with autoescaping, so whatever a model wrote (`<script>`,
`&`, quotes) shows as text. Hover texts are plain `title` attributes and the colours CSS classes:
the page needs no script at all, opens from disk in any browser, and 64 samples × 1,000 tokens stay
a few megabytes that a browser lays out in about a second.

    from strategies.inspection.html import render_report, select_records
    chosen, notes = select_records(records, ids=["3"], limit=20)
    html = render_report(chosen, tokenizer, color="entropy")
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from strategies.inspection.signals import DEFAULT_WINDOW, group_record, lowest_window, sample_signals

# --color choice -> (trace field, +1 when a higher value means more confident, label)
COLORS = {
    "confidence": ("confidence", 1, "confidence"),
    "entropy": ("entropy", -1, "entropy (nats)"),
    "self-certainty": ("self_certainty", 1, "self-certainty"),
    "logprob": ("logprob", 1, "log-probability"),
}
BINS = 10               # shades, from least (0) to most (BINS-1) confident
SCALE_PERCENTILES = (2, 98)  # the scale ignores the extreme tails so one outlier cannot flatten it
EARLY_STOP_NOTE = "stopped early"
NO_TRACE_NOTE = ("no per-token trace (samples[].trace): text is not shaded; "
                 "run `tts generate --trace` to shade each token")


class ReportError(ValueError):
    """Options the records cannot satisfy (e.g. --wrong-only on records without aggregates)."""


# --- choosing records ------------------------------------------------------------------------

def aggregate_is_wrong(record: dict, label: str | None) -> bool | None:
    """Whether the record's aggregate `label` (None: its first) missed the gold answer; None when
    that cannot be told (no gold, no such aggregate)."""
    from verifiers import equivalent, normalize_gold

    aggs = record.get("aggregates") or {}
    gold = normalize_gold(record.get("answer"))
    if gold is None or not aggs:
        return None
    entry = aggs.get(label) if label is not None else next(iter(aggs.values()))
    if entry is None:
        return None
    return not equivalent(entry.get("answer"), gold)


def tie_size(entry: dict) -> int:
    """How many answers share the winner's score in an `aggregates` entry (1: a clear winner).

    `answer` is the first of them, so a tie must be shown: the others won as much. Scores are
    written rounded to 4 decimals, so equal at that precision is a tie."""
    scores = entry.get("scores") if isinstance(entry, dict) else None
    if not isinstance(scores, dict) or not scores:
        return 1
    values = [v for v in scores.values() if isinstance(v, (int, float))]
    if not values:
        return 1
    top = max(values)
    return sum(abs(v - top) <= 5e-5 for v in values)


def confidence_text(entry: dict) -> str:
    """The winner's confidence to 4 significant digits, and "N-way tie" when N answers share it."""
    ties = tie_size(entry)
    conf = _fmt(entry.get("confidence")) if isinstance(entry, dict) else _fmt(None)
    return conf + (f" ({ties}-way tie)" if ties > 1 else "")


@dataclass
class Selection:
    records: list
    seen: int = 0                 # records read
    matched: int = 0              # records that passed --id / --wrong-only (before --limit)
    undecidable: int = 0          # --wrong-only: records without gold or that aggregate


def select_records(records: Iterable[dict], ids: list[str] | None = None, limit: int | None = None,
                   wrong_only: bool = False, aggregate: str | None = None) -> Selection:
    """The records to show: those with an id in `ids` (all when None), only those `aggregate` got
    wrong with `wrong_only`, at most `limit` of them (None or 0: all), in input order."""
    want = {str(i) for i in ids} if ids else None
    sel = Selection([])
    for rec in records:
        sel.seen += 1
        if want is not None and str(rec.get("id")) not in want:
            continue
        if wrong_only:
            wrong = aggregate_is_wrong(rec, aggregate)
            if wrong is None:
                sel.undecidable += 1
            if not wrong:
                continue
        sel.matched += 1
        if not limit or len(sel.records) < limit:
            sel.records.append(rec)
    return sel


# --- the page model --------------------------------------------------------------------------

@dataclass
class SampleView:
    i: object
    answer: str | None
    correct: bool | None
    finish: str
    n_tokens: object
    signals: dict                 # the four summary signals (NaN: absent)
    soft: dict | None
    text: str                     # shown when there are no tokens
    tokens: list = field(default_factory=list)    # (piece, css class, hover text)
    window: tuple | None = None   # (start, end, mean) of the lowest window to outline
    window_note: str = ""
    note: str = ""
    values: np.ndarray | None = None  # the chosen signal per token (for the scale)

    @property
    def stopped_early(self) -> bool:
        return self.finish not in ("stop", "length")

    def segments(self):
        """Tokens split around the lowest window: [(in_window, tokens)]."""
        if not self.window:
            return [(False, self.tokens)]
        a, b, _ = self.window
        return [(False, self.tokens[:a]), (True, self.tokens[a:b]), (False, self.tokens[b:])]


@dataclass
class GroupView:
    answer: str | None
    correct: bool | None
    samples: list


@dataclass
class RecordView:
    id: object
    prompt: str
    gold: object
    aggregates: list              # (label, answer, confidence, correct)
    groups: list
    notes: list
    n_samples: int
    error: str | None = None


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _prompt_text(record: dict) -> str:
    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    msgs = record.get("messages")
    if isinstance(msgs, list):
        return "\n\n".join(f"[{m.get('role')}] {m.get('content')}" for m in msgs if isinstance(m, dict))
    return ""


def _soft_titles(trace: dict, decode) -> dict[int, str]:
    """Token position -> hover text naming the concept step's top choices and weights."""
    soft = trace.get("soft") or {}
    start = int(soft.get("start", 0))
    out = {}
    for step, (ids, ws) in enumerate(zip(soft.get("topk_ids") or [], soft.get("topk_w") or [])):
        choices = " · ".join(f"{decode([int(i)])!r} {w:.2f}" for i, w in zip(ids, ws))
        out[start + step] = f"concept step {step}: {choices}"
    return out


def _sample_view(s: dict, grouped, j: int, tokenizer, color: str, window: int, specials: set) -> SampleView:
    from strategies.inspection.tokens import _decoder, token_pieces

    answer = grouped.preds[j]
    v = SampleView(i=s.get("i", j), answer=answer, correct=grouped.sample_correct(j),
                   finish=str(s.get("finish", "?")), n_tokens=s.get("n_tokens", "?"),
                   signals=sample_signals(s, window), soft=s.get("soft"), text=str(s.get("text", "")))
    trace = s.get("trace")
    if not isinstance(trace, dict) or not trace.get("ids"):
        v.note = NO_TRACE_NOTE
        return v
    if tokenizer is None:
        return v
    key, _, label = COLORS[color]
    ids = trace["ids"]
    vals = trace.get(key)
    if vals is None or len(vals) != len(ids):
        v.note = f"the trace has no per-token {key}: text is not shaded"
        vals = [math.nan] * len(ids)
    v.values = np.asarray(vals, dtype=np.float64)
    pieces = token_pieces(tokenizer, ids)
    soft = _soft_titles(trace, _decoder(tokenizer))
    tokens = []
    for t, (tok, piece, val) in enumerate(zip(ids, pieces, vals)):
        hover = f"#{t} {label} {_fmt(None if val is None else float(val))}"
        if t in soft:
            hover = f"{hover}\n{soft[t]}"
        # classes are filled in once the scale is known (render_report); here only the kind
        kind = " s" if t in soft else (" sp" if tok in specials else "")
        tokens.append([piece, kind, hover])
    v.tokens = tokens
    conf = trace.get("confidence")
    if conf:
        low = lowest_window(conf, window)
        if low and len(conf) > window:
            v.window = low
            v.window_note = f"lowest window: tokens {low[0]}–{low[1] - 1}"
        elif low:
            v.window_note = f"trace shorter than the {window}-token window: the lowest window is the whole trace"
    return v


def _record_view(rec: dict, tokenizer, color: str, window: int, extract: str, specials: set) -> RecordView:
    from verifiers import equivalent, normalize_gold

    gold = normalize_gold(rec.get("answer"))
    aggs = []
    for label, entry in (rec.get("aggregates") or {}).items():
        entry = entry if isinstance(entry, dict) else {}
        ans = entry.get("answer")
        aggs.append((label, ans, confidence_text(entry),
                     None if gold is None else bool(equivalent(ans, gold))))
    notes = []
    samples = rec.get("samples")
    view = RecordView(rec.get("id"), _prompt_text(rec), rec.get("answer"), aggs, [], notes,
                      len(samples) if isinstance(samples, list) else 0, rec.get("error"))
    if not isinstance(samples, list) or not samples:
        notes.append("this record has no samples")
        return view
    if gold is None:
        notes.append("no gold `answer`: correctness is not marked")
    grouped = group_record(rec, extract)
    views = [_sample_view(s, grouped, j, tokenizer, color, window, specials) for j, s in enumerate(samples)]
    if all(v.note == NO_TRACE_NOTE for v in views):
        notes.append(NO_TRACE_NOTE)
        for v in views:
            v.note = ""
    for c in grouped.order():
        members = [views[j] for j in range(len(views)) if grouped.group[j] == c]
        view.groups.append(GroupView(grouped.reps[c], None if gold is None else grouped.class_correct[c], members))
    none = [views[j] for j in range(len(views)) if grouped.group[j] < 0]
    if none:
        view.groups.append(GroupView(None, None if gold is None else False, none))
    return view


def color_scale(views: list[RecordView], color: str) -> tuple[float, float] | None:
    """(lo, hi) of the chosen signal over every shown token: the 2nd and 98th percentiles."""
    vals = [s.values for r in views for g in r.groups for s in g.samples if s.values is not None]
    vals = np.concatenate(vals) if vals else np.array([])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, SCALE_PERCENTILES)
    if hi <= lo:  # a constant signal: any width will do, every token gets the middle shade
        lo, hi = lo - 0.5, hi + 0.5
    return float(lo), float(hi)


def shade_bins(values: np.ndarray, scale: tuple[float, float], direction: int) -> np.ndarray:
    """Shade index per token, 0 = least confident … BINS-1 = most; -1 where the value is NaN."""
    lo, hi = scale
    u = (values - lo) / (hi - lo)
    if direction < 0:
        u = 1.0 - u
    with np.errstate(invalid="ignore"):
        b = np.clip(np.floor(u * BINS), 0, BINS - 1)
    return np.where(np.isfinite(values), b, -1).astype(int)


def shade_css() -> list[tuple[int, str]]:
    """(bin, CSS colour): the least confident tokens strongly tinted, the most not at all, so the
    eye goes to where the model hesitated."""
    return [(b, f"rgba(230,85,13,{0.7 * (1 - b / (BINS - 1)) ** 2:.3f})") for b in range(BINS)]


def legend(scale: tuple[float, float] | None, color: str) -> list[tuple[int, str]]:
    """(bin, value range) per shade, least confident first."""
    if scale is None:
        return []
    lo, hi = scale
    edges = np.linspace(lo, hi, BINS + 1)
    if COLORS[color][1] < 0:
        edges = edges[::-1]
    out = []
    for b in range(BINS):
        a, z = edges[b], edges[b + 1]
        first, last = b == 0, b == BINS - 1
        text = f"{'≤' if first else ''}{_fmt(float(a))} … {_fmt(float(z))}{'+' if last else ''}"
        out.append((b, text))
    return out


def _environment():
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("strategies.inspection", "templates"),
                       autoescape=select_autoescape(("html", "j2")), trim_blocks=True, lstrip_blocks=True)


def render_report(records: Iterable[dict], tokenizer=None, color: str = "confidence", window: int | None = None,
                  extract: str = "auto", title: str = "tts trace report", notes: Iterable[str] = ()) -> str:
    """The report's HTML. `tokenizer` turns trace ids into text (None: plain texts, no shading);
    `window`: DeepConf's window for the lowest-window outline (None: the window of a recorded
    `deepconf` aggregate, else 2048)."""
    from strategies.inspection.tokens import special_ids

    if color not in COLORS:
        raise ReportError(f"--color {color!r}: choose from {', '.join(COLORS)}")
    records = list(records)
    window = window or recorded_window(records) or DEFAULT_WINDOW
    specials = special_ids(tokenizer) if tokenizer is not None else set()
    views = [_record_view(r, tokenizer, color, window, extract, specials) for r in records]
    scale = color_scale(views, color)
    direction = COLORS[color][1]
    for r in views:
        for g in r.groups:
            for s in g.samples:
                if s.values is None:
                    continue
                bins = shade_bins(s.values, scale, direction) if scale else np.full(len(s.tokens), -1)
                for tok, b in zip(s.tokens, bins.tolist()):
                    tok[1] = (f"c{b}" if b >= 0 else "") + tok[1]
    return _environment().get_template("report.html.j2").render(
        title=title, records=views, color=color, color_label=COLORS[color][2], legend=legend(scale, color),
        shades=shade_css(), window=window, notes=list(notes), fmt=_fmt,
        early_note=EARLY_STOP_NOTE)


def recorded_window(records: list[dict]) -> int | None:
    """The `window` option of the first `deepconf` aggregate found (so the outline matches what
    `tts aggregate -m deepconf:score=min,window=W` scored)."""
    for rec in records:
        for label, entry in (rec.get("aggregates") or {}).items():
            if label.partition(":")[0] == "deepconf" and isinstance(entry, dict):
                w = (entry.get("opts") or {}).get("window")
                if isinstance(w, int) and w > 0:
                    return w
    return None
