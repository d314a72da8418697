"""Reader/writer for the .bgref reference-data format and the deterministic
input generators shared with the C tests (tests/refdata.h).

Format (little-endian):
    magic  b"BGRF"
    u32    version = 1
    u32    count
    count x entry:
        u32        name_len
        bytes      name (UTF-8/ASCII, no NUL)
        u32        ndim (0..4)
        i64[ndim]  shape
        f32[prod(shape)] data, row-major (ndim 0: exactly one value)

Deterministic inputs (see tests/data/REFERENCES.md for the normative text):
    s_{k+1} = (1664525 * s_k + 1013904223) mod 2^32,  s_0 = seed
    element i (i = 0, 1, ...) uses s_{i+1} (advance first, then use)
    u = float32(s >> 8) / 16777216.0f                      (exact)
    t = float32(2.0f * u) - 1.0f                           (exact, in float32)
    x = float32(float32(scale) * t)                        (one float32 rounding)
    label = (s >> 8) % k
"""

import struct

import numpy as np

MAGIC = b"BGRF"
VERSION = 1
MAX_NDIM = 4

LCG_A = 1664525
LCG_C = 1013904223
_M32 = (1 << 32) - 1


# ---------------------------------------------------------------------------
# LCG
# ---------------------------------------------------------------------------

_CHUNK = 1 << 16
_jump_cache = {}


def _jump_tables(k):
    """A_j, C_j for j = 1..k such that s_{n+j} = (A_j * s_n + C_j) mod 2^32."""
    if k not in _jump_cache:
        a = np.empty(k, dtype=np.uint64)
        c = np.empty(k, dtype=np.uint64)
        aj, cj = 1, 0
        for j in range(k):
            aj = (LCG_A * aj) & _M32
            cj = (LCG_A * cj + LCG_C) & _M32
            a[j] = aj
            c[j] = cj
        _jump_cache[k] = (a, c)
    return _jump_cache[k]


def lcg_states(seed, n):
    """uint32 array [s_1, ..., s_n] of the LCG started at s_0 = seed."""
    n = int(n)
    out = np.empty(n, dtype=np.uint32)
    if n == 0:
        return out
    k = min(n, _CHUNK)
    a, c = _jump_tables(k)
    s = np.uint64(int(seed) & _M32)
    mask = np.uint64(_M32)
    pos = 0
    while pos < n:
        m = min(k, n - pos)
        # a[j] < 2^32, s < 2^32: a*s + c < 2^64, no overflow in uint64
        chunk = (a[:m] * s + c[:m]) & mask
        out[pos:pos + m] = chunk.astype(np.uint32)
        s = np.uint64(chunk[m - 1])
        pos += m
    return out


def lcg_fill(seed, n, scale):
    """float32 array of n values in [-scale, scale), bit-exact with the C version."""
    s = lcg_states(seed, n)
    u = (s >> np.uint32(8)).astype(np.float32) / np.float32(16777216.0)
    t = np.float32(2.0) * u - np.float32(1.0)
    x = np.float32(scale) * t
    assert x.dtype == np.float32
    return x


def lcg_labels(seed, n, k):
    """int64 array of n labels in [0, k)."""
    s = lcg_states(seed, n)
    return ((s >> np.uint32(8)) % np.uint32(k)).astype(np.int64)


def lcg_tensor(seed, shape, scale):
    """lcg_fill reshaped to `shape` (row-major)."""
    n = int(np.prod(shape)) if len(shape) else 1
    return lcg_fill(seed, n, scale).reshape(shape)


def lcg_norm(seed, n, scale=0.1):
    """Norm weights: float32(lcg_fill(seed, n, scale) + 1.0f)."""
    return lcg_fill(seed, n, scale) + np.float32(1.0)


def _lcg_fill_slow(seed, n, scale):
    """Plain-loop reference used only to self-test the vectorised version."""
    f32 = lambda v: struct.unpack("<f", struct.pack("<f", v))[0]
    s = seed & _M32
    sc = f32(scale)
    out = []
    for _ in range(n):
        s = (LCG_A * s + LCG_C) & _M32
        u = f32(float(s >> 8) / 16777216.0)
        t = f32(f32(2.0 * u) - 1.0)
        out.append(f32(sc * t))
    return np.array(out, dtype=np.float32)


def self_test():
    for seed, n, scale in [(11, 1000, 1.0), (42, 70000, 0.05), (0, 5, 0.1),
                           (0xFFFFFFFF, 300, 0.25), (7, 140000, 0.2)]:
        fast = lcg_fill(seed, n, scale)
        slow = _lcg_fill_slow(seed, n, scale)
        if not np.array_equal(fast.view(np.uint32), slow.view(np.uint32)):
            raise AssertionError("lcg_fill mismatch for seed %d" % seed)
    s = 16
    ref = []
    for _ in range(20):
        s = (LCG_A * s + LCG_C) & _M32
        ref.append((s >> 8) % 10)
    assert list(lcg_labels(16, 20, 10)) == ref


# ---------------------------------------------------------------------------
# File I/O
# ---------------------------------------------------------------------------

def write_bgref(path, entries):
    """entries: list of (name, array-like) in the order to store."""
    parts = [MAGIC, struct.pack("<II", VERSION, len(entries))]
    seen = set()
    for name, value in entries:
        if name in seen:
            raise ValueError("duplicate entry name %r" % name)
        seen.add(name)
        arr = np.array(value, dtype=np.float32, order="C")  # keeps 0-d
        if arr.ndim > MAX_NDIM:
            raise ValueError("%s: ndim %d > %d" % (name, arr.ndim, MAX_NDIM))
        nb = name.encode("ascii")
        parts.append(struct.pack("<I", len(nb)))
        parts.append(nb)
        parts.append(struct.pack("<I", arr.ndim))
        if arr.ndim:
            parts.append(struct.pack("<%dq" % arr.ndim, *arr.shape))
        parts.append(arr.astype("<f4").tobytes())
    data = b"".join(parts)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    import os
    os.replace(tmp, path)
    return len(data)


def read_bgref(path):
    """Returns a dict name -> float32 ndarray (insertion order kept)."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:4] != MAGIC:
        raise ValueError("%s: bad magic" % path)
    version, count = struct.unpack_from("<II", buf, 4)
    if version != VERSION:
        raise ValueError("%s: version %d" % (path, version))
    off = 12
    out = {}
    for _ in range(count):
        (nl,) = struct.unpack_from("<I", buf, off)
        off += 4
        name = buf[off:off + nl].decode("ascii")
        off += nl
        (ndim,) = struct.unpack_from("<I", buf, off)
        off += 4
        if ndim > MAX_NDIM:
            raise ValueError("%s: %s: ndim %d" % (path, name, ndim))
        shape = struct.unpack_from("<%dq" % ndim, buf, off) if ndim else ()
        off += 8 * ndim
        n = int(np.prod(shape)) if ndim else 1
        if off + 4 * n > len(buf):
            raise ValueError("%s: %s: truncated" % (path, name))
        arr = np.frombuffer(buf, dtype="<f4", count=n, offset=off).reshape(shape)
        off += 4 * n
        out[name] = arr.astype(np.float32)
    if off != len(buf):
        raise ValueError("%s: %d trailing bytes" % (path, len(buf) - off))
    return out


if __name__ == "__main__":
    self_test()
    print("bgref self-test ok")
