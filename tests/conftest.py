import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """A tiny random Llama with a byte tokenizer (milliseconds to build)."""
    from strategies.tiny import tiny_model

    return tiny_model("llama")


@pytest.fixture(scope="session")
def real_model():
    """The embedded SmolLM2-135M (converted once into the user cache)."""
    from strategies.models import load

    return load("smollm2-135m", device="cpu", dtype="float32")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("TTS_SKIP_INTEGRATION"):
        skip = pytest.mark.skip(reason="TTS_SKIP_INTEGRATION is set")
        for item in items:
            if "integration" in item.keywords:
                item.add_marker(skip)
