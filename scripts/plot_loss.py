#!/usr/bin/python3
"""Loss curves of one or more runs into one PNG (the loss chart of plot_runs.py alone).

usage: plot_loss.py RUN_DIR [RUN_DIR ...] -o loss.png [--smooth 20]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from plot_runs import plot_loss  # noqa: E402
from runlog import Run  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--smooth", type=int, default=20)
    a = ap.parse_args()
    runs = [Run(d) for d in a.runs]
    for run in runs:
        if not run.steps:
            sys.exit(f"error: {run.dir}/log.jsonl: no step records")
    plot_loss(runs, a.output, max(a.smooth, 1))
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
