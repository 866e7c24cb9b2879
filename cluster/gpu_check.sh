#!/usr/bin/env bash
# The GPU check: run once on a GPU host from the repository root, with mm_ray importable (installed, or on
# PYTHONPATH). Every step has its own time limit and log, so one slow step does not hide the others:
#
#   bash cluster/gpu_check.sh [OUT_DIR]            # logs and JSON results land in OUT_DIR (default gpu-check/)
#   bash cluster/gpu_check.sh OUT_DIR streaming    # only the streaming items (S1-S3 below), at most 8 minutes
#
# The streaming items (docs/streaming.md), each with its own limit (60 + 240 + 180 s, plus 120 s to make the
# shards when they are not there yet):
# S1. image decode on the GPU: the `gpu` test comparing nvJPEG with the CPU fallback, then images/s of the pools'
#     Pillow decoder, the torch CPU fallback and nvJPEG (batched) on the bench shards' images
# S2. `mm-ray bench ingest` (b) DataLoader, (c) mm_ray, (d) Ray Data floor on all cores, SAMPLES (20,000) samples
#     in 40 shards; the JSON holds CPU by process split into start-up and steady and the thread pools
#     (threadpool_info, torch, pyarrow, OS threads) reported from inside a decoding actor
# S3. `mm-ray bench train --source shards` on all cores with the model on the GPU: the DataLoader loop, streaming
#     in one execution and one execution per epoch, while `nvidia-smi` samples how busy the GPU is
# SAMPLES=1000 CORES=2 DEVICE=cpu run the same items on a machine without a GPU (S1's gpu test is then skipped).
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
WHICH=${2:-all}
PY=${PYTHON:-python3}
CORES=${CORES:-$(nproc)}
SAMPLES=${SAMPLES:-20000}
DEVICE=${DEVICE:-cuda}
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

gpu_busy() {  # gpu_busy START|STOP FILE: sample the GPU's busy % once a second while a step runs
    command -v nvidia-smi >/dev/null || return 0
    if [ "$1" = START ]; then
        nvidia-smi dmon -s u -d 1 >"$2" 2>&1 &
        DMON=$!
    else
        kill "$DMON" 2>/dev/null
        echo "GPU busy (% of 1 s samples, sm column) in $2:"
        awk '$1 !~ /^#/ && NF > 2 {n++; s += $2; if ($2 > 0) busy++} END {if (n) printf "mean sm %.1f%%, samples with sm > 0: %d of %d\n", s/n, busy, n}' "$2"
    fi
}

streaming_items() {
    step s1_gpu_decode_test 30 $PY -m pytest -q -p no:cacheprovider tests/unit/test_image_device.py
    step s1_gpu_decode 30 $PY -m mm_ray.bench.image_decode --shards "runs/bench-$SAMPLES/shards/train-*.tar" \
        --size 224 --device "$DEVICE" --json "$OUT/image_decode.json"
    step s2_bench_ingest 240 $PY -m mm_ray.cli.main bench ingest --cores "$CORES" --modes dataloader,ray,raydata \
        name="bench-$SAMPLES" demo.num_samples="$SAMPLES" demo.samples_per_shard=$((SAMPLES / 40)) \
        --json "$OUT/bench_ingest_streaming.json"
    gpu_busy START "$OUT/gpu_util_stream.txt"
    local gpu=true
    [ "$DEVICE" = cpu ] && gpu=false
    step s3_bench_train_stream 180 $PY -m mm_ray.cli.main bench train --source shards --cores "$CORES" \
        --modes loader,stream1,stream1e train.use_gpu=$gpu --json "$OUT/bench_train_stream.json"
    gpu_busy STOP "$OUT/gpu_util_stream.txt"
}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)"
if [ "$WHICH" = streaming ]; then
    # S1 reads the bench shards S2 generates: make them first when they are not there yet.
    [ -e "runs/bench-$SAMPLES/shards" ] || step s0_shards 120 $PY -m mm_ray.cli.main bench ingest --cores "$CORES" \
        --modes floor name="bench-$SAMPLES" demo.num_samples="$SAMPLES" demo.samples_per_shard=$((SAMPLES / 40))
    streaming_items
    cat "$OUT/steps.txt"
    exit 0
fi

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
streaming_items
cat "$OUT/steps.txt"
