"""Numbers as a model writes them in prose: the last one in a text, and the two spellings that
math-verify's own number reader takes apart (`1.5e3` reads as 1.5, `2 1/2` as two numbers).

`plain_numbers` rewrites those two spellings into forms every later step reads whole (`1500`,
`5/2`); `last_number` is the fallback extraction when a text marks no answer at all.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction

# Scientific notation: a mantissa, e/E, an exponent; not part of a word ("2e5x", "x1e3").
_SCIENTIFIC = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?[eE][-+]?\d+)(?!\w|\.\d)")
# A mixed number "2 1/2": a whole part, one space, a proper fraction; not inside a longer run of
# digits, decimals or slashes ("1.2 1/2", "2 1/2/3").
_MIXED = re.compile(r"(?<![\w.,/])(-?)(\d+) (\d+)/(\d+)(?![\w/]|\.\d)")
# What counts as a number: a fraction of integers (not inside a date such as 12/25/2023), or an
# integer or decimal with thousands separators ("1,234.5", ".5"). A sign belongs to it unless it
# follows a term: in "x^2+1" or "3-4" it is an operator.
_SIGN = r"(?:(?<![\w)\]}])[-+])?"
NUMBER = re.compile(
    rf"{_SIGN}(?<![\d/.])\d+/\d+(?![\d/])"
    rf"|{_SIGN}(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?|{_SIGN}\.\d+"
)


def _scientific(m: re.Match) -> str:
    try:
        return format(Decimal(m.group(1)), "f")
    except InvalidOperation:  # an exponent too large to write out: leave the text alone
        return m.group(0)


def _mixed(m: re.Match) -> str:
    sign, whole, num, den = m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))
    if not 0 < num < den:  # "3 4/2" or "1 0/5" is not how anyone writes a mixed number
        return m.group(0)
    value = whole + Fraction(num, den)
    return f"{sign}{value.numerator}/{value.denominator}"


def plain_numbers(text: str) -> str:
    """`text` with scientific notation written out (`1.5e3` → `1500`) and mixed numbers as
    improper fractions (`2 1/2` → `5/2`)."""
    if "e" in text or "E" in text:
        text = _SCIENTIFIC.sub(_scientific, text)
    if "/" in text:
        text = _MIXED.sub(_mixed, text)
    return text


def last_number(text: str) -> str | None:
    """The last number in the text, as written (after `plain_numbers`)."""
    hits = NUMBER.findall(plain_numbers(text))
    return hits[-1] if hits else None
