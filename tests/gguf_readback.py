#!/usr/bin/env python3
"""gguf_readback.py - reads a GGUF file with gguf-py (llama.cpp's own Python reader) and checks
it against an expectations file, so that what bitgrad writes is proven readable by upstream.

Usage:
    python3 tests/gguf_readback.py FILE.gguf EXPECT.json   check FILE against EXPECT
    python3 tests/gguf_readback.py --dump FILE.gguf        print FILE in the EXPECT schema

EXPECT.json uses the schema of ../shared/golden/ggml-ternary/*.gguf.json; every field is
optional, so a test states only what it cares about:
    {"version": 3, "n_kv": 2, "n_tensors": 1, "alignment": 32, "data_offset": 96,
     "file_size": 1600, "file_sha256": "...",
     "kv_order": "exact" | "subset",        # exact (default): kv lists every key in file order
     "kv": [{"key": "a.b", "type_id": 4, "value": 7},
            {"key": "a.arr", "type_id": 9, "elem_type_id": 8, "value": ["x", "y"]}],
     "tensors": [{"name": "w", "n_dims": 2, "ne": [256, 4], "ggml_type_id": 35, "offset": 0,
                  "abs_offset": 96, "nbytes": 264, "sha256": "...", "raw_hex": "...",
                  "values": [...] or "dequantized_values": [...]}]}
Values compare exactly: integers and strings as such, F32/F64 values after rounding the JSON
number to the stored width, tensor values after gguf.quants.dequantize (NaN equals NaN).

Exit status: 0 all checks passed, 1 a check failed, 2 usage error, 77 python3 lacks the gguf
(or numpy) package, which Meson reports as a skip.
"""
import hashlib
import json
import math
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf import GGUFReader, GGUFValueType, GGMLQuantizationType
except ImportError as exc:  # pragma: no cover - depends on the machine
    print(f"SKIP: python3 cannot import gguf/numpy ({exc}); pip install gguf")
    sys.exit(77)

SCALAR_NP = {
    GGUFValueType.UINT8: np.uint8, GGUFValueType.INT8: np.int8,
    GGUFValueType.UINT16: np.uint16, GGUFValueType.INT16: np.int16,
    GGUFValueType.UINT32: np.uint32, GGUFValueType.INT32: np.int32,
    GGUFValueType.FLOAT32: np.float32, GGUFValueType.UINT64: np.uint64,
    GGUFValueType.INT64: np.int64, GGUFValueType.FLOAT64: np.float64,
}
PLAIN_TENSOR = {GGMLQuantizationType.I8, GGMLQuantizationType.I16, GGMLQuantizationType.I32,
                GGMLQuantizationType.I64, GGMLQuantizationType.F64}


class Checker:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        print(("ok   " if ok else "FAIL ") + what)
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        return ok


def real_fields(reader):
    """The file's key/values in order (gguf-py adds GGUF.* pseudo-fields for the header)."""
    return [f for name, f in reader.fields.items() if not name.startswith("GGUF.")]


def field_value(field):
    """(type_id, elem_type_id or None, python value) of a reader field."""
    main = field.types[0]
    if main == GGUFValueType.ARRAY:
        sub = field.types[-1] if len(field.types) > 1 else None
        if sub is None:  # empty array: gguf-py keeps the element type in parts[-2]
            sub = GGUFValueType(int(field.parts[-2][0]))
        if sub == GGUFValueType.STRING:
            return int(main), int(sub), [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        if sub == GGUFValueType.BOOL:
            return int(main), int(sub), [bool(field.parts[i][0]) for i in field.data]
        return int(main), int(sub), [field.parts[i][0].item() for i in field.data]
    if main == GGUFValueType.STRING:
        return int(main), None, bytes(field.parts[field.data[0]]).decode("utf-8")
    if main == GGUFValueType.BOOL:
        return int(main), None, bool(field.parts[field.data[0]][0])
    return int(main), None, field.parts[field.data[0]][0].item()


def same_scalar(type_id, got, want):
    if type_id == GGUFValueType.FLOAT32:
        g, w = np.float32(got), np.float32(want)
        return (math.isnan(g) and math.isnan(w)) or g == w
    if type_id == GGUFValueType.FLOAT64:
        return (math.isnan(got) and math.isnan(want)) or float(got) == float(want)
    if type_id == GGUFValueType.BOOL:
        return bool(got) == bool(want)
    return got == want


def check_kv(c, reader, expect):
    fields = {f.name: f for f in real_fields(reader)}
    order = [f.name for f in real_fields(reader)]
    kvs = expect.get("kv", [])
    if expect.get("kv_order", "exact") == "exact" and "kv" in expect:
        c.check(order == [kv["key"] for kv in kvs], f"key order ({len(order)} keys)")
    for kv in kvs:
        key = kv["key"]
        if not c.check(key in fields, f"key {key} present"):
            continue
        type_id, elem, value = field_value(fields[key])
        ok = type_id == kv["type_id"]
        if "elem_type_id" in kv:
            ok = ok and elem == kv["elem_type_id"]
        if "value" in kv:
            want = kv["value"]
            if type_id == GGUFValueType.ARRAY:
                ok = ok and len(value) == len(want) and all(
                    same_scalar(elem, g, w) for g, w in zip(value, want))
            else:
                ok = ok and same_scalar(type_id, value, want)
        shown = value if not isinstance(value, list) or len(value) <= 8 else f"[{len(value)} items]"
        c.check(ok, f"key {key}: type {type_id}" + (f"/{elem}" if elem is not None else "")
                + f" value {shown!r}")


def tensor_values(t):
    """Dequantized float32 values of a reader tensor, flattened row-major."""
    if t.tensor_type in PLAIN_TENSOR:
        return np.asarray(t.data).astype(np.float32).reshape(-1)
    raw = np.asarray(t.data)
    if t.tensor_type not in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
        raw = raw.view(np.uint8)
    return gguf.quants.dequantize(raw, t.tensor_type).astype(np.float32).reshape(-1)


def check_tensor(c, reader, t, e):
    name = t.name
    ne = [int(x) for x in t.shape]
    offset = int(t.data_offset) - int(reader.data_offset)
    raw = np.asarray(t.data).view(np.uint8).tobytes()
    checks = [("n_dims", len(ne)), ("ne", ne), ("ggml_type_id", int(t.tensor_type)),
              ("offset", offset), ("abs_offset", int(t.data_offset)), ("nbytes", int(t.n_bytes)),
              ("sha256", hashlib.sha256(raw).hexdigest()), ("raw_hex", raw.hex())]
    for field, got in checks:
        if field in e:
            c.check(got == e[field], f"tensor {name}: {field} = "
                    + (str(got) if field not in ("raw_hex",) else f"{len(raw)} bytes"))
    want = e.get("dequantized_values", e.get("values"))
    if want is not None:
        got = tensor_values(t)
        want = np.asarray(want, dtype=np.float32).reshape(-1)
        ok = got.shape == want.shape and np.array_equal(got, want, equal_nan=True)
        if not ok and got.shape == want.shape:
            bad = int(np.argmax(~((got == want) | (np.isnan(got) & np.isnan(want)))))
            print(f"     first difference at {bad}: {got[bad]!r} vs expected {want[bad]!r}")
        c.check(ok, f"tensor {name}: {want.size} values via gguf.quants.dequantize "
                f"({GGMLQuantizationType(t.tensor_type).name})")


def check_file(path, expect):
    c = Checker()
    reader = GGUFReader(path, "r")
    header = {
        "version": int(reader.fields["GGUF.version"].parts[0][0]),
        "n_kv": len(real_fields(reader)),
        "n_tensors": len(reader.tensors),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "file_size": os.path.getsize(path),
    }
    with open(path, "rb") as f:
        header["file_sha256"] = hashlib.sha256(f.read()).hexdigest()
    for field, got in header.items():
        if field in expect:
            c.check(got == expect[field], f"{field} = {got}")
    check_kv(c, reader, expect)
    tensors = {t.name: t for t in reader.tensors}
    if "tensors" in expect:
        c.check([t.name for t in reader.tensors] == [e["name"] for e in expect["tensors"]],
                f"tensor names and order ({len(reader.tensors)} tensors)")
    for e in expect.get("tensors", []):
        if c.check(e["name"] in tensors, f"tensor {e['name']} present"):
            check_tensor(c, reader, tensors[e["name"]], e)
    print(f"gguf_readback {os.path.basename(path)}: {c.passed} passed, {c.failed} failed")
    return 0 if c.failed == 0 else 1


def dump(path):
    reader = GGUFReader(path, "r")
    out = {"version": int(reader.fields["GGUF.version"].parts[0][0]),
           "n_kv": len(real_fields(reader)), "n_tensors": len(reader.tensors),
           "alignment": int(reader.alignment), "data_offset": int(reader.data_offset), "kv": []}
    for f in real_fields(reader):
        type_id, elem, value = field_value(f)
        kv = {"key": f.name, "type_id": type_id, "value": value}
        if elem is not None:
            kv["elem_type_id"] = elem
        out["kv"].append(kv)
    out["tensors"] = [{"name": t.name, "n_dims": len(t.shape), "ne": [int(x) for x in t.shape],
                       "ggml_type_id": int(t.tensor_type),
                       "offset": int(t.data_offset) - int(reader.data_offset),
                       "nbytes": int(t.n_bytes)} for t in reader.tensors]
    json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
    print()
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--dump":
        return dump(argv[2])
    if len(argv) != 3:
        print(__doc__)
        return 2
    with open(argv[2], encoding="utf-8") as f:
        expect = json.load(f)
    try:
        return check_file(argv[1], expect)
    except (ValueError, OSError, KeyError, NotImplementedError) as exc:
        print(f"FAIL gguf-py cannot read {argv[1]}: {exc!r}")
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
