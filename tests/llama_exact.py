"""llama_exact.py - llama.cpp's bitnet graph in numpy float32, in the order and with the roundings
ggml-cpu (x86-64, AVX2 + FMA; llama.cpp 3f545bec, flash attention off, F32 KV cache) uses, so
that its logits are those of a real llama.cpp to the last bit or nearly (used by e2e_real.py).

A fused multiply-add is float32(a * b + c) computed in float64 (the product of two float32 is
exact there; the one rounding of the sum to float64 can, in rare ties, round differently).
The facts (read from ggml's source, the code is ours): rms_norm sums float32 squares in double
and scales by 1 / sqrtf(mean + eps); rope NEOX with a float32 theta cache, y0 = fma(x0, c,
-(x1 s)), y1 = fma(x0, s, x1 c); K.Q by ggml_vec_dot_f32 (4 x 8 fused lanes, fixed reduction);
softmax with the vectorised expf and a double sum of 8-lane partial sums; F32/F16 products by
llamafile's sgemm (8 fused lanes, horizontal sum); Q8_0 x Q8_0 by tinyBLAS_Q0_AVX (int lanes
of 4, fma with d_w * d_x); Q2_0 x Q8_0 by ggml's generic kernel; swiglu with the vectorised
expf; LoRA as build_lora_mm (x A^T, then B, times alpha / r, added)."""
import numpy as np

F32, F64 = np.float32, np.float64


def fma(a, b, c):
    return (np.asarray(a, F32).astype(F64) * np.asarray(b, F32) + np.asarray(c, F32)).astype(F32)


def hsum8(acc):
    """The AVX2 horizontal sum of the last axis (8 lanes)."""
    a = [acc[..., i] + acc[..., i + 4] for i in range(4)]
    return (a[0] + a[2]) + (a[1] + a[3])


def expf_v(x):
    x = np.asarray(x, F32)
    r = F32(float.fromhex('0x1.8p23'))
    z = fma(x, F32(float.fromhex('0x1.715476p+0')), r)
    n = z - r
    b = fma(-n, F32(float.fromhex('0x1.7f7d1cp-20')), fma(-n, F32(float.fromhex('0x1.62e4p-1')), x))
    e = (z.view(np.uint32) << np.uint32(23)).astype(np.uint32)
    k = (e + np.float32(1).view(np.uint32)).astype(np.uint32).view(F32)
    u = b * b
    j = fma(fma(fma(F32(float.fromhex('0x1.0e4020p-7')), b, F32(float.fromhex('0x1.573e2ep-5'))), u, fma(F32(float.fromhex('0x1.555e66p-3')), b, F32(float.fromhex('0x1.fffdb6p-2')))),
            u, F32(float.fromhex('0x1.ffffecp-1')) * b)
    out = fma(j, k, k)
    big = np.abs(n) > 126
    if np.any(big):
        g = np.where(n <= 0, np.uint32(0x82000000), np.uint32(0)).astype(np.uint32)
        s1 = (g + np.uint32(0x7f000000)).astype(np.uint32).view(F32)
        s2 = (e - g).astype(np.uint32).view(F32)
        with np.errstate(over="ignore", under="ignore"):
            mid = fma(s2, j, s2) * s1
            huge = s1 * s1
        out = np.where(big, np.where(np.abs(n) > 192, huge, mid), out)
    return out.astype(F32)


def rms(x, w, eps=F32(1e-5)):
    s = np.cumsum((x * x).astype(F64), axis=-1)[..., -1]
    mean = (s / x.shape[-1]).astype(F32)
    scale = F32(1) / np.sqrt(mean + eps)
    return (x * scale[..., None]) * w


def sgemm(a, x):
    """x [n, k] . a [m, k]^T with llamafile's 8 fused lanes (k % 8 == 0)."""
    acc = np.zeros((x.shape[0], a.shape[0], 8), F32)
    for i in range(0, a.shape[1], 8):
        acc = fma(a[None, :, i:i + 8], x[:, None, i:i + 8], acc)
    return hsum8(acc)


def vec_dot(a, x):
    """ggml_vec_dot_f32 of every row of x with every row of a: [n, m]."""
    k = a.shape[1]
    np_ = k - k % 32
    acc = np.zeros((x.shape[0], a.shape[0], 4, 8), F32)
    for i in range(0, np_, 32):
        acc = fma(a[None, :, i:i + 32].reshape(1, -1, 4, 8), x[:, None, i:i + 32].reshape(-1, 1, 4, 8), acc)
    s = (acc[..., 0, :] + acc[..., 2, :]) + (acc[..., 1, :] + acc[..., 3, :])
    t = [s[..., i] + s[..., i + 4] for i in range(4)]
    sumf = (t[0] + t[1]) + (t[2] + t[3])
    i = np_
    while i + 4 <= k:
        for l in range(4):
            sumf = sumf + a[None, :, i + l] * x[:, None, i + l]
        i += 4
    for i in range(i, k):
        sumf = fma(a[None, :, i], x[:, None, i], sumf)
    return sumf


def mm_f32(a, x):
    return sgemm(a, x) if x.shape[0] >= 2 and a.shape[1] % 8 == 0 and a.shape[0] % 4 == 0 else vec_dot(a, x)


def quant_q8_0(x):
    b = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(b).max(axis=-1)
    d = (amax / F32(127)).astype(np.float16).astype(F32)
    with np.errstate(divide="ignore"):
        iscale = np.where(amax > 0, F32(127) / amax, F32(0)).astype(F32)
    q = np.clip(np.rint(b * iscale[..., None]), -128, 127).astype(np.int64)
    return q, d


def q8_0_mm(qw, dw, x):
    """Q8_0 weights (qs [m, nb, 32], d [m, nb]) x Q8_0 activations, tinyBLAS_Q0_AVX."""
    qx, dx = quant_q8_0(x)
    lanes = (qw[None] * qx[:, None]).reshape(x.shape[0], qw.shape[0], qw.shape[1], 8, 4).sum(-1)
    acc = np.zeros((x.shape[0], qw.shape[0], 8), F32)
    for b in range(qw.shape[1]):
        dd = (dw[None, :, b] * dx[:, None, b]).astype(F32)
        acc = fma(dd[..., None], lanes[:, :, b].astype(F32), acc)
    return hsum8(acc)


def q2_0_mm(cw, dw, x):
    """Q2_0 weights (codes [m, nb, 64], d [m, nb]) x Q8_0 activations, ggml's generic kernel."""
    qx, dx = quant_q8_0(x)
    n, m, nb = x.shape[0], cw.shape[0], cw.shape[1]
    qx = qx.reshape(n, nb, 2, 32)
    dx = dx.reshape(n, nb, 2)
    sumf = np.zeros((n, m), F32)
    for b in range(nb):
        sumi = np.zeros((n, m), F32)
        for h in range(2):
            s = (cw[None, :, b, 32 * h:32 * h + 32] * qx[:, None, b, h]).sum(-1).astype(F32)
            sumi = sumi + s * dx[:, None, b, h]
        sumf = sumf + dw[None, :, b] * sumi
    return sumf


def rope(x, base=10000.0):
    """NEOX rope on x [T, H, hd] at positions 0..T-1."""
    T, hd = x.shape[0], x.shape[-1]
    half = hd // 2
    ts = F32(np.float64(base) ** (-2.0 / hd))
    y = x.copy()
    for t in range(T):
        theta = F32(t)
        for i in range(half):
            c, s = F32(np.cos(F64(theta))), F32(np.sin(F64(theta)))
            x0, x1 = x[t, :, i], x[t, :, i + half]
            y[t, :, i] = fma(x0, c, -(x1 * s))
            y[t, :, i + half] = fma(x0, s, x1 * c)
            theta = F32(theta * ts)
    return y


def attention(q, k, v, n_head, n_head_kv, hd):
    T = q.shape[0]
    g = n_head // n_head_kv
    out = np.zeros((T, n_head, hd), F32)
    scale = F32(1) / np.sqrt(F32(hd))
    for h in range(n_head):
        kq = vec_dot(k[:, h // g], q[:, h])  # [T(query), T(key)]
        for t in range(T):
            w = kq[t, :t + 1] * scale
            e = expf_v(w - w.max())
            n8 = (t + 8) // 8 * 8
            ez = np.zeros(n8, F32)
            ez[:t + 1] = e
            total = F64(0)
            for i in range(0, n8, 8):
                total += F64(hsum8(ez[i:i + 8]))
            p = ez * F32(1.0 / total)
            acc = np.zeros((hd, 8), F32)
            for s in range(t + 1):
                acc[:, s % 8] = fma(v[s, h // g], p[s], acc[:, s % 8])
            out[t, h] = hsum8(acc)
    return out
