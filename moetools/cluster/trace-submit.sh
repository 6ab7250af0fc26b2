#!/bin/bash
# Queue moe-trace over CORPUS as a SLURM job array of SHARDS tasks (trace-array.sh, one deterministic
# shard each), then trace-join.sh after the whole array succeeded (joins the shards with cat and checks
# the result with moe-cat --check). Run it on the login node, with moe-trace on PATH (the venv active):
#   MODEL=models/olmoe CORPUS=corpus.jsonl bash trace-submit.sh
set -euo pipefail
: "${MODEL:?set MODEL to the model directory}"
: "${CORPUS:?set CORPUS to the JSON-lines corpus}"
export MODEL CORPUS
export SHARDS=${SHARDS:-64}                  # array tasks = shards
export SHARDS_DIR=${SHARDS_DIR:-shards}      # shard I is SHARDS_DIR/I.msgpack.zst
export TRACE=${TRACE:-trace.msgpack.zst}     # the joined, checked trace
export TRACE_OPTIONS=${TRACE_OPTIONS:---device cuda --dtype bfloat16 --max-length 512}
LOGS=${LOGS:-logs}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v moe-trace >/dev/null || { echo "trace-submit.sh: moe-trace is not on PATH (activate its venv)" >&2; exit 2; }
# Slurm opens --output before the job starts: a missing log directory fails the job without a log
mkdir -p "$LOGS" "$SHARDS_DIR"
array=$(sbatch --parsable --array="0-$((SHARDS - 1))" --output="$LOGS/trace-%A_%a.log" "$here/trace-array.sh")
array=${array%%;*}                           # --parsable prints JOBID[;CLUSTER]
join=$(sbatch --parsable --dependency="afterok:$array" --output="$LOGS/trace-join-%j.log" "$here/trace-join.sh")
echo "queued moe-trace array ${array} (${SHARDS} tasks) and its join ${join%%;*}; logs in ${LOGS}/"
