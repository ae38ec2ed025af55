#!/usr/bin/env bash
# GPU check of issue 11: on a bare GPU machine (Python 3.12 with a CUDA build of torch, no OpenMMLab, no internet),
# install the OpenMMLab stack from local wheels (building mmcv's CPU ops from its sdist if no wheel for this Python
# is there), then run benchmarks/train_step.py, benchmarks/inference.py and benchmarks/free_mask.py with
# --device cuda and print their tables, plus Free Mask's images/s at 800 px. Made to finish in 8 minutes as one call.
#
#   bash benchmarks/gpu_check.sh [--device cuda|cpu] [OUT_DIR]
#
# OUT_DIR (default: $OUT if set, else work_dirs/gpu_check) gets summary.txt, setup.log, mmcv_build.log, one
# <benchmark>.log each, and wheels/ with the mmcv wheel built here (debug symbols stripped, a few MB), so that the
# next run can take it: at most 7 files, two folders down. A benchmark that fails or times out is reported and the
# others still run; the exit status is the number of failed steps.
#
# Wheels are looked up, in order, in $WHEELHOUSE (a list with ':'), OUT_DIR/wheels, work_dirs/gpu_check/wheels,
# .whl, shared/wheels and ../shared/wheels (those that exist). They must hold, for the machine's Python: mmcv
# (mmcv-2.1.0-cpXY-*.whl, or the sdist mmcv-2.1.0.tar.gz to build it), mmengine 0.10.7, mmdet 3.3.0, mmpretrain
# 1.2.0, setuptools<81 (pkg_resources, for mmcv's setup.py and mmengine's mmdet:: configs), addict, yapf,
# platformdirs, termcolor, terminaltables, shapely, pycocotools, importlib-metadata, lazy-importer, mat4py,
# modelindex, model-index, ordered-set. They are installed with --no-deps into $GPU_CHECK_SITE
# (default /tmp/gpu_check_site), put first on PYTHONPATH; this repository is put on PYTHONPATH too (no pip -e).
# Setup is skipped when mmcv.ops, mmdet and freesolo_mmdet already import (GPU_CHECK_FORCE_SETUP=1 forces it).
#
# Environment: PYTHON (default python3); GPU_CHECK_BUDGET_S (default 470: the whole run's seconds, each step gets
# a timeout within what is left); GPU_CHECK_SMALL=1 (tiny sizes and one repeat, for a dry run on CPU);
# MAX_JOBS (compile jobs for mmcv, default nproc).
# Dry run on a CPU machine where .venv is set up:
#   OMP_NUM_THREADS=1 GPU_CHECK_SMALL=1 PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --device cpu /tmp/gc
set -uo pipefail

device=cuda
out_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=${2:-}; shift 2 ;;
    --device=*) device=${1#*=}; shift ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
    -*) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
    *) out_dir=$1; shift ;;
  esac
done
case "$device" in cuda|cpu) ;; *) echo "gpu_check: --device must be cuda or cpu" >&2; exit 2 ;; esac

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out_dir=${out_dir:-${OUT:-$root/work_dirs/gpu_check}}
mkdir -p "$out_dir/wheels"
out_dir=$(cd "$out_dir" && pwd)
py=${PYTHON:-python3}
budget=${GPU_CHECK_BUDGET_S:-470}
site=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
summary=$out_dir/summary.txt
: >"$summary"
failures=0
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}:$root"
[ "$device" = cpu ] && export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

log() { printf '[gpu_check %3ds] %s\n' "$SECONDS" "$*" | tee -a "$summary"; }
left() { echo $((budget - SECONDS)); }
# the timeout of a step: at most $1 s, and at least $2 s left for the steps after it
step_timeout() { local t=$(( $(left) - $2 )); [ "$t" -gt "$1" ] && t=$1; echo "$t"; }

log "device $device, python $py, out $out_dir, budget ${budget}s"
"$py" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda",
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' 2>&1 | tee -a "$summary"
if [ "$device" = cuda ] && ! "$py" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
  log "CUDA is not available to $py"; exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu \
  --format=csv,noheader 2>&1 | tee -a "$summary"

# ---------------------------------------------------------------------------------------------------- setup
ready() { "$py" -c 'import mmcv, mmcv.ops, mmengine, mmdet, mmdet.models, freesolo_mmdet' >/dev/null 2>&1; }

setup() {
  local tag houses=() find_links=() d seen=" " rp
  tag=$("$py" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
  IFS=: read -ra houses <<<"${WHEELHOUSE:-}"
  houses+=("$out_dir/wheels" "$root/work_dirs/gpu_check/wheels" "$root/.whl" "$root/shared/wheels"
           "$root/../shared/wheels")
  for d in "${houses[@]}"; do
    [ -n "$d" ] && [ -d "$d" ] || continue
    rp=$(cd "$d" && pwd -P)
    case "$seen" in *" $rp "*) continue ;; esac
    seen="$seen$rp "
    find_links+=(--find-links "$rp")
  done
  log "wheelhouses:$seen"
  local pip=("$py" -m pip install --no-index --no-deps --no-compile --upgrade --target "$site" "${find_links[@]}")
  mkdir -p "$site"
  local pkgs=("setuptools<81" addict yapf platformdirs termcolor terminaltables shapely pycocotools
              importlib-metadata lazy-importer mat4py modelindex model-index ordered-set mmengine==0.10.7
              mmdet==3.3.0 mmpretrain==1.2.0)
  if ! "${pip[@]}" "${pkgs[@]}" >>"$out_dir/setup.log" 2>&1; then
    log "one install of all failed: installing one at a time (see setup.log)"
    for d in "${pkgs[@]}"; do
      "${pip[@]}" "$d" >>"$out_dir/setup.log" 2>&1 || log "  missing from the wheelhouses: $d"
    done
  fi

  if ! "$py" -c 'import mmcv.ops' >/dev/null 2>&1; then
    local whl sdist f t flags
    for d in "$out_dir/wheels" $seen; do
      for f in "$d"/mmcv-2.1.0-"$tag"-"$tag"-*.whl; do [ -f "$f" ] && whl=${whl:-$f}; done
      [ -f "$d/mmcv-2.1.0.tar.gz" ] && sdist=${sdist:-$d/mmcv-2.1.0.tar.gz}
    done
    if [ -z "${whl:-}" ]; then
      if [ -z "${sdist:-}" ]; then
        log "no mmcv 2.1.0 wheel for $tag and no mmcv-2.1.0.tar.gz in the wheelhouses"; return 1
      fi
      t=$(step_timeout 330 140)
      log "building mmcv 2.1.0 ($tag, CPU ops) from $sdist, $t s at most, ${MAX_JOBS:-$(nproc)} jobs"
      # CPU ops only (no GPU visible, FORCE_CUDA=0): the SOLOv2 path needs no CUDA op. No debug symbols (-g0, -s)
      # keeps it small; setuptools' CFLAGS replace Python's (-O3 ...), so these are Python's plus -g0
      flags="$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("CFLAGS") or "-O2")') -g0"
      if ! (cd /tmp && CUDA_VISIBLE_DEVICES= MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
            CFLAGS="$flags" CXXFLAGS="$flags" LDFLAGS="-s" timeout -k 10 "$t" "$py" -m pip wheel -v \
            --no-build-isolation --no-deps --no-index -w "$out_dir/wheels" "$sdist") >"$out_dir/mmcv_build.log" 2>&1
      then
        log "mmcv build failed or timed out; last lines of mmcv_build.log:"; tail -n 15 "$out_dir/mmcv_build.log"
        return 1
      fi
      whl=$(ls "$out_dir"/wheels/mmcv-2.1.0-"$tag"-*.whl | head -n 1)
      strip_wheel "$whl" >>"$out_dir/mmcv_build.log" 2>&1 || log "could not strip $whl (kept as built)"
      log "built $(basename "$whl") ($(du -h "$whl" | cut -f1)), left in $out_dir/wheels for the next run"
    else
      log "mmcv from $whl"
      if [ "$(dirname "$whl")" != "$out_dir/wheels" ]; then  # a copy in OUT_DIR, small enough to come back
        cp -f "$whl" "$out_dir/wheels/" && whl=$out_dir/wheels/$(basename "$whl") && chmod u+w "$whl"
        if [ "$(wc -c <"$whl")" -gt 15000000 ]; then
          strip_wheel "$whl" >>"$out_dir/setup.log" 2>&1 || log "could not strip $whl (kept as it was)"
        fi
      fi
    fi
    "${pip[@]}" "$whl" >>"$out_dir/setup.log" 2>&1 || { log "installing $whl failed (see setup.log)"; return 1; }
  fi
  ready || { log "setup done but the stack does not import:"; "$py" -c 'import mmcv.ops, mmdet.models,
freesolo_mmdet' 2>&1 | tail -n 5 | tee -a "$summary"; return 1; }
}

# drop the debug symbols of mmcv's extension (83 MB -> ~2 MB for the CPU ops) so that the wheel can come back
strip_wheel() {
  local whl=$1 tmp
  command -v strip >/dev/null || return 1
  tmp=$(mktemp -d)
  "$py" -m wheel unpack "$whl" -d "$tmp/u" && strip --strip-debug "$tmp"/u/*/mmcv/_ext*.so && mkdir -p "$tmp/w" \
    && "$py" -m wheel pack "$tmp"/u/* -d "$tmp/w" && mv -f "$tmp"/w/*.whl "$whl"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

if [ "${GPU_CHECK_FORCE_SETUP:-0}" != 1 ] && ready; then
  log "OpenMMLab stack already imports: setup skipped"
else
  log "setup into $site"
  setup || { log "SETUP FAILED: benchmarks not run"; exit 1; }
fi
"$py" -c 'import mmcv, mmengine, mmdet, numpy; print("mmcv", mmcv.__version__, "mmengine", mmengine.__version__,
"mmdet", mmdet.__version__, "numpy", numpy.__version__)' 2>&1 | tee -a "$summary"
log "setup done"

# ------------------------------------------------------------------------------------------------ benchmarks
if [ "${GPU_CHECK_SMALL:-0}" = 1 ]; then
  train_args=(--size 128 --batch 2 --num-objects 5 --repeats 1)
  infer_args=(--size 128 --max-per-img 20 --repeats 1)
  fm_size=128; fm_args=(--size 128 --num-images 1 --repeats 1)
else
  train_args=(--height 800 --width 1216 --batch 2 --num-objects 20 --repeats 5)
  infer_args=(--height 800 --width 1216 --batch 1 --repeats 10)
  fm_size=800; fm_args=(--size 800 --num-images 4 --repeats 3)
fi

# run_bench NAME CAP_S RESERVE_S CMD...: the command under a timeout, its output shown and in OUT_DIR/NAME.log
run_bench() {
  local name=$1 cap=$2 reserve=$3 t rc
  shift 3
  t=$(step_timeout "$cap" "$reserve")
  if [ "$t" -lt 20 ]; then
    log "$name: SKIPPED, only $(left) s left"; failures=$((failures + 1)); return
  fi
  log "$name: $* (timeout $t s)"
  timeout -k 10 "$t" "$@" 2>&1 | tee "$out_dir/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    log "$name: ok"
  else
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && log "$name: TIMED OUT after $t s" || log "$name: FAILED (exit $rc)"
    failures=$((failures + 1))
  fi
}

run_bench train_step 150 90 "$py" benchmarks/train_step.py --device "$device" "${train_args[@]}"
run_bench inference 80 60 "$py" benchmarks/inference.py --device "$device" "${infer_args[@]}"
run_bench free_mask 120 5 "$py" benchmarks/free_mask.py --device "$device" "${fm_args[@]}"

# ----------------------------------------------------------------------------------------------------- summary
echo
log "summary ($failures failed)"
for name in train_step inference free_mask; do
  [ -f "$out_dir/$name.log" ] || continue
  echo "---- $name" | tee -a "$summary"
  grep -v -i -E 'warn|^\s*(import |warnings\.|return _VF|_bootstrap)' "$out_dir/$name.log" | tail -n 20 \
    | tee -a "$summary"
done
ms=$(sed -n 's/^generator (backbone + FM): *\([0-9.]*\) ms\/image.*/\1/p' "$out_dir/free_mask.log" 2>/dev/null)
if [ -n "$ms" ]; then
  awk -v ms="$ms" -v size="$fm_size" -v dev="$device" 'BEGIN { printf "Free Mask R50 at %d px (%s, batch 1): " \
    "%.1f images/s  (target on a GPU at 800 px: >= 100)\n", size, dev, 1000 / ms }' | tee -a "$summary"
else
  log "Free Mask images/s: no generator time in free_mask.log"
fi
log "done in $SECONDS s; logs in $out_dir"
exit "$failures"
