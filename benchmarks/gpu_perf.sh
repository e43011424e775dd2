#!/usr/bin/env bash
# The step-time table on a lent GPU (an H200 or H100), in one call of at
# most 8 minutes (9 where TensorFlow is installed): resnet32x4 -> resnet8x4,
# batch 64, for Keras on JAX (fp32 and mixed bf16), TensorFlow (when
# installed) and PyTorch, each run holding the raw PyTorch eager KD peer
# (fp32 and autocast bf16) in the same process.
#
#   bash benchmarks/gpu_perf.sh            # on the GPU machine
#   TINY=1 bash benchmarks/gpu_perf.sh     # the same plumbing on a CPU, in a few minutes
#
# Writes to $OUT (the device tool's folder) or cskd-out/gpu-perf: one
# step_time_<backend>_<precision>.txt and .json per run, device.txt, and
# table.md (benchmarks/perf_table.py over the JSON files). The targets
# (docs/performance.md): c/(a+b) <= 1.03, c/d <= 1.0, e/a <= 1.05, and
# c/p [.. vs torch fp32] <= 0.5 (twice the peer's images/s).
# Keras is not installed on the lent machine: carry its wheel in .whl/ (see
# the device README); it is installed here when present. TensorFlow is not
# there either (and too large to carry): its run is skipped with a note.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-cskd-out/gpu-perf}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX and TensorFlow would otherwise take (nearly) all GPU memory at start and
# leave none to the PyTorch peer in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 TF_FORCE_GPU_ALLOW_GROWTH=true
# Per-run time limits (s): JAX fp32 compiles 8 training programs, bf16 5;
# the whole script stays under 8 minutes without TensorFlow, 9 with it.
if [ "${TINY:-0}" = "1" ]; then
  PAIR="--pair mlp --batch-size 8"
  JAX_STEPS="--steps 2 --rounds 1 --losses kd,cskd"
  BF16_STEPS=$JAX_STEPS
  OTHER_STEPS="--steps 2 --rounds 1 --losses kd"
  LIMITS=(240 240 240)
else
  PAIR="--pair resnet --batch-size 64"
  JAX_STEPS="--steps 20 --rounds 5"
  BF16_STEPS="--steps 20 --rounds 5 --losses kd,cskd+cswt"
  # Keras on PyTorch runs the resnet step eagerly (~75 ms on an H100): fewer steps.
  OTHER_STEPS="--steps 10 --rounds 3 --losses kd,cskd+cswt"
  LIMITS=(200 130 100)
fi
start=$(date +%s)
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  python3 -c "import keras, torch; print('keras', keras.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())"
} | tee "$OUT/device.txt"

run() {  # name, time limit, then step_time.py arguments
  local name=$1 limit=$2
  shift 2
  timeout "$limit" python3 benchmarks/step_time.py $PAIR "$@" --json "$OUT/step_time_$name.json" \
    2>&1 | grep -v -e "^WARNING" -e "^I0000" -e "^W0000" -e "^E0000" | tee "$OUT/step_time_$name.txt"
}

run jax_fp32 "${LIMITS[0]}" --backend jax $JAX_STEPS
run jax_bf16 "${LIMITS[1]}" --backend jax $BF16_STEPS --mixed-precision mixed_bfloat16
if python3 -c "import tensorflow" 2>/dev/null; then
  run tensorflow_fp32 "${LIMITS[2]}" --backend tensorflow $OTHER_STEPS
else
  echo "tensorflow: not installed on this machine, skipped" | tee -a "$OUT/device.txt"
fi
run torch_fp32 "${LIMITS[2]}" --backend torch $OTHER_STEPS

reports=()
for name in jax_fp32 jax_bf16 tensorflow_fp32 torch_fp32; do
  [ -f "$OUT/step_time_$name.json" ] && reports+=("$OUT/step_time_$name.json")
done
python3 benchmarks/perf_table.py "${reports[@]}" | tee "$OUT/table.md"
echo "gpu_perf: $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
