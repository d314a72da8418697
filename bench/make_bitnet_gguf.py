#!/usr/bin/env python3
"""make_bitnet_gguf.py - writes a bitnet GGUF of bitnet_b1_58-large's (or -3B's) shape with a
random ternary base, for timing the load and fine-tune of a real-sized file (W5 from a file:
`bitgrad bench --workload lora-large --gguf PATH`). Projections are TQ2_0 in bitgrad's lossless
form (block d = 1, the exact scale in `<proj>.scale`), token_embd F16, norms F32. No tokenizer
(the benchmark feeds ids). Needs the `gguf` package (pip install gguf) and numpy:
    python3 bench/make_bitnet_gguf.py large.gguf [--3b]
"""
import sys

import gguf
import numpy as np


def tq2_0(codes):
    """codes [rows, cols] in {-1, 0, 1}, cols a multiple of 256 -> TQ2_0 bytes [rows, cols/256*66]:
    byte 32h + m of a block holds element 128h + 32n + m at bits 2n (value code + 1); d = 1.0."""
    rows, cols = codes.shape
    t = (codes + 1).astype(np.uint8).reshape(rows, cols // 256, 2, 4, 32)  # [.., h, n, m]
    qs = (t[:, :, :, 0] | t[:, :, :, 1] << 2 | t[:, :, :, 2] << 4 | t[:, :, :, 3] << 6)
    qs = qs.reshape(rows, cols // 256, 64)
    d = np.full((rows, cols // 256, 2), [0x00, 0x3C], dtype=np.uint8)  # fp16 1.0, little-endian
    return np.concatenate([qs, d], axis=2).reshape(rows, cols // 256 * 66)


def main():
    path, big = sys.argv[1], "--3b" in sys.argv
    vocab, d, layers, heads, ff = (32000, 3200, 26, 32, 8640) if big else (32000, 1536, 24, 16, 4096)
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(path, "bitnet")
    w.add_context_length(2048)
    w.add_embedding_length(d)
    w.add_block_count(layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    emb = (rng.standard_normal((vocab, d), dtype=np.float32) * 0.02).astype(np.float16)
    w.add_tensor("token_embd.weight", emb)
    w.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    shapes = {"attn_q": (d, d), "attn_k": (d, d), "attn_v": (d, d), "attn_output": (d, d),
              "ffn_gate": (ff, d), "ffn_up": (ff, d), "ffn_down": (d, ff)}
    for l in range(layers):
        for n in ("attn_norm", "attn_sub_norm", "ffn_norm"):
            w.add_tensor(f"blk.{l}.{n}.weight", np.ones(d, dtype=np.float32))
        w.add_tensor(f"blk.{l}.ffn_sub_norm.weight", np.ones(ff, dtype=np.float32))
        for n, (rows, cols) in shapes.items():
            if cols % 256:
                raise SystemExit(f"{n}: rows of {cols} are not whole TQ2_0 blocks")
            codes = rng.integers(-1, 2, (rows, cols), dtype=np.int8)
            w.add_tensor(f"blk.{l}.{n}.weight", tq2_0(codes), raw_dtype=gguf.GGMLQuantizationType.TQ2_0)
            w.add_tensor(f"blk.{l}.{n}.scale", np.array([0.02], dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main()
