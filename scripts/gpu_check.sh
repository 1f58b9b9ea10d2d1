#!/usr/bin/env bash
# The GPU check: one command that builds for the local GPU, runs every GPU test (bf16
# and fp32 builds), benchmarks train_gpt against PyTorch on the same models and batch,
# and writes a markdown report. Each part stops at its own time limit. The parts run
# in the order of what they settle: tests, attention alone, the kernel profile, the
# sanitizers, every kernel alone, then throughput; with a time budget, a part that would start too late is
# reported as skipped (and so is each throughput row).
#
# usage: scripts/gpu_check.sh [REPORT_DIR]   (default: $OUT, else runs/gpu_check)
# environment: GPU_CHECK_BUDGET (seconds for the whole check; default 0, no budget),
#   GPU_CHECK_PROFILE=1 (also run scripts/profile.sh into REPORT_DIR/profile), PYTHON
#
# Building needs the Debian headers and libraries (make deps). On a GPU machine that
# has none of them, build here with scripts/gpu_bundle.sh and run the check with
# PREBUILT=1: it then uses ./train_gpt, build/test_all, build-fp32/test_all as they
# are and finds their libraries in .device/lib.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${OUT:-runs/gpu_check}}
mkdir -p "$dir"
report=$dir/gpu_report.md
log=$dir/gpu_check.log
: >"$log"
start=$(date +%s)
jobs=$(nproc)
python=${PYTHON:-python3}  # the machine's: PyTorch for the comparisons

built_commit=  # prebuilt: the commit the binaries were built from (a copied checkout's HEAD can lag)
[ "${PREBUILT:-0}" = 1 ] && [ -f .device/BUILT ] && built_commit=$(cut -d, -f1 .device/BUILT)
failed=0  # parts that failed: the exit status
skipped=0  # parts left out for the time budget
budget=${GPU_CHECK_BUDGET:-0}
[[ $budget =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: GPU_CHECK_BUDGET='$budget': expected seconds (0: no budget)" >&2; exit 2; }
left() { [ "$budget" -gt 0 ] && echo $((budget - ($(date +%s) - start))) || echo 999999; }
note() { echo "$*" | tee -a "$report"; }
# part NAME SECONDS CMD...: runs CMD with a time limit, output to the log, status to the report
part() {
    local name=$1 limit=$2 remaining
    shift 2
    remaining=$(left)
    if [ "$remaining" -lt 20 ]; then
        printf '| %s | skipped (time budget) | 0 s |\n' "$name" >>"$report"
        echo "[$name] skipped (time budget)" >&2
        skipped=$((skipped + 1))
        return 0
    fi
    local cut=0
    [ "$limit" -gt "$remaining" ] && limit=$remaining cut=1
    local t0=$(date +%s)
    echo "=== $name ($limit s)" >>"$log"
    timeout --signal=KILL "$limit" "$@" >>"$log" 2>&1
    local rc=$?
    local status=ok
    if [ $rc -eq 137 ] && [ $cut = 1 ]; then  # stopped by the budget, not by its own limit
        status="cut after ${limit}s (time budget)"
        skipped=$((skipped + 1))
    else
        [ $rc -eq 137 ] && status="TIMEOUT after ${limit}s" || { [ $rc -ne 0 ] && status="FAILED (exit $rc)"; }
        [ $rc -eq 0 ] || failed=$((failed + 1))
    fi
    printf '| %s | %s | %d s |\n' "$name" "$status" $(($(date +%s) - t0)) >>"$report"
    echo "[$name] $status" >&2
    return $rc
}

{
    if [ -n "$built_commit" ]; then built="binaries built at $built_commit"
    else built="commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"; fi
    echo "# GPU check, $(date -u +%Y-%m-%d), $built"
    echo
    echo '```'
    nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1
    nvcc --version 2>&1 | tail -1
    echo '```'
    echo
    echo "| part | status | time |"
    echo "|---|---|---|"
} >"$report"

if ! nvidia-smi -L >/dev/null 2>&1; then
    note "**No GPU found (nvidia-smi -L failed): every GPU part below will fail.**"
    failed=$((failed + 1))
fi

# 1. builds: bf16 (the default) and fp32, for the local GPU only
if [ "${PREBUILT:-0}" = 1 ]; then
    for f in train_gpt build/test_all build/bench_kernels build-fp32/test_all .device/lib; do
        [ -e "$f" ] || { note "**PREBUILT=1 but $f is missing: run scripts/gpu_bundle.sh and carry what it lists.**"; failed=$((failed + 1)); }
    done
    export LD_LIBRARY_PATH=$PWD/.device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    # NCCL (too large to carry) and any CUDA library the toolkit there lacks: from the
    # nvidia-* wheels of the machine's PyTorch
    if ldd ./train_gpt ./build/test_all 2>/dev/null | grep -q 'not found'; then
        wheels=$("$python" -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null)
        for d in $(find $wheels -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u); do
            LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$d
        done
        export LD_LIBRARY_PATH
        ldd ./train_gpt ./build/test_all | grep 'not found' >>"$log"
    fi
    echo "| build | prebuilt ($(cat .device/BUILT 2>/dev/null || echo '?')) | 0 s |" >>"$report"
else
    part "build bf16" 240 make -j"$jobs" train_gpt build/test_all build/bench_kernels
    part "build fp32" 200 make -j"$jobs" PRECISION=FP32 BUILD=build-fp32 build-fp32/test_all
fi

# 2. the single-instruction probes first (seconds; if a flash test fails or hangs below,
# they say whether ldmatrix/mma/wgmma layouts or the kernel logic is at fault), then
# every GPU test
export LNS_REQUIRE_GPU=1  # a [gpu] test that cannot find the device fails instead of skipping
export LNS_TEST_PROGRESS=1  # the flash tests name each variant and shape in the log before it runs
part "PTX probes" 30 ./build/test_all "PTX probes on the GPU*"
# flash apart: a kernel that faults, or hangs until the part's time limit, ends its process
# and with it the rest of that part's tests; so the variants without TMA first on their own
part "GPU tests bf16" 90 ./build/test_all "[gpu]~[flash]"
part "GPU flash tests bf16, no TMA" 60 env LNS_FLASH_VARIANTS=mma ./build/test_all "[gpu][flash]"
part "GPU flash tests bf16, all" 90 ./build/test_all "[gpu][flash]"
part "GPU tests fp32" 90 ./build-fp32/test_all "[gpu]"
# 3. attention alone: the flash kernels (and the first version) against PyTorch's
# scaled_dot_product_attention backends, same shapes, same run
attn_ours=$dir/bench_attention_ours.log attn_torch=$dir/bench_attention_torch.log
: >"$attn_ours"
: >"$attn_torch"
if [ -x build/bench_kernels ]; then
    # the TMA kernels apart, as the flash tests: one that hangs takes only its own rows
    part "attention bench (ours)" 60 bash -c "./build/bench_kernels --attention --attention-rows classic --reps 10 >'$attn_ours'"
    part "attention bench (ours, TMA)" 60 bash -c \
        "./build/bench_kernels --attention --attention-rows tma --reps 10 | grep --line-buffered '^attn_tflops' >>'$attn_ours'"
    # a baseline binary carried along (gpu_bundle.sh BASELINE_BENCH=...): the same table from an
    # earlier commit in the same run, rows named baseline:KERNEL, so a change is judged
    # against run-to-run noise of the same machine
    if [ -x .device/baseline/bench_kernels ]; then
        part "attention bench (baseline $(cat .device/baseline/NAME 2>/dev/null))" 60 bash -c \
            "./.device/baseline/bench_kernels --attention --reps 10 | sed -u -E 's/^(attn_tflops( [0-9]+){4}) /\\1 baseline:/' >>'$attn_ours'"
    fi
    part "attention bench (torch)" 90 bash -c "'$python' bench/bench_torch.py --attention >'$attn_torch'"
fi
# 4. the kernel profile (doc/profiling.md): ncu tables for the two presets (256 s on an
# H200: the ceilings, then up to PROFILE_TIMEOUT per preset)
if [ "${GPU_CHECK_PROFILE:-0}" = 1 ]; then
    prof_build=${PROF_BUILD:-build-prof}
    if [ "${PREBUILT:-0}" = 1 ]; then  # the carried binaries (no -lineinfo: tables, no source view)
        prof_build=$dir/prof_bin
        mkdir -p "$prof_build"
        ln -sf "$PWD/train_gpt" "$prof_build/train_gpt_prof"
        ln -sf "$PWD/build/bench_kernels" "$prof_build/bench_kernels"
    else
        part "build profile" 300 make -j"$jobs" BUILD="$prof_build" LNS_PROFILE_BUILD=1 \
            "$prof_build/train_gpt_prof" "$prof_build/bench_kernels"
    fi
    # nsys cannot make reports on some machines (doc/profiling.md): NSYS=none leaves it out
    part "profile (ncu)" 400 env PROF_BUILD="$prof_build" LNS_COMMIT="$built_commit" PROFILE_TIMEOUT="${PROFILE_TIMEOUT:-150}" \
        NSYS="${NSYS:-none}" PYTHON="$python" bash scripts/profile.sh --out "$dir/profile"
fi

# 5. the flash kernels' shared-memory barriers and bounds, which no CPU check covers
sanitizer=$(command -v compute-sanitizer || echo "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer")
if [ -x "$sanitizer" ]; then
    # as the flash tests: the variants without TMA first, so that a TMA kernel's hang or
    # report cannot hide theirs
    for tool in racecheck memcheck; do
        part "$tool flash, no TMA" 45 env LNS_FLASH_VARIANTS=mma "$sanitizer" --tool $tool --error-exitcode 1 \
            ./build/test_all "[gpu][sanitize]"
        part "$tool flash, all" 60 "$sanitizer" --tool $tool --error-exitcode 1 ./build/test_all "[gpu][sanitize]"
    done
fi

# 5b. every kernel alone on the two presets' shapes, against the ceilings (make bench-kernels)
kernels_md=$dir/bench_kernels.md
: >"$kernels_md"
[ -x build/bench_kernels ] && part "kernel bench" 90 bash -c "./build/bench_kernels --reps 20 >'$kernels_md'"

# 6. throughput: train_gpt against PyTorch (torch.compile, bf16 autocast) on the same shapes
data=$dir/bench_data
mkdir -p "$data"
bench_rows=()
declare -A torch_tok  # PyTorch's tok/s by "model norm B T": a shape is timed once
bench() {  # bench MODEL NORM B T DATA [TRAIN_GPT_FLAGS]
    local model=$1 norm=$2 B=$3 T=$4 shard=$5 flags=${6:-}
    local out=$dir/bench_${1}_${2}${flags:+_$(echo "$flags" | tr -c 'a-z0-9\n' '_')}.log
    local label=$norm${flags:+, $flags} key="$1 $2 $3 $4"
    # ours at most 60 s, PyTorch (torch.compile) at most 150 s or what the budget leaves
    local remaining torch_limit
    remaining=$(left)
    torch_limit=$((remaining - 65 < 150 ? remaining - 65 : 150))
    [ -n "${torch_tok[$key]:-}" ] && torch_limit=$((remaining - 65))  # PyTorch already timed: ours alone
    if [ "$torch_limit" -lt 30 ]; then
        bench_rows+=("| $model | $label | $B x $T | skipped (time budget) | | | |")
        skipped=$((skipped + 1))
        return
    fi
    local vocab=50257
    [[ $model == llama* ]] && vocab=32000
    [ -f "$shard" ] || "$python" scripts/make_random_shard.py "$shard" --tokens 20000000 --vocab $vocab >>"$log" 2>&1 ||
        note "**$python scripts/make_random_shard.py failed (gpu_check.log): the $model rows will fail.**"
    # shellcheck disable=SC2086  # flags: several words
    timeout --signal=KILL 60 ./train_gpt --device cuda --model "$model" --norm "$norm" -b "$B" -t "$T" \
        --steps 30 --lr 1e-4 --train-data "$shard" $flags >"$out" 2>&1
    # median tok/s and MFU of steps 11..30
    local ours mfu
    ours=$(grep -E '^step' "$out" | tail -n 20 | sed -E 's/.*\| ([0-9]+) tok\/s.*/\1/' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
    mfu=$(grep -E '^step' "$out" | tail -n 20 | sed -nE 's/.*MFU ([0-9.]+)%.*/\1/p' | sort -n | awk '{a[NR]=$1} END {if (NR) print a[int((NR+1)/2)]}')
    local torch=${torch_tok[$key]:-}
    [ -n "$torch" ] || torch=$(timeout --signal=KILL "$torch_limit" "$python" bench/bench_torch.py --model "$model" \
        --norm "$norm" -b "$B" -t "$T" --steps 30 2>>"$log" | sed -nE 's/.*: ([0-9]+) tok\/s.*/\1/p')
    torch_tok[$key]=$torch
    local ratio="n/a"
    [ -n "$ours" ] && [ -n "$torch" ] && ratio=$(awk -v a="$ours" -v b="$torch" 'BEGIN {printf "%.2f", a / b}')
    bench_rows+=("| $model | $label | $B x $T | ${ours:-failed} | ${mfu:-?}% | ${torch:-failed} | $ratio |")
    [ -n "$ours" ] || failed=$((failed + 1))  # PyTorch missing there is not ours to fail
    cat "$out" >>"$log"
}
if [ -x ./train_gpt ]; then
    bench gpt2-124m lns 16 1024 "$data/gpt2.bin"
    bench llama-130m lns 64 256 "$data/llama.bin"
    bench gpt2-124m pre 16 1024 "$data/gpt2.bin"
    bench llama-130m pre 64 256 "$data/llama.bin"
    bench gpt2-124m lns 16 1024 "$data/gpt2.bin" "--flash-kernels tma"  # PyTorch's number from the first row
fi

# 6b. several GPUs: data parallel weak scaling (needs mpirun there)
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
dp_table="(one GPU: data parallel scaling not measured)"
if [ "${ngpu:-0}" -ge 2 ] && command -v mpirun >/dev/null; then
    part "data parallel bench" 120 bash -c "DEVICE=cuda RANKS=$ngpu MODEL=gpt2-124m B=16 T=1024 STEPS=20 bash bench/data_parallel.sh >'$dir/bench_dp.md'"
    dp_table=$(cat "$dir/bench_dp.md")
fi

# One row per (shape, kernel), ours in the order benchmarked, with the ratio to the best
# PyTorch backend on the shape (its name in the last column). The RoPE rows do more work
# than PyTorch's rows (which have no RoPE): read them against the plain flash row.
attn_table() {
    awk '
        function r(a, b) { return (a ~ /^[0-9.]+$/ && b > 0) ? sprintf("%.2f", a / b) : "n/a" }
        FNR == NR && $1 == "attn_tflops" {
            k = $2 " x " $3 " x " $4 " x " $5
            if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
            n[k]++; kern[k, n[k]] = $6; f[k, n[k]] = $8; b[k, n[k]] = $10; next
        }
        $1 == "torch_attn_tflops" {
            k = $2 " x " $3 " x " $4 " x " $5
            if (!(k in seen)) { seen[k] = 1; order[++nk] = k }
            if ($8 > tf[k]) { tf[k] = $8; tfn[k] = $6 }
            if ($10 > tb[k]) { tb[k] = $10; tbn[k] = $6 }
        }
        END {
            print "| B x H x T x D | kernel | fwd | bwd | fwd / best torch | bwd / best torch | best torch fwd, bwd |"
            print "|---|---|---|---|---|---|---|"
            for (i = 1; i <= nk; i++) {
                k = order[i]
                for (j = 1; j <= n[k]; j++)
                    printf "| %s | %s | %s | %s | %s | %s | %s (%s), %s (%s) |\n", k, kern[k, j], f[k, j], b[k, j],
                        r(f[k, j], tf[k]), r(b[k, j], tb[k]), tf[k], tfn[k], tb[k], tbn[k]
            }
        }' "$attn_ours" "$attn_torch"
}

{
    echo
    echo "## Causal attention alone, TFLOP/s (forward 2*B*H*T*T*D, backward 2.5x; goal: ratio >= 0.8)"
    echo
    echo "flash: the default (mma.sync, 4-warp blocks); naive: the first version; flash_rope_first /"
    echo "flash_rope_on_load: with RoPE in its two placements (the faster should be the default);"
    echo "flash_wgmma: sm_90a products; *_8warps: 128-row forward blocks (the backward is unchanged);"
    echo "flash_32rows: the mma.sync forward with 32 rows per warp (two 16-row tiles sharing each K and V fragment);"
    echo "flash_tma: the warp-specialised TMA + wgmma kernels (sm_90a; _rope_first: with RoPE rotated first),"
    echo "the forward persistent, the backward in one pass with dq added in order; flash_tma_dq_kernel: that"
    echo "backward as two kernels; flash_tma_block_per_work: that forward on a block per (head, query block);"
    echo "flash_tma_bwd_group32 / _group_all: that backward's key blocks handed out across 32 heads / all heads,"
    echo "not head by head (fewer SMs idle at the end; more heads' Q and dout in L2 at once)."
    echo
    attn_table
    echo
    if [ -f "$dir/profile/README.md" ]; then
        echo "## Kernel profile (per phase; per kernel in profile/*/table.md)"
        echo
        sed 1d "$dir/profile/README.md"
        echo
    fi
    if [ -s "$kernels_md" ]; then
        echo "## Kernels alone (build/bench_kernels: median of 20, L2 flushed)"
        echo
        sed -n '/^# Kernel micro-benchmarks/,/^## Causal attention/p' "$kernels_md" | sed '1d;$d'
        echo
    fi
    echo "## Data parallel"
    echo
    echo "$dp_table"
    echo
    echo "## Throughput (train_gpt bf16 vs PyTorch torch.compile + bf16 autocast, same model and batch)"
    echo
    echo "| model | norm | B x T | train_gpt tok/s | MFU | PyTorch tok/s | ratio |"
    echo "|---|---|---|---|---|---|---|"
    printf '%s\n' "${bench_rows[@]}"
    echo
    echo "## Test summaries"
    echo
    echo '```'
    grep -E '^(tests:|no CUDA)' "$log"
    echo '```'
    echo
    echo "## Failures (first 60 lines)"
    echo
    echo '```'
    grep -E -A12 'FAILED|error|Error' "$log" | head -60
    echo '```'
    echo
    echo "Total: $(($(date +%s) - start)) s. Full log: gpu_check.log"
} >>"$report"
echo "Parts failed: $failed; skipped for the time budget: $skipped" >>"$report"
cat "$report"
[ "$failed" -eq 0 ]
