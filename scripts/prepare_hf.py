#!/usr/bin/python3
"""FineWeb-Edu or C4 -> token shards, through Hugging Face `datasets` and any Hugging Face
tokenizer (the paper's setup: C4 with t5-base).

    prepare_hf.py --dataset c4 --tokenizer t5-base --out data/c4_t5 [--max-tokens 1e9]
    prepare_hf.py --dataset fineweb-edu --tokenizer gpt2 --out data/fineweb_edu

Streams the dataset (nothing is downloaded whole), tokenizes on all cores and writes the
same shards as `tokenize shard` (llm.c format): OUT_val_000000.bin first, holding the
first --val-tokens tokens, then OUT_train_000000.bin, ... of --shard-tokens each. Every
document is preceded by the tokenizer's end-of-text token (its eos token: </s> for T5,
<|endoftext|> for GPT-2). Tokens are uint16, or uint32 for vocabularies over 65536.

Needs `pip install datasets transformers` (and sentencepiece for T5) and a network; where
either is missing it says so and stops. Offline, JSONL or text files go through
`./tokenize shard` instead (GPT-2, or --tokenizer sentencepiece:spiece.model for T5).
"""
import argparse
import os
import sys
from multiprocessing import Pool

import numpy as np

DATASETS = {  # name -> load_dataset arguments and the text field
    "c4": (("allenai/c4", "en"), "text"),
    "fineweb-edu": (("HuggingFaceFW/fineweb-edu", "sample-10BT"), "text"),
}
MAGIC = {False: (20240520, 1), True: (20240801, 7)}  # uint16 / uint32 tokens

_tok = None  # each worker's tokenizer


def write_shard(path, tokens, wide):
    """llm.c shard: 256 int32 header (magic, version, count), then the tokens; written to
    path.tmp, fsynced, renamed, so no half-written file ever has the final name."""
    tokens = np.asarray(tokens, dtype=np.uint32 if wide else np.uint16)
    assert len(tokens) > 0
    header = np.zeros(256, dtype="<i4")
    header[0], header[1] = MAGIC[wide]
    header[2] = len(tokens)
    with open(path + ".tmp", "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype("<u4" if wide else "<u2").tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _init(name):
    global _tok
    from transformers import AutoTokenizer
    _tok = AutoTokenizer.from_pretrained(name)


def _encode(text):
    return [_tok.eos_token_id] + _tok.encode(text, add_special_tokens=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    ap.add_argument("--tokenizer", required=True, help="a Hugging Face tokenizer, e.g. t5-base, gpt2")
    ap.add_argument("--out", required=True, help="output prefix, e.g. data/c4_t5")
    ap.add_argument("--shard-tokens", type=float, default=1e8)
    ap.add_argument("--val-tokens", type=float, default=1e7)
    ap.add_argument("--max-tokens", type=float, default=0, help="stop after this many (0: all)")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args()

    try:
        import datasets  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        sys.exit(f"error: {e.name} is not installed; run `pip install datasets transformers "
                 f"sentencepiece` (or, offline, use `./tokenize shard` on local text or JSONL)")
    from datasets import load_dataset
    from transformers import AutoTokenizer

    (path, config), field = DATASETS[args.dataset]
    try:
        tok = AutoTokenizer.from_pretrained(args.tokenizer)
        ds = load_dataset(path, config, split="train", streaming=True)
        first = next(iter(ds))
    except Exception as e:  # the Hub's errors vary by version; all mean "cannot get it"
        sys.exit(f"error: cannot load {path} ({config}) or the tokenizer {args.tokenizer} from "
                 f"the Hugging Face Hub: {type(e).__name__}: {e}\n(no network? offline, use "
                 f"`./tokenize shard` on local files)")
    if tok.eos_token_id is None:
        sys.exit(f"error: --tokenizer {args.tokenizer} has no eos token to separate documents")
    wide = len(tok) > 65536
    shard_tokens, val_tokens = int(args.shard_tokens), int(args.val_tokens)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    buf = np.empty(shard_tokens, dtype=np.uint32)
    n, index, total = 0, {"train": 0, "val": 0}, 0
    split, cap = ("val", val_tokens) if val_tokens > 0 else ("train", shard_tokens)

    def flush():
        nonlocal n, split, cap
        if n == 0:
            return
        p = f"{args.out}_{split}_{index[split]:06d}.bin"
        write_shard(p, buf[:n], wide)
        print(f"wrote {p} ({n} tokens)", flush=True)
        index[split] += 1
        n = 0
        split, cap = "train", shard_tokens

    del first
    texts = (row[field] for row in ds)
    with Pool(args.workers, initializer=_init, initargs=(args.tokenizer,)) as pool:
        for ids in pool.imap(_encode, texts, chunksize=16):
            ids = np.asarray(ids, dtype=np.uint32)
            while len(ids):
                m = min(len(ids), cap - n)
                buf[n:n + m] = ids[:m]
                n, ids, total = n + m, ids[m:], total + m
                if n == cap:
                    flush()
            if args.max_tokens and total >= args.max_tokens:
                break
    flush()
    print(f"{total} tokens of {args.dataset} with {args.tokenizer}")


if __name__ == "__main__":
    main()
