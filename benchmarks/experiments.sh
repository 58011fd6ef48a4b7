#!/usr/bin/env bash
# The runs behind docs/experiments.md (embedded model, first MultiArith problems). Resumable:
# rerun after an interruption and it picks up where it stopped. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${EXP_OUT:-out/exp}; mkdir -p "$out"
# DATA: MultiArith in the MAWPS format ({"input": question, "target": number} per line).
data=${DATA:-../shared/data/mawps_multiarith.jsonl}
[ -f "$data" ] || { echo "experiments.sh: no $data; set DATA=<MultiArith file in the MAWPS format>" >&2; exit 2; }
tts data mawps "$data" --limit 100 > "$out/prompts100.jsonl"
head -50 "$out/prompts100.jsonl" > "$out/prompts50.jsonl"
# float32: the figures in docs/experiments.md were made in it
T=(--temperature 0.6 --top-p 0.95 --top-k 30 --min-p 0.001 --max-new-tokens 160 --seed 0 --quiet --batch-size 128 --dtype float32)
SOFT=(--mode soft --soft-budget 96 --think-end $'\nThe final answer is')
tts generate "$out/prompts100.jsonl" -n 16 "${T[@]}" -o "$out/discrete16.jsonl" --resume
tts generate "$out/prompts50.jsonl" -n 8 "${T[@]}" "${SOFT[@]}" --noise none -o "$out/soft_none.jsonl" --resume
tts generate "$out/prompts50.jsonl" -n 8 "${T[@]}" "${SOFT[@]}" --noise gumbel --gumbel-tau 0.5 -o "$out/soft_gumbel.jsonl" --resume
tts generate "$out/prompts50.jsonl" -n 8 "${T[@]}" "${SOFT[@]}" --noise dirichlet --dirichlet-alpha 4 -o "$out/soft_dirichlet.jsonl" --resume
# discrete vs soft (the discrete arm: samples 0-7 of the 16-sample run, the same random streams as -n 8)
python -m benchmarks.soft_experiment "discrete=$out/discrete16.jsonl:8" "soft=$out/soft_none.jsonl" \
  "soft+gumbel=$out/soft_gumbel.jsonl" "soft+dirichlet=$out/soft_dirichlet.jsonl"
# all aggregators, the eval table and the scaling curve
tts aggregate "$out/discrete16.jsonl" -a majority -a weighted -a ppl -a pc -a rpc -a self-certainty -a borda \
  -a deepconf > "$out/discrete16.agg.jsonl"
# the 50- and 100-problem tables of docs/experiments.md, each kept beside the records it came from
head -50 "$out/discrete16.agg.jsonl" > "$out/discrete16_50.agg.jsonl"
tts eval "$out/discrete16_50.agg.jsonl" --curve auto --plot docs/img/scaling_mawps.png | tee "$out/eval50.txt"
tts eval "$out/discrete16.agg.jsonl" --curve auto --plot docs/img/scaling_mawps_100.png | tee "$out/eval100.txt"
