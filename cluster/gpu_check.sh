#!/usr/bin/env bash
# The GPU check: run once on a GPU host from the repository root, with mm_ray importable (installed, or on
# PYTHONPATH). Every step has its own time limit and log, so one slow step does not hide the others:
#
#   bash cluster/gpu_check.sh [OUT_DIR]        # logs and JSON results land in OUT_DIR (default gpu-check/)
#
# 1. the `gpu`-marked tests: NCCL DDP on Ray Train with bf16 and a checkpoint saved on the GPU loaded on CPU;
#    the image pool on the GPU (a pool of its own, text and audio sharing a CPU pool); training streamed
#    from shards on the GPU
# 2. `mm-ray bench ingest` on all cores (decode floor vs webdataset + DataLoader vs mm_ray)
# 3. `mm-ray bench train --source shards` with the model on the GPU, while `nvidia-smi` samples how busy
#    the GPU is once a second
# 4. large runs: the `gpu`-marked fp16 tests (a GradScaler step on CUDA; fp16 on a Ray Train GPU worker) and FSDP
#    over NCCL (2 workers: skipped with fewer than 2 GPUs); then `mm-ray bench train --modes eager,bf16` with a
#    GPU-bound model (a torchvision ResNet-18 image encoder at 224 px, random weights: nothing is downloaded),
#    fp32 against bf16 in one run, with the GPU's busy % sampled as in 3.
set -uo pipefail
OUT=${1:-gpu-check}
PY=${PYTHON:-python3}
CORES=$(nproc)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to OUT/NAME.log, report the outcome
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name: rc=$rc in $((SECONDS - start)) s" | tee -a "$OUT/steps.txt"
    tail -n 25 "$OUT/$name.log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)"

step gpu_tests 180 $PY -m pytest -q -m gpu -p no:cacheprovider --durations=5 tests/integration/test_train_gpu.py

step bench_ingest 150 $PY -m mm_ray.cli.main bench ingest --cores "$CORES" --json "$OUT/bench_ingest.json"

nvidia-smi dmon -s u -d 1 >"$OUT/gpu_util.txt" 2>&1 &
DMON=$!
step bench_train 220 $PY -m mm_ray.cli.main bench train --source shards --cores "$CORES" \
    train.use_gpu=true train.bf16=true --json "$OUT/bench_train.json"
kill $DMON 2>/dev/null
echo "GPU busy (% of 1 s samples, sm column) while bench train ran:"
awk '$1 !~ /^#/ && NF > 2 {n++; s += $2; if ($2 > 0) busy++} END {if (n) printf "mean sm %.1f%%, samples with sm > 0: %d of %d\n", s/n, busy, n}' "$OUT/gpu_util.txt"

step large_gpu_tests 300 $PY -m pytest -q -m gpu -p no:cacheprovider --durations=5 \
    tests/unit/test_precision.py tests/integration/test_large_runs_gpu.py

# 224 px images from the bench shards (preprocessed once into their own cache), a ResNet-18 that keeps the GPU busy:
# the question is what bf16 buys a GPU-bound step, and whether the input path keeps up.
nvidia-smi dmon -s u -d 1 >"$OUT/gpu_util_resnet.txt" 2>&1 &
DMON=$!
step bench_train_resnet 900 $PY -m mm_ray.cli.main bench train --cores "$CORES" --modes eager,bf16 \
    name=bench-resnet224 train.use_gpu=true image.size=224 model.preset=late_concat \
    model.encoders.image.source=torchvision model.encoders.image.arch=resnet18 \
    train.batch_size=128 train.epochs=5 --json "$OUT/bench_train_resnet.json"
kill $DMON 2>/dev/null
echo "GPU busy (% of 1 s samples, sm column) while the ResNet-18 bench ran:"
awk '$1 !~ /^#/ && NF > 2 {n++; s += $2; if ($2 > 0) busy++} END {if (n) printf "mean sm %.1f%%, samples with sm > 0: %d of %d\n", s/n, busy, n}' "$OUT/gpu_util_resnet.txt"
cat "$OUT/steps.txt"
