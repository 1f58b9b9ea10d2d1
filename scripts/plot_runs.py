#!/usr/bin/python3
"""Charts and a summary table for a set of train_gpt run directories (RUN/log.jsonl).

usage: plot_runs.py RUN [RUN ...] --out DIR [--steps 0,last] [--smooth 20] [--title TEXT]

Writes into DIR (doc/curse-of-depth.md says what each measure is):
  loss.png      train loss (trailing mean over --smooth steps) and val loss of every run;
                the setup the runs share in the title, what differs in the legend
  variance.png  output variance (var_token) against block, one panel per --steps entry
                (runs with --diag-every)
  angular.png   angular distance d(h_{l-1}, h_{l-1+n}) as a heatmap over block l and
                distance n, one panel per run, at the last --steps entry
  prune.png     val-loss increase when each block is removed (runs with --eval-prune)
  summary.md    per run: preset, norm, flags, steps, final train loss, final and best val
                loss, perplexity, and the pruning summary
A chart whose records no run has is not written (summary.md says which were).
"""
import argparse
import math
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from runlog import Run  # noqa: E402

# flags shown in their own summary columns, or that only say where files are
NOT_FLAGS = {"model", "norm", "train-data", "val-data", "out-dir", "save-to", "init-from", "config"}


def load_runs(dirs):
    """The runs of `dirs`, each named by its folder, or where folders share a name (a/run, b/run)
    by the shortest path suffix that tells them apart."""
    runs = [Run(d) for d in dirs]
    by_name = {}
    for r in runs:
        by_name.setdefault(r.name, []).append(r)
    for same in by_name.values():
        paths = [[p for p in os.path.abspath(r.dir).split(os.sep) if p] for r in same]
        for k in range(2, max(map(len, paths)) + 1 if len(same) > 1 else 0):
            names = ["/".join(p[-k:]) for p in paths]
            if len(set(names)) == len(names):
                for r, name in zip(same, names):
                    r.name = name
                break
    return runs


def smooth(ys, window):
    out, acc = [], 0.0
    for i, y in enumerate(ys):  # trailing mean: no look-ahead
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def setup(run):
    """The training setup of a run as (name, text) pairs, in the order a title reads."""
    c, m = run.config, run.model
    a = c.get("adamw", {})
    tokens = c.get("batch_size", 0) * c.get("seq_len", 0) * c.get("grad_accum", 1)
    seqs = tokens // max(c.get("seq_len", 1), 1)
    pairs = [
        ("preset", f"{c.get('preset', '?')} (L={m.get('n_layer', m.get('num_hidden_layers', '?'))})"),
        ("seq", f"seq {c.get('seq_len')}"),
        ("batch", f"batch {seqs} ({tokens} tok)"),
        ("lr", f"lr {c.get('lr', 0):.3g}"),
        ("steps", f"{c.get('steps')} steps"),
        ("warmup", f"warmup {c.get('warmup')}"),
        ("schedule", f"{c.get('schedule', '?')} to {c.get('lr_min_frac', 0):.2g}x"),
        ("adam", f"betas {a.get('beta1', 0):.3g}/{a.get('beta2', 0):.4g} wd {a.get('weight_decay', 0):.3g} "
                 f"clip {a.get('grad_clip', 0):.3g}"),
    ]
    if c.get("data_layout"):
        pairs.append(("layout", f"{c['data_layout']} rows"))
    return pairs


def shared_setup(runs):
    """(title: the setup every run shares, {run dir: the parts where it differs})."""
    setups = [dict(setup(r)) for r in runs]
    keys = [k for k, _ in setup(runs[0])]
    common = [k for k in keys if all(s.get(k) == setups[0][k] for s in setups)]
    title = ", ".join(setups[0][k] for k in common)
    extra = {r.dir: ", ".join(v for k, v in setup(r) if k not in common) for r in runs}
    return title, extra


def plot_loss(runs, path, window, title=None):
    fig, ax = plt.subplots(figsize=(9, 5.5))
    shared, extra = shared_setup(runs)
    for i, run in enumerate(runs):
        color = f"C{i % 10}"
        label = run.label + (f" [{extra[run.dir]}]" if extra[run.dir] else "")
        if run.steps:
            xs = [r["step"] for r in run.steps]
            ax.plot(xs, smooth([r["loss"] for r in run.steps], window), color=color, label=f"{label} train")
        if run.vals:
            ax.plot([r["step"] for r in run.vals], [r["val_loss"] for r in run.vals], "o--", color=color,
                    ms=4, label=f"{label} val")
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss (nats/token; train: mean of the last {window} steps)")
    ax.set_title(title or shared, fontsize=9, wrap=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def pick_steps(runs, spec):
    """--steps as a list of ints and 'last' (the last diag record of each run)."""
    if spec:
        return [s if s == "last" else int(s) for s in spec.split(",")]
    return ([0] if any(r.diag_at(0) for r in runs) else []) + ["last"]


def plot_variance(runs, path, steps):
    fig, axes = plt.subplots(1, len(steps), figsize=(5.5 * len(steps), 4.2), squeeze=False)
    for ax, step in zip(axes[0], steps):
        for i, run in enumerate(runs):
            r = run.diag_at(None if step == "last" else step)
            if r:
                ax.plot([b["layer"] for b in r["layers"]], [b["var_token"] for b in r["layers"]], marker="o",
                        ms=3, color=f"C{i % 10}", label=f"{run.label} step {r['step']}")
        ax.set_yscale("log")
        ax.set_xlabel("block l")
        ax.set_ylabel("output variance (mean over tokens)")
        ax.set_title("last diag record" if step == "last" else f"step {step}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def angular_matrix(record):
    """(n, l) -> d(h_{l-1}, h_{l-1+n}); NaN where l + n - 1 > L."""
    L = len(record["layers"])
    m = [[math.nan] * L for _ in range(L)]
    for b in record["layers"]:
        for n, d in enumerate(b["angular"], 1):
            m[n - 1][b["layer"] - 1] = d
    return m


def plot_angular(runs, path, step):
    recs = [(run, run.diag_at(None if step == "last" else step)) for run in runs]
    recs = [(run, r) for run, r in recs if r]
    vmax = max(d for _, r in recs for b in r["layers"] for d in b["angular"])
    cols = min(len(recs), 3)
    rows = (len(recs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(recs):]:
        ax.set_visible(False)
    for ax, (run, r) in zip(axes.flat, recs):
        L = len(r["layers"])
        im = ax.imshow(angular_matrix(r), cmap="viridis", vmin=0, vmax=vmax, origin="lower",
                       extent=(0.5, L + 0.5, 0.5, L + 0.5))
        ax.set_title(f"{run.label}, step {r['step']}", fontsize=9)
        ax.set_xlabel("block l")
        ax.set_ylabel("n (blocks spanned)")
        fig.colorbar(im, ax=ax, fraction=0.046, label="angular distance / pi")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_prune(runs, path):
    pr = [(run, run.prunes[-1]) for run in runs if run.prunes]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    w = 0.8 / len(pr)
    for i, (run, p) in enumerate(pr):
        xs = [b["layer"] + (i - (len(pr) - 1) / 2) * w for b in p["layers"]]
        ax.bar(xs, [b["increase"] for b in p["layers"]], width=w, color=f"C{i % 10}",
               label=f"{run.label}, full {p['val_loss']:.3f}")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("block removed")
    ax.set_ylabel("val loss increase")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def prune_summary(p):
    """Full loss, the block whose removal costs most, and the mean cost over the upper half."""
    inc = [(b["increase"], b["layer"]) for b in p["layers"]]
    top, blk = max(inc)
    upper = [d for d, l in inc if l > len(inc) // 2]
    return f"full {p['val_loss']:.4f}; max {top:+.4f} (block {blk}); upper-half mean {sum(upper) / len(upper):+.4f}"


def fmt(x, spec):
    return "-" if x is None else format(x, spec)


def run_flags(runs):
    """(the flags every run was given alike, {run dir: its other flags}) as command-line text."""
    def text(items):
        return " ".join(f"--{k}" if v == "true" else f"--{k} {v}" for k, v in items)
    given = [{k: v for k, v in r.flags.items() if k not in NOT_FLAGS} for r in runs]
    common = [(k, v) for k, v in given[0].items() if len(runs) > 1 and all(g.get(k) == v for g in given)]
    return text(common), {r.dir: text((k, v) for k, v in g.items() if (k, v) not in common)
                          for r, g in zip(runs, given)}


def summary_table(runs):
    _, own = run_flags(runs)
    rows = ["| run | preset | norm | flags | steps | final train loss | final val loss | best val loss | "
            "val perplexity | pruning (step) |", "|" + "---|" * 10]
    for run in runs:
        flags = own[run.dir]
        train = run.steps[-1]["loss"] if run.steps else None
        val = run.vals[-1] if run.vals else None
        best = min(r["val_loss"] for r in run.vals) if run.vals else None
        prune = f"{prune_summary(run.prunes[-1])} ({run.prunes[-1]['step']})" if run.prunes else "-"
        rows.append(" | ".join([
            f"| {run.name}", str(run.config.get("preset", "?")), run.norm, f"`{flags}`" if flags else "-",
            str(run.steps[-1]["step"]) if run.steps else "0", fmt(train, ".4f"),
            fmt(val and val["val_loss"], ".4f"), fmt(best, ".4f"), fmt(val and val["perplexity"], ".3f"),
            prune]) + " |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (train_gpt --out-dir)")
    ap.add_argument("--out", required=True, help="folder for the PNGs and summary.md")
    ap.add_argument("--steps", help="diag steps for variance.png, comma-separated ints or 'last' "
                                    "(default: 0 when logged, and last); angular.png uses the last entry")
    ap.add_argument("--smooth", type=int, default=20, help="train loss: trailing mean over this many steps")
    ap.add_argument("--title", help="loss.png title (default: the setup the runs share)")
    a = ap.parse_args()
    if a.smooth < 1:
        sys.exit(f"error: --smooth: expected >= 1, got {a.smooth}")
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        sys.exit(f"error: --out {a.out}: expected a folder (or a new name), found a file")
    runs = load_runs(a.runs)
    for run in runs:
        if not (run.steps or run.vals or run.diags or run.prunes):
            sys.exit(f"error: {run.dir}/log.jsonl: no step, val, diag or prune records")
    try:
        steps = pick_steps(runs, a.steps)
    except ValueError:
        sys.exit(f"error: --steps: expected comma-separated step numbers or 'last', got '{a.steps}'")
    for step in steps:
        if step != "last" and any(r.diags for r in runs) and not any(r.diag_at(step) for r in runs):
            sys.exit(f"error: --steps: no run has a diag record at step {step}")
    try:
        os.makedirs(a.out, exist_ok=True)
    except OSError as e:
        sys.exit(f"error: --out {a.out}: cannot create the folder ({e.strerror})")
    written = []

    def out(name):
        written.append(name)
        return os.path.join(a.out, name)

    plot_loss(runs, out("loss.png"), a.smooth, a.title)
    if any(r.diags for r in runs):
        plot_variance(runs, out("variance.png"), steps)
        if any(r.diag_at(None if steps[-1] == "last" else steps[-1]) for r in runs):
            plot_angular(runs, out("angular.png"), steps[-1])
    if any(r.prunes for r in runs):
        plot_prune(runs, out("prune.png"))
    title, _ = shared_setup(runs)
    common, _ = run_flags(runs)
    lines = ["# Runs", "", f"Setup shared by every run: {title}.", ""]
    if common:
        lines += [f"Flags given to every run (besides --model, --norm and the paths): `{common}`.", ""]
    lines += summary_table(runs) + [
        "", "Losses in nats per token; perplexity = exp(final val loss). Pruning: val loss with every block, "
        "the largest increase when one block is removed, and the mean increase over the upper half of the "
        "blocks (doc/curse-of-depth.md).", ""]
    lines += [f"![{n}]({n})" for n in written]
    with open(out("summary.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    for n in written:
        print(f"wrote {os.path.join(a.out, n)}")


if __name__ == "__main__":
    main()
