#!/usr/bin/env bash
# The GPU check in one call (e.g. the device tool: `bash benchmarks/gpu_check/run.sh` with
# gpu_wheels carried): install what the machine lacks from gpu_wheels/, run the `gpu` tests and
# the throughput measurements, write ${OUT:-.}/gpu_check.json. Extra arguments go to gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
wheels=${GPU_WHEELS:-gpu_wheels}
[ -d "$wheels" ] || { echo "gpu_check: no $wheels/; build it first with benchmarks/gpu_check/build_wheels.sh" >&2; exit 2; }
python -m pip install -q --no-index --find-links "$wheels" -r benchmarks/gpu_check/requirements.txt
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TQDM_DISABLE=1
timeout 480 python benchmarks/gpu_check/gpu_check.py --out "${OUT:-.}/gpu_check.json" "$@"
