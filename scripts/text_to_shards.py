#!/usr/bin/python3
"""Turn a text file into llm.c token shards (train + val) for lns.cu.

    text_to_shards.py --tokenizer bytes INPUT.txt OUT_PREFIX [--val-fraction 0.1]
                      [--documents endoftext|paragraphs]

writes OUT_PREFIX_train.bin and OUT_PREFIX_val.bin. The `bytes` tokenizer maps each
byte to one token (vocab 256). The last val-fraction of the bytes becomes val, so the
split is contiguous and train never sees val text.

--documents marks document boundaries for train_gpt --data-layout documents: the text is
split into documents at lines holding only <|endoftext|> (`endoftext`, the convention of
../shared/data and the tokenize tool) or at blank lines (`paragraphs`; in a play, about
one speech each), blank documents are dropped, and every document is preceded by byte 0,
the bytes vocabulary's document separator (it has no end-of-text token, and text has no
NUL bytes). The split then falls on the first document start at or after the cut.

Shard format (dataloader/shard.h): 256 little-endian int32 header with
header[0] = 20240520 (magic), header[1] = 1 (version), header[2] = token count,
then the tokens as little-endian uint16.
"""
import argparse
import os
import re
import sys

import numpy as np

MAGIC_U16, VERSION_U16 = 20240520, 1
DOC_SEPARATOR = 0  # the bytes vocabulary's document separator (train_gpt --doc-token default)


def split_documents(data, how):
    """bytes -> byte tokens with DOC_SEPARATOR before every non-blank document."""
    if b"\0" in data:
        sys.exit("error: --documents: the input holds NUL bytes, which would read as document starts")
    if how == "endoftext":
        docs = re.split(rb"(?m)^<\|endoftext\|>[ \t\r]*(?:\n|$)", data)
    else:
        docs = re.split(rb"\n[ \t\r]*\n", data)
    out = bytearray()
    for d in docs:
        if d.strip():
            out += bytes([DOC_SEPARATOR]) + d
    return np.frombuffer(bytes(out), dtype=np.uint8).astype(np.uint16)


def write_shard(path, tokens):
    """Write uint16 tokens via path.tmp + fsync + rename: never a half-written shard."""
    assert tokens.dtype == np.uint16 and len(tokens) > 0
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = MAGIC_U16, VERSION_U16, len(tokens)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(header.tobytes())
            f.write(tokens.astype("<u2").tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        sys.exit(f"error: {path}: cannot write shard ({e.strerror})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokenizer", required=True, choices=["bytes"],
                    help="bytes: one token per byte, vocab 256")
    ap.add_argument("input", help="UTF-8 (or any) text file")
    ap.add_argument("out_prefix", help="writes OUT_PREFIX_train.bin and OUT_PREFIX_val.bin")
    ap.add_argument("--val-fraction", type=float, default=0.1,
                    help="fraction of the bytes, taken from the end, that go to val")
    ap.add_argument("--documents", choices=["endoftext", "paragraphs"],
                    help="mark documents (split at <|endoftext|> lines or blank lines) with byte 0 "
                         "before each, for train_gpt --data-layout documents")
    args = ap.parse_args()

    if not 0.0 < args.val_fraction < 1.0:
        sys.exit(f"error: --val-fraction: expected a value in (0, 1), got {args.val_fraction}")
    try:
        with open(args.input, "rb") as f:
            data = f.read()
    except OSError as e:
        sys.exit(f"error: {args.input}: cannot read input ({e.strerror})")

    if args.documents:
        tokens = split_documents(data, args.documents)
    else:
        tokens = np.frombuffer(data, dtype=np.uint8).astype(np.uint16)  # (N,), all < 256
    n_train = len(tokens) - int(len(tokens) * args.val_fraction)
    if args.documents:  # val starts at a document
        starts = np.flatnonzero(tokens[n_train:] == DOC_SEPARATOR)
        n_train = n_train + int(starts[0]) if len(starts) else len(tokens)
    n_val = len(tokens) - n_train
    if args.documents:
        docs = int(np.count_nonzero(tokens == DOC_SEPARATOR))
        if docs < 2:
            sys.exit(f"error: {args.input}: found {docs} document(s) (--documents {args.documents}); "
                     "need at least 2 to split train and val")
        if n_val < 1:
            sys.exit(f"error: --val-fraction {args.val_fraction:g}: the cut falls within the last of the {docs} "
                     f"documents of {args.input}, leaving val empty: expected a larger fraction")
    if n_val < 1 or n_train < 1:
        sys.exit(f"error: {args.input}: {len(tokens)} bytes is too short to split into "
                 f"non-empty train and val with --val-fraction {args.val_fraction}")

    for split, toks in (("train", tokens[:n_train]), ("val", tokens[n_train:])):
        path = f"{args.out_prefix}_{split}.bin"
        write_shard(path, toks)
        print(f"{split}: {len(toks)} tokens -> {path}")


if __name__ == "__main__":
    main()
