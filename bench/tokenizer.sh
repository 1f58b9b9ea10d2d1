#!/usr/bin/env bash
# make bench-tokenizer: GPT-2 encoding MB/s of ./tokenize and of js-tiktoken (an independent
# implementation, run by node) on the same text in the same run, on one core and on all;
# checks that both give the same ids. Prints a Markdown table (doc/tokenizer.md keeps one).
#   BENCH_TEXT  the text (default: ../shared/data/gutenberg_100M.txt, else tinyshakespeare,
#               else test/data/shakespeare_64k.txt repeated)
#   BENCH_MB    how much of it, in MB (default 20), cut at a line end
#   THREADS     "all cores" (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD="${BUILD:-build}"
MB="${BENCH_MB:-20}"
THREADS="${THREADS:-$(nproc)}"
src="${BENCH_TEXT:-}"
if [ -z "$src" ]; then
    for f in ../shared/data/gutenberg_100M.txt data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
        [ -f "$f" ] && { src="$f"; break; }
    done
fi
text="$BUILD/bench_text.txt"
mkdir -p "$BUILD"
if [ -n "$src" ]; then
    head -c "$((MB * 1000000))" "$src" > "$text.tmp"
else
    src="test/data/shakespeare_64k.txt (repeated)"
    : > "$text.tmp"
    while [ "$(stat -c %s "$text.tmp")" -lt "$((MB * 1000000))" ]; do cat test/data/shakespeare_64k.txt >> "$text.tmp"; done
fi
# end at a line end so both sides see the same whole text
python3 -c "import sys; d=open(sys.argv[1],'rb').read(); open(sys.argv[2],'wb').write(d[:d.rfind(b'\n')+1])" "$text.tmp" "$text"
rm -f "$text.tmp"
command -v node >/dev/null || { echo "bench-tokenizer: node is not installed; it runs the reference" >&2; exit 1; }

field() { sed -n "s|.* $1=\([^ ]*\).*|\1|p"; }
echo "bench-tokenizer: $(stat -c %s "$text") bytes of $src, $(nproc) cores, $(sed -n 's/model name\s*: //p' /proc/cpuinfo | head -1)"
ours1=$(./tokenize bench --threads 1 "$text" --ids-out "$BUILD/bench_ids_lns.bin")
oursN=$(./tokenize bench --threads "$THREADS" "$text")
js1=$(node bench/tokenizer_bench.js "$text" 1 "$BUILD/bench_ids_js.bin")
jsN=$(node bench/tokenizer_bench.js "$text" "$THREADS")
same=no
cmp -s "$BUILD/bench_ids_lns.bin" "$BUILD/bench_ids_js.bin" && same=yes
base=$(echo "$js1" | field MB/s)
row() {  # name threads line
    local mbs; mbs=$(echo "$3" | field MB/s)
    printf "| %-22s | %7s | %8s | %7.1fx |\n" "$1" "$2" "$mbs" "$(awk "BEGIN {print $mbs / $base}")"
}
echo
echo "| implementation         | threads |     MB/s | vs js-tiktoken, 1 thread |"
echo "|------------------------|--------:|---------:|--------:|"
row "lns tokenize (gpt2)" 1 "$ours1"
row "lns tokenize (gpt2)" "$THREADS" "$oursN"
row "js-tiktoken 1.0.21" 1 "$js1"
row "js-tiktoken 1.0.21" "$THREADS" "$jsN"
echo
echo "tokens: lns $(echo "$ours1" | field tokens), js-tiktoken $(echo "$js1" | field tokens); ids identical: $same"
[ "$same" = yes ]
