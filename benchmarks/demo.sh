#!/usr/bin/env bash
# The main job behind `make demo`: a real test-time-scaling experiment on the embedded model.
# First 20 MultiArith problems (../shared/data when present, else the project's own handful),
# greedy vs 8 samples with majority voting, through the same pipes a user would write.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"
data=../shared/data/mawps_multiarith.jsonl
[ -f "$data" ] || { data=benchmarks/fallback_problems.jsonl; echo "demo: ../shared/data not found; using $data" >&2; }
common=(--max-new-tokens 160 --batch-size 96 --seed 0)

start=$(date +%s)
tts data mawps "$data" --limit 20 > "$out/prompts.jsonl"
echo "demo: greedy decoding, $(wc -l < "$out/prompts.jsonl") problems…" >&2
tts generate "$out/prompts.jsonl" -n 1 --temperature 0 "${common[@]}" \
  | tts aggregate -a majority > "$out/greedy.jsonl"
echo "demo: 8 samples per problem (T=0.6, top-p 0.95, top-k 30)…" >&2
tts generate "$out/prompts.jsonl" -n 8 --temperature 0.6 --top-p 0.95 --top-k 30 "${common[@]}" \
  | tts aggregate -a majority -a pc -a self-certainty > "$out/sampled.jsonl"
python -m benchmarks.demo_table "$out/greedy.jsonl" "$out/sampled.jsonl"
echo "demo: finished in $(( $(date +%s) - start )) s; records are in $out/ (try: tts show $out/sampled.jsonl)" >&2
