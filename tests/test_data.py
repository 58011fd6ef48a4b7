"""`tts data`: benchmark files -> prompt JSONL."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tts_cli.app import app
from strategies.datasets import BOXED_INSTRUCTION, TEMPLATES, convert
from strategies.jsonl import InputError

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write(tmp_path, rows, name="in.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_gsm8k_gold_from_rationale_and_index_ids(tmp_path):
    path = write(tmp_path, [{"question": "Q1?", "answer": "3 + 15 = 18\n#### 18"},
                            {"question": "Q2?", "answer": "so\n#### 1,200"}])
    out = list(convert("gsm8k", path))
    assert [r["id"] for r in out] == [1, 2] and [r["answer"] for r in out] == ["18", "1200"]
    assert out[0]["prompt"] == "Q1?\n\n" + BOXED_INSTRUCTION
    assert set(out[0]) == {"id", "prompt", "answer"}


def test_math_ids_metadata_and_boxed_fallback(tmp_path):
    path = write(tmp_path, [{"problem": "P", "solution": r"... \boxed{\dfrac{1}{2}}", "subject": "Algebra",
                             "level": 2, "unique_id": "test/a/1.json"}])
    (rec,) = convert("math", path)
    assert rec == {"id": "test/a/1.json", "prompt": "P\n\n" + BOXED_INSTRUCTION, "answer": r"\frac{1}{2}",
                   "subject": "Algebra", "level": 2}


def test_mawps_aime_amc_and_generic_jsonl(tmp_path):
    assert next(convert("mawps", write(tmp_path, [{"input": "I", "target": 39.0}])))["answer"] == "39"
    aime = next(convert("aime", write(tmp_path, [{"id": 60, "problem": "P", "answer": "204"}])))
    assert aime["id"] == 60 and aime["answer"] == "204"
    path = write(tmp_path, [{"q": "What?", "gold": 7, "key": "k1"}, {"q": "Who?", "gold": "B"}])
    out = list(convert("jsonl", path, "plain", question_field="q", answer_field="gold", id_field="key"))
    assert [(r["id"], r["prompt"], r["answer"]) for r in out] == [("k1", "What?", "7"), (2, "Who?", "B")]


def test_templates_and_limit(tmp_path):
    path = write(tmp_path, [{"question": f"Q{i}", "answer": "#### 1"} for i in range(5)])
    assert len(list(convert("gsm8k", path, limit=2))) == 2
    few = next(convert("gsm8k", path, "fewshot"))["prompt"]
    assert few.startswith(TEMPLATES["fewshot"].split("{question}")[0]) and few.endswith("Question: Q0\nAnswer:")
    assert "\\boxed{" in few
    with pytest.raises(InputError, match="unknown template"):
        list(convert("gsm8k", path, "nope"))


def test_missing_question_names_the_line(tmp_path):
    path = write(tmp_path, [{"question": "Q", "answer": "#### 1"}, {"answer": "#### 2"}])
    with pytest.raises(InputError, match=r"line 2: no `question`"):
        list(convert("gsm8k", path))


def test_cli_writes_jsonl(tmp_path):
    path = write(tmp_path, [{"question": "Q1?", "answer": "#### 18"}])
    result = CliRunner().invoke(app, ["data", "gsm8k", path, "--template", "plain"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"id": 1, "prompt": "Q1?", "answer": "18"}
    assert "fewshot" in CliRunner().invoke(app, ["data", "--help"]).stdout


@pytest.mark.skipif(not DATA.exists(), reason="../shared/data not present")
@pytest.mark.parametrize("kind, name, count, first_id, first_answer", [
    ("gsm8k", "gsm8k_test.jsonl", 1319, 1, "18"),
    ("math", "math500.jsonl", 500, "test/precalculus/807.json", r"( 3, \frac{\pi}{2} )"),
    ("mawps", "mawps_multiarith.jsonl", 600, 1, "39"),  # 600 records, no final newline
    ("aime", "aime24.jsonl", 30, 60, None),
    ("amc", "amc23.jsonl", 40, 0, None),
])
def test_shared_benchmark_files(kind, name, count, first_id, first_answer):
    out = list(convert(kind, str(DATA / name)))
    assert len(out) == count and out[0]["id"] == first_id
    assert all(r["prompt"].endswith(BOXED_INSTRUCTION) and r["answer"] for r in out)
    if first_answer is not None:
        assert out[0]["answer"] == first_answer


# --- gold answers that would have to be guessed are bad lines ---------------------------------------

@pytest.mark.parametrize("kind,row,field", [
    ("mawps", {"input": "Q?"}, "target"),                                    # missing: was null
    ("mawps", {"input": "Q?", "target": None}, "target"),
    ("mawps", {"input": "Q?", "target": [18, 19]}, "target"),                # list: was its first entry
    ("jsonl", {"question": "Q?", "answer": {"value": 3}}, "answer"),
    ("gsm8k", {"question": "Q?", "answer": "3 + 15 = 18"}, "answer"),        # no ####: was the whole rationale
    ("gsm8k", {"question": "Q?", "answer": 18}, "answer"),
    ("math", {"problem": "P?", "solution": "so it is 4."}, "solution"),     # no \boxed{}: was the whole solution
])
def test_untrustworthy_gold_is_a_bad_line_naming_it(tmp_path, kind, row, field):
    good = {"mawps": {"input": "G?", "target": 5}, "jsonl": {"question": "G?", "answer": "5"},
            "gsm8k": {"question": "G?", "answer": "so\n#### 5"}, "math": {"problem": "G?", "answer": "5"}}[kind]
    path = write(tmp_path, [good, row, good])
    with pytest.raises(InputError, match=rf"line 2: .*`{field}`"):
        list(convert(kind, path))
    from tests.cli import tts

    r = tts("data", kind, path)
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1 and "line 2" in r.stderr
    assert len(r.records()) == 1  # the line before it was written: records stream
    r = tts("data", kind, path, "--on-error", "skip")
    assert r.code == 0, r.stderr
    assert [rec["id"] for rec in r.records()] == [1, 3] and [rec["answer"] for rec in r.records()] == ["5", "5"]
    assert "line 2" in r.stderr and "skip" in r.stderr


def test_on_error_skip_keeps_going_past_malformed_lines(tmp_path):
    from tests.cli import tts

    path = tmp_path / "in.jsonl"
    path.write_text('{"question": "A?", "answer": "#### 1"}\nnot json\n{"answer": "#### 2"}\n'
                    '{"question": "C?", "answer": "#### 3"}\n')
    r = tts("data", "gsm8k", path, "--on-error", "skip")
    assert r.code == 0 and [rec["answer"] for rec in r.records()] == ["1", "3"]
    assert "line 2" in r.stderr and "line 3" in r.stderr
