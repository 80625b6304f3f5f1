#!/usr/bin/env bash
# The prepared GPU run of the training benchmark (issue 7), for the device tool. Read bench/README.md first.
#
# Here, once per session (the GPU image lacks bitsandbytes and has transformers 5.17; we test with 5.24):
#     ../shared/tools/device_wheels.sh transformers==5.24.0 peft==0.21.2      # ~60 MB into .whl/ (git-ignored)
# Then ONE device call (it fits the 10-minute limit; the JSON is rewritten after every configuration, so a
# timeout still brings back what was measured):
#     run(command="bash bench/device_run.sh", carry=[".whl"], timeout_s=600)
# It writes to $OUT: gpu.txt, e4b/ and e2b/ (train_throughput.json and .png each), e4b.log, e2b.log.
set -uo pipefail
OUT=${OUT:-output/bench}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed: run ../shared/tools/device_wheels.sh here and carry .whl"; exit 1; }
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 TQDM_MININTERVAL=10
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers, peft, bitsandbytes as b; print(torch.__version__, transformers.__version__, peft.__version__, b.__version__)" \
  | tee -a "$OUT/gpu.txt"
# E4B first (both goals: 3x the seed, and <= 12 GiB at 2048 tokens as planned for a 12 GiB card), then E2B.
# 6 optimizer steps of 16 conversations, the first 2 untimed. Predicted ~6-8 min on an H100 (not measured): writing
# each random checkpoint (E4B: 14 GB bf16) and the 4-bit loads dominate. Each part writes its own JSON, so a timeout
# in the second costs only E2B's rows.
timeout 380 python3 bench/train_throughput.py --models gemma-3n-E4B --steps 6 --warmup 2 \
  --configs seed ours ours_small_card ours_full_logits --out "$OUT/e4b" --work-dir /tmp 2>&1 | tee "$OUT/e4b.log"
echo "E4B exit status ${PIPESTATUS[0]} (124 = stopped; the JSON holds every configuration that finished)"
timeout 170 python3 bench/train_throughput.py --models gemma-3n-E2B --steps 6 --warmup 2 \
  --configs seed ours --out "$OUT/e2b" --work-dir /tmp 2>&1 | tee "$OUT/e2b.log"
echo "E2B exit status ${PIPESTATUS[0]}"
