#!/usr/bin/env bash
# Nsight Compute detail of the flash kernels at one head size: speed of light,
# occupancy, launch resources, warp stall reasons, memory and scheduler sections of the
# first launch of each kernel in `bench_kernels --attention` with that D (the shape
# (4, 16, 2048, 128) for D = 128, (8, 12, 1024, 64) for D = 64). What a change to a
# kernel should move, read before making it (doc/cuda.md).
#
# usage: bench/attention_ncu.sh [OUT_DIR] [D]   (defaults: runs/attention_ncu, 128)
# environment: BENCH (default build/bench_kernels), NCU (default: PATH, then /usr/local/cuda/bin)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
dir=${1:-runs/attention_ncu} D=${2:-128}
[[ $D == 64 || $D == 128 ]] || { echo "attention_ncu.sh: D '$D': expected 64 or 128" >&2; exit 2; }
bench=${BENCH:-build/bench_kernels}
ncu=${NCU:-$(command -v ncu || echo /usr/local/cuda/bin/ncu)}
[ -x "$bench" ] || { echo "attention_ncu.sh: $bench missing: make bench-kernels" >&2; exit 1; }
[ -x "$ncu" ] || { echo "attention_ncu.sh: Nsight Compute (ncu) not found; set NCU" >&2; exit 1; }
mkdir -p "$dir"
sections=(--section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats
          --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis --section SchedulerStats)
status=0
# kernels by their mangled names (Itanium ABI: ILi128E is the template argument 128, Lb0E
# false, LNS_4RopeE0E Rope::none): the first launch of each in the benchmark
for k in flash_forward_kernelILi${D}ELi4ELb0E flash_forward_wg_kernelILi${D}ELi8E \
         flash_dq_kernelILi${D}ELNS_4RopeE0ELb0E flash_dkv_kernelILi${D}ELNS_4RopeE0ELb0E \
         flash_forward_tma_kernelILi${D}E flash_dkv_tma_kernelILi${D}ELb1E flash_dq_convert_kernelILi${D}E \
         flash_dq_tma_kernelILi${D}E flash_dkv_tma_kernelILi${D}ELb0E; do
    name=${k%%ILi*}
    [[ $k == *Lb1E ]] && name+=_one_pass  # the TMA backward's single pass, not the dk/dv kernel of two
    out=$dir/ncu_${name}_d$D.txt
    if timeout --signal=KILL 40 "$ncu" --clock-control none --kernel-name-base mangled \
            --kernel-name "regex:$k" --launch-count 1 "${sections[@]}" \
            "$bench" --attention --reps 3 --warmup 1 >"$out" 2>&1 && grep -q 'Section: ' "$out"; then
        echo "attention_ncu.sh: $out"
    else
        echo "attention_ncu.sh: no profile of $k (see $out)" >&2
        status=1
    fi
done
exit $status
