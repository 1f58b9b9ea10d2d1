"""Reading a train_gpt run directory's log.jsonl (shared by the plotting scripts)."""
import json
import os
import sys


def read_records(run_dir):
    """The records of RUN_DIR/log.jsonl, in order; exits with a message naming the file on bad input."""
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"error: {path}: no log (expected a run directory written by train_gpt --out-dir)")
    records = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                sys.exit(f"error: {path}:{n}: not JSON ({e})")
    return records
