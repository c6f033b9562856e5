#!/bin/bash
# One device call: build the Cython kernels, run every GPU test, then the GPU benchmarks.
# Logs and results land in $OUT (the device tool brings them back).
set -o pipefail
export PYTHONUNBUFFERED=1 SKETCHCORE_BENCH_DIR="$OUT" SKETCHCORE_CACHE_DIR=/tmp/sketchcore-cache
LOG="$OUT/log.txt"
{ nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv
  python -c "import sys, cupy, torch, numpy; print(sys.version.split()[0], 'cupy', cupy.__version__, 'torch', torch.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee "$LOG"
start=$(date +%s)
python setup.py build_ext --inplace -j 16 > "$OUT/build.txt" 2>&1 || { echo BUILD FAILED; tail -30 "$OUT/build.txt"; }
echo "build: $(( $(date +%s) - start )) s" | tee -a "$LOG"
SKETCHCORE_REQUIRE_GPU=1 timeout "${TEST_TIMEOUT:-300}" python -m pytest ${TESTS:-tests/gpu} -q -p no:cacheprovider -rfE 2>&1 \
    | tee -a "$LOG" | grep -E "passed|failed|error|Error|FAILED|assert" | tail -60
echo "tests done: $(( $(date +%s) - start )) s" | tee -a "$LOG"
for b in ${BENCHES:-operators_gpu sklinear_gpu linalg_gpu}; do
  [ -f "bench/$b.py" ] || continue
  timeout "${BENCH_TIMEOUT:-150}" python -m "bench.$b" 2>&1 | tee -a "$LOG" | tail -30
done
if [ -n "$EXTRA" ]; then eval "$EXTRA" 2>&1 | tee -a "$LOG" | grep -v Warning; fi
if [ -n "$BREAKDOWN" ]; then timeout 120 python -m bench.sklinear_gpu --breakdown 2>&1 | tee -a "$LOG" | grep -v Warning; fi
echo "total: $(( $(date +%s) - start )) s" | tee -a "$LOG"
