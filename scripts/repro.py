#!/usr/bin/python3
"""Reproduction grids of "The Curse of Depth in Large Language Models" (arXiv 2502.05795):
one command trains every run of a table, each in its own run directory, then draws the
charts and the summary table over the grid (scripts/plot_runs.py).

usage: repro.py {table1,table6,table8} [--scale paper|small|tiny] [--gpus N] [--dry-run]
                [--out runs/repro] [--only NAME,...] [--steps N] [--data-layout packed|documents]
       repro.py prepare-c4 --c4-dir DIR --spiece T5/spiece.model [--out-prefix data/c4] [--dry-run]

Grids (run names SIZE-VARIANT; --only takes either, or a VARIANT for every size):
  table1  LLaMA 130m/250m/350m/1b x post, deepnorm, mix, pre, lns
  table6  130m, 250m x LNS against the scaling baselines: pre, lns, layerscale, skipinit,
          scaled-init, depth-scaled-init
  table8  130m x where LNS's 1/sqrt(l) is applied (--lns-placement)
Scales:
  paper   the paper's setup on C4 tokenized with the T5 tokenizer (prepare-c4), one node of
          --gpus GPUs: seq 256, 512 sequences per step, Adam betas 0.9/0.999, weight decay 0,
          no clipping, 10% warmup and cosine to 0.1x, one document per row (padded), val
          perplexity over ~10M tokens
  small   one GPU, minutes: narrow models of the same depths on byte-level Gutenberg
          (../shared/data/gutenberg_100M.txt)
  tiny    the CPU in a minute or two: llama-tiny on the Shakespeare excerpt, one document
          (speech) per row; CI runs it
With --gpus N > 1 each run is `mpirun -np N ./train_gpt ...` (--launcher srun for Slurm).
Paper hyperparameters and their sources: doc/curse-of-depth.md.
"""
import argparse
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def here(*parts):
    """A path in the repository, relative to the working directory when that is shorter."""
    p = os.path.relpath(os.path.join(ROOT, *parts))
    if p.startswith(".."):
        return os.path.join(ROOT, *parts)
    return p if os.sep in p else os.path.join(".", p)  # ./train_gpt, not a name looked up in PATH


PY = sys.executable or "/usr/bin/python3"

# Per size: (peak lr, optimizer steps, micro-batch per GPU); warmup is 10% of the steps.
# 130m: the authors' run_130m.sh (github.com/lmsdss/LayerNorm-Scaling). 250m and 1b: the
# Mix-LN scripts that code is built on (github.com/luuyin/mix_ln: run_250m.sh with lr 1e-3
# from scripts/layer_vs_ratio, run_1b.sh with lr 5e-4 from mix_norm.sh). 350m: NOT
# confirmed (no script in either; GaLore's step count, lr between its neighbours). The
# micro-batch only sets memory use; gradient accumulation keeps 512 sequences per step.
PAPER_SIZES = {
    "130m": (1e-3, 20000, 64),
    "250m": (1e-3, 60000, 64),
    "350m": (5e-4, 60000, 32),
    "1b": (5e-4, 100000, 16),
}
PAPER_SEQ, PAPER_BATCH = 256, 512  # tokens per row, rows per optimizer step
T5_EOS = 1  # </s> in the T5 sentencepiece model: the token before every C4 document in our shards

# LayerScale's initial value: not confirmed against the paper's Table 6 (CaiT uses 0.1 for
# up to 18 blocks); change here.
LAYERSCALE_INIT = 0.1

NORMS = ["post", "deepnorm", "mix", "pre", "lns"]
TABLE6 = {
    "pre": ["--norm", "pre"],
    "lns": ["--norm", "lns"],
    "layerscale": ["--norm", "pre", "--layerscale", str(LAYERSCALE_INIT)],
    "skipinit": ["--norm", "pre", "--skipinit"],
    "scaled-init": ["--norm", "pre", "--init", "scaled"],
    "depth-scaled-init": ["--norm", "pre", "--init", "depth-scaled"],
}
PLACEMENTS = ["norm-output", "before-norm", "after-sublayer", "attn-only", "ffn-only"]


def grid(table):
    """[(size, variant, flags)] of a table."""
    if table == "table1":
        return [(s, n, ["--norm", n]) for s in PAPER_SIZES for n in NORMS]
    if table == "table6":
        return [(s, v, f) for s in ("130m", "250m") for v, f in TABLE6.items()]
    return [("130m", p, ["--norm", "lns", "--lns-placement", p]) for p in PLACEMENTS]


def scale_flags(scale, size, gpus, args):
    """(train_gpt flags for one run of `size` at `scale`, the data they read)."""
    if scale == "paper":
        lr, steps, micro = PAPER_SIZES[size]
        steps = args.steps or steps
        data = args.data or "data/c4"
        return [
            "--model", f"llama-{size}", "--device", "cuda",
            "--train-data", f"{data}_train_*.bin", "--val-data", f"{data}valid_train_*.bin",
            "--data-layout", args.data_layout or "documents", "--doc-token", str(T5_EOS), "--shuffle",
            "-b", str(micro), "-t", str(PAPER_SEQ), "--total-batch-size", str(PAPER_BATCH * PAPER_SEQ),
            "--steps", str(steps), "--lr", f"{lr:g}", "--warmup", str(steps // 10),
            "--schedule", "cosine", "--lr-min-frac", "0.1",
            "--beta1", "0.9", "--beta2", "0.999", "--weight-decay", "0", "--grad-clip", "0",
            "--eval-every", str(max(steps // 20, 1)), "--val-tokens", str(10_000_000),
            "--diag-every", str(max(steps // 10, 1)), "--eval-prune",
            "--ckpt-every", "1000", "--resume",
        ], [data]
    if scale == "small":
        # the paper's depths, width 256, byte-level text
        depth = {"130m": 12, "250m": 24, "350m": 24, "1b": 24}[size]
        steps = args.steps or 1000
        data = args.data or "data/gutenberg_docs"
        return [
            "--model", "llama-mini", "--n-layer", str(depth), "--n-embd", "256", "--n-head", "4",
            "--ffn-hidden", "688", "--device", "cuda",
            "--train-data", f"{data}_train.bin", "--val-data", f"{data}_val.bin",
            "--data-layout", args.data_layout or "packed", "--shuffle",
            "-b", "32", "-t", "256", "--total-batch-size", str(32 * 256 * max(gpus, 1)),
            "--steps", str(steps), "--lr", "1e-3", "--warmup", str(steps // 10),
            "--beta1", "0.9", "--beta2", "0.999", "--weight-decay", "0", "--grad-clip", "0",
            "--eval-every", str(max(steps // 10, 1)), "--val-batches", "16",
            "--diag-every", str(max(steps // 4, 1)), "--eval-prune",
        ], [data]
    # tiny: one size, the CPU
    steps = args.steps or 60
    data = tiny_prefix(args)
    return [
        "--model", "llama-tiny", "--n-layer", "6", "--device", "cpu",
        "--train-data", f"{data}_train.bin", "--val-data", f"{data}_val.bin",
        "--data-layout", args.data_layout or "documents",
        "-b", "4", "-t", "32", "--steps", str(steps), "--lr", "3e-3", "--warmup", str(max(steps // 10, 1)),
        "--beta1", "0.9", "--beta2", "0.999", "--weight-decay", "0", "--grad-clip", "0",
        "--eval-every", str(max(steps // 3, 1)), "--val-batches", "4",
        "--diag-every", str(max(steps // 2, 1)), "--eval-prune",
    ], [data]


FULL_TEXT = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "tinyshakespeare.txt"))


def tiny_prefix(args):
    return os.path.join(args.out, "data", "tinyshakespeare_docs" if args.full_text else "shakespeare_docs")


def data_commands(scale, args):
    """Commands that make the scale's shards when they are missing."""
    if scale == "tiny":
        prefix = tiny_prefix(args)
        if os.path.exists(prefix + "_train.bin"):
            return []
        text = FULL_TEXT if args.full_text else here("test", "data", "shakespeare_64k.txt")
        return [["mkdir", "-p", os.path.dirname(prefix)],
                [PY, here("scripts", "text_to_shards.py"), "--tokenizer", "bytes",
                 "--documents", "paragraphs", text, prefix]]
    if scale == "small":
        prefix = args.data or "data/gutenberg_docs"
        if os.path.exists(prefix + "_train.bin"):
            return []
        text = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "gutenberg_100M.txt"))
        return [["mkdir", "-p", os.path.dirname(prefix) or "."],
                [PY, here("scripts", "text_to_shards.py"), "--tokenizer", "bytes",
                 "--documents", "endoftext", "--val-fraction", "0.01", text, prefix]]
    return []  # paper: repro.py prepare-c4, once


def prepare_c4(args):
    """C4 (en) json.gz files + T5's spiece.model -> train and validation shards (T5 ids, vocab 32000)."""
    tok = shlex.quote(f"sentencepiece:{args.spiece}")
    out, src, tmp = args.out_prefix, shlex.quote(args.c4_dir), shlex.quote(args.out_prefix + "_jsonl")
    tokenize = shlex.quote(here("tokenize"))
    # The tokenize tool reads .jsonl and splits each input into train and val; C4 has its own
    # validation files, so the train files give the train shards (their 0.1% val tail is left
    # unused) and the validation files' train part is our validation set (OUTvalid_train_*).
    cmds = [
        f"mkdir -p {tmp}",
        f"for f in $(ls {src}/c4-train.*-of-01024.json.gz | head -n {args.c4_files}) "
        f"{src}/c4-validation.0000[0-7]-of-00008.json.gz; do zcat \"$f\" > {tmp}/$(basename \"$f\" .json.gz).jsonl; done",
        f"{tokenize} shard --tokenizer {tok} --val-fraction 0.001 --out {out} {tmp}/c4-train.*.jsonl",
        f"{tokenize} shard --tokenizer {tok} --val-fraction 0.001 --out {out}valid {tmp}/c4-validation.*.jsonl",
    ]
    for c in cmds:
        print(c, flush=True)
        if not args.dry_run:
            subprocess.run(c, shell=True, check=True)


def with_overrides(flags, extra):
    """`flags` with each option of `extra` (train_gpt flags as text) replacing the grid's value or added.
    Exits naming the option where `extra` is not flags, or lacks a value the grid gives its flag."""
    out = list(flags)
    try:
        extra = shlex.split(extra or "")
    except ValueError as e:
        sys.exit(f"error: --set: {e}: expected train_gpt flags as shell words")
    i = 0
    while i < len(extra):
        name = extra[i]
        if not name.startswith("-"):
            sys.exit(f"error: --set: expected a train_gpt flag (--name [value]), got '{name}'")
        value = [extra[i + 1]] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else []
        if name in out:
            j = out.index(name)
            has_value = j + 1 < len(out) and not out[j + 1].startswith("--")
            if has_value and not value:
                sys.exit(f"error: --set: {name} needs a value (the grid gives it one: {name} {out[j + 1]})")
            out[j:j + 1 + has_value] = [name] + value
        else:
            out += [name] + value
        i += 1 + len(value)
    return out


def missing_flags(train_gpt, runs):
    """Flags the grid uses that this train_gpt does not have (other branches add some)."""
    try:
        helptext = subprocess.run([train_gpt, "--help"], capture_output=True, text=True).stdout
    except OSError:
        sys.exit(f"error: {train_gpt}: cannot run it (build it with make train_gpt)")
    used = {f for _, _, flags in runs for f in flags if f.startswith("--")}
    return sorted(f for f in used if f not in helptext)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("table", choices=["table1", "table6", "table8", "prepare-c4"])
    ap.add_argument("--scale", choices=["paper", "small", "tiny"], default="tiny")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs of the node; > 1 runs under --launcher")
    ap.add_argument("--launcher", choices=["mpirun", "srun"], default="mpirun")
    ap.add_argument("--out", help="runs go to OUT/TABLE-SCALE/SIZE-VARIANT (default runs/repro)")
    ap.add_argument("--only", help="comma-separated run names (SIZE-VARIANT) or variants to run")
    ap.add_argument("--steps", type=int, help="override the scale's optimizer steps")
    ap.add_argument("--data", help="shard prefix (paper: data/c4; small: data/gutenberg_docs)")
    ap.add_argument("--data-layout", choices=["packed", "documents"], help="override the scale's row layout")
    ap.add_argument("--set", dest="overrides", help="train_gpt flags that replace the grid's values or are added "
                    "to every run, e.g. --set='--val-batches 50 --seed 1'")
    ap.add_argument("--full-text", action="store_true", help="tiny: ../shared/data/tinyshakespeare.txt when present")
    ap.add_argument("--train-gpt", default=None, help="the program (default: the repository's train_gpt)")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument("--c4-dir", help="prepare-c4: folder of c4-train.*.json.gz and c4-validation.*.json.gz")
    ap.add_argument("--spiece", help="prepare-c4: the T5 tokenizer's spiece.model")
    ap.add_argument("--out-prefix", default="data/c4", help="prepare-c4: shard prefix")
    ap.add_argument("--c4-files", type=int, default=150, help="prepare-c4: how many of the 1024 train files "
                    "(each ~356k documents; one document per row: 130m uses ~29, 1b ~144)")
    args = ap.parse_args()
    args.train_gpt = args.train_gpt or here("train_gpt")
    if args.table == "prepare-c4":
        if args.out is not None:
            sys.exit("error: --out: prepare-c4 writes its shards to --out-prefix (default data/c4); "
                     "--out is the grids' run folder")
        if not args.c4_dir or not args.spiece:
            sys.exit("error: prepare-c4: needs --c4-dir (the C4 en json.gz files) and --spiece (T5's spiece.model)")
        return prepare_c4(args)
    args.out = args.out or "runs/repro"
    if args.gpus < 1:
        sys.exit(f"error: --gpus: expected >= 1, got {args.gpus}")
    if args.full_text and not os.path.exists(FULL_TEXT):
        sys.exit(f"error: --full-text: {FULL_TEXT} not found")
    if args.scale == "tiny" and args.gpus > 1:
        sys.exit("error: --scale tiny runs on the CPU; --gpus must be 1")
    if args.steps is not None and args.steps < 1:
        sys.exit(f"error: --steps: expected >= 1, got {args.steps}")

    runs = grid(args.table)
    if args.scale == "tiny":  # one size on the CPU
        seen, tiny = set(), []
        for s, v, f in runs:
            if v not in seen:
                seen.add(v)
                tiny.append(("tiny", v, f))
        runs = tiny
    grid_runs = runs
    if args.only:
        want = args.only.split(",")
        for name in want:
            if not any(name in (f"{s}-{v}", v) for s, v, _ in runs):
                sizes = ", ".join(dict.fromkeys(s for s, _, _ in runs))
                variants = ", ".join(dict.fromkeys(v for _, v, _ in runs))
                sys.exit(f"error: --only {name}: no run of {args.table} at --scale {args.scale} has that name; "
                         f"expected SIZE-VARIANT or VARIANT, sizes: {sizes}; variants: {variants}")
        runs = [r for r in runs if f"{r[0]}-{r[1]}" in want or r[1] in want]
    if not args.dry_run:
        missing = missing_flags(args.train_gpt, runs)
        if missing:
            sys.exit(f"error: {args.train_gpt} has no {', '.join(missing)} (needed by {args.table}); "
                     "build a train_gpt that has them, or pick runs with --only")

    base = os.path.join(args.out, f"{args.table}-{args.scale}")
    launch = []
    if args.gpus > 1:
        launch = ["mpirun", "-np", str(args.gpus)] if args.launcher == "mpirun" else ["srun", "-n", str(args.gpus)]
    elif args.launcher == "srun":
        launch = ["srun", "-n", "1"]

    def do(cmd, log=None):
        print(" ".join(shlex.quote(c) for c in cmd) + (f" > {shlex.quote(log)}" if log else ""), flush=True)
        if args.dry_run:
            return
        if log:
            with open(log, "w") as f:
                rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        else:
            rc = subprocess.run(cmd).returncode
        if rc != 0:
            sys.exit(f"error: exit status {rc}: {' '.join(cmd)}" + (f" (output in {log})" if log else ""))

    cmds = []
    for size, variant, flags in runs:
        sflags, _ = scale_flags(args.scale, size, args.gpus, args)
        cmd = with_overrides(sflags + flags, args.overrides)
        if "--resume" not in cmd:  # a rerun of the grid continues or redoes each run in its own directory
            cmd.append("--resume")
        cmds.append((os.path.join(base, f"{size}-{variant}"), cmd))
    for cmd in data_commands(args.scale, args):
        do(cmd)
    for run_dir, cmd in cmds:
        if not args.dry_run:
            os.makedirs(run_dir, exist_ok=True)
        do(launch + [args.train_gpt] + cmd + ["--out-dir", run_dir], os.path.join(run_dir, "train.log"))
    # the grid's plots cover its runs on disk too, not only those of this invocation (--only)
    ran = {d for d, _ in cmds}
    dirs = [d for d in (os.path.join(base, f"{s}-{v}") for s, v, _ in grid_runs)
            if d in ran or os.path.isfile(os.path.join(d, "log.jsonl"))]
    do([PY, here("scripts", "plot_runs.py")] + dirs + ["--out", os.path.join(base, "plots")])


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # the reader left (--dry-run | head): stop quietly, and keep exit's flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
