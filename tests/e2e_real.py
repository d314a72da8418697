#!/usr/bin/env python3
"""e2e_real.py - the gguf-py (llama.cpp's Python GGUF package) side of tests/e2e_real.sh.

  python3 tests/e2e_real.py write VOCAB.gguf OUT.gguf
      Writes a bitnet model with gguf-py's GGUFWriter, as a converter would: every tokenizer.*
      key of VOCAB.gguf (llama.cpp's llama-spm vocabulary, 32000 tokens) copied in its order,
      n_embd 192 = 2 heads of 96, n_head_kv 1, n_ff 160, 2 layers; ternary projections
      (random codes times one scale each) stored as F32 values without <proj>.scale tensors,
      token_embd F16, norms F32. Checks with gguf-py that OUT's tokenizer keys are
      byte-identical to VOCAB's (checked by the check command).
  python3 tests/e2e_real.py keys SRC.gguf FILE.gguf [--types | --same-values]
      gguf-py reads FILE: its tokenizer.* keys must be byte-identical to SRC's (same types, same
      order); with --types its projections must be Q2_0 (rows of 192) / Q8_0 (rows of 160) with
      a <proj>.scale each; --same-values also asks codes * scale == SRC's weights exactly.
  python3 tests/e2e_real.py adapter ADAPTER.gguf MODEL.gguf
      gguf-py reads a LoRA adapter: general.type "adapter", adapter.type "lora", an alpha, and
      for every lora_a {n_in, r} / lora_b {r, n_out} pair a projection of MODEL of that shape.
  python3 tests/e2e_real.py check VOCAB MODEL BASE ADAPTER QAT IDS BASE.f32 LORA.f32 [HALF.f32]
      All of the below, each file parsed once: MODEL's and BASE's tokenizer keys == VOCAB's;
      keys MODEL BASE --same-values (BASE: the export of a LoRA checkpoint, whose base is
      frozen); adapter ADAPTER MODEL; keys MODEL QAT --types (QAT: an export after QAT);
      llama BASE - IDS BASE.f32 1e-5; llama BASE ADAPTER IDS LORA.f32 1e-5; HALF.f32 (eval
      --lora-scale 0.5) against the graph with the adapter at llama.cpp's --lora-scaled 0.5.
  python3 tests/e2e_real.py llama MODEL.gguf ADAPTER.gguf|- "[1, 2, 3]" GOT.f32 TOL
      The logits of llama.cpp's bitnet graph with that adapter (numpy float32 in ggml-cpu's
      order of operations and roundings, tests/llama_exact.py) for those ids, written to GOT.f32.ref,
      against bitgrad's (eval --llama --all --out GOT.f32): close GOT.f32 GOT.f32.ref.
  python3 tests/e2e_real.py close A.f32 B.f32 N_VOCAB TOL
      Max relative difference of two logits files (|a - b| / max|b|) <= TOL, same size.
gguf-py 0.19 (PyPI) does not know Q2_0 (ggml type 42): its reader is then extended here for
that one type (header, keys and tensor infos are still parsed by gguf-py; Q2_0 blocks of 64
are fp16 d + 16 bytes of 2-bit codes q, value (q - 1) * d, see ../shared/golden/ggml-ternary/).
Exit: 0 pass, 1 fail, 2 usage, 77 gguf/numpy missing.
"""
import functools
import sys

try:
    import numpy as np
    from gguf import GGUFReader, GGUFWriter, GGMLQuantizationType as QT, GGUFValueType as VT
    from gguf.quants import dequantize
except ImportError as exc:
    print(f"SKIP: cannot import gguf/numpy ({exc})")
    sys.exit(77)

CFG = dict(n_embd=192, n_head=2, n_head_kv=1, n_ff=160, n_layer=2, n_ctx=256)
PROJS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
Q2_0_ID = 42
failed = 0


def check(ok, what):
    global failed
    print(("ok   " if ok else "FAIL ") + what)
    failed += not ok
    return ok


class Reader(GGUFReader):
    """GGUFReader that also accepts Q2_0 tensors when this gguf-py lacks the type."""

    def _build_tensors(self, start_offs, fields):
        if hasattr(QT, "Q2_0"):
            return super()._build_tensors(start_offs, fields)
        known = [f for f in fields if int(f.parts[4][0]) != Q2_0_ID]
        super()._build_tensors(start_offs, known)
        by_name = {t.name: t for t in self.tensors}
        out = []
        for f in fields:
            name = bytes(f.parts[1]).decode()
            if name in by_name:
                out.append(by_name[name])
                continue
            dims = [int(d) for d in f.parts[3]]
            n = int(np.prod(dims))
            raw = self._get(int(start_offs + f.parts[5][0]), np.uint8, n // 64 * 18)
            out.append(type("Q2Tensor", (), dict(name=name, tensor_type=Q2_0_ID, shape=dims,
                                                 data=raw, n_elements=n)))
        self.tensors = out


@functools.lru_cache(maxsize=None)
def read(path):
    """gguf-py parses a file once per process (32000 token strings take it seconds)."""
    return Reader(path)


def values(t):
    """The tensor's values, flattened, as float32 (ggml order)."""
    if t.tensor_type == Q2_0_ID or getattr(t.tensor_type, "name", "") == "Q2_0":
        b = np.asarray(t.data, dtype=np.uint8).reshape(-1, 18)
        d = b[:, :2].copy().view(np.float16).astype(np.float32)
        q = (b[:, 2:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
        return ((q.reshape(-1, 64).astype(np.float32) - 1) * d).reshape(-1)
    return dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)


def type_name(t):
    return "Q2_0" if t.tensor_type == Q2_0_ID else t.tensor_type.name


def tokenizer_fields(r):
    return [f for k, f in r.fields.items() if k.startswith("tokenizer.")]


def field_bytes(f):
    return b"".join(np.asarray(p).tobytes() for p in f.parts)


def same_tokenizer(src, path):
    a, b = tokenizer_fields(read(src)), tokenizer_fields(read(path))
    check(len(a) > 0 and [f.name for f in a] == [f.name for f in b],
          f"{path}: tokenizer keys {[f.name for f in b][:3]}... in the order of {src}'s")
    n_same = sum(x.types == y.types and field_bytes(x) == field_bytes(y) for x, y in zip(a, b))
    check(n_same == len(a) == len(b), f"{path}: {n_same} of {len(a)} tokenizer keys byte-identical")


# ---- write ------------------------------------------------------------------------------------

def copy_tokenizer(w, vocab):
    for f in tokenizer_fields(read(vocab)):
        vt = f.types[0]
        if vt == VT.ARRAY:
            w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[-1])
        else:
            w.add_key_value(f.name, f.contents(), vt)
    return int(len(read(vocab).fields["tokenizer.ggml.tokens"].data))


def cmd_write(vocab, out):
    c = CFG
    w = GGUFWriter(out, "bitnet")
    w.add_name("e2e real-vocabulary model")
    w.add_context_length(c["n_ctx"])
    w.add_embedding_length(c["n_embd"])
    w.add_block_count(c["n_layer"])
    w.add_feed_forward_length(c["n_ff"])
    w.add_head_count(c["n_head"])
    w.add_head_count_kv(c["n_head_kv"])
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(c["n_embd"] // c["n_head"])
    n_vocab = copy_tokenizer(w, vocab)
    rng = np.random.default_rng(15)
    d, ff = c["n_embd"], c["n_ff"]
    dkv = d // c["n_head"] * c["n_head_kv"]
    shapes = {"attn_q": (d, d), "attn_k": (dkv, d), "attn_v": (dkv, d), "attn_output": (d, d),
              "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}  # (out, in)
    w.add_tensor("token_embd.weight",
                 (0.2 * rng.standard_normal((n_vocab, d))).astype(np.float16))
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    for l in range(c["n_layer"]):
        for j, p in enumerate(PROJS):
            codes = rng.integers(-1, 2, size=shapes[p]).astype(np.float32)
            s = np.float32(0.05 + 0.025 * ((j + l) % 3))  # one scale per projection
            w.add_tensor(f"blk.{l}.{p}.weight", codes * s)
        for n, dim in (("attn_norm", d), ("attn_sub_norm", d), ("ffn_norm", d),
                       ("ffn_sub_norm", ff)):
            w.add_tensor(f"blk.{l}.{n}.weight", np.ones(dim, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out}: n_vocab {n_vocab}, {c}")
    return 0


# ---- read-back checks ---------------------------------------------------------------------------

def cmd_keys(src, path, types, same):
    same_tokenizer(src, path)
    if not types:
        return 1 if failed else 0
    r, s = read(path), read(src)
    rt, st = {t.name: t for t in r.tensors}, {t.name: t for t in s.tensors}
    n_ok = 0
    for name, t in st.items():
        if not any(f".{p}." in name for p in PROJS):
            continue
        e, sc = rt.get(name), rt.get(name[:-len("weight")] + "scale")
        n_in = int(t.shape[0])
        want = "Q2_0" if n_in % 256 and n_in % 64 == 0 else "Q8_0" if n_in % 256 else "TQ2_0"
        if e is None or sc is None:
            check(False, f"{path}: {name} or its .scale missing")
            continue
        got = values(e)[:int(t.n_elements)] * np.float32(values(sc)[0])
        same_values = np.array_equal(got, values(t))
        ok = type_name(e) == want and (same_values or not same)
        n_ok += ok
        if not ok:
            check(False, f"{path}: {name}: {type_name(e)} (want {want}), codes * scale "
                  f"{'==' if same_values else '!='} the source's weights")
    check(n_ok == 7 * CFG["n_layer"], f"{path}: {n_ok} projections in Q2_0 / Q8_0 with .scale"
          + (", codes * scale == the source's weights exactly" if same else ""))
    return 1 if failed else 0


def cmd_adapter(path, model):
    r, m = read(path), read(model)
    get = lambda k: r.fields[k].contents() if k in r.fields else None
    check(get("general.type") == "adapter" and get("adapter.type") == "lora"
          and get("general.architecture") == "bitnet",
          f"{path}: general.type {get('general.type')!r}, adapter.type {get('adapter.type')!r}")
    alpha = get("adapter.lora.alpha")
    check(alpha is not None and alpha > 0, f"{path}: adapter.lora.alpha = {alpha}")
    mt = {t.name: [int(x) for x in t.shape] for t in m.tensors}
    at = {t.name: [int(x) for x in t.shape] for t in r.tensors}
    pairs = bad = 0
    for name, sa in at.items():
        if not name.endswith(".lora_a"):
            continue
        base = name[:-len(".lora_a")]
        sb, sw = at.get(base + ".lora_b"), mt.get(base)
        pairs += 1
        if not (sb and sw and sa[1] == sb[0] and sa[0] == sw[0] and sb[1] == sw[1]):
            bad += 1
            check(False, f"{path}: {base}: lora_a {sa}, lora_b {sb}, weight {sw}")
    check(pairs == 7 * CFG["n_layer"] and bad == 0 and len(at) == 2 * pairs,
          f"{path}: {pairs} lora_a/lora_b pairs matching the model's projections")
    return 1 if failed else 0


def cmd_check(vocab, model, base, adapter, qat, ids, got_base, got_lora, got_half=None):
    same_tokenizer(vocab, model)
    cmd_keys(model, base, True, True)
    same_tokenizer(vocab, base)
    cmd_adapter(adapter, model)
    cmd_keys(model, qat, True, False)
    cmd_llama(base, "-", ids, got_base, 1e-5)
    # the adapter with the base it was trained on (llama.cpp scales ffn_gate/ffn_up adapters by
    # <proj>.scale only where the base file has those tensors). eval --llama reproduces
    # ggml-cpu's arithmetic to the bit (measured 0 here and against a real llama.cpp); the
    # bound is the 1e-5, which a wrongly scaled adapter (4e-3 and more) or one
    # activation rounded to the other level (~1e-5 and more) exceeds.
    cmd_llama(model, adapter, ids, got_lora, 1e-5)
    if got_half:  # eval --lora-scale 0.5 == llama.cpp's --lora-scaled adapter.gguf 0.5
        cmd_llama(model, adapter, ids, got_half, 1e-5, 0.5)
    return 1 if failed else 0


# ---- llama.cpp's graph with an adapter, in numpy float32 as ggml-cpu computes it ---------------

def exact_weights(t, shape):
    """What ggml-cpu multiplies for a projection: ("F32", values [m, k]) for float types,
    ("Q8_0", qs [m, nb, 32], d [m, nb]) or ("Q2_0", codes [m, nb, 64], d [m, nb])."""
    m, k = shape
    name = type_name(t)
    if name == "Q8_0":
        b = np.asarray(t.data, dtype=np.uint8).reshape(m, k // 32, 34)
        d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        return ("Q8_0", b[..., 2:].copy().view(np.int8).astype(np.int64), d)
    if name == "Q2_0":
        b = np.asarray(t.data, dtype=np.uint8).reshape(m, k // 64, 18)
        d = b[..., :2].copy().view(np.float16)[..., 0].astype(np.float32)
        q = (b[..., 2:, None] >> np.array([0, 2, 4, 6], dtype=np.uint8)) & 3
        return ("Q2_0", q.reshape(m, k // 64, 64).astype(np.int64) - 1, d)
    return (name, values(t)[:m * k].reshape(m, k).astype(np.float32))


def llama_logits_exact(model, adapter, ids, lscale=1.0):
    """Logits of every position as llama.cpp's bitnet graph computes them (src/models/bitnet.cpp,
    build_lora_mm / build_ffn in src/llama-graph.cpp): y = (W x) * scale + lora for attention and
    ffn_down, y = (W x + lora) * scale for ffn_gate and ffn_up; lora = lscale * alpha / r * B (A x)
    (lscale: llama.cpp's --lora-scaled); in
    float32 with ggml-cpu's order of operations and roundings (tests/llama_exact.py), so the
    logits of a real llama.cpp CPU run (on this file pair bit-identical to llama.cpp 3f545bec's,
    checked outside CI with libllama)."""
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    sys.dont_write_bytecode = True
    import llama_exact as X
    r, c = read(model), CFG
    W, S = {}, {}
    for t in r.tensors:
        shape = [int(n) for n in reversed([int(x) for x in t.shape])]
        if t.name.endswith(".scale"):
            S[t.name[:-len(".scale")]] = np.float32(values(t)[0])
        elif len(shape) == 2:
            W[t.name] = exact_weights(t, shape)
        else:
            W[t.name] = values(t).astype(np.float32)
    L = {}
    if adapter:
        a = read(adapter)
        alpha = np.float32(a.fields["adapter.lora.alpha"].contents())
        for t in a.tensors:
            shape = [int(n) for n in reversed([int(x) for x in t.shape])]
            L[t.name] = values(t).reshape(shape).astype(np.float32)

    def lin(x, base):
        w = W[base + ".weight"]
        y = (X.q8_0_mm(w[1], w[2], x) if w[0] == "Q8_0" else X.q2_0_mm(w[1], w[2], x)
             if w[0] == "Q2_0" else X.mm_f32(w[1], x))
        after = base.endswith(("ffn_gate", "ffn_up"))
        if base in S and not after:
            y = y * S[base]
        name = base + ".weight.lora_a"
        if name in L:
            A, B = L[name], L[base + ".weight.lora_b"]
            y = y + X.mm_f32(B, X.mm_f32(A, x)) * (np.float32(lscale) * alpha / np.float32(A.shape[0]))
        if base in S and after:
            y = y * S[base]
        return y

    hd, T = c["n_embd"] // c["n_head"], len(ids)
    emb = W["token_embd.weight"]
    x = emb[1][ids].copy()
    for l in range(c["n_layer"]):
        p = f"blk.{l}."
        h = X.rms(x, W[p + "attn_norm.weight"])
        q = X.rope(lin(h, p + "attn_q").reshape(T, c["n_head"], hd))
        k = X.rope(lin(h, p + "attn_k").reshape(T, c["n_head_kv"], hd))
        v = lin(h, p + "attn_v").reshape(T, c["n_head_kv"], hd)
        a = X.attention(q, k, v, c["n_head"], c["n_head_kv"], hd).reshape(T, -1)
        x = x + lin(X.rms(a, W[p + "attn_sub_norm.weight"]), p + "attn_output")
        h = X.rms(x, W[p + "ffn_norm.weight"])
        gt, up = lin(h, p + "ffn_gate"), lin(h, p + "ffn_up")
        f = (gt / (np.float32(1) + X.expf_v(-gt))) * up
        x = x + lin(X.rms(f, W[p + "ffn_sub_norm.weight"]), p + "ffn_down")
    n = X.rms(x, W["output_norm.weight"])
    if emb[0] == "F16":
        n = n.astype(np.float16).astype(np.float32)
    return X.sgemm(emb[1], n)


def cmd_llama(model, adapter, ids, got, tol, lscale=1.0):
    ids = [int(i) for i in ids.strip("[] ").split(",")]
    ref = llama_logits_exact(model, adapter if adapter != "-" else None, ids, lscale)
    ref.tofile(got + ".ref")
    return cmd_close(got, got + ".ref", ref.shape[1], tol)


def cmd_close(a, b, n_vocab, tol):
    x, y = np.fromfile(a, dtype=np.float32), np.fromfile(b, dtype=np.float32)
    if not check(x.size == y.size and x.size > 0 and x.size % n_vocab == 0,
                 f"{a}: {x.size} logits, {b}: {y.size}"):
        return 1
    rel = float(np.max(np.abs(x - y)) / max(float(np.max(np.abs(y))), 1e-30))
    check(bool(np.all(np.isfinite(x))) and rel <= tol,
          f"{a} vs {b}: {x.size // n_vocab} positions, max |diff| / max |logit| = {rel:.3g} "
          f"(tolerance {tol:g})")
    return 1 if failed else 0


if __name__ == "__main__":
    a = sys.argv[1:]
    if len(a) == 3 and a[0] == "write":
        sys.exit(cmd_write(a[1], a[2]))
    if len(a) in (3, 4) and a[0] == "keys" and (len(a) == 3 or a[3] in ("--types", "--same-values")):
        sys.exit(cmd_keys(a[1], a[2], len(a) == 4, a[-1] == "--same-values"))
    if len(a) == 3 and a[0] == "adapter":
        sys.exit(cmd_adapter(a[1], a[2]))
    if len(a) in (9, 10) and a[0] == "check":
        sys.exit(cmd_check(*a[1:]))
    if len(a) == 6 and a[0] == "llama":
        sys.exit(cmd_llama(a[1], a[2], a[3], a[4], float(a[5])))
    if len(a) == 5 and a[0] == "close":
        sys.exit(cmd_close(a[1], a[2], int(a[3]), float(a[4])))
    print(__doc__)
    sys.exit(2)
