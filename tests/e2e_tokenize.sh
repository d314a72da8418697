#!/usr/bin/env bash
# e2e_tokenize.sh - suite 'e2e': `bitgrad tokenize` on llama.cpp's vocabulary files prints
# llama-tokenize --ids output (ids from the golden .out files, BOS as the file says), reads
# --file, honours --no-bos, and refuses with exit status 1 and a message, never a crash, a file
# that is not GGUF, a GGUF without a tokenizer and one with an unsupported tokenizer.
# Usage: bash tests/e2e_tokenize.sh BITGRAD_CLI GOLDEN_DIR TMP_DIR   (skips without goldens)
# Exit: 0 all checks passed, 1 a check failed, 2 usage error, 77 golden data missing.
set -u
if [ $# -ne 3 ]; then
    echo "usage: bash tests/e2e_tokenize.sh BITGRAD_CLI GOLDEN_DIR TMP_DIR" >&2
    exit 2
fi
cli=$1 vocab=$2/llama-vocab tmp=$3
if [ ! -f "$vocab/ggml-vocab-llama-spm.gguf" ]; then
    echo "skip: no $vocab"
    exit 77
fi
mkdir -p "$tmp"
failed=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    failed=1
}

expect() { # WANT ARGS... : stdout must be WANT, status 0
    local want=$1 out
    shift
    if ! out=$("$cli" tokenize "$@" 2>&1); then
        fail "tokenize $*: status $?: $out"
    elif [ "$out" != "$want" ]; then
        fail "tokenize $*: '$out', expected '$want'"
    else
        ok "tokenize $* -> $out"
    fi
}

# "Hello world" is text 11 of llama.cpp's vocabulary tests; its .out line, without BOS:
spm_ids=$(sed -n 12p "$vocab/ggml-vocab-llama-spm.gguf.out" | sed 's/^ //; s/ /, /g')
gpt2_ids=$(sed -n 12p "$vocab/ggml-vocab-gpt-2.gguf.out" | sed 's/^ //; s/ /, /g')
[ "$spm_ids" = "15043, 3186" ] || fail "golden line 12 of llama-spm is '$spm_ids', not Hello world's"
expect "[1, $spm_ids]" "$vocab/ggml-vocab-llama-spm.gguf" --text "Hello world"
expect "[$spm_ids]" "$vocab/ggml-vocab-llama-spm.gguf" --text "Hello world" --no-bos
expect "[$gpt2_ids]" "$vocab/ggml-vocab-gpt-2.gguf" --text "Hello world"
printf 'Hello world' >"$tmp/hello.txt"
expect "[1, $spm_ids]" "$vocab/ggml-vocab-llama-spm.gguf" --file "$tmp/hello.txt"
expect "[1]" "$vocab/ggml-vocab-llama-spm.gguf" --text ""

# A GGUF v3 file with no tensors and one string key: KEY VALUE
gguf_one_key() {
    local key=$1 val=$2
    printf 'GGUF\x03\x00\x00\x00'
    printf '\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00'
    printf "\\x$(printf %02x ${#key})\\x00\\x00\\x00\\x00\\x00\\x00\\x00%s" "$key"
    printf '\x08\x00\x00\x00'
    printf "\\x$(printf %02x ${#val})\\x00\\x00\\x00\\x00\\x00\\x00\\x00%s" "$val"
}
gguf_one_key general.name x >"$tmp/no_tokenizer.gguf"
gguf_one_key tokenizer.ggml.model bert >"$tmp/bert.gguf"
printf 'not a model' >"$tmp/not_gguf.bin"

refuse() { # FILE PATTERN WHAT
    local out status
    out=$("$cli" tokenize "$1" --text "Hello" 2>&1)
    status=$?
    if [ $status -ne 1 ]; then
        fail "tokenize $3: status $status (expected 1): $out"
    elif ! grep -q -- "$2" <<<"$out"; then
        fail "tokenize $3: message lacks '$2': $out"
    else
        ok "tokenize $3 refused: $out"
    fi
}
refuse "$tmp/not_gguf.bin" "not a GGUF" "a file that is not GGUF"
refuse "$tmp/missing.gguf" "missing.gguf" "a missing file"
refuse "$tmp/no_tokenizer.gguf" "tokenizer.ggml.model" "a GGUF without a tokenizer"
refuse "$tmp/bert.gguf" "tokenizer.ggml.model = 'bert'" "an unsupported tokenizer"

exit $failed
