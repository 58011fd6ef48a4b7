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
