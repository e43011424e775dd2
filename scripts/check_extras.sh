#!/usr/bin/env bash
# Installs each backend extra alone (keras-cskd[jax], [tensorflow], [torch]:
# no other backend, no scikit-learn, no Pillow) into its own fresh virtual
# environment and runs the library's doctests there, so an import or example
# that silently needs another extra fails here. Doctests that need an
# optional package are skipped with the reason (conftest.py).
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
echo "=============================== summary ==============================="
printf "%s" "$summary"
exit $status
