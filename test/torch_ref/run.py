"""Writes CASE_DIR/ref.safetensors for each case dir; see model.py for the model.

usage: python3 test/torch_ref/run.py CASE_DIR [CASE_DIR ...]

Case dir inputs: config.json, model.safetensors, batch.safetensors (inputs,
targets: I32 (B, T), or (S, B, T) with train.json), optional train.json.
Outputs (F32): logits (B, T, V), loss [1], grad.<name>, init_std.<name>,
init_value.<name>, and in training mode losses (S,). When the case dir holds a
diag.json (contents unused; not in training mode), also hidden.<l> (B, T, C) for
l = 0..L (the stream entering block l; hidden.L before the final norm) and
diag.{var_token,var_all,rms,grad_norm} (L,), diag.angular (L+1, L+1): see
depth_diagnostics in model.py.
Exits non-zero, naming the file, on a malformed case.
"""
import json
import math
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import (RefError, check_params, depth_diagnostics, forward, init_tables,  # noqa: E402
                   load_config, read_safetensors, write_safetensors)

torch.set_num_threads(1)  # same summation order whatever the machine


def load_batch(c, path, training):
    b = read_safetensors(path)
    for k in ("inputs", "targets"):
        if k not in b or b[k].dtype != torch.int32:
            raise RefError(f"{path}: needs I32 tensor {k!r}")
    x, y = b["inputs"], b["targets"]
    want_dim = 3 if training else 2
    if x.dim() != want_dim or x.shape != y.shape or x.numel() == 0:
        raise RefError(f"{path}: inputs {list(x.shape)} / targets {list(y.shape)}: expected equal "
                       f"{'(S, B, T) as train.json is present' if training else '(B, T)'}")
    if x.min() < 0 or x.max() >= c.V or y.max() >= c.V:
        raise RefError(f"{path}: token id out of range [0, {c.V})")
    if x.shape[-1] > c.n_pos:
        raise RefError(f"{path}: T={x.shape[-1]} exceeds max positions {c.n_pos}")
    return x, y


def load_train(path):
    try:
        with open(path) as f:
            t = json.load(f)
        s = int(t["steps"])
        out = dict(steps=s, lrs=[float(v) for v in t["lrs"]], beta1=float(t["beta1"]),
                   beta2=float(t["beta2"]), eps=float(t["eps"]),
                   weight_decay=float(t["weight_decay"]), grad_clip=float(t.get("grad_clip", 0.0)))
    except OSError as e:
        raise RefError(f"{path}: cannot read ({e.strerror})")
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise RefError(f"{path}: malformed ({type(e).__name__}: {e})")
    if s <= 0 or len(out["lrs"]) != s:
        raise RefError(f"{path}: steps={s} but {len(out['lrs'])} lrs")
    return out


def run_case(d):
    c = load_config(os.path.join(d, "config.json"))
    mpath = os.path.join(d, "model.safetensors")
    params = check_params(c, read_safetensors(mpath), mpath)
    tpath = os.path.join(d, "train.json")
    train = load_train(tpath) if os.path.exists(tpath) else None
    bpath = os.path.join(d, "batch.safetensors")
    inputs, targets = load_batch(c, bpath, train is not None)
    if train and inputs.shape[0] != train["steps"]:
        raise RefError(f"{bpath}: {inputs.shape[0]} batches but train.json says {train['steps']} steps")

    params = {n: torch.nn.Parameter(t) for n, t in params.items()}
    out = {}
    for n, (std, value) in init_tables(c).items():
        out["init_std." + n] = std
        out["init_value." + n] = value

    if train is None:
        hidden = [] if os.path.exists(os.path.join(d, "diag.json")) else None
        logits, loss = forward(c, params, inputs, targets, hidden)
        loss.backward()
        out["logits"], out["loss"] = logits.detach(), loss.detach().reshape(1)
        out.update({"grad." + n: p.grad for n, p in params.items()})
        if hidden is not None:
            out.update({f"hidden.{i}": h.detach() for i, h in enumerate(hidden)})
            dg = depth_diagnostics(c, hidden, {n: p.grad for n, p in params.items()})
            out.update({"diag." + k: v for k, v in dg.items()})
        summary = f"loss {loss.item():.6f}"
    else:
        plist = list(params.values())
        decay = [p for p in plist if p.dim() >= 2]
        no_decay = [p for p in plist if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": train["weight_decay"]},
                                 {"params": no_decay, "weight_decay": 0.0}],
                                lr=train["lrs"][0], betas=(train["beta1"], train["beta2"]),
                                eps=train["eps"], foreach=False)
        losses = []
        for s in range(train["steps"]):
            opt.zero_grad(set_to_none=True)
            logits, loss = forward(c, params, inputs[s], targets[s])
            loss.backward()
            if s == 0:  # step-0 outputs, gradients before clipping
                out["logits"], out["loss"] = logits.detach(), loss.detach().reshape(1)
                out.update({"grad." + n: p.grad.clone() for n, p in params.items()})
            losses.append(loss.item())
            if train["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(plist, train["grad_clip"])
            for g in opt.param_groups:
                g["lr"] = train["lrs"][s]
            opt.step()
        out["losses"] = torch.tensor(losses, dtype=torch.float32)
        summary = f"loss {losses[0]:.6f} ... step {len(losses) - 1} loss {losses[-1]:.6f}"

    if not all(math.isfinite(v) for v in out.get("losses", out["loss"]).tolist()):
        print(f"{d}: warning: non-finite loss (no target >= 0?)", file=sys.stderr)
    dst = os.path.join(d, "ref.safetensors")
    write_safetensors(dst + ".tmp", out, {"arch": c.arch, "norm_scheme": c.scheme})
    os.replace(dst + ".tmp", dst)
    print(f"{d}: {c.arch} {c.scheme} {summary}")


def main(argv):
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    failed = 0
    for d in argv:
        try:
            if os.path.exists(os.path.join(d, "ref.safetensors")):
                os.remove(os.path.join(d, "ref.safetensors"))  # never leave a stale result
            run_case(d)
        except RefError as e:
            print(f"run.py: error: {e}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
