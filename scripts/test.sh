#!/usr/bin/env bash
# Installs the test dependencies and runs the whole suite under the
# TensorFlow, JAX and PyTorch backends, one process per backend.
# Usage: bash scripts/test.sh [extra pytest args]     (BACKENDS="jax torch" to pick)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ "${SKIP_INSTALL:-0}" != "1" ]; then
  # torch is pinned to the CPU build; a plain `torch` pulls a multi-GB CUDA build.
  "$PYTHON" -m pip install -q "torch==2.13.0" || exit 1
  "$PYTHON" -m pip install -q -e ".[tensorflow,jax,dev,docs]" || exit 1
fi

export TF_CPP_MIN_LOG_LEVEL=2
export PYTHONUNBUFFERED=1
status=0
summary=""
for backend in ${BACKENDS:-tensorflow jax torch}; do
  echo "=============================== KERAS_BACKEND=$backend ==============================="
  start=$(date +%s)
  KERAS_BACKEND=$backend "$PYTHON" -m pytest tests keras_cskd -q -p no:cacheprovider "$@"
  rc=$?
  summary+="$backend: exit $rc in $(( $(date +%s) - start )) s"$'\n'
  [ $rc -ne 0 ] && status=1
done
echo "=============================== summary ==============================="
printf "%s" "$summary"
exit $status
