"""The one answer-equivalence function shared by every aggregator and by evaluation.

`equivalent(a, b)` tries, cheapest first: normalised string equality, exact rational comparison of
plain numbers (`1,000` = `1000` = `1000.0`, `\\frac{1}{2}` = `0.5`), then math-verify (parse both,
verify, with a time limit; a cheap value screen first spares it pairs it could only reject).
Results are cached, and `group_answers` turns a problem's predictions into equivalence classes
once, so that aggregators and curves work on integer class ids and never compare strings again.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np

from verifiers.numbers import spelled_number

# math-verify's time limit (seconds) per parse and per comparison. It relies on SIGALRM, which only
# works in the main thread; elsewhere the limit is switched off rather than failing.
TIMEOUT_S = 5

_SPACES = re.compile(r"\s+")
_THOUSANDS = re.compile(r"(?<![\d.])(\d{1,3}(?:,\d{3})+)(?![\d])")
_WRAPPERS = [
    (re.compile(r"^\$+(.*?)\$+$", re.S), r"\1"),
    (re.compile(r"^\\\((.*)\\\)$", re.S), r"\1"),
    (re.compile(r"^\\\[(.*)\\\]$", re.S), r"\1"),
    (re.compile(r"^\\(?:boxed|fbox)\{(.*)\}$", re.S), r"\1"),
    (re.compile(r"^\\text(?:bf)?\{(.*)\}$", re.S), r"\1"),
]
_DROP = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\ ", "^\\circ", "^{\\circ}", "\\displaystyle"]
# A percent sign at the end of an answer is dropped: `25\%` is the answer 25 (see
# docs/aggregators.md, "Percentages"). Benchmarks write percentage answers as the bare number.
_PERCENT = re.compile(r"\s*(?:\\%|%)$")
_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_FRAC = re.compile(r"([-+]?)\\[dt]?frac\{([-+]?\d+)\}\{([-+]?\d+)\}")
_SLASH = re.compile(r"([-+]?\d+)/(\d+)")
# A variable: a letter that does not belong to a LaTeX command's name (`x`, not the f of `\frac`).
_VARIABLE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]")
# `=` between the sides of an equation (not part of `<=`, `>=`, `!=`, `==`).
_EQUALS = re.compile(r"(?<![<>!=])=(?!=)")
_RELATION = re.compile(r"[<>!]=|==|\\(?:[lg]eq?|neq|ne)\b")
# Plain numbers joined by +, -, *, ×, \times, \cdot or \div: a calculation, not its value.
_PLAIN = r"[-+]?(?:\d+(?:\.\d+)?|\.\d+)"
_CALCULATION = re.compile(rf"{_PLAIN}(?:\s*(?:[-+*×]|\\times|\\cdot|\\div)\s*{_PLAIN})+")


def normalize_answer(s) -> str | None:
    """A canonical string for an answer: wrappers, spacing, thousands separators, trailing
    punctuation and a trailing percent sign removed; `\\dfrac`/`\\tfrac` spelled `\\frac`.
    None or empty stays None."""
    return None if s is None else _normalize(str(s))


@lru_cache(maxsize=1 << 16)  # a pool repeats the same few answers many times
def _normalize(s: str) -> str | None:
    s = s.strip()
    for _ in range(3):  # wrappers can nest: $\boxed{\text{B}}$
        before = s
        for pat, rep in _WRAPPERS:
            s = pat.sub(rep, s).strip()
        if s == before:
            break
    for tok in _DROP:
        s = s.replace(tok, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s)
    s = _SPACES.sub(" ", s).strip().rstrip(".").strip()
    s = _PERCENT.sub("", s)
    if s.startswith("\\$"):
        s = s[2:].strip()
    s = final_value(s)
    if s[:1].isalpha():
        s = spelled_number(s, whole=True) or s
    return s or None


def final_value(s: str) -> str:
    """The right-hand side of a final equation whose other sides are calculations without a
    variable ("13 + 16 = 29" → "29", "2 + 2 = 4"); an equation with a variable (`x = 5`,
    `y = 2x + 1`) stays whole, as do inequalities."""
    if "=" not in s or _RELATION.search(s):
        return s
    sides = _EQUALS.split(s)
    last = sides[-1].strip()
    if not last or any(_VARIABLE.search(side) for side in sides[:-1]):
        return s
    return last


def calculation(s: str) -> bool:
    """Whether the normalised answer is plain numbers joined by arithmetic operators ("24 + 6",
    "3 \\times 4"): a calculation left undone, which is no number's value (see `equivalent`)."""
    return _CALCULATION.fullmatch(s) is not None


def as_number(s: str) -> Fraction | None:
    """The exact value of a plain number or simple fraction string, else None."""
    t = s.replace(" ", "")
    if _NUM.fullmatch(t):
        return Fraction(t)
    m = _FRAC.fullmatch(t) or _SLASH.fullmatch(t)
    if not m:
        return None
    groups = m.groups()
    sign = -1 if (len(groups) == 3 and groups[0] == "-") else 1
    num, den = int(groups[-2]), int(groups[-1])
    return None if den == 0 else sign * Fraction(num, den)


@lru_cache(maxsize=None)
def _parsed(s: str):
    from math_verify import parse

    main = threading.current_thread() is threading.main_thread()
    return parse("\\boxed{" + s + "}", parsing_timeout=TIMEOUT_S if main else None)


@lru_cache(maxsize=None)
def _fingerprint(s: str) -> tuple[frozenset, complex] | None:
    """(free symbols, value at a fixed point) of an answer that math-verify parses to a plain
    expression — not an equation, set, interval, tuple or matrix, which have their own comparison
    rules — else None. Each symbol takes a value fixed by its name, so equal expressions in the
    same symbols give equal values. A percent sign left inside an expression is math-verify's to read."""
    import zlib

    from sympy import Expr

    if "%" in s:
        return None
    parsed = _parsed(s)
    expr = parsed[0] if parsed else None
    if not isinstance(expr, Expr) or getattr(expr, "is_Relational", False):
        return None
    symbols = expr.free_symbols
    point = {x: 0.31 + (zlib.crc32(str(x).encode()) % 1000) / 701 for x in symbols}
    try:
        value = complex(expr.evalf(30, subs=point))
    except (TypeError, ValueError, AttributeError, ArithmeticError, RecursionError):
        return None
    if value != value or abs(value) == float("inf"):
        return None
    return frozenset(str(x) for x in symbols), value


def _clearly_different(a: str, b: str) -> bool:
    """Whether verify() could only say no (it costs 20-300 ms a call): two constants, or two
    expressions in the same symbols, whose values differ far beyond math-verify's 6-decimal
    rounding; or a constant against an expression in some variable."""
    fa, fb = _fingerprint(a), _fingerprint(b)
    if fa is None or fb is None:
        return False
    (sa, va), (sb, vb) = fa, fb
    if sa != sb:
        return not sa or not sb
    return abs(va - vb) > 1e-4 * max(1.0, abs(va), abs(vb))


def _math_verify(a: str, b: str) -> bool:
    from math_verify import verify

    pa, pb = _parsed(a), _parsed(b)
    if not pa or not pb or _clearly_different(a, b):
        return False
    limit = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    if verify(pa, pb, timeout_seconds=limit):
        return True
    # verify() is asymmetric (gold first) only for equations and relations (`x = 5` vs `5`); an
    # answer matches if it does so in either role, which keeps the relation symmetric.
    relational = any(getattr(p[0], "is_Relational", False) for p in (pa, pb))
    return relational and bool(verify(pb, pa, timeout_seconds=limit))


@lru_cache(maxsize=1 << 20)
def _equivalent_normalized(a: str, b: str) -> bool:
    if a == b:
        return True
    ca, cb = calculation(a), calculation(b)
    if ca or cb:
        # "24 + 6" is not the answer 30 (nor is "6 + 24"): a model that stops at a calculation
        # has not answered, and must not be right by accident. The same calculation, spaced
        # differently, is the same answer.
        return ca and cb and a.replace(" ", "") == b.replace(" ", "")
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None:
        if na == nb:
            return True
        if na.denominator == 1 and nb.denominator == 1:
            return False  # two different integers: math-verify would only agree
    return _math_verify(a, b)


def equivalent(a, b) -> bool:
    """Whether two answers are the same answer. None (no answer) is equivalent to nothing."""
    na, nb = normalize_answer(a), normalize_answer(b)
    if na is None or nb is None:
        return False
    # Order the pair so that the cache holds each comparison once.
    return _equivalent_normalized(*sorted((na, nb)))


@dataclass
class AnswerGroups:
    """A problem's predictions as equivalence classes."""
    ids: np.ndarray        # (N,) class id per prediction, -1 for no answer
    reps: list[str]        # representative (first member, normalised) of each class

    def index(self, answer) -> int:
        """The class id of `answer`, or -1 if it matches no class."""
        for cid, rep in enumerate(self.reps):
            if equivalent(rep, answer):
                return cid
        return -1


def group_answers(answers) -> AnswerGroups:
    """Assign every answer to the first class whose representative it is equivalent to.

    Equivalence by math-verify is not guaranteed transitive; comparing with representatives in
    order of first appearance makes the grouping deterministic.
    """
    ids = np.full(len(answers), -1, dtype=np.int64)
    reps: list[str] = []
    seen: dict[str, int] = {}
    for i, a in enumerate(answers):
        na = normalize_answer(a)
        if na is None:
            continue
        cid = seen.get(na)
        if cid is None:
            cid = next((c for c, r in enumerate(reps) if _equivalent_normalized(*sorted((r, na)))), -1)
            if cid < 0:
                cid = len(reps)
                reps.append(na)
            seen[na] = cid
        ids[i] = cid
    return AnswerGroups(ids, reps)
