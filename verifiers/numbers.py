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


# --- numbers written in words ("twelve", "one hundred and five", "forty-two") ---------------

_UNITS = {w: v for v, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * v for v, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"thousand": 10 ** 3, "million": 10 ** 6, "billion": 10 ** 9, "trillion": 10 ** 12}
# longest first, so that "sixteen" is not read as "six" followed by something else
_NUMBER_WORD = "|".join(sorted([*_UNITS, *_TENS, "hundred", *_SCALES], key=len, reverse=True))
# A run of number words from the start of a phrase: joined by spaces or hyphens, "and" allowed
# between them ("one hundred and five"), an optional sign word first.
_SPELLED = re.compile(
    rf"(?P<sign>(?:minus|negative)\s+)?(?P<words>(?:{_NUMBER_WORD})(?:(?:[\s-]+|\s+and\s+)(?:{_NUMBER_WORD}))*)\b",
    re.IGNORECASE)
# Words after a run that make it something other than a whole number: a fraction ("two thirds",
# "three sixteenths"), a decimal ("three point five"), a multiple ("two dozen"), a part ("one of"),
# or the start of a calculation ("two times three").
_NOT_WHOLE = re.compile(
    r"[\s-]+(?:point|dozens?|half|halves|thirds?|quarters?"
    r"|[a-z]*(?:four|fif|six|seven|eigh|nin|ten|teen|twelf|tie|hundred|thousand|million)ths?"
    r"|times|plus|minus|divided|over|of)\b", re.IGNORECASE)


def _spelled_value(words: list[str]) -> int | None:
    """The value of a run of number words, or None when the run is not one number as people
    write it ("two three", "thousand thousand", "twenty ninety", "zero one")."""
    if "zero" in words:
        return 0 if words == ["zero"] else None
    total, current, last, last_scale = 0, 0, None, None
    for w in words:
        if w in _UNITS:
            if last == "unit" or (last == "tens" and _UNITS[w] >= 10):
                return None
            current, last = current + _UNITS[w], "unit"
        elif w in _TENS:
            if last in ("unit", "tens"):
                return None
            current, last = current + _TENS[w], "tens"
        elif w == "hundred":
            # "three hundred", also "twelve hundred"; never "hundred" alone or twice
            if last not in ("unit", "tens") or not 0 < current % 1000 < 100:
                return None
            current, last = current * 100, "hundred"
        else:
            scale = _SCALES[w]
            if not 0 < current < 1000 or (last_scale is not None and scale >= last_scale):
                return None
            total, current, last, last_scale = total + current * scale, 0, "scale", scale
    return total + current


def spelled_number(phrase: str, whole: bool = False) -> str | None:
    """The whole number that `phrase` opens with when it is written in words ("twelve apples" →
    "12", "one hundred and five" → "105", "minus three" → "-3"); None for anything else,
    including the start of a fraction or decimal ("two thirds", "three point five"). `whole`: the
    phrase must be the number and nothing else."""
    m = (_SPELLED.fullmatch if whole else _SPELLED.match)(phrase)
    if not m or _NOT_WHOLE.match(phrase, m.end()):
        return None
    words = [w for w in re.split(r"[\s-]+", m.group("words").lower()) if w != "and"]
    value = _spelled_value(words)
    if value is None:
        return None
    return str(-value if m.group("sign") and value else value)
