#!/usr/bin/env bash
# The GPU check for a session that is lent a device (.library/device/README.md), as one call.
# Prepare here first (wheels the device lacks, and the data, gzipped: ../shared does not travel, and the
# working tree may carry 64 MiB at most):
#   echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0
#   mkdir -p .data/MNIST/raw && for f in ../shared/data/MNIST/raw/*; do gzip -c $f > .data/MNIST/raw/${f##*/}.gz; done
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".data"], timeout_s=570)  # ~9 min, and give_back.
# Under $OUT (8 files at most come back): steps.txt (timeline and environment), tests.log (the CUDA-graph
# tests), loop.log (benchmarks/loop_overhead.py), bench.log and its JSON record, profile.log (Lightning's
# SimpleProfiler on stage one, when time allows).
# The study's executors, as a call of their own (same preparation; ~4 min: 24 runs, and Ray starts a fresh process
# for each GPU task): run(command="bash benchmarks/gpu_check.sh study", carry=[".whl", ".data"], timeout_s=420)
# times the --quick study sequentially and as Ray tasks sharing the GPU, 1 and 4 runs per GPU
# (benchmarks/study_executors.py): steps.txt, study.log and its JSON record. It needs Ray on the device: Ray's wheel
# (~70 MB; 240 MB installed) does not fit the 64 MiB that travels, so where the device lacks Ray only the sequential
# study is timed (steps.txt says so).
# (The study part was written without a GPU at hand and has not run on one yet.)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
T0=$(date +%s)
step() { echo "== $(($(date +%s) - T0)) s: $*" | tee -a "$OUT/steps.txt"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
gunzip -kf .data/MNIST/raw/*.gz || exit 1
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
step "environment"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import sys, torch, lightning, torchmetrics, jsonargparse as j; print(sys.version.split()[0], torch.__version__,
    lightning.__version__, torchmetrics.__version__, j.__version__, torch.cuda.get_device_name())"
  lscpu | grep -E "Model name|^CPU\(s\)"
} 2>&1 | tee -a "$OUT/steps.txt"
study() {
  step "study: --quick sequentially, and as Ray tasks with 1 and 4 runs per GPU (1 repeat each, interleaved)"
  local ray=(--runs_per_gpu 1 4)
  if ! python3 -c "import ray" 2>/dev/null; then
    echo "Ray is not installed on this device: only the sequential study is timed" | tee -a "$OUT/steps.txt"
    ray=(--runs_per_gpu)
  fi
  timeout "$1" python3 benchmarks/study_executors.py --data_dir .data --repeats 1 --threads "${ray[@]}" 2>&1 \
    | tail -12 | tee "$OUT/study.log"
}
if [[ "${1:-}" == "study" ]]; then
  study 380
  cp benchmarks/out/study-executors-*.json "$OUT/" 2>/dev/null
  step "done"
  exit 0
fi
step "tests: graphed forward+backward == eager on CUDA, speed paths, NaN stop"
timeout 150 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_graphs.py tests/test_speed_paths.py \
  tests/test_errors.py::test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint 2>&1 \
  | tail -40 | tee "$OUT/tests.log"
step "loop overhead: Lightning's own cost per step on this host (the floor under any per-batch step)"
timeout 60 python3 benchmarks/loop_overhead.py --device cuda --steps 1500 --repeats 3 2>&1 | tail -8 \
  | tee "$OUT/loop.log"
# On an H200 (2026-11-27) one repeat of ours + plain took ~65 s; eager (no CUDA graphs) adds one more of ours.
# The default runs as one process (both stages, one start-up): the same stages, and the whole-command target.
step "benchmark: lit_transfer (default in one process; eager) and the plain loop, 3 repeats, interleaved"
timeout 300 python3 benchmarks/run.py --data_dir .data --repeats 3 --only ours_one_process ours_eager plain_ftz 2>&1 \
  | tee "$OUT/bench.log"
if (( $(date +%s) - T0 < 480 )); then  # only when the device time allows
  step "profile: stage one with Lightning's SimpleProfiler"
  timeout 60 python3 -m lit_transfer fit --config configs/pretrain.yaml --data.data_dir .data --data.download false \
    --trainer.default_root_dir /tmp/profile --trainer.enable_progress_bar false --trainer.profiler simple \
    > "$OUT/profile.log" 2>&1
fi
cp benchmarks/out/*.json "$OUT/" 2>/dev/null
step "done"
