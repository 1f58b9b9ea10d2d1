#!/usr/bin/env bash
# Puts tinyshakespeare at DST: copied from SRC when that file exists, else
# downloaded, else (offline) the 64 KiB excerpt kept in test/data, with a notice.
# usage: scripts/get_tinyshakespeare.sh [SRC] DST
set -euo pipefail
src=${1:-}; dst=${2:?usage: get_tinyshakespeare.sh [SRC] DST}
url=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
md5=6fb458f1232090904fb40fe944165e91
mkdir -p "$(dirname "$dst")"
[ -s "$dst" ] && exit 0
if [ -n "$src" ] && [ -s "$src" ] && [ "$(realpath "$src")" != "$(realpath -m "$dst")" ]; then
    cp "$src" "$dst.tmp" && mv "$dst.tmp" "$dst"
    echo "tinyshakespeare: copied from $src"
elif curl -fsSL --max-time 30 "$url" -o "$dst.tmp" 2>/dev/null && [ "$(md5sum < "$dst.tmp" | cut -d' ' -f1)" = "$md5" ]; then
    mv "$dst.tmp" "$dst"
    echo "tinyshakespeare: downloaded"
else
    rm -f "$dst.tmp"
    here=$(cd "$(dirname "$0")/.." && pwd)
    cp "$here/test/data/shakespeare_64k.txt" "$dst"
    echo "tinyshakespeare: no local copy and no network; using the 64 KiB excerpt in test/data"
fi
