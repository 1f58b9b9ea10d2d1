#!/usr/bin/python3
"""Loss curves of one or more runs into one PNG (the loss chart of plot_runs.py alone).

usage: plot_loss.py RUN_DIR [RUN_DIR ...] -o loss.png [--smooth 20]

The extension of -o picks the format (.png, .pdf, .svg, ...); its folder is created if missing.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_runs import load_runs, plot_loss  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--output", required=True, help="the chart: loss.png, or .pdf, .svg, ...")
    ap.add_argument("--smooth", type=int, default=20, help="train loss: trailing mean over this many steps")
    a = ap.parse_args()
    if a.smooth < 1:
        sys.exit(f"error: --smooth: expected >= 1, got {a.smooth}")
    formats = FigureCanvasBase.get_supported_filetypes()
    if os.path.splitext(a.output)[1][1:].lower() not in formats:
        sys.exit(f"error: -o {a.output}: expected a file name ending in one of "
                 + " ".join("." + e for e in sorted(formats)))
    runs = load_runs(a.runs)
    for run in runs:
        if not run.steps:
            sys.exit(f"error: {run.dir}/log.jsonl: no step records")
    folder = os.path.dirname(a.output) or "."
    if os.path.exists(folder) and not os.path.isdir(folder):
        sys.exit(f"error: -o {a.output}: {folder} is a file, expected a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        plot_loss(runs, a.output, a.smooth)
    except OSError as e:
        sys.exit(f"error: -o {a.output}: cannot write it ({e.strerror})")
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
