#!/usr/bin/python3
"""torch_bench.py - the reference workloads W1-W3 written the standard PyTorch way, printing
the same JSON line as `bitgrad bench`, so that both can be compared in one run.

Run with Debian's interpreter (it has python3-torch):
    /usr/bin/python3 bench/torch_bench.py --workload mlp|lm|lora [--steps 20] [--threads N]
W1 mlp : BitLinear 784-1024-1024-10 (absmean ternary weights, absmax int8 activations, STE),
         ReLU, batch 256, cross-entropy, AdamW(1e-3, 0.9/0.999, 1e-8, wd 0.01).
W2 lm  : llama.cpp's bitnet graph (byte vocab 256, n_embd 256, 4 layers, 4 heads, n_ff 768,
         context 128, eps 1e-5, RoPE NEOX base 10000, tied output), batch 16x128, AdamW.
W3 lora: W2 frozen, LoRA r 8 alpha 16 on q, k, v, o; AdamW on the adapters only.
W5 lora-large: bitnet_b1_58-large's shape (vocab 32000, n_embd 1536, 24 layers, 16 heads,
         n_ff 4096), a random ternary base (frozen nn.Parameters, the same STE forward), LoRA
         r 16 alpha 32 on all 7 projections of every layer, batch 1 x --seq (512) random ids.
         Needs ~11 GB of memory. lora-3b: the same at bitnet_b1_58-3B's shape.
Peak RSS is reported as measured (importing torch alone costs ~230 MiB; see below).
"""
import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def round_away(v):
    return torch.sign(v) * torch.floor(v.abs() + 0.5)


class BitLinear(nn.Linear):
    def forward(self, x):
        w = self.weight
        s_w = w.abs().mean().clamp(min=1e-5)
        wq = round_away(w / s_w).clamp(-1, 1) * s_w
        s_x = 127.0 / x.abs().amax(dim=-1, keepdim=True).clamp(min=1e-5)
        xq = round_away(x * s_x).clamp(-128, 127) / s_x
        x = x + (xq - x).detach()
        w = w + (wq - w).detach()
        return F.linear(x, w, self.bias)


class LoRA(nn.Module):
    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        self.base = base
        self.a = nn.Parameter(torch.randn(r, base.in_features) / base.in_features ** 0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r

    def forward(self, x):
        return self.base(x) + self.scale * F.linear(F.linear(x, self.a), self.b)


def rope(x, base=10000.0):
    b, t, h, d = x.shape
    half = d // 2
    inv = base ** (-torch.arange(half, dtype=torch.float32) * 2 / d)
    ang = torch.arange(t, dtype=torch.float32)[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def causal_attention(q, k, v):
    """softmax(q k^T / sqrt(d)) v with a causal mask (F.scaled_dot_product_attention
    arrived after Debian 12's torch)."""
    t = q.shape[-2]
    s = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    mask = torch.ones(t, t, dtype=torch.bool).triu(1)
    return s.masked_fill(mask, float("-inf")).softmax(-1) @ v


class RMSNorm(nn.Module):
    """torch.nn.RMSNorm (absent from Debian 12's torch), written out."""

    def __init__(self, d, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, d=256, h=4, ff=768):
        super().__init__()
        self.h = h
        self.attn_norm, self.attn_sub_norm = RMSNorm(d, eps=1e-5), RMSNorm(d, eps=1e-5)
        self.ffn_norm, self.ffn_sub_norm = RMSNorm(d, eps=1e-5), RMSNorm(ff, eps=1e-5)
        self.q, self.k, self.v, self.o = (BitLinear(d, d, bias=False) for _ in range(4))
        self.gate, self.up = BitLinear(d, ff, bias=False), BitLinear(d, ff, bias=False)
        self.down = BitLinear(ff, d, bias=False)

    def forward(self, x):
        b, t, d = x.shape
        hd = d // self.h
        a = self.attn_norm(x)
        q = rope(self.q(a).view(b, t, self.h, hd)).transpose(1, 2)
        k = rope(self.k(a).view(b, t, self.h, hd)).transpose(1, 2)
        v = self.v(a).view(b, t, self.h, hd).transpose(1, 2)
        a = causal_attention(q, k, v)
        a = a.transpose(1, 2).reshape(b, t, d)
        x = x + self.o(self.attn_sub_norm(a))
        f = self.ffn_norm(x)
        f = F.silu(self.gate(f)) * self.up(f)
        return x + self.down(self.ffn_sub_norm(f))


class BitNetLM(nn.Module):
    def __init__(self, vocab=256, d=256, layers=4, h=4, ff=768):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(Block(d, h, ff) for _ in range(layers))
        self.norm = RMSNorm(d, eps=1e-5)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)

    def forward(self, ids):
        x = self.emb(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x) @ self.emb.weight.t()


def setup(workload, seq=512):
    torch.manual_seed(1)
    if workload == "mlp":
        model = nn.Sequential(BitLinear(784, 1024, bias=False), nn.ReLU(),
                              BitLinear(1024, 1024, bias=False), nn.ReLU(),
                              BitLinear(1024, 10, bias=False))
        x, y = torch.rand(256, 784), torch.arange(256) % 10
        loss_fn = lambda: F.cross_entropy(model(x), y)
        per = 256
    elif workload in ("lora-large", "lora-3b"):
        big = workload == "lora-3b"
        vocab, d, layers, h, ff = (32000, 3200, 26, 32, 8640) if big else (32000, 1536, 24, 16, 4096)
        with torch.no_grad():
            model = BitNetLM(vocab, d, layers, h, ff)
            for name, p in model.named_parameters():
                if p.dim() == 2 and not name.startswith("emb"):  # a random ternary base
                    p.copy_(torch.randint(-1, 2, p.shape, dtype=torch.float32) * 0.02)
        for p in model.parameters():
            p.requires_grad_(False)
        for blk in model.blocks:
            blk.q, blk.k, blk.v, blk.o, blk.gate, blk.up, blk.down = (
                LoRA(m, 16, 32) for m in (blk.q, blk.k, blk.v, blk.o, blk.gate, blk.up, blk.down))
        ids = torch.randint(0, vocab, (1, seq + 1))
        loss_fn = lambda: F.cross_entropy(model(ids[:, :-1]).reshape(-1, vocab), ids[:, 1:].reshape(-1))
        per = seq
    else:
        model = BitNetLM()
        if workload == "lora":
            for p in model.parameters():
                p.requires_grad_(False)
            for blk in model.blocks:
                blk.q, blk.k, blk.v, blk.o = (LoRA(m) for m in (blk.q, blk.k, blk.v, blk.o))
        ids = torch.randint(0, 256, (16, 129))
        loss_fn = lambda: F.cross_entropy(model(ids[:, :-1]).reshape(-1, 256), ids[:, 1:].reshape(-1))
        per = 16 * 128
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    return loss_fn, opt, per


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", choices=["mlp", "lm", "lora", "lora-large", "lora-3b"], required=True)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    loss_fn, opt, per = setup(a.workload, a.seq)
    warm = 1 if a.workload.startswith("lora-") else 3
    times, phases, cpus = [], [], []
    for i in range(a.steps + warm):
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        if i >= warm:
            times.append(1e3 * (time.perf_counter() - t0))
            cpus.append(1e3 * (time.process_time() - c0))
            phases.append((1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (time.perf_counter() - t2)))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    unit = "samples" if a.workload == "mlp" else "tokens"
    print(json.dumps({"workload": a.workload, "impl": "torch", "steps": a.steps,
                      "threads": torch.get_num_threads(), "median_ms": round(statistics.median(times), 3),
                      "min_ms": round(min(times), 3), "max_ms": round(max(times), 3),
                      f"{unit}_per_s": round(per / (statistics.median(times) / 1e3), 1),
                      "peak_rss_mib": round(rss, 1), "rss_after_import_mib": round(rss_import, 1),
                      "forward_ms": round(statistics.median(p[0] for p in phases), 3),
                      "backward_ms": round(statistics.median(p[1] for p in phases), 3),
                      "optimizer_ms": round(statistics.median(p[2] for p in phases), 3),
                      "cpu_ms": round(statistics.median(cpus), 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
