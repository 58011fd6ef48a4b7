"""The HTML trace report and the signal plots, on hand-built runs (no model weights needed).

AUROCs are checked against a brute-force count over every (correct, incorrect) pair and lowest
windows against a loop over every window; the page is parsed with the standard library's HTML
parser, so escaping is judged the way a browser would see it.
"""
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from strategies.inspection.html import render_report
from strategies.inspection.signals import auroc
from strategies.inspection.tokens import token_pieces
from tests.cli import tts
from tests.runs import sample, tokenizer, write_jsonl


@pytest.fixture(scope="module")
def tok():
    return tokenizer()


class Page(HTMLParser):
    """Start tags, the visible text, and each element's title, as a browser would parse them."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags, self.text, self.titles = [], [], []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.titles.extend(v for k, v in attrs if k == "title")

    def handle_data(self, data):
        self.text.append(data)

    @property
    def all_text(self) -> str:
        return "".join(self.text)


# --- AUROC ------------------------------------------------------------------------------------

def brute_auroc(pos, neg):
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_min_window(conf, w):
    if len(conf) <= w:
        return sum(conf) / len(conf)
    return min(sum(conf[i:i + w]) / w for i in range(len(conf) - w + 1))


def hand_built_run(tok, rng):
    """Eight problems with gold answers (and one without), 6 samples each; some signal values are
    repeated on purpose so that ties occur between correct and incorrect samples."""
    records = []
    for r in range(8):
        gold = str(10 + r)
        samples = []
        for i in range(6):
            kind = rng.integers(0, 4)
            pred = gold if kind == 0 else (f"{gold}.0" if kind == 1 else (None if kind == 2 and i == 5 else str(r)))
            text = f"So the answer is {pred}." if pred is not None else "I am not sure"
            n = len(tok.encode(text, add_special_tokens=False))
            conf = np.round(rng.choice([2.0, 5.0, 7.5, 9.0], n) + (0.5 if pred == gold else 0.0), 4)
            s = sample(tok, i, text, pred, rng=rng, conf=conf)
            s["self_certainty"] = float(rng.choice([3.0, 4.0, 5.0]))  # coarse: many ties
            samples.append(s)
        records.append({"id": r, "prompt": f"problem {r}", "answer": gold, "samples": samples,
                        "aggregates": {"majority": {"answer": samples[0]["pred"], "confidence": 0.5}}})
    records.append({"id": "nogold", "prompt": "?", "samples": records[0]["samples"]})
    return records


def test_plot_signals_json_auroc_equals_a_pairwise_count(tmp_path, tok):
    records = hand_built_run(tok, np.random.default_rng(7))
    path = write_jsonl(tmp_path / "run.jsonl", records)
    window = 4
    res = tts("plot", "signals", path, "--json", "--window", window)
    assert res.code == 0, res.stderr
    got = json.loads(res.stdout)

    rows = [(s, float(s["pred"]) == float(r["answer"]) if s["pred"] is not None else False)
            for r in records if "answer" in r for s in r["samples"]]
    assert got["samples"] == len(rows) == 48
    assert 0 < sum(c for _, c in rows) < len(rows)
    value = {
        "confidence": lambda s: s["confidence"],
        "min_window_confidence": lambda s: brute_min_window(s["trace"]["confidence"], window),
        "self_certainty": lambda s: s["self_certainty"],
        "mean_logprob": lambda s: s["mean_logprob"],
    }
    assert set(got["auroc"]) == set(value)
    for name, f in value.items():
        pos = [f(s) for s, c in rows if c]
        neg = [f(s) for s, c in rows if not c]
        assert got["auroc"][name] == pytest.approx(brute_auroc(pos, neg), abs=1e-12), name
    # the coarse self-certainty really produced ties across the two sides
    sc_pos = {s["self_certainty"] for s, c in rows if c}
    assert sc_pos & {s["self_certainty"] for s, c in rows if not c}


def test_auroc_edge_cases():
    assert auroc([], [1.0]) is None and auroc([1.0], []) is None
    assert auroc([1.0, 1.0], [1.0]) == 0.5
    assert auroc([3.0], [1.0, 2.0]) == 1.0
    rng = np.random.default_rng(3)
    pos, neg = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    assert auroc(pos, neg) == pytest.approx(brute_auroc(pos, neg), abs=1e-12)


def test_plot_signals_with_one_side_empty_is_null_and_says_so(tmp_path, tok):
    rec = {"id": 1, "answer": "5", "samples": [sample(tok, i, "the answer is 3", "3") for i in range(3)]}
    res = tts("plot", "signals", write_jsonl(tmp_path / "r.jsonl", [rec]), "--json")
    assert res.code == 0
    assert json.loads(res.stdout) == {"auroc": {k: None for k in ("confidence", "min_window_confidence",
                                                                  "self_certainty", "mean_logprob")},
                                      "samples": 3}
    assert "undefined" in res.stderr


def test_plot_figures_are_written(tmp_path, tok):
    import matplotlib.image

    records = hand_built_run(tok, np.random.default_rng(1))
    path = write_jsonl(tmp_path / "run.jsonl", records)
    for args in (("signals", path, "-o", tmp_path / "s.png"),
                 ("trace", path, "--id", "2", "--signal", "entropy", "--smooth", "1", "-o", tmp_path / "t.png")):
        res = tts("plot", *args)
        assert res.code == 0, res.stderr
        img = matplotlib.image.imread(str(args[-1]))
        assert img.shape[0] > 200 and img.shape[1] > 300 and img[..., :3].std() > 0.05  # not blank


@pytest.mark.parametrize("args, message", [
    (("signals", "{run}"), "nothing to do"),
    (("signals", "{dir}/missing.jsonl", "--json"), "cannot read"),
    (("signals", "{run}", "-o", "{dir}/no/such/fig.png"), "no such folder"),
    (("trace", "{plain}", "-o", "{dir}/t.png"), "--trace"),
    (("trace", "{run}", "--id", "42", "-o", "{dir}/t.png"), "no record with id '42'"),
    (("trace", "{run}", "--signal", "vibes", "-o", "{dir}/t.png"), "--signal 'vibes'"),
])
def test_plot_bad_input_is_one_clear_line(tmp_path, tok, args, message):
    run = write_jsonl(tmp_path / "run.jsonl", hand_built_run(tok, np.random.default_rng(2)))
    plain = write_jsonl(tmp_path / "plain.jsonl",
                        [{"id": 1, "answer": "1", "samples": [sample(tok, 0, "1", "1", trace=False)]}])
    res = tts("plot", *[str(a).format(run=run, plain=plain, dir=tmp_path) for a in args])
    assert res.code == 2 and message in res.stderr and "\n" not in res.stderr.strip()


# --- tokens -----------------------------------------------------------------------------------

def test_token_pieces_join_to_the_decoded_text(tok):
    text = "héllo — 3×4 = 12 <|im_end|>"
    ids = tok.encode(text, add_special_tokens=True)
    pieces = token_pieces(tok, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tok.decode(ids, skip_special_tokens=False)
    # "é" is two byte tokens: the first completes no character, the second shows it
    j = "".join(pieces).index("é")
    k = next(t for t in range(len(ids)) if "".join(pieces[:t + 1]).endswith("é"))
    assert pieces[k] == "é" and pieces[k - 1] == "" and j == len("h")


# --- the HTML report ---------------------------------------------------------------------------

def test_model_text_is_escaped(tok):
    evil = '<script>alert("x")</script> & <b>bold</b>'
    rec = {"id": "<img src=x onerror=alert(1)>", "prompt": "<script>p()</script>", "answer": "<i>1</i>",
           "samples": [sample(tok, 0, evil, "<script>"), sample(tok, 1, evil, "1", trace=False)],
           "aggregates": {"<script>m</script>": {"answer": "<script>", "confidence": 1.0}}}
    html = render_report([rec], tok)
    page = Page(html)
    assert "script" not in page.tags and "img" not in page.tags  # (the page itself has no script)
    text = page.all_text
    assert text.count(evil) == 2  # once from the token pieces, once from the plain text
    assert "<script>p()</script>" in text and "<img src=x onerror=alert(1)>" in text and "<i>1</i>" in text


def _classes_by_token(html: str) -> list[tuple[str, str]]:
    return [(c, p) for c, p in re.findall(r'<i class="([^"]*)" title="[^"]*">([^<]*)</i>', html)]


def test_shading_follows_the_chosen_signal(tok):
    conf = [5.0] * 12
    conf[3], conf[8] = 1.0, 14.0
    s = sample(tok, 0, "abcdefghijkl", "1", conf=conf)
    s["trace"]["entropy"] = [1.0] * 12
    s["trace"]["entropy"][3], s["trace"]["entropy"][8] = 2.5, 0.1
    rec = {"id": 1, "answer": "1", "samples": [s]}
    by_conf = _classes_by_token(render_report([rec], tok, color="confidence"))
    by_ent = _classes_by_token(render_report([rec], tok, color="entropy"))
    assert [p for _, p in by_conf] == list("abcdefghijkl")
    # the least confident token gets the strongest shade (c0), the most confident none (c9),
    # for entropy the other way round: high entropy is low confidence
    assert by_conf[3][0].split()[0] == "c0" and by_conf[8][0].split()[0] == "c9"
    assert by_ent[3][0].split()[0] == "c0" and by_ent[8][0].split()[0] == "c9"
    titles = Page(render_report([rec], tok, color="confidence")).titles
    assert "#3 confidence 1" in titles and "#8 confidence 14" in titles


def test_groups_largest_first_with_the_correct_one_marked(tok):
    preds = ["12", "7", "12", None, "12", "7.0"]
    rec = {"id": 1, "answer": "7", "samples": [sample(tok, i, f"answer {p}", p) for i, p in enumerate(preds)]}
    html = render_report([rec], tok)
    groups = re.findall(r'<details class="group( right)?" open>\s*<summary>answer <span class="ans">([^<]*)</span> · (\d) of 6',
                        html)
    assert [(g[1], int(g[2]), bool(g[0])) for g in groups] == [("12", 3, False), ("7", 2, True), ("none extracted", 1, False)]


def test_early_stops_soft_tokens_and_the_lowest_window_are_shown(tok):
    conf = [9.0] * 20
    conf[6:10] = [2.0, 1.0, 1.5, 2.5]  # the dip a 4-token window must find
    text = "abcdefghijklmnopqrst"
    pruned = sample(tok, 0, text, "1", finish="pruned", conf=conf)
    cut = sample(tok, 1, "ab", "2", finish="length")
    consensus = sample(tok, 2, "cd", "2", finish="consensus", trace=False)
    soft = sample(tok, 3, "xyz", "2")
    a, b = tok.encode("a", add_special_tokens=False)[0], tok.encode("b", add_special_tokens=False)[0]
    soft["trace"]["soft"] = {"start": 1, "topk_ids": [[a, b]], "topk_w": [[0.62, 0.38]], "entropy": [0.7]}
    soft["soft"] = {"steps": 1, "ended_by": "budget"}
    rec = {"id": 1, "answer": "1", "samples": [pruned, cut, consensus, soft]}
    html = render_report([rec], tok, window=4)
    text_of = Page(html).all_text
    assert "stopped early: pruned" in text_of and "stopped early: consensus" in text_of
    assert "cut off (length)" in text_of and "stopped early: length" not in text_of
    window = re.search(r'<span class="lw">(.*?)</span>', html).group(1)
    start = min(range(20 - 4 + 1), key=lambda i: sum(conf[i:i + 4]))
    assert re.sub(r"<[^>]+>", "", window) == text[start:start + 4] == "ghij"
    assert "concept step 0: 'a' 0.62 · 'b' 0.38" in "\n".join(Page(html).titles)


def test_records_without_traces_still_render_with_a_note(tok):
    rec = {"id": 1, "answer": "1", "samples": [sample(tok, i, f"text {i}", str(i), trace=False) for i in range(3)]}
    html = render_report([rec], tok)
    page = Page(html)
    assert "no per-token trace" in page.all_text and "text 2" in page.all_text
    assert "<i class=" not in html


# --- the CLI -------------------------------------------------------------------------------

@pytest.fixture()
def run_file(tmp_path, tok):
    records = []
    for r, (gold, votes) in enumerate([("3", ["3", "3", "4"]), ("5", ["6", "6", "5"]), ("8", ["8", "1", "8"])], start=1):
        samples = [sample(tok, i, f"the answer is {v}", v) for i, v in enumerate(votes)]
        records.append({"id": r, "prompt": f"q{r}", "answer": gold, "run": {"model": "tiny-random"},
                        "samples": samples, "aggregates": {"majority": {"answer": votes[0], "confidence": 0.67}}})
    return write_jsonl(tmp_path / "run.jsonl", records)


def _record_ids(html: str) -> list[str]:
    return re.findall(r"<h2>Record (\S+)</h2>", html)


def test_show_html_selects_records(tmp_path, run_file):
    out = tmp_path / "r.html"
    assert tts("show", run_file, "--html", out).code == 0
    assert _record_ids(out.read_text()) == ["1", "2", "3"]
    assert tts("show", run_file, "--html", out, "--wrong-only").code == 0
    assert _record_ids(out.read_text()) == ["2"]
    assert tts("show", run_file, "--html", out, "--id", "3", "--id", "1").code == 0
    assert _record_ids(out.read_text()) == ["1", "3"]
    res = tts("show", run_file, "--html", out, "--limit", "2", "--color", "entropy")
    assert res.code == 0 and _record_ids(out.read_text()) == ["1", "2"]
    assert "showing 2 of 3 records" in res.stderr and "entropy" in out.read_text()


@pytest.mark.parametrize("args, message", [
    (("--html", "{out}", "--color", "rainbow"), "--color 'rainbow'"),
    (("--color", "confidence"), "go with --html"),
    (("--html", "{dir}/no/such/r.html"), "no such folder"),
    (("--html", "{out}", "--id", "99"), "no record"),
    (("--html", "{out}", "--wrong-only", "--aggregate", "pc"), "no record with a wrong aggregate"),
])
def test_show_bad_input_is_one_clear_line(tmp_path, run_file, args, message):
    res = tts("show", run_file, *[str(a).format(out=tmp_path / "r.html", dir=tmp_path) for a in args])
    assert res.code == 2 and message in res.stderr and "\n" not in res.stderr.strip()


def test_show_html_of_a_missing_file(tmp_path):
    res = tts("show", tmp_path / "nope.jsonl", "--html", tmp_path / "r.html")
    assert res.code == 2 and "cannot read" in res.stderr


def test_terminal_show_is_unchanged(run_file):
    res = tts("show", run_file, "--id", "2", "--color", "never")
    assert res.code == 0 and "id 2" in res.stdout and "gold: 5" in res.stdout and "\x1b[" not in res.stdout
