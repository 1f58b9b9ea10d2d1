#!/usr/bin/env bash
# Builds everything the GPU check runs (bf16 and fp32, sm_80 + sm_90a) on a machine
# with the toolchain, and gathers the shared libraries the binaries need that a bare
# CUDA machine may lack into .device/lib. Then, on the GPU machine:
#   PREBUILT=1 scripts/gpu_check.sh
# with train_gpt, build/test_all, build/bench_kernels, build-fp32/test_all and .device carried along.
# To compare kernels with an earlier commit in the same run, build its bench_kernels first
# (e.g. in a worktree) and pass BASELINE_BENCH=path/to/bench_kernels BASELINE_NAME=rev.
set -euo pipefail
cd "$(dirname "$0")/.."
make -j"$(nproc)" train_gpt build/test_all build/bench_kernels
make -j"$(nproc)" PRECISION=FP32 BUILD=build-fp32 build-fp32/test_all
rm -rf .device && mkdir -p .device/lib
# everything outside the C library and the CUDA driver/toolkit, which the GPU machine has
# (NCCL, 200+ MB, is far over what a call can carry: gpu_check.sh finds the machine's own)
ldd train_gpt build/test_all build/bench_kernels build-fp32/test_all | awk '/=> \// {print $3}' | sort -u |
    grep -vE '/(libc|libm|libdl|librt|libpthread|ld-linux[^/]*|libcuda|libcudart|libcublas|libcublasLt|libnvrtc|libnccl)\.so' |
    while read -r lib; do cp -L "$lib" .device/lib/; done
echo "$(git rev-parse --short HEAD)$(git diff --quiet || echo '+changes'), $(date -u +%Y-%m-%dT%H:%MZ), sm_80 + sm_90a" >.device/BUILT
# BASELINE_BENCH=PATH [BASELINE_NAME=REV]: a bench_kernels built from an earlier commit,
# timed by the check beside this one (rows baseline:KERNEL in the attention table)
if [ -n "${BASELINE_BENCH:-}" ]; then
    [ -x "$BASELINE_BENCH" ] || { echo "gpu_bundle.sh: BASELINE_BENCH=$BASELINE_BENCH is not an executable" >&2; exit 1; }
    mkdir -p .device/baseline
    cp "$BASELINE_BENCH" .device/baseline/bench_kernels
    echo "${BASELINE_NAME:-baseline}" >.device/baseline/NAME
fi
du -sh .device train_gpt build/test_all build/bench_kernels build-fp32/test_all
echo "carry: .device train_gpt build/test_all build/bench_kernels build-fp32/test_all"
