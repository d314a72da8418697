#!/usr/bin/env bash
# e2e_cli.sh - suite 'e2e': the bitgrad CLI end to end on small models it trains itself.
#   - errors, not crashes: a non-GGUF model (finetune, eval, generate), unknown ids, bad JSON
#     Lines (file:line in the message); exit status 1 or 2, never a signal
#   - output paths (--out, --csv, --adapter-out) are checked before training starts
#   - train with --val/--eval-every (validation loss and perplexity in the CSV), --schedule and
#     --warmup (the lr column), --save-every (a checkpoint written during the run loads and
#     resumes after the run is killed), --grad-accum 2 x --batch 1 == --batch 2
#   - a fine-tune on prompt/completion JSON Lines (loss on completions only) lowers the
#     validation loss
#   - generate and eval --prompt on a byte model; with a real vocabulary (train --vocab-from
#     llama.cpp's ggml-vocab-llama-spm.gguf, 32000 tokens): eval of ids >= 256, tokenize,
#     generate, and finetune reading the model's own tokenizer (skipped, with a message, when
#     the golden vocabulary is absent or bitgrad cannot read it)
# Usage: bash tests/e2e_cli.sh BITGRAD_CLI GOLDEN_DIR
set -u
if [ $# -ne 2 ]; then
    echo "usage: bash tests/e2e_cli.sh BITGRAD_CLI GOLDEN_DIR" >&2
    exit 2
fi
B=$1 golden=$2
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
tmp=$(mktemp -d /tmp/bg_e2e_cli.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { echo "ok   $*"; }
fail() {
    echo "FAIL $*"
    failed=1
}

# expect_error WANT_STATUS PATTERN DESCRIPTION -- CMD...: the command exits with status 1 or 2
# (WANT_STATUS, or "12" for either), prints PATTERN on stderr and never reaches step 1.
expect_error() {
    local want=$1 pat=$2 what=$3
    shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"
    local st=$?
    if [ $st -ge 128 ]; then
        fail "$what: killed by signal $((st - 128)): $(head -c 300 "$tmp/err")"
    elif [[ $want != *$st* ]] || [ $st -eq 0 ]; then
        fail "$what: exit status $st, want $want: $(head -c 300 "$tmp/err")"
    elif ! grep -q -- "$pat" "$tmp/err"; then
        fail "$what: stderr lacks '$pat': $(head -c 300 "$tmp/err")"
    elif grep -q "^step 1/" "$tmp/err"; then
        fail "$what: training started before the error"
    else
        ok "$what: exit $st, $(head -n 1 "$tmp/err")"
    fi
}

# Text: numbered sentences, enough for windows of 32.
for i in $(seq 1 60); do echo "line $i: the quick brown fox jumps over the lazy dog."; done >"$tmp/notes.txt"
small=(--n-embd 64 --n-layer 2 --n-head 2 --n-ff 128 --seq 32 --batch 4)

# ---- errors, not crashes ------------------------------------------------------------------
expect_error 1 "not a GGUF" "finetune on a text file as model" -- \
    "$B" finetune "$tmp/notes.txt" --data "$tmp/notes.txt" --out "$tmp/x.gguf" --csv "$tmp/x.csv"
expect_error 1 "not a GGUF" "eval on a text file as model" -- "$B" eval "$tmp/notes.txt" --ids 1,2
expect_error 1 "not a GGUF" "generate on a text file as model" -- \
    "$B" generate "$tmp/notes.txt" --prompt hi
mkdir -p "$tmp/some_dir"
expect_error 1 "is a directory" "train --out DIR fails before step 1" -- \
    "$B" train --data "$tmp/notes.txt" --out "$tmp/some_dir" --csv "$tmp/x.csv" "${small[@]}" --steps 5
expect_error 1 "cannot be written" "train --out in a missing folder" -- \
    "$B" train --data "$tmp/notes.txt" --out "$tmp/nope/ck.gguf" --csv "$tmp/x.csv" --steps 5
expect_error 1 "is a directory" "train --csv DIR" -- \
    "$B" train --data "$tmp/notes.txt" --out "$tmp/x.gguf" --csv "$tmp/some_dir" --steps 5
expect_error 2 "schedule" "train --schedule bogus" -- \
    "$B" train --data "$tmp/notes.txt" --out "$tmp/x.gguf" --schedule bogus
printf '{"text": "fine"}\n{"text": "also fine"}\n{"prompt": "p", "completion": 3}\n' >"$tmp/bad.jsonl"
expect_error 1 "bad.jsonl:3:" "a malformed JSON line names file:line" -- \
    "$B" train --data "$tmp/bad.jsonl" --out "$tmp/x.gguf" --csv "$tmp/x.csv"

# ---- a byte model: validation, schedule, periodic checkpoints ------------------------------
if ! "$B" train --data "$tmp/notes.txt" --val "$tmp/notes.txt" --eval-every 5 --out "$tmp/ck.gguf" \
    --csv "$tmp/loss.csv" "${small[@]}" --steps 10 --lr 3e-3 --schedule linear --warmup 2 \
    --threads 2 2>"$tmp/err"; then
    fail "train (bytes): $(tail -n 3 "$tmp/err")"
else
    ok "train (bytes): $(tail -n 1 "$tmp/err")"
    vals=$(awk -F, 'NR > 1 && $5 != "" {print $1}' "$tmp/loss.csv" | tr '\n' ' ')
    [ "$vals" = "5 10 " ] && ok "val_loss in the CSV at steps 5 and 10" ||
        fail "val_loss rows at steps '$vals', want '5 10 '"
    grep -q "val_ppl" "$tmp/err" && ok "validation printed" || fail "no val_ppl on stderr"
    lrs=$(awk -F, 'NR > 1 && NR <= 5 {printf "%s ", $4}' "$tmp/loss.csv")
    [ "$lrs" = "0.0015 0.003 0.003 0.002625 " ] && ok "linear schedule with warm-up 2: lr $lrs" ||
        fail "lr column '$lrs', want '0.0015 0.003 0.003 0.002625 '"
fi
out=$("$B" generate "$tmp/ck.gguf" --prompt "line 7" --n 8 2>&1)
[ $? -eq 0 ] && [[ $out == "line 7"* ]] && ok "generate (bytes): '$out'" || fail "generate (bytes): $out"
expect_error 1 "is a directory" "finetune --adapter-out DIR fails before step 1" -- \
    "$B" finetune "$tmp/ck.gguf" --data "$tmp/notes.txt" --out "$tmp/x.gguf" --csv "$tmp/x.csv" \
    --adapter-out "$tmp/some_dir"
expect_error 1 "cannot be written" "finetune --out in a missing folder fails before step 1" -- \
    "$B" finetune "$tmp/ck.gguf" --data "$tmp/notes.txt" --out "$tmp/nope/ft.gguf" --csv "$tmp/x.csv"
# past the context (32 positions): a 100-byte prompt and 80 new tokens keep the last half
long=$(printf 'x%.0s' $(seq 1 100))
out=$("$B" generate "$tmp/ck.gguf" --prompt "$long" --n 80 2>&1)
st=$?
n=$(printf '%s' "$out" | wc -c)
[ $st -eq 0 ] && [[ $out == "$long"* ]] && [ "$n" -ge 180 ] && ok "generate past the context: $n bytes" ||
    fail "generate past the context: $n bytes: $(head -c 300 <<<"$out")"
# the KV-cached generate's first greedy token is the full forward's argmax (eval)
am=$("$B" eval "$tmp/ck.gguf" --prompt "line 7" 2>/dev/null | awk '{print $6}')
got=$("$B" generate "$tmp/ck.gguf" --prompt "line 7" --n 1 2>&1)
want="line 7$(printf "\\$(printf %03o "${am:-0}")")"
[ -n "$am" ] && [ "$got" = "$want" ] && ok "generate --n 1 continues with eval's argmax ($am)" ||
    fail "generate --n 1 gave '$got', eval's argmax is ${am:-none}"
out=$("$B" eval "$tmp/ck.gguf" --prompt "line" --all 2>&1)
[ $? -eq 0 ] && grep -q "pos 3 id 101" <<<"$out" && ok "eval --prompt (bytes): 4 positions" ||
    fail "eval --prompt (bytes): $out"
expect_error 2 "outside the model's vocabulary" "eval --ids 1,300 on a 256-token model" -- \
    "$B" eval "$tmp/ck.gguf" --ids 1,300

# --save-every: kill a long run after a periodic checkpoint; that file loads and resumes. The
# kill may land while a later checkpoint is being written: the file then holds either that one
# or the one before (PATH.tmp, fsync, rename), a multiple of 3 either way.
"$B" train --data "$tmp/notes.txt" --out "$tmp/periodic.gguf" --csv "$tmp/p.csv" "${small[@]}" \
    --steps 100000 --save-every 3 2>"$tmp/perr" &
pid=$!
for _ in $(seq 1 600); do
    grep -q "at step 6" "$tmp/perr" && break
    sleep 0.1
done
{ kill -9 "$pid" && wait "$pid"; } 2>/dev/null
last=$(grep -o "wrote checkpoint .* at step [0-9]*" "$tmp/perr" | tail -n 1 | grep -o "[0-9]*$")
if [ -z "$last" ] || [ "$last" -lt 6 ]; then
    fail "--save-every 3: no checkpoint at step 6 within 60 s: $(tail -n 2 "$tmp/perr")"
elif ! "$B" train --data "$tmp/notes.txt" --out "$tmp/periodic.gguf" --csv "$tmp/p2.csv" \
    "${small[@]}" --steps $((last + 5)) --resume "$tmp/periodic.gguf" 2>"$tmp/err"; then
    fail "resume from the periodic checkpoint: $(tail -n 2 "$tmp/err")"
elif ! at=$(grep -o "resumed .* at step [0-9]*" "$tmp/err" | grep -o "[0-9]*$") ||
    [ $((at % 3)) -ne 0 ] || [ "$at" -lt "$last" ] || ! grep -q "at step $((last + 5))$" "$tmp/err"; then
    fail "resume after the kill (last logged checkpoint: step $last): $(head -n 3 "$tmp/err")"
else
    ok "--save-every 3: the run killed after step $last resumes at step $at and finishes"
fi

# --grad-accum 2 x --batch 1 against --batch 2 (plain text: equal target counts, so the mean of
# the micro-batch means is the batch mean), full precision, 3 steps.
acc=(--n-embd 64 --n-layer 1 --n-head 2 --n-ff 128 --seq 32 --steps 3 --fp --seed 5)
"$B" train --data "$tmp/notes.txt" --out "$tmp/a.gguf" --csv "$tmp/a.csv" "${acc[@]}" --batch 2 2>/dev/null
"$B" train --data "$tmp/notes.txt" --out "$tmp/b.gguf" --csv "$tmp/b.csv" "${acc[@]}" --batch 1 --grad-accum 2 2>/dev/null
if cmp=$(paste -d, "$tmp/a.csv" "$tmp/b.csv" | awk -F, 'NR > 1 {d = $2 - $8; if (d < 0) d = -d;
        r = d / $2; if (r > m) m = r; n++} END {printf "%d %.3g", n, m; exit !(n == 3 && m < 1e-5)}'); then
    ok "--grad-accum 2 --batch 1 == --batch 2: steps, max rel loss diff: $cmp"
else
    fail "--grad-accum 2 --batch 1 vs --batch 2: steps, max rel loss diff: $cmp"
fi

# ---- a masked fine-tune (prompt/completion) lowers the validation loss ---------------------
for i in $(seq 1 40); do
    printf '{"prompt": "item %d colour:", "completion": " red and blue\\n"}\n' "$i"
done >"$tmp/train.jsonl"
for i in $(seq 41 50); do
    printf '{"prompt": "item %d colour:", "completion": " red and blue\\n"}\n' "$i"
done >"$tmp/val.jsonl"
if ! "$B" finetune "$tmp/ck.gguf" --data "$tmp/train.jsonl" --val "$tmp/val.jsonl" --eval-every 5 \
    --lora-r 0 --steps 60 --batch 8 --seq 32 --lr 3e-3 --out "$tmp/ft.gguf" --csv "$tmp/ft.csv" 2>"$tmp/err"; then
    fail "finetune on prompt/completion JSON Lines: $(tail -n 3 "$tmp/err")"
elif v=$(awk -F, 'NR > 1 && $5 != "" {if (!f) f = $5; l = $5} END {printf "%.4f -> %.4f", f, l;
        exit !(l < 0.7 * f)}' "$tmp/ft.csv"); then
    ok "masked fine-tune: validation loss $v"
else
    fail "masked fine-tune: validation loss $v (want the last below 0.7 x the first)"
fi

# --stop-at-eos on a byte model without an EOS token: greedy output cut after its first newline
full=$("$B" generate "$tmp/ft.gguf" --prompt "item 3 colour:" --n 40 2>&1; echo x)
cut=$("$B" generate "$tmp/ft.gguf" --prompt "item 3 colour:" --n 40 --stop-at-eos 2>&1; echo x)
want=$(printf '%s' "${full%x}" | sed -n '1p'; echo x)
if [ "$cut" = "$want" ] && [ "$cut" != "$full" ]; then
    ok "--stop-at-eos stops at the first newline: '$(head -n 1 <<<"$cut")'"
elif [ "$cut" = "$want" ]; then
    ok "--stop-at-eos (the fine-tuned model wrote no newline in 40 tokens: nothing to cut)"
else
    fail "--stop-at-eos: '$cut' vs the full output '$full'"
fi

# ---- a real vocabulary -----------------------------------------------------------------------
spm="$golden/llama-vocab/ggml-vocab-llama-spm.gguf"
if [ ! -s "$spm" ]; then
    echo "SKIP real-vocabulary checks: $spm is missing"
elif ! "$B" tokenize "$spm" --text "Hello world" >"$tmp/tok" 2>"$tmp/err"; then
    echo "SKIP real-vocabulary checks: bitgrad cannot read $spm: $(head -n 1 "$tmp/err")"
else
    if ! "$B" train --vocab-from "$spm" --data "$tmp/notes.txt" --out "$tmp/spm.gguf" \
        --csv "$tmp/s.csv" --n-embd 64 --n-layer 1 --n-head 2 --n-ff 128 --seq 32 --batch 2 \
        --steps 2 2>"$tmp/err"; then
        fail "train --vocab-from: $(tail -n 2 "$tmp/err")"
    else
        grep -q "(llama tokenizer" "$tmp/err" && ok "train --vocab-from: $(grep '^data:' "$tmp/err")" ||
            fail "train --vocab-from did not use the SentencePiece tokenizer: $(head -n 2 "$tmp/err")"
    fi
    out=$("$B" eval "$tmp/spm.gguf" --ids 1,300,31999 2>&1)
    [ $? -eq 0 ] && grep -q "pos 2 id 31999" <<<"$out" && ok "eval --ids 1,300,31999 on a 32000-token model" ||
        fail "eval --ids 1,300,31999: $out"
    expect_error 2 "outside the model's vocabulary" "eval --ids 32000 on a 32000-token model" -- \
        "$B" eval "$tmp/spm.gguf" --ids 1,32000
    want=$(cat "$tmp/tok")
    got=$("$B" tokenize "$tmp/spm.gguf" --text "Hello world" 2>&1)
    [ "$got" = "$want" ] && ok "the checkpoint carries the vocabulary's tokenizer: $got" ||
        fail "tokenize on the checkpoint: '$got', the vocabulary: '$want'"
    out=$("$B" eval "$tmp/spm.gguf" --prompt "Hello world" --all 2>&1)
    n=$(grep -c "^pos" <<<"$out")
    [ "$n" -eq "$(($(tr -cd ',' <"$tmp/tok" | wc -c) + 1))" ] && ok "eval --prompt: $n positions (BOS included)" ||
        fail "eval --prompt: $n positions: $out"
    out=$("$B" generate "$tmp/spm.gguf" --prompt "Hello" --n 4 2>&1)
    [ $? -eq 0 ] && [[ $out == Hello* ]] && ok "generate with SentencePiece: '$out'" ||
        fail "generate with SentencePiece: $out"
    # export of the --vocab-from checkpoint carries the vocabulary (the checkpoint's tokenizer.*
    # keys); an exporter that only writes bitgrad's byte vocabulary says so (skipped then)
    if ! "$B" export "$tmp/spm.gguf" --out "$tmp/spm_model.gguf" >"$tmp/out" 2>"$tmp/err"; then
        if grep -q "needs n_vocab 256" "$tmp/err"; then
            echo "SKIP export of a 32000-token model: $(head -n 1 "$tmp/err")"
        else
            fail "export of the --vocab-from checkpoint: $(head -n 2 "$tmp/err")"
        fi
    else
        got=$("$B" tokenize "$tmp/spm_model.gguf" --text "Hello world" 2>&1)
        [ "$got" = "$want" ] && ok "the exported model carries the vocabulary's tokenizer: $got" ||
            fail "tokenize on the exported model: '$got', the vocabulary: '$want'"
    fi
    if "$B" finetune "$tmp/spm.gguf" --data "$tmp/notes.txt" --steps 1 --batch 2 --seq 16 \
        --out "$tmp/spmft.gguf" --csv "$tmp/x.csv" 2>"$tmp/err" && grep -q "(llama tokenizer" "$tmp/err"; then
        ok "finetune tokenizes with the model's tokenizer: $(grep '^data:' "$tmp/err")"
    else
        fail "finetune on the 32000-token model: $(head -n 3 "$tmp/err")"
    fi
fi

if [ "$failed" -ne 0 ]; then
    echo "e2e_cli: FAILED"
    exit 1
fi
echo "e2e_cli: all checks passed"
