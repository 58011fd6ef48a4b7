#!/usr/bin/env bash
# Adaptive sample budgets and today's pruner defaults, replayed on the stored unpruned run of
# benchmarks/pruning.sh (out/prune/full.jsonl: P problems x N samples with --trace; made here when
# missing), plus one online adaptive run on its first P_ONLINE problems beside the replay of the
# same records. Tables: python -m benchmarks.pruning_table (docs/experiments.md, "Adaptive budgets").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${EXP_OUT:-out/prune}; mkdir -p "$out"
P=${P:-50}; N=${N:-16}; P_ONLINE=${P_ONLINE:-10}
tts() { python -c 'from tts_cli.app import main; main()' "$@"; }
# float32: the figures in the docs were made in it, and online and replayed pruning agree exactly only in it
T=(--temperature 0.6 --top-p 0.95 --top-k 30 --min-p 0.001 --max-new-tokens 160 --seed 0 --quiet --batch-size 64 -n "$N" --dtype float32)
[ -s "$out/prompts$P.jsonl" ] || tts data mawps ../shared/data/mawps_multiarith.jsonl --limit "$P" > "$out/prompts$P.jsonl"
[ -s "$out/full.jsonl" ] || tts generate "$out/prompts$P.jsonl" "${T[@]}" --trace -o "$out/full.jsonl"
for rule in beta:0.95 esc:4; do
  for wave in 4 8; do
    [ "${rule%%:*}" = esc ] && [ "$wave" = 8 ] && continue   # esc:W's wave is W
    tts prune "$out/full.jsonl" --method adaptive --rule "$rule" --wave "$wave" > "$out/replay_ad_${rule/:/}_w$wave.jsonl"
  done
done
# today's pruner defaults on the same run (the paper's survivor rule, largest cluster with --k2 0;
# plain cosine; warm-up votes above the threshold), and beside them one trace per cluster and --k2 4
for j in ngram embedding; do
  tts prune "$out/full.jsonl" --method deepprune --judge $j --prefix tokens:48 > "$out/replay_dp_${j}_now.jsonl"
  tts prune "$out/full.jsonl" --method deepprune --judge $j --prefix tokens:48 --survivors representatives \
    > "$out/replay_dp_${j}_reps.jsonl"
done
tts prune "$out/full.jsonl" --method deepprune --judge embedding --prefix tokens:48 --k2 4 > "$out/replay_dp_embedding_k2_4.jsonl"
tts prune "$out/full.jsonl" --method deepconf --warmup 4 --window 32 --keep 0.9 > "$out/replay_dc_high_now.jsonl"
tts prune "$out/full.jsonl" --method deepconf --warmup 4 --window 32 --keep 0.1 > "$out/replay_dc_low_now.jsonl"
# online beside replay: the first P_ONLINE problems
head -"$P_ONLINE" "$out/prompts$P.jsonl" > "$out/prompts_online.jsonl"
head -"$P_ONLINE" "$out/full.jsonl" > "$out/full_online.jsonl"
tts generate "$out/prompts_online.jsonl" "${T[@]}" --trace --adaptive beta:0.95 --wave 4 -o "$out/online_ad.jsonl"
tts prune "$out/full_online.jsonl" --method adaptive --rule beta:0.95 --wave 4 > "$out/replay_online_ad.jsonl"
