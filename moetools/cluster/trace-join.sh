#!/bin/bash
# After the moe-trace array (sbatch --dependency=afterok:ARRAY, queued by trace-submit.sh): join the
# shards in shard order with cat and check the joined stream record by record before naming it TRACE.
#SBATCH --job-name=moe-trace-join
#SBATCH --time=01:00:00
set -euo pipefail
: "${SHARDS:?set SHARDS, the number of array tasks}"
: "${SHARDS_DIR:?set SHARDS_DIR, where the shards are}"
: "${TRACE:?set TRACE, the joined trace}"
shards=()
for ((shard = 0; shard < SHARDS; shard++)); do shards+=("$SHARDS_DIR/$shard.msgpack.zst"); done
cat "${shards[@]}" > "$TRACE.partial"        # a missing shard stops here (set -e)
moe-cat --check "$TRACE.partial"
mv "$TRACE.partial" "$TRACE"
echo "joined ${SHARDS} shards into ${TRACE}"
