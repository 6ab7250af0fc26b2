#!/bin/bash
# Queue moe-tune on NODES nodes x GPUS_PER_NODE GPUs (tune-nodes.sh: srun starts one torchrun per node),
# then tune-merge.sh after it succeeded (moe-tune merge writes a standard checkpoint). Run it on the login
# node, with moe-tune and torchrun on PATH (the venv active):
#   MODEL=models/olmoe DATA=medical.train.jsonl TUNE_OPTIONS="--mode experts --experts medical.json" \
#       bash tune-submit.sh
set -euo pipefail
: "${MODEL:?set MODEL to the model directory}"
: "${DATA:?set DATA to the JSON-lines training data}"
export MODEL DATA
export TUNE_OPTIONS=${TUNE_OPTIONS:---mode lora}
export TUNED=${TUNED:-tuned}                 # the adapter directory (moe-tune -o)
export MERGED=${MERGED:-merged}              # the merged checkpoint
export GPUS_PER_NODE=${GPUS_PER_NODE:-4}     # torchrun processes per node
export RDZV_PORT=${RDZV_PORT:-29500}         # the rendezvous port on the first node
NODES=${NODES:-2}
LOGS=${LOGS:-logs}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
for program in moe-tune torchrun; do
    command -v "$program" >/dev/null || { echo "tune-submit.sh: $program is not on PATH (activate the venv)" >&2; exit 2; }
done
mkdir -p "$LOGS"                             # Slurm opens --output before the job starts
train=$(sbatch --parsable --nodes="$NODES" --gres="gpu:$GPUS_PER_NODE" --output="$LOGS/tune-%j.log" \
    "$here/tune-nodes.sh")
train=${train%%;*}
merge=$(sbatch --parsable --dependency="afterok:$train" --output="$LOGS/tune-merge-%j.log" "$here/tune-merge.sh")
echo "queued moe-tune ${train} (${NODES} nodes x ${GPUS_PER_NODE}) and its merge ${merge%%;*}; logs in ${LOGS}/"
