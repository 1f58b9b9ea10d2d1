#!/usr/bin/python3
"""Turns an Nsight Compute CSV export of a training step into a roofline table.

usage: ncu_table.py REPORT.csv (--ceilings FILE | --copy-gbs X --gemm-tflops Y)
                    [--steps N | --last-steps K] [--md OUT.md] [--csv OUT.csv] [--title TEXT]

REPORT.csv is `ncu --csv --page raw --print-units base --nvtx ...` output (what
scripts/profile.sh writes): one row per kernel launch, a header row, optionally a
units row, then the launches; lines starting with "==" (ncu's own messages) are
skipped. Columns used:
  Kernel Name                      required
  gpu__time_duration.sum           required (ns, or whatever the units row says)
  dram__bytes.sum                  or dram__bytes_read.sum + dram__bytes_write.sum
  smsp__sass_thread_inst_executed_op_{ffma,fadd,fmul,hfma,hadd,hmul}_pred_on.sum
                                   FMA counted as 2 FLOP (sm__ prefix accepted too)
  sm__ops_path_tensor_*.sum        tensor-core operations, counted as FLOP
  sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed   tensor %
  any column whose header holds "Push/Pop_Range" or starts with "NVTX": the NVTX
  stack of the launch, outermost range first.

Phases come from the ranges model/gpt.h and train_gpt.cu open: "optimizer",
"block backward N", "block N", "head", and the op ranges of kernels/*.cu
(encoder_forward, ..., norm_squared). Only the range names are read, not the
punctuation between them, so the parser does not depend on how a given ncu
version joins the stack.

--last-steps K keeps the launches from the K-th last step on (a step starts at
its encoder_forward launch), dropping start-up kernels and warm-up steps, and
divides by K.

Ceilings (the denominators of the percentages) are measured on the same device by
`bench_kernels --ceilings`, whose output (`copy_gbs X` / `gemm_tflops Y` lines) is
what --ceilings reads; --copy-gbs / --gemm-tflops override it.
"""
import argparse
import csv
import io
import os
import re
import sys

# An op is the innermost NVTX range named like one: name_forward / name_backward (every op
# pair of both backends), adamw_update, norm_squared. Ranges of the model ("block backward 3",
# "attention backward") have spaces, so they never match.
OP_RE = re.compile(r"(?<![A-Za-z0-9_])([a-z][a-z0-9]*(?:_[a-z0-9]+)*_(?:forward|backward)|adamw_update|norm_squared)"
                   r"(?![A-Za-z0-9_])")
TIME_UNITS = {"": 1.0, "ns": 1.0, "nsecond": 1.0, "us": 1e3, "usecond": 1e3, "ms": 1e6, "msecond": 1e6,
              "s": 1e9, "second": 1e9}
BYTE_UNITS = {"": 1.0, "byte": 1.0, "kbyte": 1e3, "mbyte": 1e6, "gbyte": 1e9, "tbyte": 1e12}
SASS_FLOPS = {"ffma": 2, "fadd": 1, "fmul": 1, "hfma": 2, "hadd": 1, "hmul": 1}
TENSOR_PCT = "sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed"

# the order phases appear in a step
PHASE_ORDER = ["embedding", "forward block", "classifier", "classifier backward", "backward block",
               "embedding backward", "optimizer", "other"]


class Malformed(Exception):
    pass


def phase_of(nvtx, op):
    """(phase, group): e.g. ("forward block 3", "forward block") from the NVTX stack text."""
    if re.search(r"(?<![A-Za-z_])optimizer(?![A-Za-z_])", nvtx) or op == "norm_squared":
        return "optimizer", "optimizer"
    m = re.search(r"block backward (\d+)", nvtx)
    if m:
        return "backward block " + m.group(1), "backward block"
    m = re.search(r"(?<![A-Za-z_])block (\d+)", nvtx)
    if m:
        return "forward block " + m.group(1), "forward block"
    if re.search(r"(?<![A-Za-z_])head(?![A-Za-z_])", nvtx) or op == "crossentropy_forward":
        return "classifier", "classifier"  # the loss is computed after the head's range
    if op == "encoder_forward":
        return "embedding", "embedding"
    if op == "encoder_backward":
        return "embedding backward", "embedding backward"
    if op in ("crossentropy_backward", "matmul_backward", "residual_norm_backward"):
        return "classifier backward", "classifier backward"  # backward, before the first block
    return "other", "other"


def short_kernel(name):
    """'void ns::foo_kernel<(int)8>(float *, int)' -> 'foo_kernel'."""
    s = name.strip()
    s = re.sub(r"^void\s+", "", s)
    depth, out = 0, []
    for ch in s:  # drop template arguments and parameter lists
        if ch in "<(":  # also removes "(anonymous namespace)"
            depth += 1
            continue
        if ch in ">)":
            depth = max(0, depth - 1)
            continue
        if depth == 0:
            out.append(ch)
    s = "".join(out).strip()
    return s.split("::")[-1] or name.strip()


def num(cell, what, line):
    """The cell's value, or None when ncu left it empty or n/a (it could not measure it)."""
    c = cell.strip().replace(",", "")
    if c in ("", "n/a", "N/A"):
        return None
    try:
        return float(c)
    except ValueError:
        raise Malformed(f"line {line}: {what} is '{cell}', not a number")


def read_launches(path):
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise Malformed(f"cannot read {path}: {e.strerror}")
    except UnicodeDecodeError as e:
        gz = " (gzip-compressed: gunzip it first)" if e.object[:2] == b"\x1f\x8b" else ""
        raise Malformed(f"not UTF-8 text at byte {e.start}{gz}: expected the CSV of `ncu --csv --page raw`")
    lines = [(i + 1, ln) for i, ln in enumerate(text.splitlines()) if ln.strip() and not ln.startswith("==")]
    rows = [(n, r) for n, ln in lines for r in csv.reader(io.StringIO(ln))]
    hi = next((k for k, (_, r) in enumerate(rows) if "Kernel Name" in r), None)
    if hi is None:
        raise Malformed("no header row with a 'Kernel Name' column: expected `ncu --csv --page raw` output")
    header = [h.strip() for h in rows[hi][1]]
    col = {h: i for i, h in enumerate(header)}
    if "Metric Name" in col:
        raise Malformed("one row per metric ('Metric Name' column): export with `--page raw`, one row per launch")
    if "gpu__time_duration.sum" not in col:
        raise Malformed("missing column 'gpu__time_duration.sum'")
    data = rows[hi + 1:]
    units = [""] * len(header)
    if data and (data[0][1][col["ID"]].strip() == "" if "ID" in col else not data[0][1][col["Kernel Name"]].strip()):
        units = [u.strip().lower() for u in data[0][1]] + [""] * len(header)
        data = data[1:]

    def scale(name, table):
        u = units[col[name]]
        if u not in table:
            raise Malformed(f"column '{name}': unknown unit '{u}'")
        return table[u]

    nvtx_cols = [i for i, h in enumerate(header) if "Push/Pop_Range" in h or h.startswith("NVTX")]
    if "dram__bytes.sum" in col:
        byte_cols = ["dram__bytes.sum"]
    else:
        byte_cols = [c for c in ("dram__bytes_read.sum", "dram__bytes_write.sum") if c in col]
    flop_cols = []
    for op, k in SASS_FLOPS.items():
        for pre in ("smsp__", "sm__"):
            c = f"{pre}sass_thread_inst_executed_op_{op}_pred_on.sum"
            if c in col:
                flop_cols.append((c, k))
                break
    tensor = [h for h in header if h.startswith("sm__ops_path_tensor_") and h.endswith(".sum")]
    if any("_sparsity_" not in h for h in tensor):
        tensor = [h for h in tensor if "_sparsity_" not in h]
    flop_cols += [(h, 1) for h in tensor]

    missing = {}  # metric -> cells ncu left empty or n/a

    def total(cells, n):
        """Sum of (metric, factor) cells of line n; None when any is missing (a sum without it is wrong)."""
        vals = [(c, num(r[col[c]], c, n)) for c, _ in cells]
        for c, v in vals:
            if v is None:
                missing[c] = missing.get(c, 0) + 1
        if any(v is None for _, v in vals):
            return None
        return sum(v * k for (_, v), (_, k) in zip(vals, cells))

    time_col = [("gpu__time_duration.sum", scale("gpu__time_duration.sum", TIME_UNITS))]
    byte_scaled = [(c, scale(c, BYTE_UNITS)) for c in byte_cols]
    launches = []
    for n, r in data:
        if len(r) != len(header):
            raise Malformed(f"line {n}: {len(r)} fields, the header has {len(header)}")
        nvtx = " / ".join(r[i] for i in nvtx_cols)
        ops = OP_RE.findall(nvtx)
        op = ops[-1] if ops else "-"
        phase, group = phase_of(nvtx, op)
        launches.append({
            "kernel": short_kernel(r[col["Kernel Name"]]),
            "op": op, "phase": phase, "group": group,
            "ns": total(time_col, n),
            "bytes": total(byte_scaled, n),
            "flops": total(flop_cols, n),
            "tensor_pct": total([(TENSOR_PCT, 1)], n) if TENSOR_PCT in col else None,
        })
    if not launches:
        raise Malformed("the report holds no kernel launches")
    if all(l["ns"] is None for l in launches):
        raise Malformed("no launch has a gpu__time_duration.sum value (every cell empty or n/a): "
                        "expected the kernels' measured times")
    if not byte_cols:
        print("ncu_table: no dram__bytes columns: GB/s will read 0", file=sys.stderr)
    if not nvtx_cols:
        print("ncu_table: no NVTX column: every launch is in phase 'other'; profile with `ncu --nvtx` "
              "for the phases", file=sys.stderr)
    if missing:
        print(f"ncu_table: {sum(missing.values())} metric cell(s) empty or n/a ("
              + ", ".join(f"{c}: {k}" for c, k in missing.items())
              + "): a launch without a time adds none to the times, a rate leaves out the launches that lack "
              "its metric or a time, and a cell no launch of its row has is blank", file=sys.stderr)
    return launches


def aggregate(launches, key):
    """Sums per key. Each rate has its own time: that of the launches with both a time and its
    metric (bns: bytes, fns: FLOP, tw: tensor %), so a missing cell is left out, not read as 0;
    timed counts the launches with a time."""
    out = {}
    for l in launches:
        a = out.setdefault(key(l), {"launches": 0, "timed": 0, "ns": 0.0, "bytes": 0.0, "bns": 0.0, "flops": 0.0,
                                    "fns": 0.0, "tns": 0.0, "tw": 0.0})
        a["launches"] += 1
        if l["ns"] is None:
            continue
        a["timed"] += 1
        a["ns"] += l["ns"]
        if l["bytes"] is not None:
            a["bytes"] += l["bytes"]
            a["bns"] += l["ns"]
        if l["flops"] is not None:
            a["flops"] += l["flops"]
            a["fns"] += l["ns"]
        if l["tensor_pct"] is not None:  # time-weighted mean
            a["tns"] += l["tensor_pct"] * l["ns"]
            a["tw"] += l["ns"]
    return out


def phase_rank(phase):
    if phase in PHASE_ORDER:
        return (PHASE_ORDER.index(phase), 0)
    m = re.match(r"(forward block|backward block) (\d+)$", phase)
    if m:  # backward runs the blocks last to first
        n = int(m.group(2))
        return (PHASE_ORDER.index(m.group(1)), -n if m.group(1) == "backward block" else n)
    return (len(PHASE_ORDER), 0)


def metrics(a, total_ns, steps, copy_gbs, gemm_tflops):
    """The row's numbers; a time or rate is None when no launch of the row has it (and a time)."""
    gbs = a["bytes"] / a["bns"] if a["bns"] else None          # bytes/ns = GB/s
    tflops = a["flops"] / a["fns"] / 1e3 if a["fns"] else None  # flop/ns = GFLOP/s
    return {
        "launches": a["launches"] / steps,
        "time_us": a["ns"] / steps / 1e3 if a["timed"] else None,
        "share_pct": 100.0 * a["ns"] / total_ns if a["timed"] and total_ns else None,
        "gb_s": gbs,
        "tflop_s": tflops,
        "pct_copy_bw": None if gbs is None else 100.0 * gbs / copy_gbs,
        "pct_bf16_gemm": None if tflops is None else 100.0 * tflops / gemm_tflops,
        "tensor_pct": a["tns"] / a["tw"] if a["tw"] else None,
    }


def fmt(m):
    def f(x, spec):
        return "" if x is None else format(x, spec)
    return [f"{m['launches']:g}", f(m["time_us"], ".3f"), f(m["share_pct"], ".2f"), f(m["gb_s"], ".1f"),
            f(m["tflop_s"], ".3f"), f(m["pct_copy_bw"], ".1f"), f(m["pct_bf16_gemm"], ".1f"),
            f(m["tensor_pct"], ".1f")]


COLS = ["launches", "time_us", "share_pct", "gb_s", "tflop_s", "pct_copy_bw", "pct_bf16_gemm", "tensor_pct"]
MD_COLS = ["launches", "time (us)", "share", "GB/s", "TFLOP/s", "% copy BW", "% bf16 GEMM", "tensor %"]


def clip(name, n=56):
    """Long cuBLAS kernel names, shortened for the markdown (the CSV keeps them whole)."""
    return name if len(name) <= n else name[:n - 3] + "..."


def read_ceilings(path):
    c = {}
    try:
        with open(path) as f:
            for ln in f:
                p = ln.split()
                if len(p) == 2 and p[0] in ("copy_gbs", "gemm_tflops"):
                    c[p[0]] = float(p[1])
    except (OSError, ValueError) as e:
        raise Malformed(f"--ceilings {path}: {e}")
    return c


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report")
    ap.add_argument("--ceilings", help="bench_kernels --ceilings output")
    ap.add_argument("--copy-gbs", type=float, help="measured device-to-device copy bandwidth, GB/s")
    ap.add_argument("--gemm-tflops", type=float, help="measured bf16 GEMM rate, TFLOP/s")
    ap.add_argument("--steps", type=int, default=1, help="training steps the report covers (times are per step)")
    ap.add_argument("--last-steps", type=int, default=0,
                    help="keep only the last K steps (each starts at encoder_forward); implies --steps K")
    ap.add_argument("--md", help="write the markdown table here (default: stdout)")
    ap.add_argument("--csv", help="write the per-kernel, per-phase CSV here")
    ap.add_argument("--title", default="Kernel profile")
    a = ap.parse_args()
    try:
        ceil = read_ceilings(a.ceilings) if a.ceilings else {}
        copy_gbs = a.copy_gbs if a.copy_gbs is not None else ceil.get("copy_gbs")
        gemm_tflops = a.gemm_tflops if a.gemm_tflops is not None else ceil.get("gemm_tflops")
        if not copy_gbs or not gemm_tflops or copy_gbs <= 0 or gemm_tflops <= 0:
            raise Malformed("need positive ceilings: --ceilings FILE or --copy-gbs X --gemm-tflops Y")
        if a.steps < 1:
            raise Malformed("--steps must be >= 1")
        launches = read_launches(a.report)
        if a.last_steps < 0:
            raise Malformed("--last-steps must be >= 0")
        if a.last_steps:
            starts = [i for i, l in enumerate(launches) if l["op"] == "encoder_forward"]
            if len(starts) < a.last_steps:
                raise Malformed(f"--last-steps {a.last_steps}: the report holds {len(starts)} step(s) "
                                "(encoder_forward launches)")
            launches = launches[starts[-a.last_steps]:]
            a.steps = a.last_steps
    except Malformed as e:
        sys.exit(f"ncu_table: error: {a.report}: {e}" if "ceiling" not in str(e) else f"ncu_table: error: {e}")

    total_ns = sum(l["ns"] for l in launches if l["ns"] is not None)
    M = lambda agg: metrics(agg, total_ns, a.steps, copy_gbs, gemm_tflops)  # noqa: E731

    detail = aggregate(launches, lambda l: (l["phase"], l["op"], l["kernel"]))
    order = sorted(detail, key=lambda k: (phase_rank(k[0]), -detail[k]["ns"], k[1], k[2]))
    rows = [["phase", "op", "kernel"] + COLS] + [list(k) + fmt(M(detail[k])) for k in order]
    if a.csv:
        write_out("--csv", a.csv, lambda f: csv.writer(f, lineterminator="\n").writerows(rows))

    md = [f"# {a.title}", "",
          f"{len(launches)} kernel launches over {a.steps} step(s); GPU time {total_ns / a.steps / 1e3:.3f} us per step. "
          f"Ceilings measured on the device: copy {copy_gbs:.1f} GB/s, bf16 GEMM {gemm_tflops:.1f} TFLOP/s.", ""]

    def table(title, first, keyed, keys):
        md.extend([f"## {title}", "", "| " + " | ".join(first + MD_COLS) + " |",
                   "|" + "---|" * (len(first) + len(MD_COLS))])
        for k in keys:
            md.append("| " + " | ".join([clip(x) for x in k] + fmt(M(keyed[k]))) + " |")
        md.append("")

    phases = aggregate(launches, lambda l: (l["phase"],))
    table("Per phase", ["phase"], phases, sorted(phases, key=lambda k: phase_rank(k[0])))
    groups = aggregate(launches, lambda l: (l["group"], l["op"], l["kernel"]))
    table("Per kernel (blocks merged; the CSV has every block)", ["phase", "op", "kernel"], groups,
          sorted(groups, key=lambda k: (phase_rank(k[0]), -groups[k]["ns"], k[1], k[2])))
    top = aggregate(launches, lambda l: (l["kernel"],))
    table("Kernels by total time", ["kernel"], top, sorted(top, key=lambda k: (-top[k]["ns"], k[0])))
    text = "\n".join(md)
    if a.md:
        write_out("--md", a.md, lambda f: f.write(text))
    else:
        print(text)


def write_out(flag, path, write):
    try:
        with open(path, "w", newline="") as f:
            write(f)
    except OSError as e:
        sys.exit(f"ncu_table: error: {flag} {path}: cannot write it ({e.strerror})")


if __name__ == "__main__":
    try:
        main()
        sys.stdout.flush()
    except BrokenPipeError:  # the reader left (| head): stop quietly, and keep exit's own flush quiet too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
