"""Independent PyTorch reference for lns.cu: GPT-2 / LLaMA with six norm schemes,
the LayerScale / SkipInit branch multipliers and LNS's placement variants.

Everything is functional: a model is a Config plus a dict {HF name: tensor in HF
shape}. forward() works in whatever dtype the parameters have (float32 for the
reference outputs, float64 for gradcheck).

Shapes: B batch, T time, C width, H heads, D = C/H head dim, F MLP width,
V vocab, L blocks.
"""
import json
import math
import struct

import numpy as np
import torch

SCHEMES = ("pre", "post", "mix", "sandwich", "deepnorm", "lns")
INITS = ("normal", "scaled", "depth-scaled")
PLACEMENTS = ("norm-output", "before-norm", "after-sublayer", "attn-only", "ffn-only")


class RefError(Exception):
    """Malformed or missing input; the message names the file."""


# ----------------------------------------------------------------------------
# safetensors I/O (F32, I32, BF16 read; F32, I32 write)

_DTYPES = {"F32": ("<f4", 4), "I32": ("<i4", 4), "BF16": ("<u2", 2)}


def read_safetensors(path):
    """Returns {name: tensor}; F32 -> float32, BF16 -> float32, I32 -> int32."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise RefError(f"{path}: cannot read ({e.strerror})")
    if len(raw) < 8:
        raise RefError(f"{path}: too short for a safetensors header")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise RefError(f"{path}: header length {n} exceeds file size {len(raw)}")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RefError(f"{path}: bad JSON header ({e})")
    if not isinstance(header, dict):
        raise RefError(f"{path}: header is not a JSON object")
    data = raw[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = info["dtype"], list(info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise RefError(f"{path}: tensor {name!r}: malformed header entry {info!r}")
        if dtype not in _DTYPES:
            raise RefError(f"{path}: tensor {name!r}: unsupported dtype {dtype}")
        np_dtype, size = _DTYPES[dtype]
        count = math.prod(shape)
        if not (0 <= b <= e <= len(data)) or e - b != count * size:
            raise RefError(f"{path}: tensor {name!r}: bad data_offsets {[b, e]} "
                           f"for {dtype} {shape} (data section {len(data)} bytes)")
        arr = np.frombuffer(data, dtype=np_dtype, count=count, offset=b)
        if dtype == "BF16":  # bf16 is the top half of an fp32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("="))).reshape(shape)
    return out


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: tensor}; float tensors are written as F32, integer as I32."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu()
        if t.is_floating_point():
            dtype, arr = "F32", t.to(torch.float32).numpy().astype("<f4")
        else:
            dtype, arr = "I32", t.to(torch.int32).numpy().astype("<i4")
        blob = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header).encode("utf-8")
    h += b" " * (-len(h) % 8)  # pad the header to 8-byte alignment
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for blob in blobs:
            f.write(blob)


# ----------------------------------------------------------------------------
# config

class Config:
    pass


def parse_config(d, path="config.json"):
    """d: the parsed HF-style config.json dict."""
    def get(key, default=None, required=True):
        if key in d and d[key] is not None:
            return d[key]
        if default is None and required:
            raise RefError(f"{path}: missing key {key!r}")
        return default

    c = Config()
    c.arch = get("model_type")
    try:
        if c.arch == "gpt2":
            c.V, c.C, c.L, c.H = (int(get(k)) for k in ("vocab_size", "n_embd", "n_layer", "n_head"))
            c.n_pos = int(get("n_positions"))
            c.F = int(get("n_inner", 4 * c.C))
            c.eps = float(get("layer_norm_epsilon", 1e-5))
        elif c.arch == "llama":
            c.V, c.C, c.L, c.H = (int(get(k)) for k in ("vocab_size", "hidden_size",
                                                         "num_hidden_layers", "num_attention_heads"))
            c.n_pos = int(get("max_position_embeddings"))
            c.F = int(get("intermediate_size"))
            c.eps = float(get("rms_norm_eps", 1e-6))
            c.theta = float(get("rope_theta", 10000.0))
            if int(get("num_key_value_heads", c.H)) != c.H:
                raise RefError(f"{path}: num_key_value_heads != num_attention_heads is unsupported")
        else:
            raise RefError(f"{path}: model_type must be gpt2 or llama, got {c.arch!r}")
        c.scheme = get("norm_scheme", "pre")
        c.init = get("init", "normal")
        c.init_std = float(get("init_std", 0.02))
        c.mix_alpha = float(get("mix_alpha", 0.0, required=False))
        if c.scheme == "mix" and "mix_alpha" not in d:
            raise RefError(f"{path}: norm_scheme mix needs mix_alpha")
        c.layerscale = float(get("layerscale", 0.0, required=False))
        c.skipinit = bool(get("skipinit", False, required=False))
        c.placement = get("lns_placement", "norm-output", required=False)
    except (TypeError, ValueError) as e:
        raise RefError(f"{path}: bad value ({e})")
    if c.scheme not in SCHEMES:
        raise RefError(f"{path}: unknown norm_scheme {c.scheme!r}")
    if c.init not in INITS:
        raise RefError(f"{path}: unknown init {c.init!r}")
    if c.placement not in PLACEMENTS or (c.placement != "norm-output" and c.scheme != "lns"):
        raise RefError(f"{path}: lns_placement {c.placement!r} with norm_scheme {c.scheme!r}")
    if c.layerscale < 0 or (c.layerscale and c.skipinit):
        raise RefError(f"{path}: layerscale {c.layerscale} with skipinit {c.skipinit}")
    if min(c.V, c.C, c.L, c.H, c.F, c.n_pos) <= 0 or c.C % c.H or (c.arch == "llama" and (c.C // c.H) % 2):
        raise RefError(f"{path}: inconsistent sizes V={c.V} C={c.C} L={c.L} H={c.H} F={c.F}")
    return c


def load_config(path):
    try:
        with open(path) as f:
            d = json.load(f)
    except OSError as e:
        raise RefError(f"{path}: cannot read ({e.strerror})")
    except json.JSONDecodeError as e:
        raise RefError(f"{path}: bad JSON ({e})")
    if not isinstance(d, dict):
        raise RefError(f"{path}: not a JSON object")
    return parse_config(d, path)


# ----------------------------------------------------------------------------
# parameter list and init

def norm_names(c, i):
    """(first, second, attn-out, mlp-out) norm prefixes of block i (0-based)."""
    if c.arch == "gpt2":
        p = f"transformer.h.{i}."
        return p + "ln_1", p + "ln_2", p + "ln_attn_out", p + "ln_mlp_out"
    p = f"model.layers.{i}."
    return p + "input_layernorm", p + "post_attention_layernorm", \
        p + "attn_out_layernorm", p + "mlp_out_layernorm"


def branch_scale_name(c, i, branch):
    """The LayerScale / SkipInit multiplier of block i's branch ("attn" or "mlp"), or None."""
    if not (c.layerscale or c.skipinit):
        return None
    p = f"transformer.h.{i}." if c.arch == "gpt2" else f"model.layers.{i}."
    return p + branch + ("_skip_scale" if c.skipinit else "_layer_scale") + ".weight"


def final_norm_name(c):
    return "transformer.ln_f" if c.arch == "gpt2" else "model.norm"


def param_specs(c):
    """[(name, shape, kind, role, block)]: kind in matrix|bias|norm_w|norm_b|branch_scale,
    role in None|qkv|q|k|v|attn_out|mlp_in|mlp_out, block 0-based or None."""
    C, F, V, specs = c.C, c.F, c.V, []

    def branch_scales(i):
        for b in ("attn", "mlp"):
            if branch_scale_name(c, i, b):
                specs.append((branch_scale_name(c, i, b), (1,) if c.skipinit else (C,), "branch_scale", None, i))

    def norm(prefix, i):
        specs.append((prefix + ".weight", (C,), "norm_w", None, i))
        if c.arch == "gpt2":
            specs.append((prefix + ".bias", (C,), "norm_b", None, i))

    if c.arch == "gpt2":
        specs += [("transformer.wte.weight", (V, C), "matrix", None, None),
                  ("transformer.wpe.weight", (c.n_pos, C), "matrix", None, None)]
        for i in range(c.L):
            p = f"transformer.h.{i}."
            n1, n2, o1, o2 = norm_names(c, i)
            norm(n1, i)
            specs += [(p + "attn.c_attn.weight", (C, 3 * C), "matrix", "qkv", i),
                      (p + "attn.c_attn.bias", (3 * C,), "bias", None, i),
                      (p + "attn.c_proj.weight", (C, C), "matrix", "attn_out", i),
                      (p + "attn.c_proj.bias", (C,), "bias", None, i)]
            norm(n2, i)
            specs += [(p + "mlp.c_fc.weight", (C, F), "matrix", "mlp_in", i),
                      (p + "mlp.c_fc.bias", (F,), "bias", None, i),
                      (p + "mlp.c_proj.weight", (F, C), "matrix", "mlp_out", i),
                      (p + "mlp.c_proj.bias", (C,), "bias", None, i)]
            if c.scheme == "sandwich":
                norm(o1, i)
                norm(o2, i)
            branch_scales(i)
        norm(final_norm_name(c), None)
    else:
        specs.append(("model.embed_tokens.weight", (V, C), "matrix", None, None))
        for i in range(c.L):
            p = f"model.layers.{i}."
            n1, n2, o1, o2 = norm_names(c, i)
            norm(n1, i)
            for x, role in (("q", "q"), ("k", "k"), ("v", "v"), ("o", "attn_out")):
                specs.append((p + f"self_attn.{x}_proj.weight", (C, C), "matrix", role, i))
            norm(n2, i)
            specs += [(p + "mlp.gate_proj.weight", (F, C), "matrix", "mlp_in", i),
                      (p + "mlp.up_proj.weight", (F, C), "matrix", "mlp_in", i),
                      (p + "mlp.down_proj.weight", (C, F), "matrix", "mlp_out", i)]
            if c.scheme == "sandwich":
                norm(o1, i)
                norm(o2, i)
            branch_scales(i)
        norm(final_norm_name(c), None)
        specs.append(("lm_head.weight", (V, C), "matrix", None, None))
    return specs


def init_tables(c):
    """{name: (std, value)}, both in HF shape: each element ~ N(value, std^2)."""
    L, beta = c.L, (8 * c.L) ** -0.25
    out = {}
    for name, shape, kind, role, i in param_specs(c):
        value = torch.ones(shape) if kind == "norm_w" else torch.zeros(shape)
        if kind == "branch_scale":  # SkipInit 1/sqrt(L); LayerScale the configured value
            value = torch.full(shape, 1.0 / math.sqrt(L) if c.skipinit else c.layerscale)
        if kind != "matrix":
            out[name] = (torch.zeros(shape), value)
            continue
        s = c.init_std
        if role in ("attn_out", "mlp_out"):
            if c.init == "scaled":
                s /= math.sqrt(2 * L)
            elif c.init == "depth-scaled":
                s /= math.sqrt(2 * (i + 1))
        std = torch.full(shape, s)
        if c.scheme == "deepnorm":
            if role in ("v", "attn_out", "mlp_in", "mlp_out"):
                std *= beta
            elif role == "qkv":
                std[:, 2 * c.C:] *= beta  # only the V columns of [q | k | v]
        out[name] = (std, value)
    return out


def init_params(c, generator=None):
    """Samples a fresh parameter dict (float32) from init_tables."""
    return {n: torch.randn(std.shape, generator=generator) * std + value
            for n, (std, value) in init_tables(c).items()}


def check_params(c, tensors, path="model.safetensors"):
    """Checks names and shapes against param_specs; returns {name: float32 tensor}."""
    specs = param_specs(c)
    want = {n: s for n, s, *_ in specs}
    missing = [n for n in want if n not in tensors]
    extra = [n for n in tensors if n not in want]
    if missing or extra:
        raise RefError(f"{path}: missing tensors {missing[:5]}, unexpected tensors {extra[:5]}")
    for n, s in want.items():
        if tuple(tensors[n].shape) != s or not tensors[n].is_floating_point():
            raise RefError(f"{path}: {n} has shape {list(tensors[n].shape)} "
                           f"dtype {tensors[n].dtype}, expected float {list(s)}")
    return {n: tensors[n].to(torch.float32) for n in want}


# ----------------------------------------------------------------------------
# model

def norm(c, p, prefix, x):
    """The architecture's norm over the last dim. x: (B, T, C)."""
    if c.arch == "gpt2":  # LayerNorm, biased variance
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + c.eps) * p[prefix + ".weight"] + p[prefix + ".bias"]
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + c.eps) * p[prefix + ".weight"]  # RMSNorm


def rope_cos_sin(c, T, dtype):
    """cos, sin: (T, D), HF layout cat(freqs, freqs); computed in float64, then rounded."""
    D = c.C // c.H
    inv_freq = c.theta ** (-2.0 * torch.arange(D // 2, dtype=torch.float64) / D)  # (D/2)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv_freq[None, :]  # (T, D/2)
    ang = torch.cat([ang, ang], dim=-1)  # (T, D)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def attention(c, q, k, v):
    """Causal multi-head attention. q, k, v: (B, T, C) -> (B, T, C)."""
    B, T, C = q.shape
    H, D = c.H, C // c.H
    q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
    if c.arch == "llama":
        cos, sin = rope_cos_sin(c, T, q.dtype)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
    s = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    s = s.masked_fill(future, float("-inf"))
    y = torch.softmax(s, dim=-1) @ v  # (B, H, T, D)
    return y.transpose(1, 2).reshape(B, T, C)


def attn_sublayer(c, p, i, x):
    if c.arch == "gpt2":
        pre = f"transformer.h.{i}.attn."
        qkv = x @ p[pre + "c_attn.weight"] + p[pre + "c_attn.bias"]  # (B, T, 3C)
        q, k, v = qkv.split(c.C, dim=-1)
        return attention(c, q, k, v) @ p[pre + "c_proj.weight"] + p[pre + "c_proj.bias"]
    pre = f"model.layers.{i}.self_attn."
    q, k, v = (x @ p[pre + f"{n}_proj.weight"].T for n in "qkv")
    return attention(c, q, k, v) @ p[pre + "o_proj.weight"].T


def mlp_sublayer(c, p, i, x):
    if c.arch == "gpt2":
        pre = f"transformer.h.{i}.mlp."
        h = x @ p[pre + "c_fc.weight"] + p[pre + "c_fc.bias"]  # (B, T, F)
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * h ** 3)))
        return h @ p[pre + "c_proj.weight"] + p[pre + "c_proj.bias"]
    pre = f"model.layers.{i}.mlp."
    g = x @ p[pre + "gate_proj.weight"].T  # (B, T, F)
    u = x @ p[pre + "up_proj.weight"].T
    return (g * torch.sigmoid(g) * u) @ p[pre + "down_proj.weight"].T


def block_scheme(c, i):
    if c.scheme == "mix":
        return "post" if i < math.floor(c.mix_alpha * c.L) else "pre"
    return c.scheme


def forward(c, p, inputs, targets=None, hidden=None):
    """inputs, targets: (B, T) integer. Returns logits (B, T, V) and the mean
    cross-entropy over positions with target >= 0 (None without targets).
    hidden: an optional list; gets the residual stream entering each block and,
    last, the stream after the last block (before the final norm): L + 1 tensors."""
    B, T = inputs.shape
    inputs = inputs.long()
    if c.arch == "gpt2":
        x = p["transformer.wte.weight"][inputs] + p["transformer.wpe.weight"][:T]  # (B, T, C)
    else:
        x = p["model.embed_tokens.weight"][inputs]
    alpha = (2 * c.L) ** 0.25
    for i in range(c.L):
        if hidden is not None:
            hidden.append(x)
        kind = block_scheme(c, i)
        n1, n2, o1, o2 = norm_names(c, i)
        s = 1.0 / math.sqrt(i + 1)
        for f, n_in, n_out, branch in ((attn_sublayer, n1, o1, "attn"), (mlp_sublayer, n2, o2, "mlp")):
            gname = branch_scale_name(c, i, branch)

            def g(y):  # LayerScale / SkipInit on the branch output as it joins the stream
                return y * p[gname] if gname else y
            if kind == "pre":
                x = x + g(f(c, p, i, norm(c, p, n_in, x)))
            elif kind == "lns":
                where = c.placement  # attn-only / ffn-only: norm-output on that branch, nothing on the other
                if where in ("attn-only", "ffn-only"):
                    where = "norm-output" if where == ("attn-only" if branch == "attn" else "ffn-only") else None
                if where == "norm-output":
                    x = x + g(f(c, p, i, norm(c, p, n_in, x) * s))
                elif where == "before-norm":
                    x = x + g(f(c, p, i, norm(c, p, n_in, x * s)))
                elif where == "after-sublayer":
                    x = x + g(f(c, p, i, norm(c, p, n_in, x)) * s)
                else:
                    x = x + g(f(c, p, i, norm(c, p, n_in, x)))
            elif kind == "post":
                x = norm(c, p, n_in, x + g(f(c, p, i, x)))
            elif kind == "sandwich":
                x = x + g(norm(c, p, n_out, f(c, p, i, norm(c, p, n_in, x))))
            elif kind == "deepnorm":
                x = norm(c, p, n_in, alpha * x + g(f(c, p, i, x)))
            else:
                raise ValueError(kind)
    if hidden is not None:
        hidden.append(x)
    x = norm(c, p, final_norm_name(c), x)
    head = p["transformer.wte.weight"] if c.arch == "gpt2" else p["lm_head.weight"]  # (V, C)
    logits = x @ head.T  # (B, T, V)
    if targets is None:
        return logits, None
    keep = targets >= 0  # (B, T)
    loss = torch.nn.functional.cross_entropy(logits[keep], targets[keep].long())
    return logits, loss


def depth_diagnostics(c, hidden, grads):
    """The depth diagnostics of doc/curse-of-depth.md, in float64.
    hidden: the L + 1 streams from forward(hidden=...), (B, T, C) each; grads:
    {name: gradient}. Returns {name: tensor}: var_token, var_all, rms, grad_norm (L,)
    for the output of block i (hidden[i + 1]), angular (L + 1, L + 1)."""
    h = [t.detach().double().reshape(-1, c.C) for t in hidden]
    outs = {k: [] for k in ("var_token", "var_all", "rms", "grad_norm")}
    for i in range(c.L):
        x = h[i + 1]
        outs["var_token"].append(x.var(dim=1, unbiased=False).mean())
        outs["var_all"].append(x.flatten().var(unbiased=False))
        outs["rms"].append(x.pow(2).mean().sqrt())
        sq = sum(grads[n].double().pow(2).sum() for n, _, _, _, b in param_specs(c) if b == i)
        outs["grad_norm"].append(sq.sqrt())
    out = {k: torch.stack(v) for k, v in outs.items()}
    ang = torch.zeros(c.L + 1, c.L + 1, dtype=torch.float64)
    for i in range(c.L + 1):
        for j in range(c.L + 1):
            if i != j:
                cs = torch.nn.functional.cosine_similarity(h[i], h[j], dim=1, eps=0.0).clamp(-1, 1)
                ang[i, j] = (torch.arccos(cs) / math.pi).mean()
    out["angular"] = ang
    return out
