#!/bin/bash
# After moe-tune (sbatch --dependency=afterok:TRAIN, queued by tune-submit.sh): merge the adapter into a
# standard checkpoint that AutoModelForCausalLM, moe-eval and moe-mask load.
#SBATCH --job-name=moe-tune-merge
#SBATCH --time=01:00:00
set -euo pipefail
: "${TUNED:?set TUNED, the adapter directory}"
: "${MERGED:?set MERGED, the merged checkpoint}"
moe-tune merge "$TUNED" -o "$MERGED"
echo "merged ${TUNED} into ${MERGED}"
