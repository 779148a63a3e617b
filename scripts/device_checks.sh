#!/usr/bin/env bash
# Every GPU check of this project in one command for a lent GPU machine (see docs/results.md):
# the time-to-accuracy run on real LA data, the training-iteration speed benchmark, the sliding-window benchmark.
# Needs the wheels of monai, pytorch-ignite, nibabel, fire, termcolor in .whl/ and the LA subset written by
#   python scripts/la_accuracy.py --protocol gpu --work_dir .devdata/la_gpu --prepare_only --num_unlabelled 8
# Results go to $OUT (or ./device_out).
set -u
OUT=${OUT:-device_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target .devsite .whl/*.whl || exit 1
export PYTHONPATH=$PWD/.devsite:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
start=$(date +%s)
timeout ${ACC_TIMEOUT:-340} python3 scripts/la_accuracy.py --protocol gpu --data_dir .devdata/la_gpu/data_subset \
    --work_dir .devwork/la_gpu --out "$OUT/la_gpu.json" --train_seconds ${TRAIN_SECONDS:-240} --bf16 --num_workers 6 \
    > "$OUT/la_gpu.log" 2>&1; echo "accuracy rc=$? after $(( $(date +%s) - start )) s"
grep -E "Dice|iterations|\| crln" "$OUT/la_gpu.log" | tail -8
timeout ${SPEED_TIMEOUT:-150} python3 scripts/benchmark_speed.py --out "$OUT/speed.json" > "$OUT/speed.log" 2>&1
echo "speed rc=$? after $(( $(date +%s) - start )) s"; tail -25 "$OUT/speed.log"
timeout ${SW_TIMEOUT:-50} python3 scripts/benchmark_sliding_window.py --data_dir .devdata/la_gpu/data_subset \
    --sw_batch_sizes 8 32 --out "$OUT/sw.json" > "$OUT/sw.log" 2>&1
echo "sliding window rc=$? after $(( $(date +%s) - start )) s"; tail -12 "$OUT/sw.log"
