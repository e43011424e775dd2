#!/usr/bin/env bash
# Installs the test dependencies, checks style (ruff lint and format) and
# runs the suite under the TensorFlow, JAX and PyTorch backends, one process
# per backend. Backend-independent tests (CLI, examples, docs, pure-Python
# doctests; marker `backend_independent`) run in one pass only: the JAX one
# when jax is among the backends (the README's main job and the examples'
# documented backend, and the quickest for their many small fits), else the
# first. Everything else, slow end-to-end tests included, runs on every
# backend. Each pass spreads its tests over WORKERS pytest-xdist processes,
# whole modules at a time, the longest first (the order is conftest.py's).
# Usage: bash scripts/test.sh [extra pytest args]
#   BACKENDS="jax torch"  pick backends      SKIP_INSTALL=1  skip the pip installs
#   WORKERS=1             no parallel workers (default 2)
#   e.g. BACKENDS=jax bash scripts/test.sh -m "not slow"   (the development loop)
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

echo "=============================== ruff ==============================="
start=$(date +%s)
"$PYTHON" -m ruff check . && "$PYTHON" -m ruff format --check .
rc=$?
summary+="ruff: exit $rc in $(( $(date +%s) - start )) s"$'\n'
[ $rc -ne 0 ] && status=1

BACKENDS=${BACKENDS:-tensorflow jax torch}
case " $BACKENDS " in
  *" jax "*) independent_backend=jax ;;
  *) independent_backend=${BACKENDS%% *} ;;
esac
WORKERS=${WORKERS:-2}
if [ "$WORKERS" -gt 1 ]; then parallel=(-n "$WORKERS" --dist loadfile --no-loadscope-reorder); else parallel=(); fi
for backend in $BACKENDS; do
  echo "=============================== KERAS_BACKEND=$backend ==============================="
  if [ "$backend" = "$independent_backend" ]; then independent=run; else independent=skip; fi
  # JAX: the pass shares one compilation cache (a temporary folder), so that a
  # program compiled once -- the same student's train step in many tests and
  # in the examples' and the CLI's subprocesses -- is loaded, not compiled,
  # the next time (about a quarter of the examples' time). Every program,
  # however quick to compile, as `keras-cskd distill` does for itself: the
  # per-op programs of eager code are the same in every process (4 examples:
  # 54-56 s with a 0.1 s minimum, 47-49 s with none).
  cache=()
  if [ "$backend" = "jax" ] && [ -z "${JAX_COMPILATION_CACHE_DIR:-}" ]; then
    xla_cache=$(mktemp -d)
    cache=(JAX_COMPILATION_CACHE_DIR="$xla_cache" JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0)
  fi
  start=$(date +%s)
  env "${cache[@]}" KERAS_BACKEND=$backend KERAS_CSKD_BACKEND_INDEPENDENT=$independent \
    "$PYTHON" -m pytest tests keras_cskd -q -p no:cacheprovider "${parallel[@]}" "$@"
  rc=$?
  [ ${#cache[@]} -gt 0 ] && rm -rf "$xla_cache"
  summary+="$backend: exit $rc in $(( $(date +%s) - start )) s"$'\n'
  [ $rc -ne 0 ] && status=1
done
echo "=============================== summary ==============================="
printf "%s" "$summary"
exit $status
