#!/usr/bin/env bash
# Every GPU check of this project in one command for a lent GPU machine (see docs/results.md):
#   tests     the tests marked `gpu` (NCCL torchrun included)
#   profile   scripts/profile_iteration.py: host/device time per phase, kernel launches, host syncs
#   speed     scripts/benchmark_speed.py (fp32, bf16, bf16 + torch.compile)
#   accuracy  the time-to-accuracy run on real LA data (scripts/la_accuracy.py --protocol gpu)
#   crln_vs_mt  CRLN against the mean teacher at equal iterations on the same LA subset, seed and schedule
#             (CVM_ITERATIONS, default 1500 each; CVM_SEED, default 0): docs/measurements/la_gpu_crln_vs_mt.json.
#             Not in the default list: about 8 minutes on an H200, so run it alone (CHECKS=crln_vs_mt).
#   sw        scripts/benchmark_sliding_window.py over the 20 LA test volumes
# Choose with CHECKS (default: all, in this order), e.g. `CHECKS="tests profile" bash tools/device_checks.sh`;
# TESTS_K selects tests (pytest -k), ACC_COMPILE=yes|auto|no trains the accuracy run with torch.compile (auto:
# when the speed check measured it), TRAIN_SECONDS (TRAIN_SECONDS_COMPILE when compiling: compilation happens
# inside the training run) sets the iteration budget, the *_TIMEOUT variables bound each check.
# Needs the wheels of monai, pytorch-ignite, nibabel, fire, termcolor in .whl/ and, for accuracy and sw, the LA
# subset written by
#   python scripts/la_accuracy.py --protocol gpu --work_dir .devdata/la_gpu --prepare_only --num_unlabelled 8
# Results go to $OUT (or ./device_out).
set -u
OUT=${OUT:-device_out}; mkdir -p "$OUT"
CHECKS=${CHECKS:-tests profile speed accuracy sw}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .devsite .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
start=$(date +%s)
elapsed() { echo "$1 rc=$2 after $(( $(date +%s) - start )) s"; }
for check in $CHECKS; do
  case $check in
    tests)
      timeout ${TESTS_TIMEOUT:-150} python3 -m pytest -q -m gpu -p no:cacheprovider -k "${TESTS_K:-}" tests \
          > "$OUT/tests.log" 2>&1
      elapsed tests $?; tail -5 "$OUT/tests.log" ;;
    profile)
      timeout ${PROFILE_TIMEOUT:-120} python3 scripts/profile_iteration.py --out "$OUT/profile.json" > "$OUT/profile.log" 2>&1
      elapsed profile $?; grep -v "^machine" "$OUT/profile.log" | cut -c1-150 ;;
    accuracy)
      compile=""  # ACC_COMPILE=auto: compile when the speed check (run before) measured bf16 + compile
      if [ "${ACC_COMPILE:-no}" = yes ] || { [ "${ACC_COMPILE:-no}" = auto ] && python3 -c \
          "import json,sys; sys.exit(0 if json.load(open('$OUT/speed.json'))['results']['bf16_compile'] else 1)" 2>/dev/null; }
      then compile=--compile; fi
      seconds=${TRAIN_SECONDS:-240}; [ -n "$compile" ] && seconds=${TRAIN_SECONDS_COMPILE:-$seconds}
      echo "accuracy: ${compile:-no compile}, $seconds s of iterations"
      timeout ${ACC_TIMEOUT:-340} python3 scripts/la_accuracy.py --protocol gpu --data_dir .devdata/la_gpu/data_subset \
          --work_dir .devwork/la_gpu --out "$OUT/la_gpu.json" --train_seconds $seconds --bf16 $compile \
          --num_workers ${NUM_WORKERS:-6} > "$OUT/la_gpu.log" 2>&1
      elapsed accuracy $?; grep -E "Dice|iterations|\| crln" "$OUT/la_gpu.log" | tail -8 ;;
    crln_vs_mt)
      timeout ${CVM_TIMEOUT:-570} python3 scripts/la_accuracy.py --protocol gpu --data_dir .devdata/la_gpu/data_subset \
          --work_dir .devwork/la_gpu_cvm --out "$OUT/la_gpu_crln_vs_mt.json" --methods mean_teacher crln_full \
          --iterations ${CVM_ITERATIONS:-1500} --seed ${CVM_SEED:-0} --bf16 --probe_iterations 0 \
          --num_workers ${NUM_WORKERS:-6} > "$OUT/la_gpu_crln_vs_mt.log" 2>&1
      elapsed crln_vs_mt $?; grep -E "Dice|\| (crln|mean)" "$OUT/la_gpu_crln_vs_mt.log" | tail -8 ;;
    speed)
      timeout ${SPEED_TIMEOUT:-240} python3 scripts/benchmark_speed.py --out "$OUT/speed.json" > "$OUT/speed.log" 2>&1
      elapsed speed $?; tail -12 "$OUT/speed.log" ;;
    sw)
      timeout ${SW_TIMEOUT:-50} python3 scripts/benchmark_sliding_window.py --data_dir .devdata/la_gpu/data_subset \
          --sw_batch_sizes 8 32 --out "$OUT/sw.json" > "$OUT/sw.log" 2>&1
      elapsed "sliding window" $?; tail -12 "$OUT/sw.log" ;;
    *) echo "unknown check $check (tests profile accuracy crln_vs_mt speed sw)"; exit 2 ;;
  esac
done
