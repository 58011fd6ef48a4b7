#!/usr/bin/env bash
# The SoftCoT comparison behind docs/experiments.md ("SoftCoT"): discrete sampling, softcot with the
# untrained identity, softcot with a projection trained on a held-apart GSM8K slice, on the first P
# MultiArith problems x N samples of the embedded model (assistant = base). Needs ../shared/data.
# Sizes: P (50), N (8), TRAIN (256 records after the first 1000 of the GSM8K test file), MAX (160).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${EXP_OUT:-out/softcot}; mkdir -p "$out"
P=${P:-50}; N=${N:-8}; TRAIN=${TRAIN:-256}; MAX=${MAX:-160}
tts() { python -c 'from tts_cli.app import main; main()' "$@"; }
tts data mawps ../shared/data/mawps_multiarith.jsonl --limit "$P" > "$out/mawps$P.jsonl"
# GSM8K test records 1001..1000+TRAIN: the only rationales we have, disjoint from MultiArith,
# held apart from any GSM8K evaluation (which would have to skip them).
[ -s "$out/proj.safetensors" ] || /usr/bin/time -f "%e s wall" tts softcot train ../shared/data/gsm8k_test.jsonl \
  --skip 1000 --limit "$TRAIN" -o "$out/proj.safetensors" --epochs 1 --chains 4 --contrastive-weight 0.1 \
  --quiet 2> "$out/train.time"
# float32: the figures in docs/softcot.md were made in it
G=(-n "$N" --max-new-tokens "$MAX" --seed 0 --quiet --dtype float32)
run() { local name=$1; shift
  [ -s "$out/$name.jsonl" ] || /usr/bin/time -f "%e s wall" tts generate "$out/mawps$P.jsonl" "${G[@]}" "$@" \
    -o "$out/$name.jsonl" 2> "$out/$name.time"; }
run discrete
run identity --mode softcot --perturb init-tokens
run trained --mode softcot --perturb init-tokens --projection "$out/proj.safetensors"
for f in discrete identity trained; do
  echo "== $f"; tts aggregate -a majority "$out/$f.jsonl" | tts eval
done
