"""Gold answers in the formats benchmarks ship them, normalised like predictions."""
from __future__ import annotations

from verifiers.equivalence import normalize_answer
from verifiers.extract import extract_boxed, extract_gsm8k, gsm8k_line


def normalize_gold(answer) -> str | None:
    """The gold answer as a canonical string.

    Numbers are written without a spurious `.0`; a GSM8K rationale ending in `#### 18` gives `18`;
    a MATH-style solution gives the content of its last `\\boxed{}`; a list gives its first entry.
    """
    if answer is None:
        return None
    if isinstance(answer, list):
        return normalize_gold(answer[0]) if answer else None
    if isinstance(answer, bool):
        return str(answer).lower()
    if isinstance(answer, float) and answer.is_integer():
        return str(int(answer))
    if isinstance(answer, (int, float)):
        return str(answer)
    text = str(answer)
    if "####" in text:
        # a gold answer is written by people: a non-numeric one is kept whole
        return normalize_answer(extract_gsm8k(text) or gsm8k_line(text))
    if "\\boxed" in text or "\\fbox" in text:
        return normalize_answer(extract_boxed(text))
    return normalize_answer(text)
