#!/bin/bash
# One task of the moe-trace job array (queued by trace-submit.sh): task I traces shard I/SHARDS of CORPUS.
# A preempted or requeued task resumes after its last complete record (--resume); a finished shard exits.
#SBATCH --job-name=moe-trace
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --requeue
set -euo pipefail
: "${MODEL:?set MODEL (trace-submit.sh exports it)}"
: "${CORPUS:?set CORPUS (trace-submit.sh exports it)}"
: "${SHARDS:?set SHARDS, the number of array tasks}"
: "${SHARDS_DIR:?set SHARDS_DIR, where the shards go}"
: "${TRACE_OPTIONS?set TRACE_OPTIONS (may be empty)}"
: "${SLURM_ARRAY_TASK_ID:?run as a job array: sbatch --array=0-\$((SHARDS - 1))}"
if [ "$SLURM_ARRAY_TASK_ID" -ge "$SHARDS" ]; then
    echo "trace-array.sh: array task $SLURM_ARRAY_TASK_ID outside the $SHARDS shards" >&2; exit 2
fi
# TRACE_OPTIONS is split into words on purpose
# shellcheck disable=SC2086
moe-trace "$MODEL" "$CORPUS" $TRACE_OPTIONS --shard "$SLURM_ARRAY_TASK_ID/$SHARDS" --resume \
    -o "$SHARDS_DIR/$SLURM_ARRAY_TASK_ID.msgpack.zst"
