#!/usr/bin/env python3
"""PyTorch baseline for train_gpt's throughput: the same model (GPT-2 or LLaMA, Pre-LN or
LNS), bf16 autocast with fp32 master weights, torch.compile, fused AdamW, the same batch.

usage: bench_torch.py --model gpt2-124m|llama-130m [--norm pre|lns] -b B -t T [--steps N]
Prints one line: "torch <model> <norm> B T: <tok/s> tok/s (median of the timed steps)".

       bench_torch.py --attention
Causal scaled_dot_product_attention alone, bf16, on bench_kernels --attention's shapes, with
each backend PyTorch has here (flash, cuDNN, memory-efficient; unavailable ones skipped).
One line per (shape, backend): "torch_attn_tflops B H T D backend fwd X bwd Y", FLOPs counted
as bench_kernels counts them (forward 2*B*H*T*T*D, backward 2.5x).
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # arch, layers, width, heads, ffn, vocab
    "gpt2-124m": ("gpt2", 12, 768, 12, 3072, 50257),
    "llama-130m": ("llama", 12, 768, 12, 2048, 32000),
    "llama-250m": ("llama", 24, 768, 16, 2560, 32000),
}


def rope(x, T):  # x (B, H, T, hs), rotate_half layout
    hs = x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, hs, 2, device=x.device, dtype=torch.float32) / hs))
    ang = torch.outer(torch.arange(T, device=x.device, dtype=torch.float32), inv)
    cos, sin = torch.cat([ang, ang], -1).cos().to(x.dtype), torch.cat([ang, ang], -1).sin().to(x.dtype)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Block(nn.Module):
    def __init__(self, arch, C, H, Fh, scale):
        super().__init__()
        self.arch, self.H, self.scale = arch, H, scale
        bias = arch == "gpt2"
        Norm = (lambda: nn.LayerNorm(C)) if bias else (lambda: nn.RMSNorm(C, eps=1e-6))
        self.n1, self.n2 = Norm(), Norm()
        self.qkv, self.proj = nn.Linear(C, 3 * C, bias=bias), nn.Linear(C, C, bias=bias)
        self.fc = nn.Linear(C, Fh if bias else 2 * Fh, bias=bias)
        self.down = nn.Linear(Fh, C, bias=bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.n1(x) * self.scale).view(B, T, 3, self.H, C // self.H).permute(2, 0, 3, 1, 4)
        if self.arch == "llama":
            q, k = rope(q, T), rope(k, T)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        h = self.fc(self.n2(x) * self.scale)
        if self.arch == "gpt2":
            h = F.gelu(h, approximate="tanh")
        else:
            g, u = h.chunk(2, -1)
            h = F.silu(g) * u
        return x + self.down(h)


class GPT(nn.Module):
    def __init__(self, arch, L, C, H, Fh, V, T, lns):
        super().__init__()
        self.wte = nn.Embedding(V, C)
        self.wpe = nn.Embedding(T, C) if arch == "gpt2" else None
        self.blocks = nn.ModuleList(Block(arch, C, H, Fh, 1 / math.sqrt(l + 1) if lns else 1.0) for l in range(L))
        self.nf = nn.LayerNorm(C) if arch == "gpt2" else nn.RMSNorm(C, eps=1e-6)
        self.head = nn.Linear(C, V, bias=False)
        if arch == "gpt2":
            self.head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        logits = self.head(self.nf(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.view(-1))


ATTN_SHAPES = [(8, 12, 1024, 64), (4, 16, 2048, 128), (64, 12, 256, 64)]  # as bench/bench_kernels.cu


def median_ms(fn, reps=20, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        torch.cuda.synchronize()
        times.append(e0.elapsed_time(e1))
    return statistics.median(times)


def bench_attention():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    backends = [(name, getattr(SDPBackend, attr)) for name, attr in
                [("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION")]
                if hasattr(SDPBackend, attr)]
    for B, H, T, D in ATTN_SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
                   for _ in range(3))
        dout = torch.randn(B, H, T, D, device="cuda", dtype=torch.bfloat16, generator=g)
        fwd_flops = 2.0 * B * H * T * T * D
        for name, backend in backends:
            try:
                with sdpa_kernel(backend):
                    fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
                    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                    bwd = median_ms(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
            except RuntimeError as e:  # backend not available for this device, dtype or shape
                print(f"# torch {name} skipped at {B} {H} {T} {D}: {str(e).splitlines()[0]}")
                continue
            print(f"torch_attn_tflops {B} {H} {T} {D} {name} fwd {fwd_flops / (fwd * 1e9):.1f} "
                  f"bwd {2.5 * fwd_flops / (bwd * 1e9):.1f}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--attention", action="store_true", help="time causal attention alone (see above)")
    ap.add_argument("--model", choices=PRESETS)
    ap.add_argument("--norm", choices=["pre", "lns"], default="pre")
    ap.add_argument("-b", type=int)
    ap.add_argument("-t", type=int)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true")
    a = ap.parse_args()
    if a.attention:
        bench_attention()
        return
    if a.model is None or a.b is None or a.t is None:
        ap.error("--model, -b and -t are required (or --attention)")
    arch, L, C, H, Fh, V = PRESETS[a.model]
    torch.manual_seed(0)
    dev = "cuda"
    model = GPT(arch, L, C, H, Fh, V, a.t, a.norm == "lns").to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    step_fn = model if a.no_compile else torch.compile(model)
    x = torch.randint(0, V, (a.b, a.t), device=dev)
    y = torch.randint(0, V, (a.b, a.t), device=dev)
    times = []
    for i in range(a.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if i >= min(10, a.steps // 2):  # compile and warm-up excluded
            times.append(time.perf_counter() - t0)
    tok_s = a.b * a.t / statistics.median(times)
    print(f"torch {a.model} {a.norm} B={a.b} T={a.t}: {tok_s:.0f} tok/s (median of {len(times)} steps)")


if __name__ == "__main__":
    main()
