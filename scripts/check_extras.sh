#!/usr/bin/env bash
# Installs each backend extra alone (keras-cskd[jax], [tensorflow], [torch]:
# no other backend, no scikit-learn, no Pillow) into its own fresh virtual
# environment and runs the library's doctests there, so an import or example
# that silently needs another extra fails here. Doctests that need an
# optional package are skipped with the reason (conftest.py).
# Then builds the wheel and the sdist (python -m build), installs the wheel
# (not the clone) with the quick start's extras into a fresh environment and
# runs the main job, `keras-cskd distill`, from outside the clone.
# Usage: bash scripts/check_extras.sh [extra ...]     (default: jax tensorflow torch)
#   VENV_ROOT=dir  where the environments go (default: a temporary folder)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
root=${VENV_ROOT:-$(mktemp -d)}
status=0
summary=""
for name in ${@:-jax tensorflow torch}; do
  echo "=============================== keras-cskd[$name] alone ==============================="
  start=$(date +%s)
  venv="$root/$name"
  "$PYTHON" -m venv "$venv" || exit 1
  # torch is pinned to the CPU build; a plain `torch` pulls a multi-GB CUDA build.
  if [ "$name" = "torch" ]; then "$venv/bin/pip" install -q "torch==2.13.0" || exit 1; fi
  "$venv/bin/pip" install -q -e ".[$name]" pytest || exit 1
  KERAS_BACKEND=$name TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -m pytest keras_cskd \
    -q -p no:cacheprovider -ra 2>&1 | tail -n 12
  rc=${PIPESTATUS[0]}
  summary+="[$name] alone: exit $rc in $(( $(date +%s) - start )) s"$'\n'
  [ $rc -ne 0 ] && status=1
done
echo "=============================== the built wheel ==============================="
start=$(date +%s)
dist="$root/dist"
"$PYTHON" -m pip install -q build && "$PYTHON" -m build -q --outdir "$dist" . >/dev/null
rc=$?
if [ $rc -eq 0 ]; then
  "$PYTHON" -m venv "$root/wheel" || exit 1
  wheel=$(ls "$dist"/keras_cskd-*.whl)
  "$root/wheel/bin/pip" install -q "$wheel[jax,demo]" || rc=1
  ls "$dist"/keras_cskd-*.tar.gz >/dev/null || rc=1
fi
if [ $rc -eq 0 ]; then
  (cd "$root" && KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3 "$root/wheel/bin/python" -c \
    "import keras_cskd, sys; sys.exit('site-packages' not in keras_cskd.__file__)" &&
    KERAS_BACKEND=jax "$root/wheel/bin/keras-cskd" distill --out "$root/wheel-run" | tail -n 12)
  rc=$?
fi
summary+="built wheel [jax,demo], keras-cskd distill: exit $rc in $(( $(date +%s) - start )) s"$'\n'
[ $rc -ne 0 ] && status=1

echo "=============================== summary ==============================="
printf "%s" "$summary"
exit $status
