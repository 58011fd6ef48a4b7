"""Answer extraction and equivalence, shared by every aggregator and by `tts eval`.

    from verifiers import extract_answer, equivalent, normalize_gold, group_answers
    extract_answer("... so the answer is \\boxed{\\frac{1}{2}}.")   # '\\frac{1}{2}'
    equivalent("\\frac{1}{2}", "0.5")                              # True
    normalize_gold("... #### 1,000")                              # '1000'
    group_answers(["18", "18.0", None, "16"]).ids                 # [0, 0, -1, 1]
"""
from verifiers.equivalence import AnswerGroups, as_number, equivalent, group_answers, normalize_answer
from verifiers.extract import EXTRACTORS, extract_answer
from verifiers.gold import normalize_gold

__all__ = [
    "AnswerGroups", "EXTRACTORS", "as_number", "equivalent", "extract_answer", "group_answers",
    "normalize_answer", "normalize_gold",
]
