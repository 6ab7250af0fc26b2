#!/bin/bash
# moe-trace over a corpus as a SLURM array: 64 tasks, each one deterministic shard.
# A preempted or killed task resumes after its last complete record (--resume);
# the finished shards concatenate into one valid trace stream.
#SBATCH --job-name=moe-trace
#SBATCH --array=0-63
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --output=logs/trace-%A_%a.log
set -euo pipefail
MODEL=${MODEL:-models/olmoe-1b-7b}
CORPUS=${CORPUS:-corpus.jsonl}
SHARDS=${SLURM_ARRAY_TASK_COUNT:-64}
mkdir -p shards logs
bin/moe-trace "$MODEL" "$CORPUS" --device cuda --dtype bfloat16 --max-length 512 \
    --shard "${SLURM_ARRAY_TASK_ID}/${SHARDS}" --resume \
    -o "shards/${SLURM_ARRAY_TASK_ID}.msgpack.zst"
# After the whole array has finished (e.g. a job with --dependency=afterok:<array job id>):
#   cat shards/{0..63}.msgpack.zst > trace.msgpack.zst
#   moe-cat trace.msgpack.zst --head 1 --format jsonl
