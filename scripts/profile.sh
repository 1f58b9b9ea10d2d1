#!/usr/bin/env bash
# Kernel-level profile of a few training steps: Nsight Compute metrics per kernel launch
# turned into a per-kernel, per-phase roofline table (scripts/ncu_table.py), and, where
# Nsight Systems is installed, a timeline. Works with either tool alone and says which
# one is missing. doc/profiling.md explains the table.
#
# usage: scripts/profile.sh [--model M[,M...]] [-b B] [-t T] [--steps N] [--out DIR]
#   --model   presets to profile, comma-separated (default llama-130m,gpt2-124m)
#   -b, -t    batch and sequence length (default: gpt2-124m 16 x 1024, llama-130m 64 x 256)
#   --steps   steps measured by ncu, after one warm-up step (default 1)
#   --out     report directory (default: $OUT, else runs/profile)
#   --check   only check that ncu or nsys is there (make profile runs this before building)
# environment: PYTHON (default python3), PROF_BUILD (default build-prof; `make profile` builds train_gpt_prof and
#   bench_kernels there), NCU / NSYS (the tools, or none to leave one out; default: PATH,
#   then the CUDA and Nsight install directories), PROFILE_TIMEOUT (seconds per tool run, default 900),
#   COPY_GBS / GEMM_TFLOPS (skip measuring the ceilings; otherwise bench_kernels --ceilings),
#   LNS_COMMIT (the commit named in the reports; default: the checkout's HEAD).
#
# ncu runs with --clock-control none: the GPU keeps the clocks it trains with.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

models=llama-130m,gpt2-124m B="" T="" steps=1 dir=${OUT:-runs/profile} check_only=0
python=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case $1 in
        --model|-b|-t|--steps|--out)
            [ $# -ge 2 ] || { echo "profile.sh: $1 needs a value (--help lists the arguments)" >&2; exit 2; } ;;&
        --check) check_only=1; shift ;;
        --model) models=$2; shift 2 ;;
        -b) B=$2; shift 2 ;;
        -t) T=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --out) dir=$2; shift 2 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "profile.sh: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
    esac
done
for v in "$steps" ${B:+"$B"} ${T:+"$T"}; do
    [[ $v =~ ^[1-9][0-9]*$ ]] || { echo "profile.sh: '$v' (--steps, -b, -t): expected a positive integer" >&2; exit 2; }
done
build=${PROF_BUILD:-build-prof}
limit=${PROFILE_TIMEOUT:-900}
train=$build/train_gpt_prof
bench=$build/bench_kernels
find_tool() {  # find_tool NAME: PATH, then the usual install directories
    local t
    t=$(command -v "$1" 2>/dev/null) && { echo "$t"; return; }
    for t in /usr/local/cuda/bin/"$1" /usr/local/cuda/nsight-*/"$1" /opt/nvidia/nsight-*/*/"$1" \
             /opt/nvidia/nsight-*/*/target-linux-x64/"$1" /usr/local/cuda/nsight-*/target-linux-x64/"$1"; do
        [ -x "$t" ] && { echo "$t"; return; }
    done
}
ncu=${NCU:-$(find_tool ncu)}
nsys=${NSYS:-$(find_tool nsys)}
[ "$ncu" = none ] && ncu=  # NCU=none / NSYS=none: leave that tool out
[ "$nsys" = none ] && nsys=
[ -n "$ncu" ] && echo "profile.sh: Nsight Compute: $ncu" || echo "profile.sh: Nsight Compute (ncu) not found: no per-kernel metrics, no table"
[ -n "$nsys" ] && echo "profile.sh: Nsight Systems: $nsys" || echo "profile.sh: Nsight Systems (nsys) not found: no timeline"
if [ -z "$ncu" ] && [ -z "$nsys" ]; then
    echo "profile.sh: neither ncu nor nsys is installed; install Nsight Compute and/or Nsight Systems, or set NCU / NSYS" >&2
    exit 1
fi
command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 ||
    echo "profile.sh: no GPU found (nvidia-smi): the profiled runs will fail" >&2
[ "$check_only" = 1 ] && exit 0
mkdir -p "$dir"
log=$dir/profile.log
: >"$log"
for f in "$train" "$bench"; do
    [ -x "$f" ] || { echo "profile.sh: $f missing: run 'make profile' (or make BUILD=$build LNS_PROFILE_BUILD=1 $f)" >&2; exit 1; }
done

# 1. ceilings, measured on this device before anything else
ceil=$dir/ceilings.txt
if [ -n "${COPY_GBS:-}" ] && [ -n "${GEMM_TFLOPS:-}" ]; then
    printf 'copy_gbs %s\ngemm_tflops %s\n' "$COPY_GBS" "$GEMM_TFLOPS" >"$ceil"
elif ! timeout --signal=KILL 300 "$bench" --ceilings >"$ceil" 2>>"$log"; then
    echo "profile.sh: $bench --ceilings failed (see $log)" >&2
    cat "$ceil" >&2
    exit 1
fi
cat "$ceil"

# the metrics ncu_table.py reads, those this GPU has (ncu refuses unknown names)
wanted="gpu__time_duration.sum dram__bytes.sum
smsp__sass_thread_inst_executed_op_ffma_pred_on.sum smsp__sass_thread_inst_executed_op_fadd_pred_on.sum
smsp__sass_thread_inst_executed_op_fmul_pred_on.sum smsp__sass_thread_inst_executed_op_hfma_pred_on.sum
smsp__sass_thread_inst_executed_op_hadd_pred_on.sum smsp__sass_thread_inst_executed_op_hmul_pred_on.sum
sm__ops_path_tensor_src_bf16_dst_fp32.sum sm__ops_path_tensor_src_fp16_dst_fp32.sum
sm__ops_path_tensor_src_tf32_dst_fp32.sum sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed"
metrics=
if [ -n "$ncu" ]; then
    avail=$("$ncu" --query-metrics 2>>"$log" | awk '{print $1}')
    for m in $wanted; do
        if [ -z "$avail" ] || grep -qxF "${m%%.*}" <<<"$avail"; then metrics=$metrics${metrics:+,}$m
        else echo "profile.sh: this GPU has no metric ${m%%.*}; left out" | tee -a "$log"; fi
    done
    [[ ,$metrics, == *,gpu__time_duration.sum,* ]] || {
        echo "profile.sh: $ncu lists no gpu__time_duration metric, which the table needs (see $log)" >&2
        exit 1
    }
fi

summary=$dir/README.md
commit=${LNS_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}  # LNS_COMMIT: of prebuilt binaries
{
    echo "# Kernel profile, $(date -u +%Y-%m-%d), commit $commit"
    echo
    echo '```'
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader 2>&1
    [ -n "$ncu" ] && "$ncu" --version 2>&1 | tail -1
    [ -n "$nsys" ] && "$nsys" --version 2>&1 | tail -1
    cat "$ceil"
    echo '```'
} >"$summary"

status=0
IFS=, read -ra list <<<"$models"
for model in "${list[@]}"; do
    case $model in
        gpt2*) vocab=50257 b=${B:-16} t=${T:-1024} ;;
        *) vocab=32000 b=${B:-64} t=${T:-256} ;;
    esac
    out=$dir/$model
    mkdir -p "$out"
    shard=$out/data.bin
    if ! "$python" scripts/make_random_shard.py "$shard" --tokens $(( (steps + 12) * b * t + 1 )) --vocab $vocab \
            >>"$log" 2>&1; then
        echo "profile.sh: $python scripts/make_random_shard.py failed (see $log; PYTHON= picks the interpreter)" >&2
        status=1
        continue
    fi
    args=(--device cuda --model "$model" --norm lns -b "$b" -t "$t" --lr 1e-4 --train-data "$shard")
    echo "== $model, B=$b T=$t" | tee -a "$log"
    echo -e "\n## $model, B=$b, T=$t\n" >>"$summary"

    if [ -n "$ncu" ]; then
        # one warm-up step, then the measured ones; ncu_table.py --last-steps keeps those
        if timeout --signal=KILL "$limit" "$ncu" --clock-control none --nvtx --metrics "$metrics" \
                --force-overwrite --export "$out/kernels" "$train" "${args[@]}" --steps $((steps + 1)) >>"$log" 2>&1 \
           && "$ncu" --import "$out/kernels.ncu-rep" --csv --page raw --print-units base >"$out/ncu_raw.csv" 2>>"$log" \
           && "$python" scripts/ncu_table.py "$out/ncu_raw.csv" --ceilings "$ceil" --last-steps "$steps" \
                --title "$model, B=$b, T=$t, $(date -u +%Y-%m-%d), commit $commit" \
                --md "$out/table.md" --csv "$out/table.csv" 2>>"$log"; then
            echo "ncu: $out/table.md, $out/table.csv (report: $out/kernels.ncu-rep)" | tee -a "$summary"
            sed -n '/^## Per phase/,/^## Per kernel/p' "$out/table.md" | sed '$d' >>"$summary"
        else
            echo "ncu: FAILED (see $log)" | tee -a "$summary"
            status=1
        fi
    else
        echo "ncu: not installed, no table" >>"$summary"
    fi

    if [ -n "$nsys" ]; then
        if timeout --signal=KILL "$limit" "$nsys" profile --trace=cuda,nvtx,cublas --force-overwrite true \
                -o "$out/timeline" "$train" "${args[@]}" --steps 10 >>"$log" 2>&1; then
            "$nsys" stats --report cuda_gpu_kern_sum,nvtx_sum --format csv --output "$out/timeline" \
                "$out/timeline.nsys-rep" >>"$log" 2>&1
            echo "nsys: $out/timeline.nsys-rep (10 steps; summaries $out/timeline_*.csv)" | tee -a "$summary"
        else
            echo "nsys: FAILED (see $log)" | tee -a "$summary"
            status=1
        fi
    else
        echo "nsys: not installed, no timeline" >>"$summary"
    fi
    rm -f "$shard"
done
echo "profile.sh: summary in $summary"
exit $status
