"""Self-consistency checks of the reference model: python3 test/torch_ref/selftest.py

- float64 gradcheck of loss and logits wrt every parameter, every arch x scheme;
- scheme identities (mix 0 == pre, mix 1 == post, lns == pre with norms rescaled,
  LayerScale / SkipInit at 1 == without, LNS placements against their rewrites);
- gradcheck of LayerScale / SkipInit and of each LNS placement;
- attention + RoPE against a per-position loop using complex rotations;
- safetensors round trip (incl. BF16), init tables, and run.py end to end
  (single step, training checked against a hand-written AdamW, malformed input).
"""
import json
import math
import os
import struct
import subprocess
import sys
import tempfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep the source tree free of __pycache__
sys.path.insert(0, HERE)
import model as M  # noqa: E402

torch.manual_seed(0)


def tiny_raw(arch, scheme, L=2, **kw):
    d = {"gpt2": dict(model_type="gpt2", vocab_size=7, n_positions=6, n_embd=8, n_layer=L,
                      n_head=2, n_inner=16, layer_norm_epsilon=1e-5),
         "llama": dict(model_type="llama", vocab_size=7, hidden_size=8, intermediate_size=12,
                       num_hidden_layers=L, num_attention_heads=2, max_position_embeddings=6,
                       rms_norm_eps=1e-6, rope_theta=100.0)}[arch]
    d.update(dict(norm_scheme=scheme, mix_alpha=0.5, init="normal", init_std=0.02), **kw)
    return d


def tiny(arch, scheme, L=2, **kw):
    return M.parse_config(tiny_raw(arch, scheme, L, **kw))


def random_params(c, dtype):
    """Larger-than-init values so every term of the gradient matters."""
    p = {}
    for n, (std, value) in M.init_tables(c).items():
        p[n] = (value + torch.randn(std.shape) * (0.5 if std.max() > 0 else 0.3)).to(dtype)
    return p


def batch(c, B=2, T=4):
    x = torch.randint(0, c.V, (B, T), dtype=torch.int32)
    y = torch.randint(0, c.V, (B, T), dtype=torch.int32)
    y[0, 1] = -1
    y[1, 3] = -100
    return x, y


def check_gradcheck():
    for arch in ("gpt2", "llama"):
        for scheme in M.SCHEMES:
            c = tiny(arch, scheme)
            p = random_params(c, torch.float64)
            names = list(p)
            x, y = batch(c)

            def f(*ts):
                return M.forward(c, dict(zip(names, ts)), x, y)

            ts = [p[n].requires_grad_() for n in names]
            ok = torch.autograd.gradcheck(f, ts, eps=1e-6, atol=1e-6, rtol=1e-4)
            n = sum(t.numel() for t in ts)
            print(f"gradcheck {arch:5s} {scheme:8s} ({len(ts)} tensors, {n} elements): "
                  f"{'PASS' if ok else 'FAIL'}")


BASELINES = [("pre", dict(layerscale=0.3)), ("post", dict(skipinit=True)), ("sandwich", dict(layerscale=0.3))] + \
    [("lns", dict(lns_placement=pl)) for pl in M.PLACEMENTS[1:]]


def check_gradcheck_baselines():
    for arch in ("gpt2", "llama"):
        for scheme, kw in BASELINES:
            c = tiny(arch, scheme, **kw)
            p = random_params(c, torch.float64)
            names = list(p)
            x, y = batch(c)
            ts = [p[n].requires_grad_() for n in names]
            ok = torch.autograd.gradcheck(lambda *t: M.forward(c, dict(zip(names, t)), x, y), ts, eps=1e-6,
                                          atol=1e-6, rtol=1e-4)
            print(f"gradcheck {arch:5s} {scheme:8s} {kw}: {'PASS' if ok else 'FAIL'}")


def close(a, b, what, tol=1e-10):
    err = (a - b).abs().max().item()
    assert err < tol, f"{what}: max abs diff {err}"
    print(f"{what}: ok (max abs diff {err:.1e})")


def check_identities():
    for arch in ("gpt2", "llama"):
        c = tiny(arch, "pre", L=3)
        p = random_params(c, torch.float64)
        x, _ = batch(c)
        ref = {s: M.forward(tiny(arch, s, L=3), p, x)[0] for s in ("pre", "post")}
        close(M.forward(tiny(arch, "mix", L=3, mix_alpha=0.0), p, x)[0], ref["pre"], f"{arch} mix 0 == pre")
        close(M.forward(tiny(arch, "mix", L=3, mix_alpha=1.0), p, x)[0], ref["post"], f"{arch} mix 1 == post")
        # mix 0.5 with L=3: block 0 post, blocks 1, 2 pre
        mixed = M.forward(tiny(arch, "mix", L=3, mix_alpha=0.5), p, x)[0]
        assert (mixed - ref["pre"]).abs().max() > 1e-3 and (mixed - ref["post"]).abs().max() > 1e-3
        # lns == pre with both norms of block l (weight and bias) divided by sqrt(l)
        q = dict(p)
        for i in range(c.L):
            for prefix in M.norm_names(c, i)[:2]:
                for k in (".weight", ".bias"):
                    if prefix + k in q:
                        q[prefix + k] = q[prefix + k] / math.sqrt(i + 1)
        close(M.forward(tiny(arch, "lns", L=3), p, x)[0], M.forward(c, q, x)[0], f"{arch} lns == rescaled pre")
        # attn-only / ffn-only: only the first / second norm rescaled
        for k, pl in ((0, "attn-only"), (1, "ffn-only")):
            q = dict(p)
            for i in range(c.L):
                prefix = M.norm_names(c, i)[k]
                for sfx in (".weight", ".bias"):
                    if prefix + sfx in q:
                        q[prefix + sfx] = q[prefix + sfx] / math.sqrt(i + 1)
            close(M.forward(tiny(arch, "lns", L=3, lns_placement=pl), p, x)[0], M.forward(c, q, x)[0],
                  f"{arch} lns {pl} == pre with one norm rescaled")
        # multipliers of exactly 1 change nothing, under a pre- and a post-type scheme
        for scheme in ("pre", "post"):
            for kw in (dict(layerscale=0.5), dict(skipinit=True)):
                cs = tiny(arch, scheme, L=3, **kw)
                ps = dict(p)
                ps.update({n: torch.ones(shape, dtype=torch.float64) for n, shape, kind, _, _ in M.param_specs(cs)
                           if kind == "branch_scale"})
                close(M.forward(cs, ps, x)[0], M.forward(tiny(arch, scheme, L=3), p, x)[0],
                      f"{arch} {scheme} {kw} at 1 == without")


def check_attention_loop():
    """LLaMA attention by loops; RoPE as rotation of pairs (j, j + D/2) by pos * theta^(-2j/D)."""
    c = tiny("llama", "pre")
    B, T, C, H, D = 2, 5, c.C, c.H, c.C // c.H
    q, k, v = (torch.randn(B, T, C, dtype=torch.float64) for _ in range(3))
    got = M.attention(c, q, k, v)

    def rot(vec, pos):  # vec: (D,)
        z = torch.complex(vec[:D // 2], vec[D // 2:])
        w = torch.tensor([complex(math.cos(pos * c.theta ** (-2 * j / D)), math.sin(pos * c.theta ** (-2 * j / D)))
                          for j in range(D // 2)], dtype=torch.complex128)
        z = z * w
        return torch.cat([z.real, z.imag])

    want = torch.zeros_like(got)
    for b in range(B):
        for h in range(H):
            sl = slice(h * D, (h + 1) * D)
            for t in range(T):
                qt = rot(q[b, t, sl], t)
                s = torch.tensor([rot(k[b, u, sl], u) @ qt / math.sqrt(D) for u in range(t + 1)], dtype=torch.float64)
                a = torch.exp(s - s.max())
                a = a / a.sum()
                want[b, t, sl] = sum(a[u] * v[b, u, sl] for u in range(t + 1))
    close(got, want, "llama attention+RoPE vs loop")


def check_io_and_init():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "a.safetensors")
        ts = {"f": torch.randn(3, 4), "i": torch.arange(-3, 3, dtype=torch.int32).reshape(2, 3),
              "s": torch.tensor([1.5])}
        M.write_safetensors(path, ts, {"k": "v"})
        back = M.read_safetensors(path)
        assert back.keys() == ts.keys() and all(torch.equal(back[k], ts[k]) for k in ts)
        # BF16: 1.0 = 0x3f80, -2.5 = 0xc020
        h = json.dumps({"b": {"dtype": "BF16", "shape": [2], "data_offsets": [0, 4]}}).encode()
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + struct.pack("<HH", 0x3F80, 0xC020))
        assert M.read_safetensors(path)["b"].tolist() == [1.0, -2.5]
    print("safetensors round trip + BF16: ok")

    L, s = 4, 0.02
    beta = (8 * L) ** -0.25
    t = M.init_tables(tiny("gpt2", "deepnorm", L=L, init="scaled"))
    std = t["transformer.h.1.attn.c_attn.weight"][0]
    assert torch.allclose(std[:, :16], torch.tensor(s)) and torch.allclose(std[:, 16:], torch.tensor(s * beta))
    assert math.isclose(t["transformer.h.1.attn.c_proj.weight"][0][0, 0].item(), s / math.sqrt(2 * L) * beta, rel_tol=1e-6)
    assert math.isclose(t["transformer.h.1.mlp.c_fc.weight"][0][0, 0].item(), s * beta, rel_tol=1e-6)
    assert t["transformer.ln_f.weight"][1].eq(1).all() and t["transformer.ln_f.weight"][0].eq(0).all()
    t = M.init_tables(tiny("llama", "pre", L=L, init="depth-scaled"))
    assert math.isclose(t["model.layers.2.mlp.down_proj.weight"][0][0, 0].item(), s / math.sqrt(6), rel_tol=1e-6)
    assert math.isclose(t["model.layers.2.self_attn.v_proj.weight"][0][0, 0].item(), s, rel_tol=1e-6)
    assert math.isclose(t["lm_head.weight"][0][0, 0].item(), s, rel_tol=1e-6)
    print("init tables: ok")


def run_cli(*dirs):
    return subprocess.run([sys.executable, os.path.join(HERE, "run.py"), *dirs],
                          capture_output=True, text=True)


def check_cli():
    for arch in ("gpt2", "llama"):
        with tempfile.TemporaryDirectory() as tmp:
            one, tr = os.path.join(tmp, "one"), os.path.join(tmp, "train")
            c = tiny(arch, "lns", L=2)
            p = M.init_params(c)
            S, lrs = 3, [1e-2, 5e-3, 2e-3]
            xs = torch.stack([batch(c)[0] for _ in range(S)])
            ys = torch.stack([batch(c)[1] for _ in range(S)])
            train = dict(steps=S, lrs=lrs, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1e-3)
            for d in (one, tr):
                os.makedirs(d)
                raw = tiny_raw(arch, "lns", unknown_key=[1])
                with open(os.path.join(d, "config.json"), "w") as f:
                    json.dump(raw, f)
                M.write_safetensors(os.path.join(d, "model.safetensors"), p)
            M.write_safetensors(os.path.join(one, "batch.safetensors"), {"inputs": xs[0], "targets": ys[0]})
            M.write_safetensors(os.path.join(tr, "batch.safetensors"), {"inputs": xs, "targets": ys})
            with open(os.path.join(tr, "train.json"), "w") as f:
                json.dump(train, f)
            r = run_cli(one, tr)
            assert r.returncode == 0, r.stderr
            a = M.read_safetensors(os.path.join(one, "ref.safetensors"))
            b = M.read_safetensors(os.path.join(tr, "ref.safetensors"))
            names = list(M.init_tables(c))
            want = {"logits", "loss"} | {f"{k}.{n}" for k in ("grad", "init_std", "init_value") for n in names}
            assert set(a) == want and set(b) == want | {"losses"}, set(a) ^ want
            for k in want:
                assert torch.equal(a[k], b[k]), k
            assert a["logits"].shape == (2, 4, c.V) and b["losses"].shape == (S,)
            assert b["losses"][0] == a["loss"][0]
            # replay training with a hand-written AdamW + clipping
            q = {n: t.clone() for n, t in p.items()}
            m = {n: torch.zeros_like(t) for n, t in q.items()}
            v = {n: torch.zeros_like(t) for n, t in q.items()}
            for s in range(S):
                qs = {n: t.clone().requires_grad_() for n, t in q.items()}
                loss = M.forward(c, qs, xs[s], ys[s])[1]
                loss.backward()
                assert abs(loss.item() - b["losses"][s].item()) < 1e-6 * max(1.0, abs(loss.item())), (s, loss.item(), b["losses"][s])
                g = {n: t.grad for n, t in qs.items()}
                norm = torch.sqrt(sum((x.double() ** 2).sum() for x in g.values())).item()
                scale = min(1.0, train["grad_clip"] / (norm + 1e-6))
                lr, b1, b2 = lrs[s], train["beta1"], train["beta2"]
                for n in q:
                    gn = g[n] * scale
                    wd = train["weight_decay"] if q[n].dim() >= 2 else 0.0
                    m[n] = b1 * m[n] + (1 - b1) * gn
                    v[n] = b2 * v[n] + (1 - b2) * gn * gn
                    mh, vh = m[n] / (1 - b1 ** (s + 1)), v[n] / (1 - b2 ** (s + 1))
                    q[n] = q[n] * (1 - lr * wd) - lr * mh / (vh.sqrt() + train["eps"])
            print(f"run.py {arch}: outputs ok, losses {[round(x, 6) for x in b['losses'].tolist()]} "
                  "match hand-written AdamW")

    with tempfile.TemporaryDirectory() as tmp:
        os.makedirs(os.path.join(tmp, "bad"))
        with open(os.path.join(tmp, "bad", "config.json"), "w") as f:
            f.write("{not json")
        r = run_cli(os.path.join(tmp, "bad"))
        assert r.returncode != 0 and "config.json" in r.stderr, r.stderr
        print(f"run.py malformed case: exit {r.returncode}, {r.stderr.strip()}")


if __name__ == "__main__":
    check_io_and_init()
    check_attention_loop()
    check_identities()
    check_cli()
    check_gradcheck()
    check_gradcheck_baselines()
    print("selftest: all ok")
