#!/usr/bin/env bash
# One short GPU check for a session lent a device: inference table (fast layout vs MONAI's blocks,
# float32 and bf16, batch 1 and 32) and a training-throughput line, in well under 5 minutes.
# Run from the repository root on the device machine:  bash tools/device_check.sh
# That machine reaches no package index and its image lacks MONAI and the rest of tools/device_wheels.py's kit: fetch
# them here first (.venv/bin/python tools/device_wheels.py) and carry .whl with the run. The device's torch stays.
set -euo pipefail
PY=${PY:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
    SITE=$(mktemp -d)
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
"$PY" -c "import pipeline.losses, pipeline.engines" || {
    echo "device_check: the benchmarks' imports fail; run '.venv/bin/python tools/device_wheels.py' here and carry .whl" >&2
    exit 1
}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
timeout 150 "$PY" tools/bench_network.py --devices cuda --dtypes float32 bf16 --configs paper --sizes 512 \
    --batches 1 32 --repeats 3 --layouts fast monai
timeout 60 "$PY" tools/bench_network.py --devices cuda --dtypes bf16 --configs paper --sizes 512 \
    --batches 32 --repeats 3 --compile || echo "torch.compile cell failed or timed out"
# fast against the code before the fast path; sdpa is fast's twin on CUDA (the CPU kernels do not run there). Each
# layout is a process of its own (about 5 s to start) timing at least 5 iterations for 5 s.
timeout 75 "$PY" tools/bench_training.py --devices cuda --amp --configs paper --crops 128 --batch 64 --iterations 5 \
    --seconds 5 --layouts fast before
