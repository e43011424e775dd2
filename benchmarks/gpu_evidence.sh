#!/usr/bin/env bash
# The evidence runs for a lent GPU (an H200 or H100), in one call: the
# CIFAR-100 recipe when keras.datasets finds its archive in the Keras cache
# (never downloaded), and the resnet32x4 -> resnet8x4 step time in fp32 and
# bf16. The results tables (docs/results.md) have their own script,
# benchmarks/gpu_results.sh.
#
#   bash benchmarks/gpu_evidence.sh            # on the GPU machine
#   TINY=1 bash benchmarks/gpu_evidence.sh     # the same plumbing on a CPU, in a minute
#
# Results go to $OUT (the device tool's folder) or cskd-out/gpu: the step-time
# tables as text.
# Keras is not installed on the lent machine: carry its wheels in .whl/
# (see the device README); they are installed here when present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-cskd-out/gpu}
mkdir -p "$OUT/results"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
if [ "${TINY:-0}" = "1" ]; then
  STEPS="--steps 2 --rounds 1 --batch-size 8 --losses kd,cskd"
else
  STEPS="--steps 20 --rounds 5 --batch-size 64"
fi
start=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$OUT/device.txt"
python3 -c "import keras, jax; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" \
  | tee -a "$OUT/device.txt"

# 1. (The results tables moved to benchmarks/gpu_results.sh.)

# 2. CIFAR-100 (§7 recipe, shortened to the time left), only from the Keras cache.
if [ -d "$HOME/.keras/datasets/cifar-100-python" ] && [ "${TINY:-0}" != "1" ]; then
  timeout 120 python3 benchmarks/reproduce.py --dataset cifar100 --teacher resnet32x4 \
    --student resnet8x4 --epochs 2 --seeds 0 --methods ce,kd,cskd --out "$OUT/cifar100" \
    2>&1 | tail -n 30 | tee "$OUT/cifar100.log"
else
  echo "CIFAR-100 skipped: no archive in ~/.keras/datasets (never downloaded)" | tee "$OUT/cifar100.log"
fi

# 3. Step time of the resnet pair, fp32 and bf16 (ratios against the limit and keras.distillation).
for precision in "" "--mixed-precision mixed_bfloat16"; do
  timeout 150 python3 benchmarks/step_time.py --backend jax --pair resnet $STEPS $precision 2>&1 \
    | grep -v "^WARNING" | tee -a "$OUT/step_time.txt"
done
echo "gpu_evidence: $(( $(date +%s) - start )) s" | tee -a "$OUT/device.txt"
