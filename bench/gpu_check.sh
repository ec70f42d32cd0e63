#!/usr/bin/env bash
# The GPU checks, run once on a lent GPU machine from the repository root:
#   bash bench/gpu_check.sh OUTDIR        (device tool: timeout_s 600, OUTDIR = $OUT)
# In order of importance, each section with its own time limit (together about 500 s, under the
# device tool's 600 s per command) and its output in OUTDIR as it goes (a device session may end
# early): the CUDA-graph tests, the trainer benchmark with CUDA graphs, a CUDA `cegeo train`
# smoke run with graphs, the other CUDA tests, the benchmark without graphs; with UFM=1 also the
# UFM benchmark (measured before: 185x; needs a second call). Each section's start time goes to
# OUTDIR/log.txt (at most 8 files come back from the device tool).
# cegeo runs from the checkout (PYTHONPATH=src); nothing is installed. The device image's
# interpreter with PyTorch is python3 (PY=... to use another).
set -u
OUT=${1:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONPATH=src PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/log.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/log.txt"
section() { echo "== $1"; echo "$(date +%s) $1" >> "$OUT/log.txt"; }
PYTEST=("$PY" -m pytest -q -p no:cacheprovider -m cuda -o addopts="--import-mode=importlib")

section "CUDA-graph tests"
timeout 170 "${PYTEST[@]}" tests/test_train_graphs.py 2>&1 | tail -40 | tee "$OUT/cuda_graph_tests.txt"

section "bench/train.py --device cuda (CUDA graphs: the benchmark's default)"
timeout 150 "$PY" bench/train.py --device cuda --json "$OUT/bench_train.json" 2>&1 | tail -40 | tee "$OUT/bench_train.txt"

section "cegeo train on CUDA with CUDA graphs (digits, mlp, ldt gamma=0.5, 20 epochs)"
# A second call on a warm machine finds the first one's finished run there: cegeo train refuses it
# ("holds a finished run") and the summary below would print the old final.json as this run's.
rm -rf /tmp/gpu_run
timeout 45 "$PY" -m cegeo train --data digits --imbalance step:R=10,rho=0.5 --model mlp --loss ldt \
  --gamma 0.5 --epochs 20 --seed 0 --device cuda --cuda-graph on --out /tmp/gpu_run --no-progress >/dev/null 2>/tmp/train_err.txt; tail -5 /tmp/train_err.txt | tee "$OUT/train_smoke.txt"
"$PY" - <<'PY' | tee -a "$OUT/train_smoke.txt"
import json
f = json.load(open("/tmp/gpu_run/final.json"))
print({k: f.get(k) for k in ("device", "amp", "compile", "cuda_graph", "cuda_graph_fallback", "channels_last", "train_time_s", "wall_time_s")})
print("test balanced accuracy", f["test"]["balanced_accuracy"], "minority recall", f["test"]["group_recall"])
print("dist_W", f["geometry"]["dist_W"], "nc1", f["geometry"]["nc1"])
PY

section "other CUDA tests"
timeout 60 "${PYTEST[@]}" tests/test_losses.py tests/test_models.py tests/test_ufm.py tests/test_train.py \
  tests/test_estimator.py 2>&1 | tail -25 | tee "$OUT/cuda_tests.txt"

section "bench/train.py --device cuda --cuda-graph off"
timeout 70 "$PY" bench/train.py --device cuda --cuda-graph off 2>&1 | tail -40 | tee "$OUT/bench_train_nograph.txt"

if [ "${UFM:-0}" = 1 ]; then
  section "bench/ufm.py --device cuda"
  timeout 200 "$PY" bench/ufm.py --device cuda 2>&1 | tail -30 | tee "$OUT/bench_ufm.txt"
fi
section "end"
