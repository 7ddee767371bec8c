#!/usr/bin/env bash
# Fill gpu_wheels/ (beside the repository root's other ignored outputs) with the CPython 3.12
# x86-64 wheels of benchmarks/gpu_check/requirements.txt, for a GPU machine without network.
# Checks that the folder stays under the 64 MiB a device call can carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-gpu_wheels}
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
# Pure-Python packages published only as sdists are built into wheels here; the rest are downloaded
# as CPython 3.12 manylinux wheels.
sdist_only='^antlr4-python3-runtime=='
grep -v '^#' benchmarks/gpu_check/requirements.txt | grep -v "$sdist_only" > "$out.tmp/binary.txt"
pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -r "$out.tmp/binary.txt" -d "$out.tmp" 2> >(grep -v "^WARNING: Location" >&2)
pip wheel -q --no-deps $(grep "$sdist_only" benchmarks/gpu_check/requirements.txt) -w "$out.tmp" \
    2> >(grep -v "^WARNING: Location" >&2)
rm "$out.tmp/binary.txt"
size=$(du -sm "$out.tmp" | cut -f1)
if [ "$size" -ge 64 ]; then echo "build_wheels: $out is $size MiB, over the 64 MiB a device call carries" >&2; exit 1; fi
rm -rf "$out" && mv "$out.tmp" "$out"
echo "build_wheels: $(ls "$out" | wc -l) wheels, $size MiB in $out"
