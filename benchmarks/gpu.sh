#!/usr/bin/env bash
# The CUDA checks and benchmarks, in one command for a lent GPU machine (see docs/performance.md).
# Expects: a model's config + tokenizer in .gpu/$MODEL (no weights; default .gpu/smollm2), and
# wheels in .whl for packages the machine lacks. Writes JSON results and logs under ${OUT:-out/gpu}.
# Environment: MODEL, TESTS=0 (skip pytest), TEST_FILES, BENCHES ("args|args|...").
set -uo pipefail
OUT=${OUT:-out/gpu}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
tts() { python3 -c "from tts_cli.app import main; main()" "$@"; }

if [ "${TESTS:-1}" = 1 ]; then
  # shellcheck disable=SC2086
  python3 -m pytest -q -p no:cacheprovider ${TEST_FILES:-tests/test_cuda.py tests/test_triton_kernels.py tests/test_engine.py tests/test_sampler.py tests/test_soft.py} 2>&1 \
    | tee "$OUT/pytest.log" | tail -15
fi
# MODEL names a folder of .gpu/ holding a config and tokenizer (default: SmolLM2-135M's)
MODEL=${MODEL:-smollm2}
python3 -m benchmarks.random_model ".gpu/$MODEL" /tmp/model-random --device cuda --dtype bfloat16 || exit 1
IFS="|" read -ra RUNS <<< "${BENCHES:---workload fixed|--workload fixed --compile|--workload realistic|--workload realistic --compile|--mode soft|--mode soft --compile|--workload realistic --dtype float32}"
for args in "${RUNS[@]}"; do
  echo "== tts bench $args"
  # shellcheck disable=SC2086
  tts bench --model /tmp/model-random --device cuda $args --json | tee -a "$OUT/bench.jsonl"
done
echo "== step profile (the Triton kernels against torch's, then --compile)"
python3 -m benchmarks.step_profile /tmp/model-random --device cuda --rows 64 256 --position 300 1000 \
  --kernels auto torch | tee "$OUT/step_profile.jsonl"
python3 -m benchmarks.step_profile /tmp/model-random --device cuda --rows 256 --position 300 --compile \
  | tee -a "$OUT/step_profile.jsonl"
echo "== decode attention alone"
python3 -m benchmarks.decode_attention | tee "$OUT/decode_attention.jsonl"
