#!/usr/bin/env bash
# Distributed evaluation on N GPUs with MMDetection's own tools/test.py (the FreeSOLO configs load the
# plugin through custom_imports; their default evaluator is the class-agnostic COCO metric):
#   bash tools/dist_test.sh CONFIG CHECKPOINT N [test.py options, e.g. --work-dir DIR]
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT NUM_GPUS [test.py options]" >&2
    exit 2
fi
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
shift 3
PY="${PYTHON:-python}"
TEST_PY="$("$PY" -c 'import mmdet, os.path as p; print(p.join(p.dirname(mmdet.__file__), ".mim", "tools", "test.py"))')"
"$PY" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --master_port="${PORT:-29500}" --nproc_per_node="$NPROC" \
    "$TEST_PY" "$CONFIG" "$CHECKPOINT" --launcher pytorch "$@"
