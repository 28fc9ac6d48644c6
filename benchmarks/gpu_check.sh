#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, from a checkout set up as the README says, run
#
#   bash benchmarks/gpu_check.sh [DATA_DIR]      # DATA_DIR: the folder that holds MNIST/raw/ (default ../shared/data)
#
# It runs (about 10 minutes on an H100; everything is written to benchmarks/out/gpu-<time>/ as well):
#   1. tests whose real CLI runs train on the GPU here (LIT_TRANSFER_TEST_ACCELERATOR=gpu): the feature cache bit for
#      bit against every batch through the backbone, the stage handoff, the NaN stop on CUDA;
#   2. both stages of the notebook on the GPU, once with Lightning's SimpleProfiler (where the time goes);
#   3. benchmarks/run.py: lit_transfer and the plain PyTorch loop, 3 repeats interleaved, with the medians.
# Record the figures in benchmarks/RESULTS.md with the GPU, the versions and the command.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-../shared/data}
LOG_DIR=benchmarks/out/gpu-$(date +%Y%m%d-%H%M%S)
mkdir -p "$LOG_DIR"
step() { echo "== $(date +%T) $*" | tee -a "$LOG_DIR/steps.txt"; }
export PYTHONUNBUFFERED=1

step "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python -c "import sys, torch, lightning; print(sys.version.split()[0], torch.__version__, lightning.__version__,
    torch.cuda.get_device_name())"
} 2>&1 | tee -a "$LOG_DIR/steps.txt"
python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" || { echo "no CUDA device: nothing to check"; exit 1; }

step "tests on the GPU"
LIT_TRANSFER_TEST_ACCELERATOR=gpu python -m pytest -q -p no:cacheprovider tests/test_speed_paths.py \
  tests/test_pipeline.py 2>&1 | tail -30 | tee "$LOG_DIR/tests.log"
python -m pytest -q -p no:cacheprovider tests/test_errors.py -k "nan_loss and cuda" 2>&1 | tail -5 | tee -a "$LOG_DIR/tests.log"

step "stage one with the SimpleProfiler"
python -m lit_transfer fit --config configs/pretrain.yaml --data.data_dir "$DATA" --data.download false \
  --trainer.accelerator gpu --trainer.default_root_dir "$LOG_DIR/profile" --trainer.enable_progress_bar false \
  --trainer.profiler simple > "$LOG_DIR/profile.log" 2>&1

step "benchmark: lit_transfer and the plain loop, 3 repeats"
python benchmarks/run.py --data_dir "$DATA" --repeats 3 --only ours plain_ftz 2>&1 | tee "$LOG_DIR/bench.log"
step "done: $LOG_DIR"
