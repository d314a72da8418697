#!/usr/bin/env bash
# e2e_files.sh - suite 'e2e': checks what `finetune --quick` (the example_finetune test) wrote
# to DIR: every file is there and newer than the example's executable (not left over from an
# older build), `bitgrad info` reads model.gguf and adapter.gguf, and gguf-py (llama.cpp's
# own Python reader) reads them too; that part is skipped, with a message, when python3 or
# its gguf package is missing.
# Usage: bash tests/e2e_files.sh BITGRAD_CLI FINETUNE_EXE DIR
# Exit: 0 all checks passed, 1 a check failed, 2 usage error.
set -u
if [ $# -ne 3 ]; then
    echo "usage: bash tests/e2e_files.sh BITGRAD_CLI FINETUNE_EXE DIR" >&2
    exit 2
fi
cli=$1 exe=$2 dir=$3
failed=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    failed=1
}

for f in model.gguf adapter.gguf loss.csv loss.svg; do
    if [ ! -s "$dir/$f" ]; then
        fail "$dir/$f is missing or empty (example_finetune writes it)"
    elif [ "$exe" -nt "$dir/$f" ]; then
        fail "$dir/$f is older than $exe (left over from an earlier build)"
    else
        ok "$dir/$f ($(stat -c %s "$dir/$f") bytes)"
    fi
done

# `bitgrad info` must read both files; the model holds ternary (TQ2_0) projections of the
# bitnet architecture, the adapter LoRA tensors.
info_check() { # FILE PATTERN WHAT
    local out
    if ! out=$("$cli" info "$dir/$1" 2>&1); then
        fail "bitgrad info $1: $out"
    elif ! grep -q -- "$2" <<<"$out"; then
        fail "bitgrad info $1 lists no $3"
    else
        ok "bitgrad info $1: $(head -n 1 <<<"$out" | sed 's/^[^:]*: //'), with $3"
    fi
}
info_check model.gguf 'tq2_0' "TQ2_0 tensors"
info_check model.gguf '"bitnet"' "bitnet architecture"
info_check adapter.gguf 'lora_a' "lora_a tensors"

# `bitgrad eval` writes raw float32 [positions][n_vocab] logits, with and without the adapter,
# and its greedy answer to "12+34=" (ids 49 50 43 51 52 61) is the sum's first digit, '4' (52).
for lora in "" "--lora $dir/adapter.gguf"; do
    # shellcheck disable=SC2086
    if ! out=$("$cli" eval "$dir/model.gguf" --ids 49,50,43,51,52,61 --all $lora --out "$dir/logits.f32" 2>&1); then
        fail "bitgrad eval ${lora:+(adapter) }: $out"
    elif [ "$(stat -c %s "$dir/logits.f32")" -ne $((6 * 256 * 4)) ]; then
        fail "bitgrad eval ${lora:+(adapter) }wrote $(stat -c %s "$dir/logits.f32") bytes, not 6 x 256 x 4"
    elif [ -z "$lora" ] && ! grep -q "pos 5 id 61 argmax 52" <<<"$out"; then
        fail "bitgrad eval: 12+34= does not continue with '4': $(tail -n 1 <<<"$out")"
    else
        ok "bitgrad eval ${lora:+with the adapter }: $(tail -n 1 <<<"$out")"
    fi
done
if "$cli" eval "$dir/nonexistent.gguf" --ids 1 >/dev/null 2>&1; then
    fail "bitgrad eval accepted a missing file"
else
    ok "bitgrad eval refuses a missing file with a non-zero exit"
fi

if ! command -v python3 >/dev/null; then
    echo "SKIP gguf-py read-back: no python3"
elif [ ! -s "$dir/model.gguf" ] || [ ! -s "$dir/adapter.gguf" ]; then
    echo "SKIP gguf-py read-back: no files to read"
elif ! python3 -c 'import gguf' 2>/dev/null; then
    echo "SKIP gguf-py read-back: python3 cannot import gguf (pip install gguf)"
else
    python3 - "$dir" <<'EOF' || failed=1
import os, sys
from gguf import GGUFReader, GGMLQuantizationType

def field(r, key):
    f = r.fields[key]
    return bytes(f.parts[f.data[0]]).decode()

d = sys.argv[1]
m = GGUFReader(os.path.join(d, "model.gguf"))
a = GGUFReader(os.path.join(d, "adapter.gguf"))
names = {t.name: t for t in m.tensors}
tq2 = [t.name for t in m.tensors if t.tensor_type == GGMLQuantizationType.TQ2_0]
checks = [
    (field(m, "general.architecture") == "bitnet", "model.gguf: architecture bitnet"),
    ("token_embd.weight" in names, "model.gguf: token_embd.weight"),
    (len(tq2) > 0 and all(".attn_" in n or ".ffn_" in n for n in tq2),
     f"model.gguf: {len(tq2)} TQ2_0 projections of {len(m.tensors)} tensors"),
    (field(a, "general.type") == "adapter" and field(a, "adapter.type") == "lora",
     "adapter.gguf: general.type adapter, adapter.type lora"),
    (len(a.tensors) > 0 and all(t.name.rsplit(".", 1)[0] in names for t in a.tensors),
     f"adapter.gguf: {len(a.tensors)} tensors, each on a weight of model.gguf"),
]
for good, what in checks:
    print(("ok   " if good else "FAIL ") + "gguf-py " + what)
sys.exit(0 if all(good for good, _ in checks) else 1)
EOF
fi

if [ "$failed" -ne 0 ]; then
    echo "e2e_files: FAILED"
    exit 1
fi
echo "e2e_files: all checks passed"
