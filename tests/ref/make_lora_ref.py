#!/usr/bin/python3
"""Generate tests/data/lora_block.bgref: one bitnet block with LoRA adapters on attn_q and
ffn_up, the base frozen, forward + backward + one AdamW step of the adapters (PyTorch).

Run with Debian's interpreter (it has torch and numpy):
    /usr/bin/python3 tests/ref/make_lora_ref.py [OUTDIR]
    /usr/bin/python3 tests/ref/make_lora_ref.py --tables   (input checksums)

The case is described normatively in tests/data/REFERENCES_LORA.md; the block, its inputs
and conventions are those of case bitnet_block (REFERENCES.md sections 2, 3 and 4.6), reused
from make_refs.py. Deterministic: LCG inputs, no torch RNG, one thread.
"""

import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_refs as mr  # noqa: E402
from bgref import lcg_fill, self_test  # noqa: E402

RANK = 4
ALPHA = 8.0
SCALE = ALPHA / RANK
ADAMW = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)

# (name, seed, shape, scale): A [r, in] and B [out, r] of each adapter
C, FF = mr.BLOCK_CFG["C"], mr.BLOCK_CFG["n_ff"]
ADAPTERS = [("A_q", 91, (RANK, C), 0.2), ("B_q", 92, (C, RANK), 0.2),
            ("A_up", 93, (RANK, C), 0.2), ("B_up", 94, (FF, RANK), 0.2)]


def adapter_inputs():
    return {n: lcg_fill(seed, int(np.prod(shape)), scale).reshape(shape)
            for n, seed, shape, scale in ADAPTERS}


def lora_block(x, p, ad, cfg, quant, stats=None):
    """mr.block with y = Lin(h, W) + SCALE * (h A^T) B^T on attn_q and ffn_up (the adapter
    reads the projection's unquantized input, as peft and bitgrad do)."""
    B, T, _ = x.shape
    H, Hkv = cfg["n_head"], cfg["n_head_kv"]
    D = C // H
    eps = cfg["eps"]
    lin = mr.make_lin(quant, stats)

    def lora(a, A, Bm):
        return ((a @ A.t()) @ Bm.t()) * SCALE

    h = mr.rms(x, eps) * p["attn_norm"]
    q = (lin(h, p["Wq"]) + lora(h, ad["A_q"], ad["B_q"])).view(B, T, H, D)
    k = lin(h, p["Wk"]).view(B, T, Hkv, D)
    v = lin(h, p["Wv"]).view(B, T, Hkv, D)
    q = mr.rope(q, cfg["rope_base"])
    k = mr.rope(k, cfg["rope_base"])
    a = mr.attention(q, k, v, H, Hkv)
    a = mr.rms(a, eps) * p["attn_sub_norm"]
    x1 = x + lin(a, p["Wo"])
    h2 = mr.rms(x1, eps) * p["ffn_norm"]
    up = lin(h2, p["Wu"]) + lora(h2, ad["A_up"], ad["B_up"])
    f = F.silu(lin(h2, p["Wg"])) * up
    f = mr.rms(f, eps) * p["ffn_sub_norm"]
    return x1 + lin(f, p["Wd"])


def run(x, p, R, ad0, quant, dtype, stats=None):
    """Forward, backward (adapters only), one AdamW step. Returns numpy float32 results."""
    xt = mr.tt(x, dtype, grad=False)
    pt = {k: mr.tt(v, dtype, grad=False) for k, v in p.items()}  # frozen base
    ad = {k: mr.tt(v, dtype) for k, v in ad0.items()}
    out = lora_block(xt, pt, ad, mr.BLOCK_CFG, quant, stats)
    loss = (out * mr.tt(R, dtype, grad=False)).sum()
    loss.backward()
    grads = {k: mr.np32(ad[k].grad) for k, _, _, _ in ADAPTERS}
    opt = torch.optim.AdamW([ad[k] for k, _, _, _ in ADAPTERS], foreach=False, **ADAMW)
    opt.step()
    stepped = {k: mr.np32(ad[k]) for k, _, _, _ in ADAPTERS}
    return mr.np32(out), mr.np32(loss), grads, stepped


def max_rel(a, b):
    return max(mr.rel_diff(a[k], b[k]) for k in a)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    outdir = args[0] if args else os.path.join(here, "..", "data")
    self_test()
    ad0 = adapter_inputs()
    if "--tables" in sys.argv:
        for n, seed, shape, scale in ADAPTERS:
            a = ad0[n]
            print("| lora_block | %s | fill | %d | [%s] | %s | %.9g (0x%08x) | 0x%016x |"
                  % (n, seed, ", ".join(map(str, shape)), scale, a.reshape(-1)[0],
                     np.float32(a.reshape(-1)[0]).view(np.uint32), mr.checksum(a)))
        return
    x, p, R = mr.block_inputs("bitnet_block")
    stats = mr.TieStats()
    out, loss, grads, stepped = run(x, p, R, ad0, "std", mr.F32, stats)
    assert all(not np.array_equal(stepped[k], ad0[k]) for k in stepped)
    gmin = min(float(np.abs(g).min()) for g in grads.values())
    checks = []
    for tag, q, dt in (("reversed order", "std_rev", mr.F32),
                       ("exact-forward", "exact", mr.F32),
                       ("torch-f64", "std", mr.F64)):
        o, _, g, s = run(x, p, R, ad0, q, dt)
        checks.append("%s: out %.1e, grads %.1e, stepped %.1e"
                      % (tag, mr.rel_diff(o, out), max_rel(g, grads), max_rel(s, stepped)))
    entries = [("out", out), ("loss", loss)]
    entries += [("d" + k, grads[k]) for k, _, _, _ in ADAPTERS]
    entries += [("adamw_" + k, stepped[k]) for k, _, _, _ in ADAPTERS]
    os.makedirs(outdir, exist_ok=True)
    mr.save(outdir, "lora_block", entries,
            "\n    ties: %s\n    smallest |gradient| %.2e\n    sensitivity: %s"
            % (stats, gmin, "; ".join(checks)))


if __name__ == "__main__":
    main()
