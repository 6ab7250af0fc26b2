#!/bin/bash
# moe-tune under torchrun on every node of the allocation (queued by tune-submit.sh): srun starts one
# torchrun per node; they meet at the first node (c10d rendezvous) and run GPUS_PER_NODE processes each.
#SBATCH --job-name=moe-tune
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=12:00:00
set -euo pipefail
: "${MODEL:?set MODEL (tune-submit.sh exports it)}"
: "${DATA:?set DATA (tune-submit.sh exports it)}"
: "${TUNED:?set TUNED, the adapter directory}"
: "${TUNE_OPTIONS?set TUNE_OPTIONS (may be empty)}"
: "${GPUS_PER_NODE:?set GPUS_PER_NODE, processes per node}"
: "${RDZV_PORT:?set RDZV_PORT, the rendezvous port}"
: "${SLURM_JOB_ID:?submit with sbatch}"
: "${SLURM_NNODES:?submit with sbatch --nodes=N}"
RDZV_HOST=${RDZV_HOST:-$(hostname)}          # the batch script runs on the allocation's first node
# TUNE_OPTIONS is split into words on purpose
# shellcheck disable=SC2086
srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS_PER_NODE" --rdzv-id "$SLURM_JOB_ID" \
    --rdzv-backend c10d --rdzv-endpoint "$RDZV_HOST:$RDZV_PORT" \
    -m moetools.tune "$MODEL" --data "$DATA" $TUNE_OPTIONS -o "$TUNED"
