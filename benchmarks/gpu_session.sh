#!/usr/bin/env bash
# One stage of the GPU checks and benchmarks, on a machine with a CUDA GPU and no network.
#
#   bash benchmarks/gpu_session.sh STAGE [OUT_DIR]
#
# Run from the repository root, with .whl/ beside it (python benchmarks/fetch_gpu_wheels.py,
# run where pip reaches the registry). Each stage fits a 10-minute command on one H100;
# results and logs go to OUT_DIR (default: $OUT, else results-gpu/). Stages, most important
# first:
#   tests    the GPU tests: engine on CUDA (precisions, compile, resume) and host syncs
#   anchor   PERFORMANCE.md's ResNet-18 SimCLR workload: engine and input-pipeline rows, 3 variants
#   engine   the six recipes' engine rows, as written and in bf16
#   rest     augmentation, MLM at BERT-base size (fp32, bf16), ONNX; lightly when its wheels came
#   compile  the six recipes with bf16 + channels_last + torch.compile
#   all      the five above in that order inside one deadline (GPU_SESSION_BUDGET_S, default 540 s:
#            one 10-minute command); a stage starts only with 45 s left and gets the time left.
#            The device tool returns at most 8 files, so everything goes into OUT_DIR/gpu-session.tgz
#            beside summary.md (every stage's table). On an H200 the five took 538 s (2026-11-30).
set -euo pipefail
stage="${1:?usage: gpu_session.sh tests|anchor|engine|rest|compile|all [OUT_DIR]}"
out="${2:-${OUT:-results-gpu}}"
mkdir -p "$out"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

if [ "$stage" = all ]; then
  work="$(mktemp -d)"
  deadline=$(( $(date +%s) + ${GPU_SESSION_BUDGET_S:-540} ))
  for each in tests anchor engine compile rest; do
    left=$(( deadline - $(date +%s) ))
    if [ "$left" -lt 45 ]; then echo "stage $each: not started, ${left} s left" | tee -a "$work/stages.txt"; continue; fi
    started=$(date +%s)
    status=0
    timeout -k 5 "$left" bash "$0" "$each" "$work/$each" >"$work/$each.out" 2>&1 || status=$?
    echo "stage $each: exit $status after $(( $(date +%s) - started )) s" | tee -a "$work/stages.txt"
  done
  { cat "$work/stages.txt"; cat "$work/tests/gpu.txt" 2>/dev/null || true; tail -n 3 "$work/tests/tests.log" 2>/dev/null || true
    for each in anchor engine compile rest; do echo; echo "## $each"; cat "$work/$each/$each.md" 2>/dev/null || tail -n 20 "$work/$each.out" 2>/dev/null || true; done
  } >"$out/summary.md"
  tar czf "$out/gpu-session.tgz" -C "$work" .
  cat "$out/summary.md"
  exit 0
fi

# What the machine's image lacks goes to /tmp/site; sslhub itself is installed in place so
# that its plugins' entry points are found. Nothing is fetched.
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 \
  || { cat "$out/install.log"; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/gpu.txt" 2>&1 || true

# The engine rows of the shipped recipes (run_all's ENGINE_RECIPES), without the GPU anchor.
SIX="$(cd benchmarks && python3 -c 'import run_all; print(",".join("engine:" + r for r in run_all.ENGINE_RECIPES))')"

bench() {
  python3 benchmarks/run_all.py --device cuda --verbose --json "$out/$stage.json" --markdown "$out/$stage.md" "$@" \
    2>&1 | tee "$out/$stage.log"
}

case "$stage" in
  tests)
    python3 -m pytest -q -n 0 -p no:cacheprovider tests/core/test_engine_cuda.py tests/contract/test_step_host_syncs.py \
      -rxXs 2>&1 | tee "$out/tests.log"
    ;;
  anchor)
    bench --quick --only engine:simclr_resnet18_cifar,input:simclr_resnet18_cifar,loading:simclr_resnet18_cifar \
      --variants recipe,bf16+channels_last,bf16+channels_last+compile
    ;;
  engine)
    bench --quick --only "$SIX" --variants recipe,bf16
    ;;
  rest)
    bench --quick --only augment,mlm,onnx,lightly,scaling
    ;;
  compile)
    bench --quick --only "$SIX" --variants bf16+channels_last+compile
    ;;
  *)
    echo "unknown stage '$stage': use tests, anchor, engine, rest, compile or all" >&2
    exit 2
    ;;
esac
