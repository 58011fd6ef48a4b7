"""The HTML trace report opened by a real browser: headless Chromium (Debian's `chromium`).

Marked slow; skipped when no Chromium is installed (`.ci/run` installs it under CI). The page is
written by the CLI, as a user would, then screenshotted (must not be blank) and dumped as the DOM
Chromium built (must contain every sample's answer and text).
"""
import shutil
import subprocess
import time
from html.parser import HTMLParser

import numpy as np
import pytest

from tests.cli import tts
from tests.runs import sample, tokenizer, write_jsonl

pytestmark = pytest.mark.slow
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")


def chromium(tmp_path, *args, timeout=120):
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    profile.mkdir()
    # no network, no background services, a fresh profile: the page must stand on its own
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)


class Text(HTMLParser):
    def __init__(self, html):
        super().__init__(convert_charrefs=True)
        self.parts = []
        self.feed(html)

    def handle_data(self, data):
        self.parts.append(data)


@needs_chromium
def test_report_renders_in_chromium(tmp_path):
    tok = tokenizer()
    rng = np.random.default_rng(0)
    answers = ["1001", "1002", "1001", "2718", None, "1001", "31415", "1002"]
    samples = [sample(tok, i, f"Sample {i} reasons.\nThe answer is {a or 'unclear'}.", a, rng=rng,
                      finish="pruned" if i == 6 else "stop") for i, a in enumerate(answers)]
    rec = {"id": "q1", "prompt": "What is it?", "answer": "1002", "run": {"model": "tiny-random"},
           "samples": samples, "aggregates": {"majority": {"answer": "1001", "confidence": 0.375}}}
    run = write_jsonl(tmp_path / "run.jsonl", [rec])
    page = tmp_path / "report.html"
    assert tts("show", run, "--html", page).code == 0

    shot = tmp_path / "shot.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri())
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))[..., :3]
    assert img.shape[:2] == (1400, 1000)
    ink = np.any(img < 0.9, axis=2).mean()  # share of pixels that are not (near) white
    colours = len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    assert ink > 0.02 and colours > 20, (ink, colours)

    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).stdout
    text = "".join(Text(dom).parts)
    for s in samples:
        assert s["text"] in text
        if s["pred"] is not None:
            assert f"answer {s['pred']}" in text
    assert "stopped early: pruned" in text


@needs_chromium
def test_a_big_record_stays_usable(tmp_path):
    """64 samples × 1,000 tokens in one record: written, and laid out by the browser within the
    time limit (the figure in docs/experiments.md)."""
    tok = tokenizer()
    rng = np.random.default_rng(1)
    words = "the answer is therefore we add seven and five to get twelve apples then subtract".split()
    samples = []
    for i in range(64):
        # the byte tokenizer spells ASCII one token per character: 1,000 characters, 1,000 tokens
        suffix = f" = {i}."
        filler = " ".join(rng.choice(words, 300))
        samples.append(sample(tok, i, filler[:1000 - len(suffix)] + suffix, str(i), rng=rng, finish="length"))
    assert all(s["n_tokens"] == 1000 for s in samples)
    run = write_jsonl(tmp_path / "big.jsonl", [{"id": 1, "answer": "3", "samples": samples}])
    page = tmp_path / "big.html"
    assert tts("show", run, "--html", page).code == 0
    start = time.monotonic()
    dom = chromium(tmp_path, "--dump-dom", page.as_uri(), timeout=120).stdout
    seconds = time.monotonic() - start
    assert "answer 63" in "".join(Text(dom).parts)
    print(f"64 x 1000 tokens: {page.stat().st_size / 1e6:.2f} MB, chromium --dump-dom {seconds:.1f} s")
