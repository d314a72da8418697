#!/usr/bin/env bash
# e2e_real.sh - suite 'e2e': the bitgrad CLI on a real model layout and a real vocabulary.
#   - tests/e2e_real.py writes model.gguf with gguf-py (llama.cpp's own GGUF writer): every
#     tokenizer.* key of llama.cpp's ggml-vocab-llama-spm.gguf (32000 SentencePiece tokens),
#     n_embd 192 = 2 heads of 96, n_head_kv 1, n_ff 160 (no row a multiple of 256)
#   - README.md's "Real-vocabulary workflow" block runs verbatim here, each `bitgrad` line with
#     this build (the llama.cpp line only when LLAMA_CPP_BIN names a llama.cpp build folder):
#     info, tokenize, a LoRA fine-tune on JSON Lines with validation, export, generate
#   - then: tokenize == the vocabulary's own ids; the validation loss falls; gguf-py reads the
#     adapter (lora_a/lora_b pairs of the right shapes) and the exported model (tokenizer keys
#     byte-identical to model.gguf's, Q2_0 / Q8_0 projections with .scale, W_q exact);
#     eval --prompt / generate on model.gguf; the same logits for the LoRA checkpoint's base
#     and model.gguf, and for the adapter on the exported base and on model.gguf, and the
#     adapter changes them; a QAT fine-tune (--lora-r 0) exported and imported back gives the
#     checkpoint's logits exactly, and differs from model.gguf's
#   - eval --llama of the exported base, with and without the adapter, == llama.cpp's graph
#     (build_lora_mm / build_ffn: the adapter of ffn_gate / ffn_up scaled by .scale) in numpy
# Usage: bash tests/e2e_real.sh BITGRAD_CLI GOLDEN_DIR SOURCE_DIR
#   LLAMA_CPP_BIN=DIR also runs README's llama-completion line; BG_E2E_KEEP=1 keeps the temp dir.
# Exit: 0 pass, 1 a check failed, 2 usage, 77 golden vocabulary, python3 or gguf-py missing.
set -u
if [ $# -ne 3 ]; then
    echo "usage: bash tests/e2e_real.sh BITGRAD_CLI GOLDEN_DIR SOURCE_DIR" >&2
    exit 2
fi
B=$(realpath "$1") vocab=$(realpath -m "$2/llama-vocab/ggml-vocab-llama-spm.gguf")
src=$(realpath "$3")
if [ ! -s "$vocab" ]; then
    echo "SKIP: $vocab is missing"
    exit 77
fi
if ! python3 -c 'import gguf, numpy' 2>/dev/null; then
    echo "SKIP: python3 cannot import gguf and numpy (pip install gguf)"
    exit 77
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
tmp=$(mktemp -d /tmp/bg_e2e_real.XXXXXX)
trap '[ -n "${BG_E2E_KEEP:-}" ] || rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
failed=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    failed=1
}
py() { python3 "$src/tests/e2e_real.py" "$@"; }
# pycheck WHAT ARGS...: a python check; its own ok/FAIL lines are shown
pycheck() {
    local what=$1
    shift
    py "$@" || fail "$what (tests/e2e_real.py $1)"
}

# ---- the model and the data ----------------------------------------------------------------
if ! py write "$vocab" model.gguf; then
    echo "FAIL gguf-py could not write model.gguf"
    exit 1
fi
colours=(red green blue yellow purple orange)
for i in $(seq 0 23); do
    printf '{"prompt": "Q: What colour is box %d?\\nA:", "completion": " Box %d is %s.\\n"}\n' \
        "$i" "$i" "${colours[$((i % 6))]}"
    if [ $((i % 4)) -eq 0 ]; then printf '{"text": "The sky is blue and the grass is green."}\n'; fi
done >data.jsonl
for i in $(seq 24 29); do
    printf '{"prompt": "Q: What colour is box %d?\\nA:", "completion": " Box %d is %s.\\n"}\n' \
        "$i" "$i" "${colours[$((i % 6))]}"
done >val.jsonl

# ---- README.md's block, verbatim -------------------------------------------------------------
python3 - "$src/README.md" >readme_cmds.txt <<'EOF'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
sec = text.split("## Real-vocabulary workflow", 1)
blocks = re.findall(r"```sh\n(.*?)```", sec[1], re.S) if len(sec) == 2 else []
if blocks:
    print(blocks[0].replace("\\\n", " "), end="")
EOF
mapfile -t cmds <readme_cmds.txt
n_bitgrad=$(grep -c '^bitgrad ' readme_cmds.txt)
if [ "$n_bitgrad" -lt 5 ] || ! grep -q '^llama-completion .*--lora adapter.gguf' readme_cmds.txt; then
    fail "README.md's real-vocabulary block: $n_bitgrad bitgrad lines, llama-completion line: $(grep -c '^llama-' readme_cmds.txt)"
fi
llama_line=""
for k in "${!cmds[@]}"; do
    line=${cmds[$k]}
    case $line in
    bitgrad\ *)
        eval "\"\$B\" ${line#bitgrad }" >"readme_$k.out" 2>"readme_$k.err"
        st=$?
        [ $st -eq 0 ] && ok "README: $line" ||
            fail "README: $line: status $st: $(tail -n 3 "readme_$k.err")" ;;
    llama-*)
        llama_line=$line
        if [ -n "${LLAMA_CPP_BIN:-}" ]; then
            eval "\"\$LLAMA_CPP_BIN/\"$line" >"readme_$k.out" 2>"readme_$k.err" &&
                ok "README: $line" || fail "README: $line: $(tail -n 3 "readme_$k.err")"
            llama_out=readme_$k.out
        else
            echo "SKIP README: $line (set LLAMA_CPP_BIN to a llama.cpp build folder)"
        fi ;;
    "" | \#*) ;;
    *) fail "README: a line that is neither bitgrad nor llama.cpp: $line" ;;
    esac
done
out_of() { # the stdout file of the README line starting with $1
    local k
    for k in "${!cmds[@]}"; do
        if [[ ${cmds[$k]} == "$1"* ]]; then
            echo "readme_$k.out"
            return
        fi
    done
    echo /dev/null
}

# ---- what the README commands did ------------------------------------------------------------
info=$(cat "$(out_of "bitgrad info")")
grep -q "tokenizer.ggml.tokens .*\[str x 32000\]" <<<"$info" &&
    grep -q "head_count_kv  *u32  *1$" <<<"$info" && ok "info: 32000 tokens, n_head_kv 1" ||
    fail "info model.gguf: $(head -c 400 <<<"$info")"

prompt=$(sed -n 's/^bitgrad tokenize model.gguf --text "\(.*\)"$/\1/p' readme_cmds.txt)
want=$("$B" tokenize "$vocab" --text "$prompt" 2>&1)
got=$(cat "$(out_of "bitgrad tokenize")")
[ -n "$prompt" ] && [ "$got" = "$want" ] && [[ $got == "[1, "* ]] &&
    ok "tokenize '$prompt': $got (== the vocabulary file's)" ||
    fail "tokenize '$prompt': '$got', the vocabulary file: '$want'"

if v=$(awk -F, 'NR > 1 && $5 != "" {n++; if (n == 1) f = $5; l = $5}
        END {printf "%d evaluations, %.4f -> %.4f", n, f, l; exit !(n >= 3 && l < 0.9 * f)}' loss.csv); then
    ok "LoRA fine-tune: validation loss $v"
else
    fail "LoRA fine-tune: validation loss $v (want >= 3 evaluations, the last below 0.9 x the first)"
fi
grep -q "(llama tokenizer" "$(out_of "bitgrad finetune" | sed 's/out$/err/')" &&
    ok "finetune used the model's SentencePiece tokenizer" ||
    fail "finetune did not report the llama tokenizer: $(head -n 2 "$(out_of "bitgrad finetune" | sed 's/out$/err/')")"

gen=$(cat "$(out_of "bitgrad generate")")
[[ $gen == "$prompt"?* ]] && ok "generate with the adapter: '$(tr '\n' '|' <<<"$gen")'" ||
    fail "generate: '$gen' does not continue '$prompt'"
if [ -n "${llama_out:-}" ]; then
    cont=${gen#"$prompt"}
    grep -qF -- "$(head -n 1 <<<"$cont")" "$llama_out" &&
        ok "llama-completion continues as bitgrad generate: '$(head -n 1 <<<"$cont")'" ||
        fail "llama-completion: '$(head -c 300 "$llama_out")', bitgrad: '$cont'"
fi

# ---- eval and generate on model.gguf, logits through export and import -------------------------
out=$("$B" eval model.gguf --prompt "$prompt" --all --out base.f32 2>&1)
n_ids=$(($(tr -cd ',' <<<"$want" | wc -c) + 1))
[ "$(grep -c '^pos' <<<"$out")" -eq "$n_ids" ] && ok "eval --prompt: $n_ids positions, BOS included" ||
    fail "eval --prompt: $(head -n 3 <<<"$out") ($n_ids ids)"
out=$("$B" generate model.gguf --prompt "Hello" --n 6 2>&1)
[ $? -eq 0 ] && [[ $out == Hello?* ]] && ok "generate on model.gguf: '$out'" || fail "generate: $out"

logits() { # OUT.f32 MODEL [ARGS...]: eval --all of the prompt
    local o=$1
    shift
    "$B" eval "$@" --prompt "$prompt" --all --out "$o" >/dev/null 2>"$o.err" || fail "eval $*: $(cat "$o.err")"
}
logits ckpt.f32 lora.ckpt.gguf
pycheck "the LoRA checkpoint's frozen base == model.gguf" close ckpt.f32 base.f32 32000 0
# The adapter belongs to the base it was trained on (model.gguf, no .scale tensors): there,
# llama.cpp applies it unscaled, and bitgrad reads it back the same way (checked against
# llama.cpp's graph below).
logits lora_src.f32 model.gguf --lora adapter.gguf
if py close lora_src.f32 base.f32 32000 1e-3 >/dev/null; then
    fail "the adapter leaves the logits within 1e-3 of the base's"
else
    ok "the adapter changes the logits (more than 1e-3 of the largest)"
fi
# --lora-scale: 0 is the base exactly, 1 the default
logits lora_s0.f32 model.gguf --lora adapter.gguf --lora-scale 0
pycheck "eval --lora-scale 0 == the base" close lora_s0.f32 base.f32 32000 0
logits lora_s1.f32 model.gguf --lora adapter.gguf --lora-scale 1
pycheck "eval --lora-scale 1 == eval --lora" close lora_s1.f32 lora_src.f32 32000 0

# QAT: all weights train (--lora-r 0); the export (F32 embedding: lossless) reads back exactly.
if "$B" finetune model.gguf --data data.jsonl --lora-r 0 --steps 2 --batch 2 --seq 32 --lr 1e-3 \
    --out qat.ckpt.gguf --csv qat.csv 2>qat.err && "$B" export qat.ckpt.gguf --out qat.gguf --embd f32 >/dev/null 2>>qat.err; then
    ok "QAT fine-tune (--lora-r 0) and export"
    logits qat_ckpt.f32 qat.ckpt.gguf
    logits qat_exp.f32 qat.gguf
    pycheck "QAT export imported back == the checkpoint" close qat_exp.f32 qat_ckpt.f32 32000 0
    if py close qat_exp.f32 base.f32 32000 1e-4 >/dev/null; then
        fail "QAT left the logits within 1e-4 of model.gguf's"
    else
        ok "QAT changed the model's logits"
    fi
else
    fail "QAT fine-tune / export: $(tail -n 3 qat.err)"
fi

# ---- gguf-py reads every file (each parsed once: 32000 token strings take it seconds) -----------
# and llama.cpp's graph in numpy (tests/e2e_real.py llama_logits_exact) on the exported base, with and
# without the adapter, against eval --llama (llama.cpp's activation rounding).
"$B" eval model-bitgrad.gguf --llama --prompt "$prompt" --all --out llama_base.f32 >/dev/null 2>&1
"$B" eval model.gguf --llama --lora adapter.gguf --prompt "$prompt" --all \
    --out llama_lora.f32 >/dev/null 2>&1
"$B" eval model.gguf --llama --lora adapter.gguf --lora-scale 0.5 --prompt "$prompt" --all \
    --out llama_half.f32 >/dev/null 2>&1
pycheck "gguf-py reads model.gguf, model-bitgrad.gguf, adapter.gguf, qat.gguf; llama.cpp's graph" \
    check "$vocab" model.gguf model-bitgrad.gguf adapter.gguf qat.gguf "$want" llama_base.f32 llama_lora.f32 \
    llama_half.f32

if [ "$failed" -ne 0 ]; then
    echo "e2e_real: FAILED"
    exit 1
fi
echo "e2e_real: all checks passed"
