#!/usr/bin/python3
"""tinyshakespeare -> token shards, with any lns tokenizer.

    prepare_tinyshakespeare.py [--text FILE] [--tokenizer gpt2] [--out data/tinyshakespeare_gpt2]

The text: FILE when given, else downloaded from karpathy/char-rnn (md5-checked) into
data/tinyshakespeare.txt; without a network and without FILE it says so and stops.
Tokenizing is `./tokenize shard` (make tokenize): the last 10% of the text, cut at a line
start, becomes OUT_val_000000.bin, the rest OUT_train_000000.bin. --tokenizer takes what
train_gpt's does: bytes, gpt2, gpt2:DIR, sentencepiece:PATH.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import urllib.request

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
MD5 = "6fb458f1232090904fb40fe944165e91"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def download(dst):
    try:
        with urllib.request.urlopen(URL, timeout=30) as r:
            data = r.read()
    except OSError as e:
        sys.exit(f"error: cannot download tinyshakespeare from {URL} ({e}); no network? "
                 f"give a local copy with --text FILE")
    if hashlib.md5(data).hexdigest() != MD5:
        sys.exit(f"error: {URL}: md5 {hashlib.md5(data).hexdigest()}, expected {MD5}")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst + ".tmp", "wb") as f:
        f.write(data)
    os.replace(dst + ".tmp", dst)
    print(f"downloaded {dst}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--text", help="a local tinyshakespeare.txt (default: download it)")
    ap.add_argument("--tokenizer", default="gpt2", help="bytes, gpt2, gpt2:DIR, sentencepiece:PATH")
    ap.add_argument("--out", help="output prefix (default data/tinyshakespeare_TOKENIZER)")
    ap.add_argument("--val-fraction", default="0.1")
    args = ap.parse_args()

    text = args.text
    if text is None:
        text = os.path.join(ROOT, "data", "tinyshakespeare.txt")
        if not os.path.exists(text):
            download(text)
    elif not os.path.isfile(text):
        sys.exit(f"error: --text {text}: no such file")
    name = args.tokenizer.split(":")[0]
    out = args.out or os.path.join(ROOT, "data", f"tinyshakespeare_{name}")
    tool = os.path.join(ROOT, "tokenize")
    if not os.path.exists(tool):
        sys.exit(f"error: {tool} is missing; build it with `make tokenize`")
    cmd = [tool, "shard", "--tokenizer", args.tokenizer, "--val-fraction", args.val_fraction,
           "--out", out, "--force", text]
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
