#!/usr/bin/env bash
# The main job behind `make demo`: a real test-time-scaling experiment on the embedded model.
# The first 20 problems of DEMO_DATA (a MAWPS-format file: {"input": question, "target": number}
# per line, e.g. MultiArith), else the eight that ship in benchmarks/fallback_problems.jsonl, so
# a fresh clone needs nothing else; greedy vs 8 samples with voting, through the pipes a user
# would write.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"
data=${DEMO_DATA:-benchmarks/fallback_problems.jsonl}
[ -f "$data" ] || { echo "demo: DEMO_DATA=$data: no such file" >&2; exit 2; }
echo "demo: problems from $data" >&2
# float32: the README's demo table was made in it
common=(--max-new-tokens 160 --batch-size 96 --seed 0 --dtype float32)

start=$(date +%s)
tts data mawps "$data" --limit 20 > "$out/prompts.jsonl"
echo "demo: greedy decoding, $(wc -l < "$out/prompts.jsonl") problems…" >&2
tts generate "$out/prompts.jsonl" -n 1 --temperature 0 "${common[@]}" \
  | tee "$out/greedy.gen.jsonl" | tts aggregate -a majority > "$out/greedy.jsonl"
echo "demo: 8 samples per problem (T=0.6, top-p 0.95, top-k 30)…" >&2
tts generate "$out/prompts.jsonl" -n 8 --temperature 0.6 --top-p 0.95 --top-k 30 "${common[@]}" \
  | tee "$out/sampled.gen.jsonl" | tts aggregate -a majority -a pc -a self-certainty > "$out/sampled.jsonl"
python -m benchmarks.demo_table "$out/greedy.jsonl" "$out/sampled.jsonl"
echo "demo: finished in $(( $(date +%s) - start )) s; records are in $out/ (try: tts show $out/sampled.jsonl)" >&2
