#!/usr/bin/python3
"""Writes a shard of uniformly random tokens (llm.c format), for throughput benchmarks.

usage: make_random_shard.py OUT.bin --tokens N --vocab V [--seed S]
"""
import argparse
import os

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--tokens", type=int, required=True)
    ap.add_argument("--vocab", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if a.tokens <= 0 or not 2 <= a.vocab <= 2**32:
        raise SystemExit(f"error: --tokens must be > 0 and --vocab in [2, 2^32], got {a.tokens}, {a.vocab}")
    wide = a.vocab > 65536
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240801, 7, a.tokens) if wide else (20240520, 1, a.tokens)
    toks = np.random.default_rng(a.seed).integers(0, a.vocab, a.tokens, dtype=np.uint32 if wide else np.uint16)
    try:
        with open(a.out + ".tmp", "wb") as f:
            f.write(header.tobytes())
            f.write(toks.tobytes())
        os.replace(a.out + ".tmp", a.out)
    except OSError as e:
        if os.path.exists(a.out + ".tmp"):
            os.remove(a.out + ".tmp")
        raise SystemExit(f"error: {a.out}: cannot write the shard ({e.strerror})")
    print(f"wrote {a.out}: {a.tokens} tokens, vocab {a.vocab}")


if __name__ == "__main__":
    main()
