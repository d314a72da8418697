#!/usr/bin/env python3
"""export_readback.py - reads the GGUF files that tests/test_export.c wrote with gguf-py
(llama.cpp's own Python reader) and checks them against what bitgrad says they hold.

Usage: python3 tests/export_readback.py DIR
DIR holds model_tq2.gguf, model_tq1.gguf, adapter.gguf and, for every ternary projection P,
P.wq.f32 (bitgrad's W_q = codes * scale, float32 row-major [out, in]) and lora_B/lora_A dumps.
Checks: every bitnet key llama.cpp reads exists with the exact GGUF type; tensor types and
shapes; dequantize(weight) * scale equals W_q bit for bit; the tokenizer has 256 byte tokens
in GPT-2's spelling; the adapter's keys and tensor shapes.
Exit: 0 pass, 1 fail, 77 gguf/numpy missing (Meson's skip).
"""
import os
import sys

try:
    import numpy as np
    from gguf import GGUFReader, GGUFValueType
    from gguf.quants import dequantize
except ImportError as exc:
    print(f"SKIP: cannot import gguf/numpy ({exc})")
    sys.exit(77)

U32, F32, STR, ARR, BOOL = (GGUFValueType.UINT32, GGUFValueType.FLOAT32, GGUFValueType.STRING,
                            GGUFValueType.ARRAY, GGUFValueType.BOOL)
MODEL_KEYS = {
    "general.architecture": STR, "general.name": STR, "general.file_type": U32,
    "bitnet.context_length": U32, "bitnet.embedding_length": U32, "bitnet.block_count": U32,
    "bitnet.feed_forward_length": U32, "bitnet.attention.head_count": U32,
    "bitnet.attention.head_count_kv": U32, "bitnet.attention.layer_norm_rms_epsilon": F32,
    "bitnet.rope.freq_base": F32, "tokenizer.ggml.model": STR, "tokenizer.ggml.pre": STR,
    "tokenizer.ggml.tokens": ARR, "tokenizer.ggml.merges": ARR,
    "tokenizer.ggml.bos_token_id": U32, "tokenizer.ggml.eos_token_id": U32,
}
PROJS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
failed = 0
passed = 0


def check(ok, what):
    global failed, passed
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passed += 1
    else:
        failed += 1
    return ok


def field_str(r, key):
    f = r.fields[key]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def gpt2_bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def check_model(d, name, qtype):
    r = GGUFReader(os.path.join(d, name))
    for key, t in MODEL_KEYS.items():
        check(key in r.fields and r.fields[key].types[0] == t, f"{name}: key {key} has type {t.name}")
    check(field_str(r, "general.architecture") == "bitnet", f"{name}: architecture bitnet")
    toks = r.fields["tokenizer.ggml.tokens"]
    spelled = [bytes(toks.parts[i]).decode("utf-8") for i in toks.data]
    table = gpt2_bytes_to_unicode()
    check(spelled == [table[b] for b in range(256)], f"{name}: 256 byte tokens in GPT-2 spelling")
    tensors = {t.name: t for t in r.tensors}
    n_layer = int(r.fields["bitnet.block_count"].parts[-1][0])
    for layer in range(n_layer):
        for p in PROJS:
            base = f"blk.{layer}.{p}"
            t, s = tensors.get(base + ".weight"), tensors.get(base + ".scale")
            if not check(t is not None and s is not None, f"{name}: {base} weight and scale"):
                continue
            check(t.tensor_type.name == qtype, f"{name}: {base}.weight is {qtype}")
            wq = np.fromfile(os.path.join(d, f"{base}.wq.f32"), dtype=np.float32)
            out, inn = int(t.shape[1]), int(t.shape[0])
            deq = dequantize(t.data, t.tensor_type).reshape(out, inn).astype(np.float32)
            got = (deq * np.float32(s.data[0])).astype(np.float32).reshape(-1)
            check(got.shape == wq.shape and np.array_equal(got, wq),
                  f"{name}: dequantize({base}) * scale == bitgrad W_q ({wq.size} values)")
    check(tensors["token_embd.weight"].tensor_type.name in ("F16", "F32"), f"{name}: token_embd f16/f32")


def check_adapter(d):
    r = GGUFReader(os.path.join(d, "adapter.gguf"))
    check(field_str(r, "general.type") == "adapter", "adapter: general.type adapter")
    check(field_str(r, "adapter.type") == "lora", "adapter: adapter.type lora")
    check(r.fields["adapter.lora.alpha"].types[0] == F32, "adapter: alpha is f32")
    names = [t.name for t in r.tensors]
    check(len(names) > 0 and all(n.endswith((".weight.lora_a", ".weight.lora_b")) for n in names),
          f"adapter: {len(names)} lora_a / lora_b tensors")
    for t in r.tensors:
        ref = os.path.join(d, t.name + ".f32")
        if os.path.exists(ref):
            want = np.fromfile(ref, dtype=np.float32)
            check(np.array_equal(np.asarray(t.data, dtype=np.float32).reshape(-1), want),
                  f"adapter: {t.name} values as exported")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    d = sys.argv[1]
    check_model(d, "model_tq2.gguf", "TQ2_0")
    check_model(d, "model_tq1.gguf", "TQ1_0")
    check_adapter(d)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
