"""Benchmark files -> prompt JSONL (`tts data`): an id, the question in a prompt template, the gold.

    from strategies.datasets import convert
    for rec in convert("gsm8k", "gsm8k_test.jsonl", template="boxed", limit=5):
        print(rec["id"], rec["answer"])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from strategies.jsonl import InputError, read_records

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# Worked examples written for this project (not taken from any test set), in the answer format
# the other templates ask for, for models too small to follow an instruction alone.
_FEWSHOT = (
    "Question: Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?\n"
    "Answer: 3 boxes with 4 apples is 3 * 4 = 12 apples. After eating 2, 12 - 2 = 10 are left. "
    "The answer is \\boxed{10}.\n\n"
    "Question: A book costs $7 and a pen costs $2. How much do 2 books and 3 pens cost?\n"
    "Answer: 2 books cost 2 * 7 = 14 dollars. 3 pens cost 3 * 2 = 6 dollars. Together 14 + 6 = 20. "
    "The answer is \\boxed{20}.\n\n"
    "Question: Sara read 15 pages on Monday and twice as many on Tuesday. How many pages did she read?\n"
    "Answer: On Tuesday she read 2 * 15 = 30 pages. In total 15 + 30 = 45 pages. "
    "The answer is \\boxed{45}.\n\n"
)

TEMPLATES = {
    "boxed": "{question}\n\n" + BOXED_INSTRUCTION,
    "fewshot": _FEWSHOT + "Question: {question}\nAnswer:",
    "plain": "{question}",
}
TEMPLATE_HELP = {
    "boxed": "the question, then 'Please reason step by step, and put your final answer within \\boxed{}.'",
    "fewshot": "three worked examples ending in \\boxed{N}, then 'Question: ... Answer:'",
    "plain": "the question alone",
}


@dataclass(frozen=True)
class Format:
    question: str        # field with the question
    answer: str          # field with the gold answer
    id: str | None       # field with the record id (None: the 1-based index)
    fallback_answer: str | None = None  # used when `answer` is missing (MATH: the boxed solution)


FORMATS = {
    "gsm8k": Format("question", "answer", None),
    "math": Format("problem", "answer", "unique_id", fallback_answer="solution"),
    "mawps": Format("input", "target", None),
    "aime": Format("problem", "answer", "id"),
    "amc": Format("problem", "answer", "id"),
}
# Fields a converted record does not carry over (consumed, or long and not needed downstream).
_DROP = {"question", "problem", "solution", "input", "target"}


def apply_template(question: str, template: str) -> str:
    try:
        return TEMPLATES[template].replace("{question}", question.strip())
    except KeyError:
        raise InputError(f"unknown template {template!r}; choose from {', '.join(TEMPLATES)}") from None


def gold_problem(kind: str, fmt: Format, obj: dict) -> str | None:
    """Why this record's gold answer cannot be trusted, or None. A wrong gold silently scores every
    run against the wrong answer, so each of these is a bad line, never a guess: a missing or
    null answer, a list or object (which entry?), a GSM8K rationale without its `#### N` line,
    a MATH solution (no `answer`) without a `\\boxed{}`."""
    field = fmt.answer
    gold = obj.get(fmt.answer)
    if gold is None and fmt.fallback_answer and obj.get(fmt.fallback_answer) is not None:
        field, gold = fmt.fallback_answer, obj[fmt.fallback_answer]
        if isinstance(gold, str) and "\\boxed" not in gold and "\\fbox" not in gold:
            return f"no `{fmt.answer}`, and the `{field}` has no \\boxed{{}} to take the gold answer from"
    if gold is None:
        return f"no `{fmt.answer}` (the gold answer)"
    if isinstance(gold, (list, dict)):
        return f"`{field}` is a {'list' if isinstance(gold, list) else 'JSON object'}; a gold answer is one string or number"
    if kind == "gsm8k" and (not isinstance(gold, str) or "####" not in gold):
        return f"`{field}` has no '#### N' line (GSM8K's gold answer follows ####)"
    if isinstance(gold, str) and not gold.strip():
        return f"`{field}` is empty"
    return None


def convert(kind: str, path: str, template: str = "boxed", limit: int | None = None,
            question_field: str = "question", answer_field: str = "answer",
            id_field: str | None = "id", on_bad: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Yield prompt records {id, prompt, answer, ...metadata} from a benchmark file.

    `kind` is one of FORMATS or `jsonl` (generic: the *_field arguments name the fields). The gold
    answer is normalised as `tts eval` compares it (GSM8K's `#### 18` -> `18`). A bad line (not
    JSON, no question, an untrustworthy gold answer: gold_problem) raises InputError naming it; with
    `on_bad`, that function gets the same message and the line is left out.
    """
    from verifiers import normalize_gold

    if kind == "jsonl":
        fmt = Format(question_field, answer_field, id_field)
    elif kind in FORMATS:
        fmt = FORMATS[kind]
    else:
        raise InputError(f"unknown dataset {kind!r}; choose from {', '.join([*FORMATS, 'jsonl'])}")
    apply_template("", template)  # reject an unknown template before reading anything
    name = "<stdin>" if path in (None, "-") else path
    for n, rec in enumerate(read_records(path), start=1):
        if limit is not None and n > limit:
            return
        line, obj = rec.line, rec.data
        question = obj.get(fmt.question) if obj is not None else None
        why = (rec.error if obj is None
               else f"{name} line {line}: no `{fmt.question}` text (the question)"
               if not isinstance(question, str) or not question.strip()
               else None)
        if why is None and gold_problem(kind, fmt, obj):
            why = f"{name} line {line}: {gold_problem(kind, fmt, obj)}"
        if why is not None:
            if on_bad is None:
                raise InputError(why)
            on_bad(why)
            continue
        gold = obj.get(fmt.answer)
        if gold is None and fmt.fallback_answer:
            gold = obj.get(fmt.fallback_answer)
        rid = obj.get(fmt.id) if fmt.id else None
        meta = {k: v for k, v in obj.items() if k not in _DROP | {fmt.question, fmt.answer, fmt.id, "id"}}
        yield {"id": n if rid is None else rid, "prompt": apply_template(question, template),
               "answer": normalize_gold(gold), **meta}
