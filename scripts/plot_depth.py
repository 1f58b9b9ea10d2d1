#!/usr/bin/python3
"""Depth diagnostics of one or more runs (train_gpt --diag-every / --eval-prune) from
RUN_DIR/log.jsonl: output variance against depth (var_token, the last diag record of
each run), the angular-distance heatmap of each run's last diag record, and the
val-loss increase when each block is pruned. See doc/curse-of-depth.md.

usage: plot_depth.py RUN_DIR [RUN_DIR ...] -o depth.png [--step S]
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
    name, diags, prune = os.path.basename(os.path.normpath(run_dir)), [], None
    for r in read_records(run_dir):
        if r.get("type") == "config":
            name = f"{name} ({r['model']['norm_scheme']})"
        elif r.get("type") == "diag":
            diags.append(r)
        elif r.get("type") == "prune":
            prune = r
    if not diags and prune is None:
        sys.exit(f"error: {run_dir}/log.jsonl: no diag or prune records (run with --diag-every N or --eval-prune)")
    return name, diags, prune


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--step", type=int, help="use the diag record of this step (default: the last)")
    a = ap.parse_args()
    runs = [read_log(d) for d in a.runs]
    fig, axes = plt.subplots(1, 2 + len(runs), figsize=(5 * (2 + len(runs)), 4))
    av, ap_ = axes[0], axes[1]
    for i, (name, diags, prune) in enumerate(runs):
        if diags:
            pick = [r for r in diags if a.step is None or r["step"] == a.step]
            if not pick:
                sys.exit(f"error: {name}: no diag record at step {a.step}")
            r = pick[-1]
            layers = [b["layer"] for b in r["layers"]]
            av.plot(layers, [b["var_token"] for b in r["layers"]], marker="o", label=f"{name} step {r['step']}")
            L = len(layers)
            m = [[0.0] * (L + 1) for _ in range(L + 1)]
            for l, b in enumerate(r["layers"]):
                for n, d in enumerate(b["angular"], 1):
                    m[l][l + n] = m[l + n][l] = d
            ax = axes[2 + i]
            im = ax.imshow(m, cmap="viridis", vmin=0, origin="lower")
            ax.set_title(f"angular distance, {name}")
            ax.set_xlabel("stream h_j (entering block j+1; h_L final)")
            ax.set_ylabel("stream h_i")
            fig.colorbar(im, ax=ax)
        if prune:
            w = 0.8 / len(runs)
            xs = [b["layer"] + (i - (len(runs) - 1) / 2) * w for b in prune["layers"]]
            ap_.bar(xs, [b["increase"] for b in prune["layers"]], width=w, label=name)
    av.set_yscale("log")
    av.set_xlabel("block")
    av.set_ylabel("output variance (mean per-token)")
    av.legend(fontsize=8)
    ap_.set_xlabel("block removed")
    ap_.set_ylabel("val loss increase")
    ap_.axhline(0, color="k", lw=0.5)
    ap_.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
