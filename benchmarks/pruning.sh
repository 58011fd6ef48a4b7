#!/usr/bin/env bash
# The pruning runs behind docs/experiments.md ("Pruning"): one unpruned --trace run of the embedded
# model, judge AUROCs, replays of every pruner, and online runs on its first problems.
# Sizes are set by P (problems), N (samples), P_ONLINE; the documented run used P=20 N=8 P_ONLINE=5
# on a shared 2-core machine; the 50 x 16 run in docs used P=50 N=16 P_ONLINE=10 LLM_P=3 WARMUP=4.
# ONLINE picks the online configurations (default: every judge and DeepConf-high/low).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${EXP_OUT:-out/prune}; mkdir -p "$out"
P=${P:-20}; N=${N:-8}; P_ONLINE=${P_ONLINE:-5}; WARMUP=${WARMUP:-4}; WINDOW=${WINDOW:-32}
PREFIX=${PREFIX:-tokens:48}
tts() { python -c 'from tts_cli.app import main; main()' "$@"; }
tts data mawps ../shared/data/mawps_multiarith.jsonl --limit "$P" > "$out/prompts$P.jsonl"
head -"$P_ONLINE" "$out/prompts$P.jsonl" > "$out/prompts_online.jsonl"
# float32: the figures in the docs were made in it, and online and replayed pruning agree exactly only in it
T=(--temperature 0.6 --top-p 0.95 --top-k 30 --min-p 0.001 --max-new-tokens 160 --seed 0 --quiet --batch-size 64 -n "$N" --dtype float32)
[ -s "$out/full.jsonl" ] || tts generate "$out/prompts$P.jsonl" "${T[@]}" --trace -o "$out/full.jsonl"
head -"$P_ONLINE" "$out/full.jsonl" > "$out/full_online.jsonl"
# the llm judge scores every same-prompt pair with a forward pass of the model (~1.5 s per pair on
# 2 CPU cores for the embedded model): LLM_P problems (default all) for its AUROC, replay and online run
LLM_P=${LLM_P:-$P}
head -"$LLM_P" "$out/full.jsonl" > "$out/full_llm.jsonl"
head -"$LLM_P" "$out/prompts$P.jsonl" > "$out/prompts_llm.jsonl"
[ -s "$out/auroc.jsonl" ] || tts prune "$out/full.jsonl" --judge-auroc --judge ngram,embedding --prefix "$PREFIX" > "$out/auroc.jsonl"
[ -s "$out/auroc_llm.jsonl" ] || tts prune "$out/full_llm.jsonl" --judge-auroc --judge llm --prefix "$PREFIX" > "$out/auroc_llm.jsonl"
DP=(--prefix "$PREFIX")
DC_HIGH=(--warmup "$WARMUP" --window "$WINDOW" --keep 0.9)
DC_LOW=(--warmup "$WARMUP" --window "$WINDOW" --keep 0.1)
for j in ngram embedding; do
  tts prune "$out/full.jsonl" --method deepprune --judge $j "${DP[@]}" > "$out/replay_dp_$j.jsonl" \
    2> "$out/replay_dp_$j.log"   # its closing line holds the judge's time (benchmarks/pruning_table.py)
done
tts prune "$out/full_llm.jsonl" --method deepprune --judge llm "${DP[@]}" > "$out/replay_dp_llm.jsonl" \
  2> "$out/replay_dp_llm.log"
tts prune "$out/full.jsonl" --method deepconf "${DC_HIGH[@]}" > "$out/replay_dc_high.jsonl"
tts prune "$out/full.jsonl" --method deepconf "${DC_LOW[@]}" > "$out/replay_dc_low.jsonl"
# online: the same options inside the sampler, on the first P_ONLINE problems
# the unpruned baseline on the same problems, timed the same way
[ -s "$out/online_none.jsonl" ] || /usr/bin/time -f "%e s wall, %U s user" tts generate "$out/prompts_online.jsonl" \
  "${T[@]}" --trace -o "$out/online_none.jsonl" 2> "$out/online_none.time"
ONLINE=${ONLINE:-dp_ngram dp_embedding dc_high dc_low dp_llm}
declare -A CFG=([dp_ngram]="--prune deepprune --judge ngram ${DP[*]}"
  [dp_embedding]="--prune deepprune --judge embedding ${DP[*]}" [dp_llm]="--prune deepprune --judge llm ${DP[*]}"
  [dc_high]="--prune deepconf ${DC_HIGH[*]}" [dc_low]="--prune deepconf ${DC_LOW[*]}")
for name in $ONLINE; do
  args=${CFG[$name]}
  set=online; [ "$name" = dp_llm ] && set=llm   # the llm judge: only its LLM_P problems
  /usr/bin/time -f "%e s wall, %U s user" tts generate "$out/prompts_$set.jsonl" "${T[@]}" --trace $args \
    -o "$out/online_$name.jsonl" 2> "$out/online_$name.time"
  tts prune "$out/full_$set.jsonl" --method ${args#--prune } > "$out/replay_online_$name.jsonl" \
    2> "$out/replay_online_$name.log" || true
done
