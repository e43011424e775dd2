#!/usr/bin/env bash
# Prepares, on the development machine, the two folders that
# benchmarks/gpu_results.sh needs on a lent GPU machine (which has Python
# 3.12, JAX with CUDA and PyTorch, but no Keras, no TensorFlow, no network
# and no ../shared):
#   .whl/       Keras 3.15.1 and the pure-Python or cp312 wheels of its
#               dependencies that such a machine may lack (namex, optree;
#               absl-py, rich and its dependencies, packaging, typing_extensions
#               as a fallback: gpu_results.sh unpacks only what is missing)
#   .gpu-data/  the 8 MNIST and Fashion-MNIST .gz files and their MD5SUMS
# Both are ignored by git (.git/info/exclude, written here if the lines are
# absent) and travel with the run tool's `carry: [".whl", ".gpu-data"]`
# (about 47 MB together).
# Usage: bash benchmarks/gpu_prepare.sh   (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SHARED=${SHARED:-../shared/data}

mkdir -p .whl
download() {  # download NAME==VERSION [platform flags...] unless a wheel is there
  local spec=$1
  shift
  local stem=${spec%%==*}
  stem=${stem//-/_}
  if ls .whl/ 2>/dev/null | tr '-' '_' | grep -qi "^${stem}_"; then
    return
  fi
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "$@" -d .whl "$spec"
}
download keras==3.15.1
download namex==0.1.0
download optree==0.20.0 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
for spec in absl-py==2.5.1 rich==15.0.0 packaging==26.2 typing_extensions==4.16.0 \
  markdown-it-py==4.3.0 mdurl==0.1.2 pygments==2.21.0; do
  download "$spec"
done

for name in mnist fashion-mnist; do
  mkdir -p ".gpu-data/$name"
  cp "$SHARED/$name"/*.gz "$SHARED/$name/MD5SUMS" ".gpu-data/$name/"
  chmod u+w ".gpu-data/$name"/*
  (cd ".gpu-data/$name" && md5sum --quiet -c MD5SUMS)
done

exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for line in ".whl/" ".gpu-data/" ".gpu-pylib/"; do
  grep -qxF "$line" "$exclude" || echo "$line" >> "$exclude"
done
for folder in .whl .gpu-data; do
  git check-ignore -q "$folder" || { echo "not ignored by git: $folder" >&2; exit 1; }
done
du -sh .whl .gpu-data
