#!/usr/bin/env bash
# The full loop with real models: `rbrc synth` (train prompts) -> `rbrc fit` ->
# `rbrc synth` (held-out prompts) -> `rbrc eval --comparisons`, each stage timed.
# Results: bench/RESULTS.md, "rbrc synth with a real model".
#
#   bench/synth_loop.sh GENERATOR GRADER WORKDIR [TRAIN_LINES] [HELDOUT_LINES] [extra synth options…]
#
# TRAIN_LINES / HELDOUT_LINES: line numbers of examples/prompts.jsonl (sed syntax,
# default "1p;8p;11p" and "2p;15p"). On a GPU, give a real-size generator and grader
# and the vLLM backends (see docs/TRAINING.md, "From a policy to a fitted reward").
set -euo pipefail
GEN=$1 GRADER=$2 WORK=$3
TRAIN=${4:-"1p;8p;11p"} HELD=${5:-"2p;15p"}
shift $(( $# < 5 ? $# : 5 ))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$WORK"
rm -rf "$WORK/compiled" && cp -r "$ROOT/compiled/safety" "$WORK/compiled"
sed -n "$TRAIN" "$ROOT/examples/prompts.jsonl" > "$WORK/train_prompts.jsonl"
sed -n "$HELD" "$ROOT/examples/prompts.jsonl" > "$WORK/heldout_prompts.jsonl"
stage() {  # name, command…: run it, print its wall seconds
  local name=$1; shift
  local t0; t0=$(date +%s.%N)
  "$@"
  echo "stage $name: $(python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$t0" "$(date +%s.%N)") s wall" >&2
}
stage synth-train python -m rbrlang.cli synth "$WORK/compiled" --prompts "$WORK/train_prompts.jsonl" \
  --generator "$GEN" --grader "$GRADER" -o "$WORK/train.jsonl" --cache "$WORK/grades.sqlite" "$@"
stage fit python -m rbrlang.cli fit "$WORK/compiled" --data "$WORK/train.jsonl"
stage synth-heldout python -m rbrlang.cli synth "$WORK/compiled" --prompts "$WORK/heldout_prompts.jsonl" \
  --generator "$GEN" --grader "$GRADER" -o "$WORK/heldout.jsonl" --cache "$WORK/grades.sqlite" "$@"
stage eval python -m rbrlang.cli eval "$WORK/compiled" --comparisons "$WORK/heldout.jsonl" --report "$WORK/report"
