#!/usr/bin/python3
"""Generate the PyTorch reference data (tests/data/*.bgref) for the C tests.

Run with Debian's interpreter (it has torch and numpy):
    /usr/bin/python3 tests/ref/make_refs.py [OUTDIR]
    /usr/bin/python3 tests/ref/make_refs.py --tables   (input tables for
                                   REFERENCES.md and tests/test_refdata.c)

Everything is deterministic: inputs come from the LCG of bgref.py (no torch
RNG), torch runs single-threaded. The cases, seeds and formulas are described
normatively in tests/data/REFERENCES.md; keep the two in sync.
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bgref import (lcg_fill, lcg_labels, lcg_norm,  # noqa: E402
                   read_bgref, self_test, write_bgref)

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

F32 = torch.float32
F64 = torch.float64

# ---------------------------------------------------------------------------
# inputs: one table drives generation, REFERENCES.md and the C checksum table
# ---------------------------------------------------------------------------

BLOCK_CFG = dict(B=2, T=8, C=32, n_head=4, n_head_kv=2, n_ff=64, eps=1e-5,
                 rope_base=10000.0)
MODEL_CFG = dict(n_vocab=256, C=64, n_layer=2, n_head=4, n_head_kv=2, n_ff=128,
                 eps=1e-5, rope_base=10000.0, B=2, T=16)
MODEL_LAYER_TENSORS = ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                       "attn_sub_norm", "ffn_norm", "ffn_gate", "ffn_up",
                       "ffn_down", "ffn_sub_norm"]
# bitgrad/GGUF tensor name -> name used in the block code
GGUF_TO_BLOCK = dict(attn_q="Wq", attn_k="Wk", attn_v="Wv", attn_output="Wo",
                     ffn_gate="Wg", ffn_up="Wu", ffn_down="Wd")


def _block_spec(first_seed, order, cfg):
    B, T, C, ff = cfg["B"], cfg["T"], cfg["C"], cfg["n_ff"]
    Ckv = C // cfg["n_head"] * cfg["n_head_kv"]
    shapes = dict(x=(B, T, C), R=(B, T, C), attn_norm=(C,), attn_sub_norm=(C,),
                  ffn_norm=(C,), ffn_sub_norm=(ff,), Wq=(C, C), Wk=(Ckv, C),
                  Wv=(Ckv, C), Wo=(C, C), Wg=(ff, C), Wu=(ff, C), Wd=(C, ff))
    out = []
    for i, name in enumerate(order):
        if name in ("x", "R"):
            out.append((name, "fill", first_seed + i, shapes[name], 1.0))
        elif name.endswith("norm"):
            out.append((name, "norm", first_seed + i, shapes[name], 0.1))
        else:
            out.append((name, "fill", first_seed + i, shapes[name], 0.2))
    return out


def _model_spec(cfg):
    C, ff, V = cfg["C"], cfg["n_ff"], cfg["n_vocab"]
    Ckv = C // cfg["n_head"] * cfg["n_head_kv"]
    shapes = dict(attn_norm=(C,), attn_q=(C, C), attn_k=(Ckv, C),
                  attn_v=(Ckv, C), attn_output=(C, C), attn_sub_norm=(C,),
                  ffn_norm=(C,), ffn_gate=(ff, C), ffn_up=(ff, C),
                  ffn_down=(C, ff), ffn_sub_norm=(ff,))
    out = [("ids", "labels", 61, (cfg["B"], cfg["T"]), V),
           ("token_embd", "fill", 62, (V, C), 0.5)]
    seed = 63
    for layer in range(cfg["n_layer"]):
        for name in MODEL_LAYER_TENSORS:
            kind, scale = ("norm", 0.1) if name.endswith("norm") else \
                ("fill", 0.2)
            out.append(("blk.%d.%s" % (layer, name), kind, seed, shapes[name],
                        scale))
            seed += 1
    out.append(("output_norm", "norm", seed, (C,), 0.1))
    return out


# (name, kind, seed, shape, scale) -- kind "fill": lcg_fill(seed, n, scale);
# "norm": lcg_fill(seed, n, scale) + 1.0f; "labels": lcg_labels(seed, n, k=scale)
INPUTS = {
    "mlp_ce": [("x", "fill", 11, (8, 16), 1.0),
               ("W1", "fill", 12, (32, 16), 0.25),
               ("b1", "fill", 13, (32,), 0.1),
               ("W2", "fill", 14, (10, 32), 0.25),
               ("b2", "fill", 15, (10,), 0.1),
               ("targets", "labels", 16, (8,), 10)],
    "attn_block": _block_spec(21, ["x", "attn_norm", "Wq", "Wk", "Wv", "Wo",
                                   "ffn_norm", "Wg", "Wu", "Wd", "R"],
                              BLOCK_CFG),
    "w1": [("X", "fill", 41, (256, 784), 1.0),
           ("W1", "fill", 42, (1024, 784), 0.05),
           ("W2", "fill", 43, (1024, 1024), 0.05),
           ("W3", "fill", 44, (10, 1024), 0.05),
           ("labels", "labels", 45, (256,), 10)],
    "bitnet_block": _block_spec(51, ["x", "attn_norm", "Wq", "Wk", "Wv", "Wo",
                                     "attn_sub_norm", "ffn_norm", "Wg", "Wu",
                                     "Wd", "ffn_sub_norm", "R"], BLOCK_CFG),
    "bitnet_model": _model_spec(MODEL_CFG),
}


def make_input(kind, seed, shape, scale):
    n = int(np.prod(shape))
    if kind == "fill":
        return lcg_fill(seed, n, scale).reshape(shape)
    if kind == "norm":
        return lcg_norm(seed, n, scale).reshape(shape)
    if kind == "labels":
        return lcg_labels(seed, n, scale).reshape(shape)
    raise ValueError(kind)


def make_inputs(group):
    """dict name -> numpy array (float32, or int64 for labels), table order."""
    return {name: make_input(kind, seed, shape, scale)
            for name, kind, seed, shape, scale in INPUTS[group]}


def checksum(arr):
    """sum_i bits_i * (2 i + 1) mod 2^64 over the float32 bit patterns (or
    the label values) in row-major order."""
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        bits = a.astype(np.float32).reshape(-1).view(np.uint32)
    else:
        bits = a.astype(np.int64).reshape(-1).astype(np.uint32)
    bits = bits.astype(np.uint64)
    w = np.arange(bits.size, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    with np.errstate(over="ignore"):
        return int(np.sum(bits * w, dtype=np.uint64))


def input_table():
    rows = []
    for group, specs in INPUTS.items():
        for name, kind, seed, shape, scale in specs:
            a = make_input(kind, seed, shape, scale)
            rows.append((group, name, kind, seed, shape, scale, checksum(a),
                         a.reshape(-1)[0]))
    return rows


def print_tables():
    """Markdown table for REFERENCES.md and the C table for test_refdata.c."""
    rows = input_table()
    print("| group | tensor | kind | seed | shape | scale / k | first value | "
          "checksum |")
    print("|---|---|---|---|---|---|---|---|")
    for g, n, kind, seed, shape, scale, cs, first in rows:
        fv = ("%d" % first) if kind == "labels" else \
            "%.9g (0x%08x)" % (first, np.float32(first).view(np.uint32))
        print("| %s | %s | %s | %d | [%s] | %s | %s | 0x%016x |"
              % (g, n, kind, seed, ", ".join(map(str, shape)), scale, fv, cs))
    print()
    for g, n, kind, seed, shape, scale, cs, first in rows:
        print('    {"%s", "%s", BGREF_IN_%s, %du, %d, {%s}, %sf, '
              'UINT64_C(0x%016x)},'
              % (g, n, kind.upper(), seed, len(shape),
                 ", ".join(map(str, shape)), repr(float(scale)), cs))


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def tt(arr, dtype, grad=True):
    t = torch.from_numpy(np.asarray(arr, dtype=np.float32).copy()).to(dtype)
    if grad:
        t.requires_grad_(True)
    return t


def np32(t):
    """A float32 numpy COPY (never a view of a tensor updated later)."""
    return t.detach().to(F32).cpu().numpy().copy()


def gname(name):
    if name == "x":
        return "dx"
    if name.startswith("W"):
        return "d" + name
    return "d_" + name


class TieStats:
    """Records how close quantizer inputs come to a rounding tie (x.5).

    Activation quantizer: v = x * s_x, distance = | frac(|v|) - 0.5 | in
    quantization steps. Weight quantizer: v = W / s_w, distance = ||v| - 0.5|
    (only 0.5 matters because of the clamp to [-1, 1])."""

    def __init__(self):
        self.act_min = math.inf
        self.act_risky = 0      # distance < 1e-4 steps
        self.act_count = 0
        self.w_min = math.inf

    def act(self, v):
        a = v.detach().abs().double()
        d = ((a - a.floor()) - 0.5).abs()
        self.act_min = min(self.act_min, float(d.min()))
        self.act_risky += int((d < 1e-4).sum())
        self.act_count += d.numel()

    def weight(self, v):
        a = v.detach().abs().double()
        self.w_min = min(self.w_min, float((a - 0.5).abs().min()))

    def __str__(self):
        return ("act: min tie distance %.2e steps, %d/%d within 1e-4; "
                "weight: min ||W/s_w|-0.5| %.2e"
                % (self.act_min, self.act_risky, self.act_count, self.w_min))


# ---------------------------------------------------------------------------
# torch building blocks (dtype follows the inputs)
# ---------------------------------------------------------------------------


def round_away(v):
    """Round half away from zero (C roundf), exact in any float dtype.
    (sign(v) * floor(|v| + 0.5) is wrong for |v| = 0.5 - 2^-25 in float32.)"""
    a = v.abs()
    f = a.floor()
    r = f + ((a - f) >= 0.5).to(v.dtype)
    return torch.sign(v) * r


def weight_quant(W, stats=None):
    """absmean per tensor: s_w = max(mean|W| (in float64, rounded), 1e-5)."""
    s = W.abs().double().mean().to(W.dtype).clamp_min(1e-5)
    v = W / s
    if stats is not None:
        stats.weight(v)
    return round_away(v).clamp(-1, 1) * s


def act_quant(x, stats=None):
    """absmax per row (token), 8 bits, Qp = 127."""
    m = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
    s = torch.full_like(m, 127.0) / m   # NOT 127.0 / m: torch computes that
    v = x * s                           # as m.reciprocal() * 127 (2 roundings)
    if stats is not None:
        stats.act(v)
    return round_away(v).clamp(-128, 127) / s


def bitlinear(x, W, stats=None, reverse=False):
    """Standard STE BitLinear: y = x_ste @ w_ste^T with
    x_ste = x + (ActQ(x) - x).detach(), w_ste = W + (WQ(W) - W).detach().
    reverse=True sums the inner dimension in another order (flipped), to
    measure how sensitive a result is to the summation order."""
    with torch.no_grad():
        xq = act_quant(x, stats)
        wq = weight_quant(W, stats)
    x_ste = x + (xq - x).detach()
    w_ste = W + (wq - W).detach()
    if reverse:
        return F.linear(x_ste.flip(-1), w_ste.flip(-1))
    return F.linear(x_ste, w_ste)


def bitlinear_exact(x, W, stats=None, reverse=False):
    """Exact-forward BitLinear: forward value y = float32(acc) * s_w / s_x
    (left to right, one rounding per operation) with acc = sum_j k_j c_j the
    integer dot product of the activation codes k = clamp(round(x s_x)) and the
    ternary codes c (exact in float32, whatever the summation order, because
    |acc| <= 128 * n_in < 2^24). Backward is the same STE as bitlinear()."""
    with torch.no_grad():
        xd, Wd = x.detach(), W.detach()
        m = xd.abs().amax(dim=-1, keepdim=True).clamp_min(1e-5)
        sx = torch.full_like(m, 127.0) / m
        v = xd * sx
        if stats is not None:
            stats.act(v)
        k = round_away(v).clamp(-128, 127)
        sw = Wd.abs().double().mean().to(W.dtype).clamp_min(1e-5)
        c = round_away(Wd / sw).clamp(-1, 1)
        if reverse:
            acc = F.linear(k.flip(-1), c.flip(-1))
        else:
            acc = F.linear(k, c)
        assert float(acc.abs().max()) < 2 ** 24
        y = acc * sw / sx
        xq = k / sx
        wq = c * sw
    y_ste = F.linear(x + (xq - x).detach(), W + (wq - W).detach())
    return y_ste + (y - y_ste).detach()


def make_lin(quant, stats=None):
    """quant: None (full precision F.linear), "std", "std_rev", "exact",
    "exact_rev" (see bitlinear / bitlinear_exact)."""
    if not quant:
        return F.linear
    fn = bitlinear_exact if quant.startswith("exact") else bitlinear
    rev = quant.endswith("_rev")
    return lambda a, W: fn(a, W, stats, rev)


def rms(v, eps):
    return v / torch.sqrt((v * v).mean(dim=-1, keepdim=True) + eps)


def rope_tables(T, n_rot, base):
    """cos/sin [T, n_rot/2], computed in float64."""
    half = n_rot // 2
    pos = np.arange(T, dtype=np.float64)
    inv = base ** (-2.0 * np.arange(half, dtype=np.float64) / n_rot)
    theta = pos[:, None] * inv[None, :]
    return np.cos(theta), np.sin(theta)


def rope(x, base):
    """NEOX RoPE on x [B, T, H, D], n_rot = D, positions 0..T-1."""
    B, T, H, D = x.shape
    half = D // 2
    c, s = rope_tables(T, D, base)
    c = torch.from_numpy(c).to(x.dtype)[None, :, None, :]
    s = torch.from_numpy(s).to(x.dtype)[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)


def attention(q, k, v, n_head, n_head_kv):
    """q [B,T,H,D], k/v [B,T,Hkv,D] -> [B,T,H*D]; causal; head h reads kv
    head h // (H/Hkv)."""
    B, T, H, D = q.shape
    rep = n_head // n_head_kv
    q = q.transpose(1, 2)
    k = k.transpose(1, 2).repeat_interleave(rep, dim=1)
    v = v.transpose(1, 2).repeat_interleave(rep, dim=1)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(D)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    a = torch.softmax(scores, dim=-1) @ v
    return a.transpose(1, 2).reshape(B, T, H * D)


def block(x, p, cfg, quant, stats=None):
    """One pre-norm llama block; quant (not None) makes it the bitnet block:
    sub-norms and BitLinear projections."""
    bitnet = bool(quant)
    B, T, C = x.shape
    H, Hkv = cfg["n_head"], cfg["n_head_kv"]
    D = C // H
    eps = cfg["eps"]
    lin = make_lin(quant, stats)
    h = rms(x, eps) * p["attn_norm"]
    q = lin(h, p["Wq"]).view(B, T, H, D)
    k = lin(h, p["Wk"]).view(B, T, Hkv, D)
    v = lin(h, p["Wv"]).view(B, T, Hkv, D)
    q = rope(q, cfg["rope_base"])
    k = rope(k, cfg["rope_base"])
    a = attention(q, k, v, H, Hkv)
    if bitnet:
        a = rms(a, eps) * p["attn_sub_norm"]
    x1 = x + lin(a, p["Wo"])
    h2 = rms(x1, eps) * p["ffn_norm"]
    f = F.silu(lin(h2, p["Wg"])) * lin(h2, p["Wu"])
    if bitnet:
        f = rms(f, eps) * p["ffn_sub_norm"]
    return x1 + lin(f, p["Wd"])


# ---------------------------------------------------------------------------
# independent float64 numpy implementation (used for bitnet_model and as a
# cross-check of the torch code)
# ---------------------------------------------------------------------------


def np_round_away(v):
    a = np.abs(v)
    f = np.floor(a)
    return np.sign(v) * (f + ((a - f) >= 0.5))


def np_wq(W):
    s = max(np.mean(np.abs(W)), 1e-5)
    return np.clip(np_round_away(W / s), -1, 1) * s


def np_aq(x):
    s = 127.0 / np.maximum(np.max(np.abs(x), axis=-1, keepdims=True), 1e-5)
    return np.clip(np_round_away(x * s), -128, 127) / s


def np_lin(x, W, quant):
    if quant:
        x, W = np_aq(x), np_wq(W)
    return x @ W.T


def np_rms(v, eps):
    return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + eps)


def np_rope(x, base):
    B, T, H, D = x.shape
    half = D // 2
    c, s = rope_tables(T, D, base)
    c, s = c[None, :, None, :], s[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * c - x2 * s, x1 * s + x2 * c], axis=-1)


def np_attention(q, k, v, n_head, n_head_kv):
    B, T, H, D = q.shape
    rep = n_head // n_head_kv
    out = np.zeros((B, T, H, D))
    mask = np.triu(np.ones((T, T), dtype=bool), 1)
    for h in range(H):
        kh = k[:, :, h // rep, :]
        vh = v[:, :, h // rep, :]
        sc = np.einsum("btd,bsd->bts", q[:, :, h, :], kh) / math.sqrt(D)
        sc = np.where(mask[None], -np.inf, sc)
        sc = sc - sc.max(axis=-1, keepdims=True)
        e = np.exp(sc)
        pr = e / e.sum(axis=-1, keepdims=True)
        out[:, :, h, :] = np.einsum("bts,bsd->btd", pr, vh)
    return out.reshape(B, T, H * D)


def np_silu(v):
    return v / (1.0 + np.exp(-v))


def np_block(x, p, cfg, bitnet):
    B, T, C = x.shape
    H, Hkv = cfg["n_head"], cfg["n_head_kv"]
    D = C // H
    eps = cfg["eps"]
    h = np_rms(x, eps) * p["attn_norm"]
    q = np_lin(h, p["Wq"], bitnet).reshape(B, T, H, D)
    k = np_lin(h, p["Wk"], bitnet).reshape(B, T, Hkv, D)
    v = np_lin(h, p["Wv"], bitnet).reshape(B, T, Hkv, D)
    q, k = np_rope(q, cfg["rope_base"]), np_rope(k, cfg["rope_base"])
    a = np_attention(q, k, v, H, Hkv)
    if bitnet:
        a = np_rms(a, eps) * p["attn_sub_norm"]
    x1 = x + np_lin(a, p["Wo"], bitnet)
    h2 = np_rms(x1, eps) * p["ffn_norm"]
    f = np_silu(np_lin(h2, p["Wg"], bitnet)) * np_lin(h2, p["Wu"], bitnet)
    if bitnet:
        f = np_rms(f, eps) * p["ffn_sub_norm"]
    return x1 + np_lin(f, p["Wd"], bitnet)


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


def save(outdir, case, entries, extra=""):
    path = os.path.join(outdir, case + ".bgref")
    size = write_bgref(path, entries)
    back = read_bgref(path)
    assert list(back.keys()) == [n for n, _ in entries]
    parts = []
    for n, v in entries:
        a = np.asarray(v, dtype=np.float32)
        assert np.array_equal(back[n], a), n
        assert np.all(np.isfinite(a)), "%s: %s not finite" % (case, n)
        if a.ndim == 0:
            parts.append("%s=%.6g" % (n, float(a)))
        else:
            parts.append("max|%s|=%.3g" % (n, float(np.abs(a).max())))
    print("%s: %d entries, %d bytes; %s%s" % (case, len(entries), size,
                                              ", ".join(parts), extra),
          flush=True)


def rel_diff(a, b):
    """max |a - b| / max |b|."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


# ---------------------------------------------------------------------------
# case 1: mlp_ce
# ---------------------------------------------------------------------------


def case_mlp_ce(outdir):
    inp = make_inputs("mlp_ce")
    x, W1, b1, W2, b2 = (inp[k] for k in ("x", "W1", "b1", "W2", "b2"))
    tgt = inp["targets"].copy()
    tgt[3] = -100
    P = {k: tt(v, F64) for k, v in
         dict(x=x, W1=W1, b1=b1, W2=W2, b2=b2).items()}
    logits = F.linear(torch.relu(F.linear(P["x"], P["W1"], P["b1"])),
                      P["W2"], P["b2"])
    loss = F.cross_entropy(logits, torch.from_numpy(tgt), ignore_index=-100,
                           reduction="mean")
    loss.backward()
    save(outdir, "mlp_ce", [
        ("x", x), ("W1", W1), ("b1", b1), ("W2", W2), ("b2", b2),
        ("targets", tgt.astype(np.float32)),
        ("logits", np32(logits)), ("loss", np32(loss)),
        ("dx", np32(P["x"].grad)), ("dW1", np32(P["W1"].grad)),
        ("db1", np32(P["b1"].grad)), ("dW2", np32(P["W2"].grad)),
        ("db2", np32(P["b2"].grad)),
    ])


# ---------------------------------------------------------------------------
# case 2: attn_block (full precision llama block)
# ---------------------------------------------------------------------------


def block_inputs(group):
    """Returns (x, params dict, R) as numpy float32."""
    inp = make_inputs(group)
    x, R = inp.pop("x"), inp.pop("R")
    return x, inp, R


def run_block(x, p, R, cfg, quant, dtype, stats=None):
    xt = tt(x, dtype)
    pt = {k: tt(v, dtype) for k, v in p.items()}
    out = block(xt, pt, cfg, quant, stats)
    loss = (out * tt(R, dtype, grad=False)).sum()
    loss.backward()
    grads = [(gname("x"), np32(xt.grad))]
    grads += [(gname(k), np32(pt[k].grad)) for k in p]
    return np32(out), np32(loss), grads


def max_grad_diff(ga, gb):
    return max(rel_diff(a, b) for (_, a), (_, b) in zip(ga, gb))


def case_attn_block(outdir):
    cfg = BLOCK_CFG
    x, p, R = block_inputs("attn_block")
    out, loss, grads = run_block(x, p, R, cfg, None, F64)
    # cross-checks: independent numpy forward, and torch float32
    ref = np_block(x.astype(np.float64),
                   {k: v.astype(np.float64) for k, v in p.items()}, cfg, False)
    d_np = rel_diff(out, ref)
    out32, _, grads32 = run_block(x, p, R, cfg, None, F32)
    assert d_np < 1e-6, d_np
    save(outdir, "attn_block", [("out", out), ("loss", loss)] + grads,
         "\n    check: out vs numpy-f64 %.1e; torch-f32 vs stored: out %.1e, "
         "max grad %.1e" % (d_np, rel_diff(out32, out),
                            max_grad_diff(grads32, grads)))


# ---------------------------------------------------------------------------
# case 3: w1_bitlinear (+ w1_bitlinear_exact, w1_float, optimizer steps)
# ---------------------------------------------------------------------------


def w1_inputs():
    inp = make_inputs("w1")
    return inp["X"], [inp["W1"], inp["W2"], inp["W3"]], inp["labels"]


def w1_forward(X, Ws, labels, dtype, quant, stats=None):
    Xt = tt(X, dtype, grad=False)
    Wt = [tt(w, dtype) for w in Ws]
    lin = make_lin(quant, stats)
    h = torch.relu(lin(Xt, Wt[0]))
    h = torch.relu(lin(h, Wt[1]))
    logits = lin(h, Wt[2])
    loss = F.cross_entropy(logits, torch.from_numpy(labels))
    loss.backward()
    return np32(logits), np32(loss), [np32(w.grad) for w in Wt]


def w1_diff(a, b):
    return "logits %.1e, loss %.1e, dW1/2/3 %s" % (
        rel_diff(a[0], b[0]), rel_diff(a[1], b[1]),
        "/".join("%.1e" % rel_diff(x, y) for x, y in zip(a[2], b[2])))


def np_w1_exact_f32(X, Ws, labels):
    """Independent float32 numpy version of the exact-forward W1 model with a
    hand-written backward (int64 accumulators). Returns logits, loss, grads."""
    f32 = np.float32

    def ra(v):
        a = np.abs(v)
        f = np.floor(a)
        return (np.sign(v) * (f + ((a - f) >= f32(0.5)))).astype(f32)

    a, cache = X, []
    for i, W in enumerate(Ws):
        m = np.maximum(np.abs(a).max(-1, keepdims=True), f32(1e-5))
        sx = (f32(127.0) / m).astype(f32)
        k = np.clip(ra(a * sx), -128, 127).astype(f32)
        sw = max(f32(np.mean(np.abs(W).astype(np.float64))), f32(1e-5))
        c = np.clip(ra(W / sw), -1, 1).astype(f32)
        acc = (k.astype(np.int64) @ c.T.astype(np.int64)).astype(f32)
        y = ((acc * sw).astype(f32) / sx).astype(f32)
        cache.append(((k / sx).astype(f32), (c * sw).astype(f32), y))
        a = np.maximum(y, f32(0)) if i < 2 else y
    logits = a
    mx = logits.max(1, keepdims=True)
    e = np.exp(logits - mx)
    n = logits.shape[0]
    loss = np.mean(np.log(e.sum(1)) + mx[:, 0] - logits[np.arange(n), labels])
    g = e / e.sum(1, keepdims=True)
    g[np.arange(n), labels] -= 1
    g = (g / n).astype(f32)
    grads = [None] * len(Ws)
    for i in reversed(range(len(Ws))):
        xq, wq, y = cache[i]
        if i < len(Ws) - 1:
            g = g * (y > 0)
        grads[i] = (g.T @ xq).astype(f32)
        g = (g @ wq).astype(f32)
    return logits, f32(loss), grads


def optimizer_steps(Ws, grads, make_opt, nsteps):
    params = [tt(w, F32, grad=True) for w in Ws]
    opt = make_opt(params)
    res = []
    for _ in range(nsteps):
        for p, g in zip(params, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()
        res.append([np32(p) for p in params])
    return res


def case_w1(outdir):
    X, Ws, labels = w1_inputs()
    stats = TieStats()
    std = w1_forward(X, Ws, labels, F32, "std", stats)
    logits, loss, grads = std
    # sensitivity of the standard formulation: other summation order, float64
    std_rev = w1_forward(X, Ws, labels, F32, "std_rev")
    std64 = w1_forward(X, Ws, labels, F64, "std")
    exact = w1_forward(X, Ws, labels, F32, "exact")
    exact_rev = w1_forward(X, Ws, labels, F32, "exact_rev")
    assert np.array_equal(exact[0], exact_rev[0])
    np_exact = np_w1_exact_f32(X, Ws, labels)
    assert np.array_equal(np_exact[0], exact[0]), "exact logits not bit-exact"

    adamw = optimizer_steps(
        Ws, grads, lambda ps: torch.optim.AdamW(
            ps, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01,
            amsgrad=False, foreach=False), 2)
    sgd = optimizer_steps(
        Ws, grads, lambda ps: torch.optim.SGD(
            ps, lr=0.1, momentum=0.9, dampening=0, nesterov=False,
            weight_decay=0.01, foreach=False), 2)

    for res in (adamw, sgd):
        for w0, w1 in zip(res[0], res[1]):
            assert not np.array_equal(w0, w1)
    entries = [("labels", labels.astype(np.float32)), ("logits", logits),
               ("loss", loss)]
    entries += [("dW%d" % (i + 1), g) for i, g in enumerate(grads)]
    for tag, res in (("adamw", adamw[0]), ("adamw2", adamw[1]),
                     ("sgd", sgd[0]), ("sgd2", sgd[1])):
        entries += [("%s_W%d" % (tag, i + 1), w) for i, w in enumerate(res)]
    save(outdir, "w1_bitlinear", entries,
         "\n    ties: %s"
         "\n    sensitivity (rel. to max): reversed summation order: %s"
         "\n                               float64 arithmetic: %s"
         "\n                               exact-forward formulation: %s"
         % (stats, w1_diff(std_rev, std), w1_diff(std64, std),
            w1_diff(exact, std)))

    entries = [("labels", labels.astype(np.float32)), ("logits", exact[0]),
               ("loss", exact[1])]
    entries += [("dW%d" % (i + 1), g) for i, g in enumerate(exact[2])]
    save(outdir, "w1_bitlinear_exact", entries,
         "\n    reversed summation order: %s (logits bit-identical)"
         "\n    independent numpy float32 (int64 accumulators): %s"
         % (w1_diff(exact_rev, exact), w1_diff(np_exact, exact)))

    flt = w1_forward(X, Ws, labels, F64, None)
    flt32 = w1_forward(X, Ws, labels, F32, None)
    entries = [("labels", labels.astype(np.float32)), ("logits", flt[0]),
               ("loss", flt[1])]
    entries += [("dW%d" % (i + 1), g) for i, g in enumerate(flt[2])]
    save(outdir, "w1_float", entries,
         "\n    torch-f32 vs stored (f64): %s" % w1_diff(flt32, flt))


# ---------------------------------------------------------------------------
# case 4: bitnet_block
# ---------------------------------------------------------------------------


def case_bitnet_block(outdir):
    cfg = BLOCK_CFG
    x, p, R = block_inputs("bitnet_block")
    stats = TieStats()
    out, loss, grads = run_block(x, p, R, cfg, "std", F32, stats)
    ref = np_block(x.astype(np.float64),
                   {k: v.astype(np.float64) for k, v in p.items()}, cfg, True)
    out64, _, g64 = run_block(x, p, R, cfg, "std", F64)
    d_np64 = rel_diff(out64, ref)
    assert d_np64 < 1e-6, d_np64
    checks = []
    for tag, q, dt in (("reversed order", "std_rev", F32),
                       ("exact-forward", "exact", F32),
                       ("torch-f64", "std", F64)):
        o, _, g = run_block(x, p, R, cfg, q, dt)
        checks.append("%s: out %.1e, grads %.1e"
                      % (tag, rel_diff(o, out), max_grad_diff(g, grads)))
    save(outdir, "bitnet_block", [("out", out), ("loss", loss)] + grads,
         "\n    ties: %s\n    check: out vs numpy-f64 %.1e (torch-f64 vs "
         "numpy-f64 %.1e)\n    sensitivity: %s"
         % (stats, rel_diff(out, ref), d_np64, "; ".join(checks)))


# ---------------------------------------------------------------------------
# case 5: bitnet_model forward
# ---------------------------------------------------------------------------


def model_inputs():
    inp = make_inputs("bitnet_model")
    ids, emb, out_norm = inp["ids"], inp["token_embd"], inp["output_norm"]
    layers = []
    for layer in range(MODEL_CFG["n_layer"]):
        p = {}
        for name in MODEL_LAYER_TENSORS:
            p[GGUF_TO_BLOCK.get(name, name)] = inp["blk.%d.%s" % (layer, name)]
        layers.append(p)
    return ids, emb, layers, out_norm


def case_bitnet_model(outdir):
    cfg = MODEL_CFG
    ids, emb, layers, out_norm = model_inputs()
    assert INPUTS["bitnet_model"][-1][2] == 85
    eps = cfg["eps"]

    # float64 numpy (independent of torch)
    x = emb.astype(np.float64)[ids]
    for p in layers:
        x = np_block(x, {k: v.astype(np.float64) for k, v in p.items()}, cfg,
                     True)
    logits64 = (np_rms(x, eps) * out_norm.astype(np.float64)) @ \
        emb.astype(np.float64).T

    # float32 torch
    def torch_logits(quant, stats=None):
        with torch.no_grad():
            e = tt(emb, F32, grad=False)
            xt = e[torch.from_numpy(ids)]
            for p in layers:
                pt = {k: tt(v, F32, grad=False) for k, v in p.items()}
                xt = block(xt, pt, cfg, quant, stats)
            lg = F.linear(rms(xt, eps) * tt(out_norm, F32, grad=False), e)
        return np32(lg)

    stats = TieStats()
    logits32 = torch_logits("std", stats)
    sens = "reversed order %.1e, exact-forward %.1e" % (
        rel_diff(torch_logits("std_rev"), logits32),
        rel_diff(torch_logits("exact"), logits32))
    save(outdir, "bitnet_model", [("ids", ids.astype(np.float32)),
                                  ("logits_f64", logits64),
                                  ("logits_f32", logits32)],
         "\n    ties: %s\n    logits f32 vs f64 rel diff %.1e; sensitivity "
         "of f32: %s" % (stats, rel_diff(logits32, logits64), sens))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    outdir = args[0] if args else os.path.join(here, "..", "data")
    self_test()
    if "--tables" in sys.argv:
        print_tables()
        return
    os.makedirs(outdir, exist_ok=True)
    print("torch %s, numpy %s" % (torch.__version__, np.__version__))
    case_mlp_ce(outdir)
    case_attn_block(outdir)
    case_w1(outdir)
    case_bitnet_block(outdir)
    case_bitnet_model(outdir)


if __name__ == "__main__":
    main()
