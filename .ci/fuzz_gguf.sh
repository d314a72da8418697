#!/bin/sh
# .ci/fuzz_gguf.sh - fuzzes the GGUF reader (tests/fuzz_gguf.c) with libFuzzer, ASan and UBSan
# for a bounded time, seeded with the golden .gguf files. Builds with clang directly (no Meson).
#
# Needs clang with its libFuzzer runtime. Debian 12:  apt-get install clang libclang-rt-14-dev
# (libclang_rt.fuzzer ships in libclang-rt-14-dev). This script installs nothing.
#
# Usage: .ci/fuzz_gguf.sh [SECONDS]        (default 60)
# Env:   CC (default clang), FUZZ_DIR (default build-fuzz), GOLDEN_DIR (default ../shared/golden)
# A crash leaves crash-* / leak-* / timeout-* files in FUZZ_DIR and exits nonzero.
set -eu
cd "$(dirname "$0")/.."
secs=${1:-60}
cc=${CC:-clang}
dir=${FUZZ_DIR:-build-fuzz}
golden=${GOLDEN_DIR:-../shared/golden}/ggml-ternary

mkdir -p "$dir/corpus"
for f in "$golden"/*.gguf; do
    [ -f "$f" ] && cp "$f" "$dir/corpus/"
done
# tokens that help the fuzzer reach deep into the format
cat > "$dir/gguf.dict" <<'DICT'
"GGUF"
"\x03\x00\x00\x00"
"general.alignment"
"general.architecture"
"\x40\x00\x00\x00"
"\x09\x00\x00\x00"
"\x08\x00\x00\x00"
"\x23\x00\x00\x00"
"\x22\x00\x00\x00"
DICT

$cc -std=c11 -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
    -fno-sanitize-recover=undefined -Iinclude -Isrc -DBG_BUILDING_LIB -D_POSIX_C_SOURCE=200809L \
    tests/fuzz_gguf.c src/io/gguf_read.c src/io/gguf_access.c \
    src/quant/ggml_types.c src/quant/ggml_blocks.c -lm -o "$dir/fuzz_gguf"

cd "$dir"
exec ./fuzz_gguf -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -dict=gguf.dict -print_final_stats=1 corpus
