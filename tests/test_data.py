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
