#!/usr/bin/env bash
# Free Mask generation on N processes (one per GPU, or CPU processes with gloo):
#   bash tools/dist_generate_free_masks.sh N CONFIG --images DIR --out OUT.json [more options]
# Rerunning the same command resumes a killed run. PYTHON, PORT, NNODES, NODE_RANK, MASTER_ADDR as usual.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 NUM_PROCESSES CONFIG [generate_free_masks.py options]" >&2
    exit 2
fi
NPROC=$1
CONFIG=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$ROOT/tools/generate_free_masks.py" "$CONFIG" --launcher pytorch "$@"
