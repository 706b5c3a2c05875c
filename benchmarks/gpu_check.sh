#!/usr/bin/env bash
# One-shot GPU check, at most about 7 minutes on one GPU (each part has its own timeout; the optional
# part 4 adds its own limit), no network:
#
#     bash benchmarks/gpu_check.sh
#
# Needs only PyTorch, torchvision, numba, OpenCV, scikit-image, scikit-learn and tqdm: the
# package runs from this checkout (PYTHONPATH) and the data are scikit-image's textures.
# Records into benchmarks/results/gpu-check-<gpu>.json (and into $OUT if that is set):
#   1. batched synthesis throughput at 224 px (bottle settings), batches of 64 and 256;
#   2. full-mode training runs, short but complete schedules, with the time split of
#      bench_training.py, with and without synthesis on the GPU, peak GPU memory:
#      bottle settings at 224 px on 209 and 418 images, carpet settings at 256 px on 280;
#   3. the projected training time of one MVTec AD class and of all 15 (config's epochs);
#   4. OPTIONAL, only when NSA_MVTEC_ROOT names an MVTec AD folder (skipped with a message
#      otherwise): the size_clip A/B in full mode, "paper" against "reference", on screw,
#      capsule, pill and carpet (seeds $NSA_AB_SEEDS, default "0 1 2"), with `reproduce` into
#      $NSA_AB_OUTPUT (default runs/ab_size_clip).  That is hours, not minutes: it runs under
#      its own limit ($NSA_AB_SECONDS, default 600) and resumes where it stopped when run again.
# Each part runs under its own timeout; the JSON is written after every part, so a part that
# fails or runs out of time leaves the others' numbers.  Without a GPU it stops at once.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONWARNINGS=ignore
PYTHON=$(command -v python || command -v python3)
NSA_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export NSA_COMMIT

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False); run it on a GPU machine" >&2
    exit 1
fi

PARTS=$(mktemp -d)
trap 'rm -rf "$PARTS"' EXIT
WORKERS=$("$PYTHON" -c "import os; print(min(os.cpu_count() or 1, 16))")
status=0

part() {  # part NAME SECONDS COMMAND...: run one part under its timeout, then merge what exists
    local name=$1 seconds=$2
    shift 2
    echo "== $name (at most $seconds s)"
    if ! timeout --kill-after=10 "$seconds" "$@"; then
        echo "gpu_check: part $name failed or timed out" >&2
        echo "$name" >> "$PARTS/failed"
        status=1
    fi
    "$PYTHON" benchmarks/gpu_check.py merge "$PARTS" || status=1
}

part synthesis 60 "$PYTHON" benchmarks/gpu_check.py synthesis "$PARTS/synthesis.json"
part train_224 180 "$PYTHON" benchmarks/bench_training.py --device cuda --class bottle --image-size 224 \
    --images 209 418 --epochs 8 --workers "$WORKERS" --synthesis both --json "$PARTS/train_224.json"
part train_256 120 "$PYTHON" benchmarks/bench_training.py --device cuda --class carpet --image-size 256 \
    --images 140 280 --epochs 8 --workers "$WORKERS" --synthesis device --json "$PARTS/train_256.json"
part ab_size_clip "${NSA_AB_SECONDS:-600}" "$PYTHON" benchmarks/gpu_check.py ab_size_clip "$PARTS/ab_size_clip.json"
exit $status
