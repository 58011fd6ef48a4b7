"""The README and docs/ stand alone: a user who clones the repository has every file they name,
and `make demo` runs from the problems that ship with it."""
import re
from pathlib import Path

import pytest

from tests.cli import tts

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_name_no_file_outside_the_repository(doc):
    text = doc.read_text()
    assert "../shared" not in text and "shared/data" not in text
    for target in re.findall(r"\]\(([^)\s]+)\)", text):  # markdown links
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), target


def test_demo_runs_from_the_problems_that_ship():
    script = (ROOT / "benchmarks" / "demo.sh").read_text()
    default = re.search(r"data=\$\{DEMO_DATA:-([^}]+)\}", script).group(1)
    assert "shared" not in script
    src = ROOT / default
    expected = [line for line in src.read_text().splitlines() if line.strip()]
    r = tts("data", "mawps", src, "--limit", "20")
    assert r.code == 0, r.stderr
    records = r.records()
    assert len(records) == min(20, len(expected)) >= 8
    assert all(rec["prompt"] and rec["answer"] is not None for rec in records)
