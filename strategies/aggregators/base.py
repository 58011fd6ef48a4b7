"""The common input form of every aggregator, and the shared decision rule.

An aggregator sees a `Batch`: R rows of K samples each, where a row is one problem (`tts
aggregate`) or one random subset of a problem's samples (`tts eval --curve`). Answers arrive as
integer class ids from `verifiers.group_answers` (-1: no extractable answer, or padding), so no
method ever compares strings, and one vectorised implementation serves a single record and a
whole curve alike. An aggregator returns a raw score per (row, class) and which samples it used;
`decide` normalises the scores and picks the winners, the same way for every method.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

TIE_TOL = 1e-12  # normalised scores this close count as a tie (sums in different orders)


@dataclass
class Batch:
    cls: np.ndarray                          # (R,K) class id; -1 = no answer or no sample
    n_classes: int                           # C: every class id is < C
    fields: dict[str, np.ndarray]            # (R,K) per-sample signals, NaN where absent
    text: np.ndarray                         # (R,K) text id: equal ids in a row = identical texts
    need_used: bool = True                   # False: callers only read answers and scores
    jobs: int = 1                            # worker processes an expensive method may use

    @property
    def votes(self) -> np.ndarray:
        """(R,K) bool: the sample has an answer and may vote."""
        return self.cls >= 0

    @property
    def samples(self) -> np.ndarray:
        """(R,K) bool: a sample, answered or not (False only for padding, whose text id is -1)."""
        return self.text >= 0

    def field(self, name: str) -> np.ndarray:
        return self.fields[name]


class PoolError(ValueError):
    """A record cannot be aggregated as asked (the message names what is missing).

    `position` is set by the record-level API: the 0-based index of the record in its stream."""

    position: int | None = None


@dataclass
class Option:
    default: Any
    parse: Callable[[str], Any]
    help: str
    choices: tuple | None = None


class Aggregator:
    """Base class: subclasses set `name`, `options`, `needs` and implement `score`."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}
    needs: ClassVar[tuple[str, ...]] = ()    # per-sample fields read from every sample

    def reads(self) -> tuple[str, ...]:
        """Every per-sample signal field this method's decision depends on (for labelled signals)."""
        signal = getattr(self, "signal", None)
        return tuple(self.needs) + ((signal,) if signal else ())

    def __init__(self, **opts):
        unknown = set(opts) - set(self.options)
        if unknown:
            known = ", ".join(self.options) or "none"
            raise ValueError(f"{self.name}: unknown option {sorted(unknown)[0]!r} (options: {known})")
        self.opts = {}
        for key, opt in self.options.items():
            value = opts.get(key, opt.default)
            if isinstance(value, str) and not isinstance(opt.default, str):
                try:
                    value = opt.parse(value)
                except ValueError:
                    raise ValueError(f"{self.name}: bad value {value!r} for option {key}") from None
            if opt.choices is not None and value not in opt.choices:
                raise ValueError(f"{self.name}: option {key} must be one of {', '.join(map(str, opt.choices))}")
            self.opts[key] = value
        self.validate()

    def validate(self) -> None:
        """Check option values beyond their type (raise ValueError)."""

    def sample_fields(self, sample: dict) -> dict[str, float]:
        """Per-sample values this method derives itself (beyond `needs`), e.g. from a trace."""
        return {}

    def score(self, b: Batch) -> tuple[np.ndarray, np.ndarray]:
        """Raw score per (row, class) (R,C), and the samples that contributed (R,K) bool."""
        raise NotImplementedError


@dataclass
class Decision:
    scores: np.ndarray     # (R,C) normalised scores (0 for absent classes)
    present: np.ndarray    # (R,C) bool: the class is the answer of some voting sample in the row
    winners: np.ndarray    # (R,C) bool: tied for the top score
    answer: np.ndarray     # (R,) first winning class id, -1 when nobody voted
    confidence: np.ndarray  # (R,) the winner's normalised score (0 when nobody voted)
    used: np.ndarray = field(default=None)  # (R,K) bool


def class_sum(cls: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """(R,C) sum of `weights` over the samples of each class (samples with cls < 0 skipped)."""
    R = cls.shape[0]
    ok = cls >= 0
    flat = (np.arange(R)[:, None] * n_classes + cls)[ok]
    out = np.bincount(flat, weights=np.broadcast_to(weights, cls.shape)[ok], minlength=R * n_classes)
    return out.reshape(R, n_classes)


def class_max(cls: np.ndarray, values: np.ndarray, n_classes: int) -> np.ndarray:
    """(R,C) maximum of `values` over each class's samples (-inf for an empty class)."""
    R = cls.shape[0]
    ok = cls >= 0
    flat = (np.arange(R)[:, None] * n_classes + cls)[ok]
    out = np.full(R * n_classes, -np.inf)
    np.maximum.at(out, flat, values[ok])
    return out.reshape(R, n_classes)


def gather(table: np.ndarray, cls: np.ndarray) -> np.ndarray:
    """table[r, cls[r, k]] for every sample (R,K); -inf where cls < 0."""
    got = np.take_along_axis(table, np.maximum(cls, 0), axis=1)
    return np.where(cls >= 0, got, -np.inf)


def first_occurrence(text: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(R,K) bool: the sample is in `mask` and no earlier sample of the row in `mask` has its text."""
    key = np.where(mask, text, -1)
    order = np.argsort(key, axis=1, kind="stable")
    sorted_key = np.take_along_axis(key, order, axis=1)
    new = np.ones_like(mask)
    new[:, 1:] = sorted_key[:, 1:] != sorted_key[:, :-1]
    out = np.zeros_like(mask)
    np.put_along_axis(out, order, new, axis=1)
    return out & mask


def stabilised_exp(logw: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """exp(logw - row max over mask), 0 outside mask: weights that only matter up to a common
    factor (normalised scores cancel it) without underflowing for long texts."""
    top = np.max(np.where(mask, logw, -np.inf), axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(mask, np.exp(logw - top), 0.0)


def decide(raw: np.ndarray, cls: np.ndarray, n_classes: int) -> Decision:
    """Normalise raw class scores over the classes present in each row and find the winners.

    A class is present when a voting sample of the row gives that answer, even if the method gave
    it nothing (RPC prunes, DeepConf filters): its score is then 0. If every present class scored
    0, they share the row equally (a tie), since no method expressed a preference.
    """
    present = class_sum(cls, 1.0, n_classes) > 0
    raw = np.where(present, np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    raw = np.maximum(raw, 0.0)
    total = raw.sum(axis=1, keepdims=True)
    nothing = (total[:, 0] <= 0) & present.any(axis=1)
    raw = np.where(nothing[:, None] & present, 1.0, raw)
    total = raw.sum(axis=1, keepdims=True)
    scores = np.divide(raw, total, out=np.zeros_like(raw), where=total > 0)
    best = np.max(np.where(present, scores, -np.inf), axis=1, initial=-np.inf)
    winners = present & (scores >= best[:, None] - TIE_TOL)
    any_vote = present.any(axis=1)
    answer = np.where(any_vote, np.argmax(winners, axis=1), -1)
    confidence = np.where(any_vote, best, 0.0)
    return Decision(scores, present, winners, answer, confidence)


class BestOfN(Aggregator):
    """Pick the answer of the sample with the highest value of a per-sample signal.

    The score of an answer is its best sample's (transformed) value, normalised over answers, so
    the winner is the Best-of-N pick and its confidence says how far ahead it is; `used` holds
    each answer's best sample.
    """

    signal: ClassVar[str]
    # A log-probability signal scores exp(value), so that confidence reads as a probability share;
    # any other signal (self-certainty, a KL divergence) scores its value, floored at 0.
    log_probability: ClassVar[bool] = False

    @property
    def needs(self):
        return (self.signal,)

    def transform(self, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return stabilised_exp(values, mask) if self.log_probability else np.maximum(values, 0.0)

    def score(self, b: Batch):
        mask = b.votes & np.isfinite(b.field(self.signal))
        values = np.where(mask, b.field(self.signal), -np.inf)
        best = class_max(np.where(mask, b.cls, -1), values, b.n_classes)
        used = mask & (values >= gather(best, b.cls))
        weights = self.transform(np.where(mask, values, 0.0), mask)
        raw = class_max(np.where(used, b.cls, -1), weights, b.n_classes)
        return np.where(np.isfinite(raw), raw, 0.0), used
