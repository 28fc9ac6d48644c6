#!/usr/bin/env bash
# The GPU check for a session that is lent a device (.library/device/README.md), as one call.
# Prepare here first (wheels the device lacks, and the data, which does not travel from ../shared):
#   echo /.whl/ >> .git/info/exclude; echo /.data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       -d .whl jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0
#   mkdir -p .data/MNIST && cp -r ../shared/data/MNIST/raw .data/MNIST/
# Then: run(command="bash benchmarks/gpu_check.sh", carry=[".whl", ".data"], timeout_s=480), and give_back.
# It prints and saves under $OUT: the CUDA tests (graphed step == eager), then the benchmark on the GPU.
set -uo pipefail
OUT=${OUT:-/tmp/out}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -m pytest -q tests/test_graphs.py tests/test_speed_paths.py 2>&1 | tail -15 | tee "$OUT/tests.log"
timeout 330 python3 benchmarks/run.py --data_dir .data --repeats 3 --only ours plain_ftz lightning \
  --ours_args=--trainer.accelerator=gpu 2>&1 | tee "$OUT/bench.log"
cp benchmarks/out/*.json "$OUT/" 2>/dev/null
