"""Reading a train_gpt run directory's log.jsonl (shared by the plotting scripts)."""
import json
import os
import sys


def read_records(run_dir):
    """The records of RUN_DIR/log.jsonl, in order; exits with a message naming the file on bad input.
    A last line that is not a whole record (a run killed, or still running, mid-write) is skipped
    with a warning; a bad line before it is an error."""
    path = os.path.join(run_dir, "log.jsonl")
    if not os.path.isfile(path):
        sys.exit(f"error: {path}: no log (expected a run directory written by train_gpt --out-dir)")
    try:
        with open(path, "rb") as f:
            lines = f.read().split(b"\n")
    except OSError as e:
        sys.exit(f"error: {path}: cannot read it ({e.strerror})")
    if lines[-1] == b"":  # the newline that ends the last record
        lines.pop()
    records = []
    for n, line in enumerate(lines, 1):
        try:
            r = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            if n == len(lines):
                print(f"warning: {path}:{n}: not a whole JSON record (a run stopped mid-write?): skipped",
                      file=sys.stderr)
                break
            what = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else f"not JSON ({e})"
            sys.exit(f"error: {path}:{n}: {what}: expected one JSON object per line, as train_gpt writes")
        if not isinstance(r, dict):
            kind = "an array" if isinstance(r, list) else "a string" if isinstance(r, str) else "a scalar"
            sys.exit(f"error: {path}:{n}: {kind}, expected a JSON object (a train_gpt record)")
        records.append(r)
    return records


class Run:
    """One run directory, its records sorted by type (a resumed run's log holds one record per step)."""

    def __init__(self, run_dir):
        self.dir = run_dir
        self.name = os.path.basename(os.path.normpath(run_dir))
        self.config, self.steps, self.vals, self.diags, self.prunes = {}, [], [], [], []
        for r in read_records(run_dir):
            t = r.get("type")
            if t == "config":
                self.config = r
            elif t == "step":
                self.steps.append(r)
            elif t == "val":
                self.vals.append(r)
            elif t == "diag":
                self.diags.append(r)
            elif t == "prune":
                self.prunes.append(r)
        self.flags = read_flags(run_dir)

    @property
    def model(self):
        return self.config.get("model", {})

    @property
    def norm(self):
        return self.model.get("norm_scheme", "?")

    @property
    def label(self):
        return f"{self.name} ({self.norm})"

    def diag_at(self, step):
        """The diag record of `step` (None: the last one), or None."""
        pick = [r for r in self.diags if step is None or r["step"] == step]
        return pick[-1] if pick else None


def read_flags(run_dir):
    """RUN_DIR/config.toml (the options the run was given) as {name: value text}; {} if absent."""
    path = os.path.join(run_dir, "config.toml")
    flags = {}
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if "=" in line and not line.startswith(("#", "[")):
                    k, v = line.split("=", 1)
                    flags[k.strip()] = v.strip().strip('"')
    return flags
