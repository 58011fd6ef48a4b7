"""Pull the final answer out of a generated text.

Each extractor returns the answer as written (a string) or None. `extract_answer` picks one by
name; `auto` tries the boxed form, then "the answer is", then the last number, because that is the
order of how deliberately a model marks its answer.
"""
from __future__ import annotations

import re
from typing import Callable

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K = re.compile(r"####\s*([^\n]+)")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)\s*(?::\s*)?(.+)", re.IGNORECASE
)
# A number, with optional sign, thousands separators and decimals ("1,234.5", "-3", ".5").
_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+")
_LEADING_NUMBER = re.compile(r"^\$?\s*(" + _NUMBER.pattern + r")(?![\w/^])")
_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)\s*\(?\s*([A-E])\s*\)?(?![\w])", re.IGNORECASE),
    re.compile(r"\(([A-E])\)"),
]


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """The content of the {...} group opening at `start`, matching nested braces."""
    depth = 0
    for j in range(start, len(text)):
        c = text[j]
        if c == "{" and (j == 0 or text[j - 1] != "\\"):
            depth += 1
        elif c == "}" and (j == 0 or text[j - 1] != "\\"):
            depth -= 1
            if depth == 0:
                return text[start + 1:j], j + 1
    return None  # unbalanced: the text was cut off inside the box


def extract_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} (or \\fbox{...}); also `\\boxed 5`."""
    found = None
    for m in _BOXED.finditer(text):
        pos = m.end()
        if pos < len(text) and text[pos] == "{":
            got = _braced(text, pos)
            if got is not None:
                found = got[0]
        else:  # `\boxed 42`: the argument is the next token
            tok = re.match(r"[^\s$]+", text[pos:])
            if tok and tok.group(0).rstrip(".,;"):
                found = tok.group(0).rstrip(".,;")
    return None if found is None else found.strip()


def extract_gsm8k(text: str) -> str | None:
    """GSM8K's `#### N` marker (the last one)."""
    hits = _GSM8K.findall(text)
    if not hits:
        return None
    ans = hits[-1].strip()
    num = _LEADING_NUMBER.match(ans)
    return num.group(1) if num else (ans.rstrip(".").strip() or None)


def _clean_phrase(phrase: str) -> str | None:
    phrase = phrase.strip()
    boxed = extract_boxed(phrase)
    if boxed is not None:
        return boxed
    math = re.match(r"^\$+([^$]+)\$+", phrase) or re.match(r"^\\\((.+?)\\\)", phrase)
    if math:
        return math.group(1).strip()
    num = _LEADING_NUMBER.match(phrase)
    if num:
        return num.group(1)
    # Otherwise the phrase up to the end of its sentence.
    phrase = re.split(r"\.\s|\.$|\n", phrase, maxsplit=1)[0]
    phrase = phrase.strip().strip("*").strip()
    return phrase or None


def extract_answer_is(text: str) -> str | None:
    """What follows the last "the answer is" / "answer:"."""
    hits = list(_ANSWER_IS.finditer(text))
    for m in reversed(hits):
        got = _clean_phrase(m.group(1))
        if got:
            return got
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in the text."""
    hits = _NUMBER.findall(text)
    return hits[-1] if hits else None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-E: boxed, after "answer is", or the last "(X)"."""
    boxed = extract_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"\(?\s*(?:\\text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\)?", boxed)
        if m:
            return m.group(1).upper()
    for pat in _CHOICE_PATTERNS:
        hits = pat.findall(text)
        if hits:
            return hits[-1].upper()
    return None


def extract_auto(text: str) -> str | None:
    for fn in (extract_boxed, extract_answer_is, extract_last_number):
        got = fn(text)
        if got:
            return got
    return None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "auto": extract_auto,
    "boxed": extract_boxed,
    "gsm8k": extract_gsm8k,
    "answer-is": extract_answer_is,
    "last-number": extract_last_number,
    "choice": extract_choice,
}


def extract_answer(text: str | None, method: str = "auto") -> str | None:
    """The final answer in `text` by extraction `method` (see EXTRACTORS), or None."""
    try:
        fn = EXTRACTORS[method]
    except KeyError:
        raise ValueError(f"unknown extraction {method!r}; choose from {', '.join(EXTRACTORS)}") from None
    if not text:
        return None
    return fn(text)
