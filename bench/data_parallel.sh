#!/usr/bin/env bash
# make bench-dp: data parallel throughput against one process, same run, same global batch.
#   DEVICE=cpu (default): N ranks x (THREADS/N) OpenMP threads against 1 process x THREADS
#     threads on the same cores, same global batch (strong scaling: the ratio is what
#     splitting the cores between ranks costs or gains).
#   DEVICE=cuda: N GPUs x B rows against 1 GPU x B rows (weak scaling: efficiency =
#     tokens/s on N GPUs / (N x tokens/s on one)).
# Also checks that both runs log the same first loss (the same model and data; on cpu the
# same global batch). Prints a Markdown table (doc/multi-gpu.md keeps one).
#   RANKS (2), THREADS (nproc), MODEL (gpt2-mini), B (8 rows per rank), T (128), STEPS (30);
#   the random token shard gets the preset's vocabulary (256 for *-mini/*-tiny, 50257 gpt2, 32000 llama)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mpirun >/dev/null || { echo "bench-dp: needs mpirun (openmpi-bin: make deps)" >&2; exit 1; }
DEVICE="${DEVICE:-cpu}" RANKS="${RANKS:-2}" THREADS="${THREADS:-$(nproc)}"
MODEL="${MODEL:-gpt2-mini}" B="${B:-8}" T="${T:-128}" STEPS="${STEPS:-30}"
BUILD="${BUILD:-build}" PYTHON="${PYTHON:-/usr/bin/python3}"
case "$MODEL" in *-mini|*-tiny) vocab=256 ;; gpt2-*) vocab=50257 ;; *) vocab=32000 ;; esac
dir="$BUILD/bench_dp"
shard="$dir/tokens_$vocab.bin"
mkdir -p "$dir"
[ "$STEPS" -ge 2 ] 2>/dev/null || { echo "bench-dp: STEPS=$STEPS: expected an integer >= 2" >&2; exit 1; }
[ -f "$shard" ] || "$PYTHON" scripts/make_random_shard.py "$shard" --tokens 2000000 --vocab "$vocab" >/dev/null
mpirun="mpirun --oversubscribe $( [ "$(id -u)" = 0 ] && echo --allow-run-as-root) --bind-to none"

run() {  # run LOG RANKS THREADS_PER_RANK ROWS_PER_RANK
    local log=$1 n=$2 th=$3 rows=$4
    local cmd="./train_gpt --device $DEVICE --model $MODEL -b $rows -t $T --steps $STEPS --lr 1e-4 --train-data $shard"
    [ "$DEVICE" = cpu ] && cmd="$cmd --threads $th"
    [ "$n" = 1 ] || cmd="$mpirun -np $n $cmd"
    if ! OMP_WAIT_POLICY=passive $cmd >"$log" 2>&1; then
        echo "bench-dp: failed: $cmd" >&2
        tail -5 "$log" >&2
        echo "(whole output in $log)" >&2
        exit 1
    fi
    [ "$(grep -cE '^step' "$log")" -ge 2 ] || { echo "bench-dp: $log has fewer than 2 steps (STEPS=$STEPS)" >&2; exit 1; }
}
median_tok_s() {  # the median tokens/s of the second half of the steps
    grep -E '^step' "$1" | tail -n $((STEPS / 2)) | sed -E 's/.*\| ([0-9]+) tok\/s.*/\1/' | sort -n |
        awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}
first_loss() { grep -E '^step +1/' "$1" | sed -E 's/.*loss ([0-9.]+).*/\1/'; }

if [ "$DEVICE" = cpu ]; then
    per=$((THREADS / RANKS)); [ "$per" -ge 1 ] || per=1
    run "$dir/one.log" 1 "$THREADS" $((B * RANKS))
    run "$dir/many.log" "$RANKS" "$per" "$B"
    setup="$MODEL, T $T, global batch $((B * RANKS)) rows; 1 process x $THREADS threads against $RANKS ranks x $per threads"
else
    run "$dir/one.log" 1 0 "$B"
    run "$dir/many.log" "$RANKS" 0 "$B"
    setup="$MODEL, T $T, $B rows per GPU; 1 GPU against $RANKS GPUs"
fi
one=$(median_tok_s "$dir/one.log") many=$(median_tok_s "$dir/many.log")
l1=$(first_loss "$dir/one.log") l2=$(first_loss "$dir/many.log")
echo "| setup | one process tok/s | $RANKS ranks tok/s | ratio | step-1 loss (one / ranks) |"
echo "|---|---|---|---|---|"
if [ "$DEVICE" = cpu ]; then
    ratio=$(awk -v a="$many" -v b="$one" 'BEGIN {printf "%.2f", a / b}')
else
    ratio=$(awk -v a="$many" -v b="$one" -v n="$RANKS" 'BEGIN {printf "%.2f (efficiency)", a / (n * b)}')
fi
echo "| $setup | $one | $many | $ratio | $l1 / $l2 |"
[ "$DEVICE" != cpu ] || [ "$l1" = "$l2" ] || { echo "bench-dp: the runs disagree on the first loss: $l1 against $l2" >&2; exit 1; }
