#!/bin/sh
# .ci/fuzz_text.sh - fuzzes the tokenizers (tests/fuzz_text.c) with libFuzzer, ASan and UBSan
# for a bounded time: random bytes and invalid UTF-8 encoded and decoded with llama.cpp's
# llama-spm and gpt-2 vocabularies, and tokenizer metadata read from fuzzed GGUF bytes. Seeded
# with the texts of llama.cpp's vocabulary tests. Builds with clang directly (no Meson).
#
# Needs clang with its libFuzzer runtime (see .ci/fuzz_gguf.sh) and ../shared/golden.
# Usage: .ci/fuzz_text.sh [SECONDS]        (default 60)
# Env:   CC (default clang), FUZZ_DIR (default build-fuzz-text), GOLDEN_DIR (default ../shared/golden)
# A crash leaves crash-* / leak-* / timeout-* files in FUZZ_DIR and exits nonzero.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
cc=${CC:-clang}
dir=${FUZZ_DIR:-build-fuzz-text}
golden=$(cd "${GOLDEN_DIR:-../shared/golden}" && pwd)

mkdir -p "$dir/corpus"
# seeds: each vocabulary test text, once per mode byte (0-3 encode, 4 GGUF)
i=0
for f in "$golden"/llama-vocab/*.inp; do
    python3 - "$f" "$dir/corpus" "$i" <<'PY'
import sys
texts = open(sys.argv[1], "rb").read().split(b"\n__ggml_vocab_test__\n")[:-1]
for k, t in enumerate(texts):
    for mode in range(4):
        open("%s/seed_%s_%d_%d" % (sys.argv[2], sys.argv[3], k, mode), "wb").write(bytes([mode]) + t)
PY
    i=$((i + 1))
done
cat > "$dir/text.dict" <<'DICT'
"\xe2\x96\x81"
"\xc4\xa0"
"'s"
"'ll"
"<s>"
"</s>"
"<0x41>"
"\xf0\x9f\x98"
"GGUF"
"tokenizer.ggml.model"
"tokenizer.ggml.tokens"
"tokenizer.ggml.merges"
"tokenizer.ggml.scores"
"tokenizer.ggml.token_type"
"tokenizer.ggml.bos_token_id"
"gpt2"
"llama"
DICT

$cc -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Iinclude -Isrc -DBG_BUILDING_LIB -D_POSIX_C_SOURCE=200809L \
    -D_DEFAULT_SOURCE tests/fuzz_text.c src/text/tokenizer.c src/text/tokenizer_load.c \
    src/text/tokenizer_vocab.c src/text/spm.c src/text/bpe.c src/text/pair_heap.c src/text/pretok.c src/text/unicode.c \
    src/io/gguf_read.c src/io/gguf_access.c \
    src/quant/ggml_types.c src/quant/ggml_blocks.c -lm -o "$dir/fuzz_text"

cd "$dir"
BG_GOLDEN_DIR=$golden exec ./fuzz_text -max_total_time="$secs" -max_len=4096 -timeout=10 \
    -rss_limit_mb=2048 -dict=text.dict -print_final_stats=1 corpus
