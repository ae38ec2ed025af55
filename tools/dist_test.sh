#!/usr/bin/env bash
# Distributed evaluation on N processes of this node (one per GPU, or CPU processes over gloo) with
# tools/test.py (the FreeSOLO configs' default evaluator is the class-agnostic COCO metric):
#   bash tools/dist_test.sh CONFIG CHECKPOINT N [tools/test.py options, e.g. --work-dir DIR --out preds.pkl]
# PYTHON, PORT, NNODES, NODE_RANK and MASTER_ADDR as usual for multi-node runs.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
"${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$ROOT/tools/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
