#!/usr/bin/env python3
"""import_models.py - bitnet GGUF files written by gguf-py (llama.cpp's own writer), a numpy
reference of their logits, and the read-back of what bitgrad exports from them.
Used by tests/test_import.c.

  python3 tests/import_models.py write DIR
      Writes DIR/src_<shape>_<type>.gguf: the same ternary model (random codes, per-projection
      scales 127 * 2^-k, exact in every type) with its projections in F32, F16, BF16, Q8_0 and,
      where rows are multiples of 256, TQ1_0 and TQ2_0 (gguf-py's quantizers), and a
      SentencePiece-style tokenizer (tokenizer.* keys of every kind, in no sorted order).
      Shapes: "a": n_embd 768 = 8 heads of 96, n_head_kv 2, n_ff 256 (TQ-capable rows);
              "b": n_embd 192 = 2 heads of 96, n_head_kv 1, n_ff 160 (rows of 192 and 160).
      DIR/ids.i32 holds the token ids, DIR/ref_<shape>_<type>.f32 the logits of the bitnet graph
      computed here in float64 from gguf-py's dequantized tensors, with activations rounded as
      llama.cpp's CPU backend converts them for that weight type (F32: none; F16; BF16).
  python3 tests/import_models.py check DIR
      Reads DIR/exp_*.gguf (written by bitgrad from src_*.gguf, see test_import.c) with gguf-py:
      tensor types (Q2_0 for rows of 192, Q8_0 for rows of 160, TQ2_0 for rows of 256; all Q8_0
      in exp_*__q8.gguf) and shapes,
      dequantize(weight) * scale == the source's W_q, and every tokenizer.* key byte-identical to
      the source, in the same order. Files holding Q2_0 need a gguf-py that knows type 42 (PyPI's
      0.19 does not); they are skipped otherwise, and Q2_0 is dequantized here (layout:
      ../shared/golden/ggml-ternary/README.txt; this decoder is checked on the golden files).
Exit: 0 pass, 1 fail, 77 gguf/numpy missing (Meson's skip).
"""
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT
    from gguf.quants import dequantize, quantize
except ImportError as exc:
    print(f"SKIP: cannot import gguf/numpy ({exc})")
    sys.exit(77)

SHAPES = {"a": dict(n_embd=768, n_head=8, n_head_kv=2, n_ff=256, n_layer=1),
          "b": dict(n_embd=192, n_head=2, n_head_kv=1, n_ff=160, n_layer=2)}
N_VOCAB, N_CTX, EPS, BASE = 320, 64, 1e-5, 10000.0
PROJS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
IDS = [1, 17, 250, 3, 99, 300, 42, 7, 8, 311, 64, 5]
HAS_Q2_0 = hasattr(QT, "Q2_0")
failed = passed = 0


def check(ok, what):
    global failed, passed
    print(("ok   " if ok else "FAIL ") + what)
    passed += bool(ok)
    failed += not ok
    return ok


# ---- the model ----------------------------------------------------------------------------

def proj_shapes(c):
    d, dkv, ff = c["n_embd"], c["n_embd"] // c["n_head"] * c["n_head_kv"], c["n_ff"]
    return {"attn_q": (d, d), "attn_k": (dkv, d), "attn_v": (dkv, d), "attn_output": (d, d),
            "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}  # (out, in)


def make_model(c, seed):
    rng = np.random.default_rng(seed)
    t = {"token_embd.weight": rng.standard_normal((N_VOCAB, c["n_embd"])).astype(np.float16)
         .astype(np.float32), "output_norm.weight": (1 + 0.1 * rng.standard_normal(c["n_embd"]))
         .astype(np.float32)}
    shapes = proj_shapes(c)
    for l in range(c["n_layer"]):
        for j, p in enumerate(PROJS):
            codes = rng.integers(-1, 2, size=shapes[p]).astype(np.float32)
            s = np.float32(127.0 * 2.0 ** -(12 + (j + l) % 3))  # exact in f16, bf16, Q8_0 d
            t[f"blk.{l}.{p}.weight"] = codes * s
        for n, dim in (("attn_norm", c["n_embd"]), ("attn_sub_norm", c["n_embd"]),
                       ("ffn_norm", c["n_embd"]), ("ffn_sub_norm", c["n_ff"])):
            t[f"blk.{l}.{n}.weight"] = (1 + 0.1 * rng.standard_normal(dim)).astype(np.float32)
    return t


def tokenizer_keys(w):
    """SentencePiece-style keys, deliberately not in sorted order, of every value kind."""
    toks = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    toks += [f"\u2581w{i}" for i in range(N_VOCAB - len(toks))]
    w.add_string("tokenizer.ggml.model", "llama")
    w.add_token_list(toks)
    w.add_string("tokenizer.ggml.pre", "default")
    w.add_token_scores([-float(i) * 0.25 for i in range(N_VOCAB)])
    w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (N_VOCAB - 259))
    w.add_eos_token_id(2)
    w.add_bos_token_id(1)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_chat_template("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    w.add_uint16("tokenizer.test.u16", 513)
    w.add_array("tokenizer.test.f64s", [1.5, -2.25])


def write_model(path, c, t, ptype):
    w = GGUFWriter(path, "bitnet")
    w.add_name("gguf-py test model")
    w.add_context_length(N_CTX)
    w.add_embedding_length(c["n_embd"])
    w.add_block_count(c["n_layer"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_layer_norm_rms_eps(EPS)
    w.add_rope_freq_base(BASE)
    w.add_rope_dimension_count(c["n_embd"] // c["n_head"])
    tokenizer_keys(w)
    for name, v in t.items():
        is_proj = any(f".{p}." in name for p in PROJS)
        qt = ptype if is_proj else QT.F32 if v.ndim == 1 or ptype == QT.F32 else QT.F16
        if qt == QT.F32:
            w.add_tensor(name, v)
        elif qt == QT.F16:
            w.add_tensor(name, v.astype(np.float16))
        else:
            w.add_tensor(name, quantize(v, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---- numpy reference of the bitnet graph (DESIGN.md section 6) -------------------------------

def bf16_round(x):
    u = x.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32)


def act_round(x, qt):
    if qt == QT.F16:
        return x.astype(np.float32).astype(np.float16).astype(np.float64)
    if qt == QT.BF16:
        return bf16_round(x).astype(np.float64)
    return x


def rms(v, w):
    return v / np.sqrt(np.mean(v * v, axis=-1, keepdims=True) + EPS) * w


def rope(x, pos, hd):
    half = hd // 2
    theta = pos[:, None] * BASE ** (-2.0 * np.arange(half) / hd)  # [T, half]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    a, b = x[..., :half], x[..., half:]
    return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)


def reference_logits(path, c, act_type, embd_type):
    r = GGUFReader(path)
    W = {}
    for t in r.tensors:
        shape = [int(n) for n in reversed(t.shape)]
        W[t.name] = dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float64)
    lin = lambda x, n: act_round(x, act_type) @ W[n].T
    hd, T = c["n_embd"] // c["n_head"], len(IDS)
    pos = np.arange(T, dtype=np.float64)
    x = W["token_embd.weight"][IDS]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(c["n_layer"]):
        p = f"blk.{l}."
        h = rms(x, W[p + "attn_norm.weight"])
        q = rope(lin(h, p + "attn_q.weight").reshape(T, c["n_head"], hd), pos, hd)
        k = rope(lin(h, p + "attn_k.weight").reshape(T, c["n_head_kv"], hd), pos, hd)
        v = lin(h, p + "attn_v.weight").reshape(T, c["n_head_kv"], hd)
        g = c["n_head"] // c["n_head_kv"]
        a = np.zeros((T, c["n_head"], hd))
        for hh in range(c["n_head"]):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(hd) + mask
            e = np.exp(s - s.max(axis=-1, keepdims=True))
            a[:, hh] = (e / e.sum(axis=-1, keepdims=True)) @ v[:, hh // g]
        a = rms(a.reshape(T, -1), W[p + "attn_sub_norm.weight"])
        x = x + lin(a, p + "attn_output.weight")
        h = rms(x, W[p + "ffn_norm.weight"])
        gt, up = lin(h, p + "ffn_gate.weight"), lin(h, p + "ffn_up.weight")
        f = rms(gt / (1 + np.exp(-gt)) * up, W[p + "ffn_sub_norm.weight"])
        x = x + lin(f, p + "ffn_down.weight")
    n = rms(x, W["output_norm.weight"])
    return (act_round(n, embd_type) @ W["token_embd.weight"].T).astype(np.float32)


def cmd_write(d):
    np.asarray(IDS, dtype=np.int32).tofile(os.path.join(d, "ids.i32"))
    for sname, c in SHAPES.items():
        t = make_model(c, seed=11 if sname == "a" else 12)
        types = [QT.F32, QT.F16, QT.BF16, QT.Q8_0]
        if c["n_embd"] % 256 == 0 and c["n_ff"] % 256 == 0:
            types += [QT.TQ1_0, QT.TQ2_0]
        for qt in types:
            path = os.path.join(d, f"src_{sname}_{qt.name.lower()}.gguf")
            write_model(path, c, t, qt)
            if qt in (QT.F32, QT.F16, QT.BF16):
                embd = QT.F32 if qt == QT.F32 else QT.F16
                reference_logits(path, c, qt, embd).tofile(
                    os.path.join(d, f"ref_{sname}_{qt.name.lower()}.f32"))
        print(f"wrote shape {sname}: {', '.join(q.name for q in types)}")
    return 0


# ---- read-back of bitgrad's exports -------------------------------------------------------

def deq_q2_0(raw, n):
    """Q2_0 blocks of 64: fp16 d, 16 bytes of 2-bit codes q (element j: byte j/4, bits
    2*(j%4)); value (q - 1) * d."""
    b = np.frombuffer(np.asarray(raw, dtype=np.uint8).tobytes(), dtype=np.uint8).reshape(-1, 18)
    d = b[:, :2].copy().view(np.float16).astype(np.float32)
    q = (b[:, 2:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
    return ((q.reshape(-1, 64).astype(np.float32) - 1) * d).reshape(-1)[:n]


def check_q2_0_decoder():
    gold = os.environ.get("BG_GOLDEN_DIR", "")
    for case in ("lcg_u256", "ternary512", "rows4x256"):
        p = os.path.join(gold, "ggml-ternary", case)
        if not os.path.exists(p + ".q2_0"):
            return
        want = np.fromfile(p + ".q2_0.deq.f32", dtype=np.float32)
        got = deq_q2_0(np.fromfile(p + ".q2_0", dtype=np.uint8), want.size)
        check(np.array_equal(got, want), f"numpy Q2_0 decoder == ggml's dequantization ({case})")


def field_bytes(f):
    return b"".join(np.asarray(p).tobytes() for p in f.parts)


def tensor_values(t):
    n = int(np.prod([int(x) for x in t.shape]))
    if HAS_Q2_0 and t.tensor_type == QT.Q2_0:
        return deq_q2_0(t.data, n)
    return dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)


def check_export(d, name, src_name):
    r, s = GGUFReader(os.path.join(d, name)), GGUFReader(os.path.join(d, src_name))
    tok = lambda rd: [f for k, f in rd.fields.items() if k.startswith("tokenizer.")]
    a, b = tok(s), tok(r)
    check([f.name for f in a] == [f.name for f in b], f"{name}: tokenizer keys in the source's order")
    check(all(x.types == y.types and field_bytes(x) == field_bytes(y) for x, y in zip(a, b)),
          f"{name}: {len(a)} tokenizer keys byte-identical to {src_name}'s")
    st, rt = {t.name: t for t in s.tensors}, {t.name: t for t in r.tensors}
    if "__vocab" in name:  # another model that took the source's tokenizer
        return
    for tn, t in st.items():
        if not tn.endswith(".weight") or not any(f".{p}." in tn for p in PROJS):
            continue
        e = rt.get(tn)
        if not check(e is not None, f"{name}: {tn} present"):
            continue
        inn = int(e.shape[0])
        want_type = ("Q8_0" if "__q8" in name else "TQ2_0" if inn % 256 == 0 else
                     "Q2_0" if inn % 64 == 0 else "Q8_0")
        check(e.tensor_type.name == want_type and list(e.shape) == list(t.shape),
              f"{name}: {tn} is {want_type} {list(e.shape)} ({e.tensor_type.name})")
        sc = rt.get(tn[:-len(".weight")] + ".scale")
        got = tensor_values(e) * (np.float32(sc.data[0]) if sc is not None else np.float32(1))
        check(sc is not None and np.array_equal(got.astype(np.float32), tensor_values(t)),
              f"{name}: dequantize({tn}) * scale == the source's W_q")


def cmd_check(d):
    check_q2_0_decoder()
    for name in sorted(os.listdir(d)):
        if not (name.startswith("exp_") and name.endswith(".gguf")):
            continue
        src = "src_" + name[4:].split("__")[0] + ".gguf"
        try:
            check_export(d, name, src)
        except ValueError as exc:  # a gguf-py without type 42
            if HAS_Q2_0:
                raise
            print(f"skip {name}: this gguf-py ({exc}) cannot read Q2_0 (type 42)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        print(__doc__)
        sys.exit(2)
    sys.exit(cmd_write(sys.argv[2]) if sys.argv[1] == "write" else cmd_check(sys.argv[2]))
