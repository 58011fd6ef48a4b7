"""Pull the final answer out of a generated text.

Each extractor returns the answer (a string) or None; never a sentence. `extract_answer` picks one
by name; `auto` tries, in the order of how deliberately a model marks its answer: the last
`\\boxed{}`, GSM8K's `#### N`, the answer after a phrase such as "the answer is" (read by
math-verify), then the last number. Before any of them, the text is cut where the model starts a
new few-shot turn (a line opening with "Question:", "Q:" or "Problem:"), as lm-eval-harness's
stop sequences cut a generation: what follows answers a question nobody asked.
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Callable

from verifiers.equivalence import final_value
from verifiers.numbers import NUMBER, last_number, plain_numbers, spelled_number

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*")
_GSM8K = re.compile(r"####\s*([^\n]+)")
# Where a model announces its answer. math-verify's own anchors also accept "answer" followed by
# any number within 50 characters ("to find the answer we add 3 and 5" gives 3), so we find the
# announcement ourselves and let math-verify read the answer that follows it.
_ANSWER_IS = re.compile(r"(?:final\s+answer|the\s+answer|answer)\s*(?:is|:|=)", re.IGNORECASE)
_LEADING_NUMBER = re.compile(r"^\$?\s*(" + NUMBER.pattern + r")(?![\w/^])")
_CHOICE_PATTERNS = [
    re.compile(r"answer\s*(?:is|:)\s*\(?\s*([A-E])\s*\)?(?![\w])", re.IGNORECASE),
    re.compile(r"\(([A-E])\)"),
]
# The rest of an announcement's sentence (a full stop ends it, a decimal point does not).
_SENTENCE = re.compile(r"[^\n]*?(?=\.\s|\.$|\n|$)")
# A word: two letters or more, not the name of a LaTeX command ("\\pi", "\\frac").
_WORD = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
# Where a continuation starts a new few-shot turn: these at the start of a line (not the text's
# first line: a model may restate the question before answering it).
TURN_MARKERS = ("Question:", "Q:", "Problem:")
# math-verify's time limit (seconds) for one parse; SIGALRM, so main thread only (as in equivalence).
PARSE_TIMEOUT_S = 5


@lru_cache(maxsize=64)
def _turn_pattern(markers: tuple[str, ...]) -> re.Pattern:
    return re.compile(r"\n[ \t]*(?:" + "|".join(re.escape(m) for m in markers) + ")")


def cut_at_turn(text: str, markers=TURN_MARKERS) -> str:
    """`text` up to the first line that opens with one of `markers` (none: the whole text)."""
    markers = tuple(m for m in (markers or ()) if m)
    if not markers:
        return text
    m = _turn_pattern(markers).search(text)
    return text[:m.start()] if m else text


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


def gsm8k_line(text: str) -> str | None:
    """What follows the last `####` on its line (GSM8K's answer marker), stripped."""
    hits = _GSM8K.findall(text)
    return (hits[-1].strip().rstrip(".").strip() or None) if hits else None


def extract_gsm8k(text: str) -> str | None:
    """The number after the last `####`; anything after it on the line (units, or a run-on
    continuation) is not part of the answer, and a line without a number gives None."""
    line = gsm8k_line(text)
    if not line:
        return None
    num = _LEADING_NUMBER.match(plain_numbers(line))
    return num.group(1) if num else spelled_number(line.lstrip("$ "))


@lru_cache(maxsize=1)
def _anchored_targets():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    # Only anchored patterns: an answer phrase with nothing mathematical after it must fall through
    # to the next rule rather than to some other number of the text.
    return (LatexExtractionConfig(try_extract_without_anchor=False),
            ExprExtractionConfig(try_extract_without_anchor=False))


def _parse(text: str, targets) -> list:
    from math_verify import parse

    main = threading.current_thread() is threading.main_thread()
    # first_match: math-verify tries only its best-placed match, and returns [value, string] for it
    # ([string] alone when it does not parse), so the string is the one the value came from.
    return parse(text, targets, fallback_mode="first_match", extraction_mode="first_match",
                 parsing_timeout=PARSE_TIMEOUT_S if main else None)


def _math_verify_answer(segment: str) -> str | None:
    """The answer math-verify reads after the announcement that opens `segment`, as the string it
    matched (normalised by it), or None when that string does not parse as mathematics."""
    got = _parse(segment, _anchored_targets())
    if len(got) == 2 and isinstance(got[1], str):
        # its plain-expression match runs on over the sentence's full stop ("5/2.")
        return got[1].strip().rstrip(".,;:").strip() or None
    return None


def _plain_formula(phrase: str) -> str | None:
    """The announcement's sentence when it is a formula written without `$` ("x^2+1", "(1, 2)",
    "5/2"): no words in it, and it parses. math-verify's anchored patterns only read numbers or
    `$...$` after an announcement."""
    from math_verify import LatexExtractionConfig

    formula = _SENTENCE.match(phrase.lstrip(" :*")).group(0).strip().strip("*").strip()
    if not formula or _WORD.search(formula) or "$" in formula or _BOXED.search(formula):
        return None  # words; or math-verify's to read (`$...$`, a box)
    got = _parse("$" + formula + "$", (LatexExtractionConfig(),))
    return formula if len(got) == 2 else None


def extract_answer_is(text: str) -> str | None:
    """The mathematical answer after the last "the answer is" / "final answer is" / "answer:" that
    is followed by one (each announcement is read up to the next); None rather than a sentence."""
    text = plain_numbers(text)
    hits = list(_ANSWER_IS.finditer(text))
    for j in range(len(hits) - 1, -1, -1):
        end = hits[j + 1].start() if j + 1 < len(hits) else len(text)
        # A formula filling the sentence first: math-verify's plain-text reader wants a number and
        # looks up to 50 characters on, past the sentence ("answer is x^2+1. Then 3" gives 3).
        # A number in words ("the answer is twelve") before math-verify, which reads no words
        # and would take a number further on instead.
        got = (_plain_formula(text[hits[j].end():end])
               or spelled_number(text[hits[j].end():end].lstrip(" :*$"))
               or _math_verify_answer(text[hits[j].start():end]))
        if got:
            return got
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in the text (integer, decimal, fraction; `1.5e3` and `2 1/2` read whole)."""
    return last_number(text)


def _boxed_choice(text: str) -> str | None:
    boxed = extract_boxed(text)
    if boxed is not None:
        m = re.fullmatch(r"\(?\s*(?:\\text\{)?\s*\(?([A-Ea-e])\)?\s*\}?\s*\)?", boxed)
        if m:
            return m.group(1).upper()
    return None


def extract_choice(text: str) -> str | None:
    """A multiple-choice letter A-E: boxed, after "answer is", or the last "(X)"."""
    got = _boxed_choice(text)
    if got:
        return got
    for pat in _CHOICE_PATTERNS:
        hits = pat.findall(text)
        if hits:
            return hits[-1].upper()
    return None


def extract_marked_choice(text: str) -> str | None:
    """A multiple-choice letter the text marks as its answer: boxed, or after "answer is"."""
    got = _boxed_choice(text)
    if got:
        return got
    hits = _CHOICE_PATTERNS[0].findall(text)
    return hits[-1].upper() if hits else None


def _first(text: str, rules) -> str | None:
    for fn in rules:
        got = fn(text)
        if got:
            return got
    return None


def extract_auto(text: str) -> str | None:
    return _first(text, (extract_boxed, extract_gsm8k, extract_answer_is, extract_last_number))


def extract_auto_marked(text: str) -> str | None:
    return _first(text, (extract_boxed, extract_gsm8k, extract_answer_is))


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "auto": extract_auto,
    "boxed": extract_boxed,
    "gsm8k": extract_gsm8k,
    "answer-is": extract_answer_is,
    "last-number": extract_last_number,
    "choice": extract_choice,
}
# Each extraction restricted to an answer the text marks explicitly (`\\boxed{}`, `####`, "the
# answer is", "Final Answer:"): never the last-number fallback, nor a bare "(X)". A text cut off by
# the token limit answers only this way (see strategies/aggregators/api.py, `truncated`).
MARKED: dict[str, Callable[[str], str | None] | None] = {
    "auto": extract_auto_marked,
    "boxed": extract_boxed,
    "gsm8k": extract_gsm8k,
    "answer-is": extract_answer_is,
    "last-number": None,
    "choice": extract_marked_choice,
}


def extract_answer(text: str | None, method: str = "auto", stop=TURN_MARKERS,
                   marked: bool = False) -> str | None:
    """The final answer in `text` by extraction `method` (see EXTRACTORS), or None.

    The text is first cut at a new turn (`cut_at_turn` with `stop`; empty: no cut). `marked`: only
    an answer the text marks explicitly counts (MARKED), as for a text cut off by the token limit.
    A final equation answers with its right-hand side ("2 + 2 = 4" gives "4"; `final_value`).
    """
    try:
        fn = (MARKED if marked else EXTRACTORS)[method]
    except KeyError:
        raise ValueError(f"unknown extraction {method!r}; choose from {', '.join(EXTRACTORS)}") from None
    if not text or fn is None:
        return None
    got = fn(cut_at_turn(text, stop))
    return final_value(got) if got else got
