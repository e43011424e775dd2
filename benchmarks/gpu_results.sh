#!/usr/bin/env bash
# The results tables of docs/results.md on one lent GPU machine, in one
# command: bash benchmarks/gpu_results.sh (from the repository root).
#
# The machine: one NVIDIA H200, 16 CPU cores, Python 3.12 with JAX (CUDA) and
# PyTorch, no Keras, no TensorFlow, no network, no ../shared. Prepare the two
# carried folders here first with `bash benchmarks/gpu_prepare.sh`, then
# launch this with carry [".whl", ".gpu-data"].
#
# What it does, within TOTAL_MINUTES (default 9) of wall time:
# 1. Keras 3.15.1 (and any of its dependencies the machine lacks) unpacked from
#    .whl/ into .gpu-pylib/ (no pip, no network, the system's packages untouched);
#    the data read from .gpu-data/ (KERAS_CSKD_DATA), checked against MD5SUMS.
# 2. `benchmarks/experiments.py run --workers $WORKERS` with a deadline: the
#    four teachers first (each once), then every tuning and student run on
#    WORKERS processes, highest priority first (MNIST table, Fashion conv
#    table, low-label row, studies). What finished is kept; the rest resumes
#    with the same command, on a CPU (sequentially) or another GPU session.
# 3. Into $OUT (at most 8 files, each under 16 MiB, none in a sub-folder):
#      run.log              this script's output, the plan before and after
#      results.tar.gz       benchmarks/results/ but the teachers' weights (the
#                           JSON records to commit)
#      logs.tar.gz          the runner's log and every worker's log
#      teacher-*.tar.gz     one per trained teacher: its weights, the
#                           benchmarks/results/teachers/*.npz to commit with
#                           its record (the runs resume from them anywhere)
# Back home, from the repository root (then commit benchmarks/results/):
#   tar xzf results.tar.gz && for t in teacher-*.tar.gz; do tar xzf "$t"; done
#   python benchmarks/experiments.py report
#   KERAS_BACKEND=jax python benchmarks/experiments.py run   # the rest, if any
#
# TINY=1 runs the same steps on the --smoke settings (a few hundred images, one
# epoch), e.g. on a CPU: TINY=1 OUT=/tmp/gpu-out bash benchmarks/gpu_results.sh
set -uo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-$PWD/cskd-out/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
TOTAL_MINUTES=${TOTAL_MINUTES:-9}
WORKERS=${WORKERS:-14}
PYTHON=${PYTHON:-python3}
RESULTS=${RESULTS:-benchmarks/results}
CACHE=${CACHE:-cskd-out/experiments-cache}
elapsed() { echo $(( $(date +%s) - start )); }
echo "== $(date -u +%FT%TZ) gpu_results.sh on $(hostname): $(nproc) cores"
command -v nvidia-smi > /dev/null && nvidia-smi -L
"$PYTHON" --version

# 1. Packages: unpack a wheel only where the module is missing (Keras always).
export LIB="$PWD/.gpu-pylib"
mkdir -p "$LIB"
"$PYTHON" - <<'EOF'
import glob
import importlib.util
import os
import zipfile

lib = os.environ["LIB"]
wheels = {  # module: wheel file pattern in .whl/
    "keras": "keras-3.15.1-*.whl",
    "namex": "namex-*.whl",
    "optree": "optree-*.whl",
    "absl": "absl_py-*.whl",
    "rich": "rich-*.whl",
    "markdown_it": "markdown_it_py-*.whl",
    "mdurl": "mdurl-*.whl",
    "pygments": "pygments-*.whl",
    "packaging": "packaging-*.whl",
    "typing_extensions": "typing_extensions-*.whl",
}
for module, pattern in wheels.items():
    if module != "keras" and importlib.util.find_spec(module) is not None:
        continue
    found = sorted(glob.glob(os.path.join(".whl", pattern)))
    if not found:
        raise SystemExit(f"gpu_results.sh: {module} is missing and .whl/ has no {pattern}")
    zipfile.ZipFile(found[-1]).extractall(lib)
    print(f"unpacked {found[-1]}")
for module in ("numpy", "jax", "ml_dtypes", "h5py"):
    if importlib.util.find_spec(module) is None:
        print(f"note: {module} is not installed" + (" (not needed)" if module == "h5py" else ""))
EOF
export PYTHONPATH="$LIB:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND=jax
export KERAS_CSKD_DATA="$PWD/.gpu-data"
export TF_CPP_MIN_LOG_LEVEL=2
for name in mnist fashion-mnist; do
  (cd ".gpu-data/$name" && md5sum --quiet -c MD5SUMS) || { echo "bad or missing .gpu-data/$name"; exit 2; }
done
"$PYTHON" -c "import jax, keras, keras_cskd; print('keras', keras.__version__, 'jax', jax.__version__, jax.devices())" || exit 3

# 2. The runs, with a deadline that leaves a minute for the workers to stop
# and the archives to be written.
extra=()
# RECIPES=fashion_conv,... runs those recipes only (the others resume elsewhere).
[ -n "${RECIPES:-}" ] && extra+=(--recipes "$RECIPES")
# RETRAIN_TEACHERS=1: teachers whose weights are lost are trained again, and
# every run of those recipes that used the old ones runs again with the new
# (with RECIPES=fashion_conv,fashion_mlp: the Fashion-MNIST tables, whose
# first teachers were lost on 2026-12-05; about 56 min of GPU worker time).
if [ "${RETRAIN_TEACHERS:-0}" = "1" ]; then
  # every recipe would rerun every run whose teacher's weights are lost
  [ -n "${RECIPES:-}" ] || { echo "RETRAIN_TEACHERS=1 needs RECIPES=... (which tables to redo)"; exit 4; }
  extra+=(--retrain-teachers)
fi
# Several training steps per compiled call: with many workers on one GPU the
# per-step Python dispatch, not the GPU, bounds the speed (8-10 ms a step
# measured with one step a call, 14 workers); the updates are the same.
export EXPERIMENTS_STEPS_PER_EXECUTION=${STEPS_PER_EXECUTION:-32}
if [ "${TINY:-0}" = "1" ]; then
  extra+=(--smoke --seeds 0 1)
  WORKERS=${TINY_WORKERS:-2}
fi
remaining=$("$PYTHON" -c "print(max(1.0, ($TOTAL_MINUTES * 60 - $(elapsed) - 60) / 60))")
echo "== plan ($(elapsed) s in), deadline in $remaining min, $WORKERS workers"
"$PYTHON" benchmarks/experiments.py run --plan --assume gpu --workers "$WORKERS" \
  --results "$RESULTS" --cache "$CACHE" "${extra[@]}"
# 3. The archives, also every 45 s while the runs go on: if the machine's
# time limit stops this script first, the last snapshot still comes back.
# Each archive is written as $OUT/partial.tar.gz, then renamed (atomic).
pack() {  # pack NAME [tar options] PATH...: $OUT/NAME.tar.gz of the paths that exist
  local name=$1
  shift
  tar czf "$OUT/partial.tar.gz" --ignore-failed-read "$@" 2> /dev/null \
    && mv -f "$OUT/partial.tar.gz" "$OUT/$name.tar.gz"
}
snapshot() {
  # The weights travel one teacher an archive: together they pass the
  # 16 MiB a file that comes back from the machine may have.
  pack results --exclude='*.npz' "$RESULTS"
  pack logs "$CACHE/log.txt" "$CACHE/workers"
  for archive in "$RESULTS"/teachers/*.npz; do
    # written under a .partial- name, then renamed: a name without it is whole
    case $archive in *.partial-*) continue ;; esac
    name=teacher-$(basename "$archive" .npz)
    if [ -f "$archive" ] && [ ! -f "$OUT/$name.tar.gz" ]; then
      pack "$name" "$archive"
    fi
  done
}
(while sleep 45; do snapshot; done) &
snapshotter=$!

echo "== run ($(elapsed) s in)"
timeout --kill-after=20 "$("$PYTHON" -c "print(int($remaining * 60 + 30))")" \
  "$PYTHON" benchmarks/experiments.py run --workers "$WORKERS" --deadline-minutes "$remaining" \
  --assume gpu --results "$RESULTS" --cache "$CACHE" "${extra[@]}"
echo "== runner exit $? ($(elapsed) s in); what is left:"
kill "$snapshotter" 2> /dev/null
wait "$snapshotter" 2> /dev/null
"$PYTHON" benchmarks/experiments.py run --plan --assume gpu --workers "$WORKERS" \
  --results "$RESULTS" --cache "$CACHE" "${extra[@]}" | tail -n 12
snapshot
rm -f "$OUT/partial.tar.gz"
ls -la "$OUT"
echo "== done in $(elapsed) s"
