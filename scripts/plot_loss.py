#!/usr/bin/python3
"""Loss curves of one or more runs (train smoothed, val as markers) from RUN_DIR/log.jsonl.

usage: plot_loss.py RUN_DIR [RUN_DIR ...] -o loss.png [--smooth 20]
"""
import argparse
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runlog import read_records  # noqa: E402


def read_log(run_dir):
    config, steps, vals = {}, [], []
    for r in read_records(run_dir):
        if r.get("type") == "config":
            config = r
        elif r.get("type") == "step":
            steps.append((r["step"], r["loss"]))
        elif r.get("type") == "val":
            vals.append((r["step"], r["val_loss"]))
    return config, steps, vals


def smooth(ys, window):
    out, acc = [], 0.0
    for i, y in enumerate(ys):  # trailing mean: no look-ahead
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def label(run_dir, config):
    m = config.get("model", {})
    return f"{os.path.basename(os.path.normpath(run_dir))} ({m.get('norm_scheme', '?')})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--smooth", type=int, default=20)
    a = ap.parse_args()
    fig, ax = plt.subplots(figsize=(8, 5))
    title = ""
    for i, run in enumerate(a.runs):
        config, steps, vals = read_log(run)
        if not steps:
            sys.exit(f"error: {run}/log.jsonl: no step records")
        color = f"C{i}"
        xs, ys = zip(*steps)
        ax.plot(xs, smooth(list(ys), a.smooth), color=color, label=f"{label(run, config)} train")
        if vals:
            vx, vy = zip(*vals)
            ax.plot(vx, vy, "o--", color=color, label=f"{label(run, config)} val")
        m = config.get("model", {})
        title = (f"{m.get('model_type', '?')} L={m.get('n_layer', m.get('num_hidden_layers', '?'))} "
                 f"B={config.get('batch_size')} T={config.get('seq_len')} lr={config.get('lr', 0):.3g}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.output, dpi=120)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
