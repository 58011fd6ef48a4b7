"""`tts show` through the real command line."""
import orjson
import pytest

from tests.cli import tts

RECORD = {"id": 7, "prompt": "2+2?", "answer": "4",
          "samples": [{"i": 0, "text": "It is 4.", "finish": "stop", "n_tokens": 5}]}
ANSI = "\x1b["


@pytest.mark.parametrize("color,coloured", [("always", True), ("never", False), ("auto", False)])
def test_color_always_survives_a_pipe(color, coloured):
    """The test's stdout is not a terminal, as with `| less -R`: only `always` keeps the codes."""
    r = tts("show", "-", "--color", color, input=orjson.dumps(RECORD).decode() + "\n")
    assert r.code == 0, r.stderr
    assert (ANSI in r.stdout) is coloured
    assert "It is 4." in r.stdout and "id 7" in r.stdout.replace(ANSI + "1m", "")


def test_color_takes_only_its_three_values():
    r = tts("show", "-", "--color", "alwyas", input=orjson.dumps(RECORD).decode() + "\n")
    assert r.code == 2 and len(r.stderr.strip().splitlines()) == 1 and "--color" in r.stderr


# --- terminal: --wrong-only, rounded confidences, ties ---------------------------------------------

def _agg_record(rid, answer, gold, scores):
    top = max(scores.values())
    return {"id": rid, "answer": gold, "samples": [{"i": 0, "text": "t", "finish": "stop"}],
            "aggregates": {"majority": {"answer": answer, "confidence": top, "scores": scores, "used": [0], "opts": {}}}}


def test_terminal_wrong_only_rounds_and_marks_ties(tmp_path):
    import orjson

    from tests.cli import tts

    third = 1 / 3
    recs = [_agg_record(1, "4", "4", {"4": 0.75, "5": 0.25}),                       # right
            _agg_record(2, "7", "8", {"7": third, "8": third, "9": third}),          # wrong, a 3-way tie
            _agg_record(3, "1", "2", {"1": 1.0})]                                    # wrong
    path = tmp_path / "agg.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    r = tts("show", path, "--wrong-only", "--color", "never")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines()[0] == "id 2"
    line = next(x for x in r.stdout.splitlines() if x.startswith("majority:"))
    assert line == f"majority: 7 (confidence {round(third, 4)} (3-way tie))"
    r = tts("show", path, "--id", "1", "--color", "never")
    assert "majority: 4 (confidence 0.75)" in r.stdout and "tie" not in r.stdout
    r = tts("show", path, "--id", "1", "--wrong-only")
    assert r.code == 2 and "no record with a wrong aggregate" in r.stderr
