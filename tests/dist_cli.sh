#!/usr/bin/env bash
# dist_cli.sh BITGRAD - `mpirun -np 2 bitgrad train` end to end (CSV columns: step,loss,
#   tokens_per_s,lr,val_loss,val_ppl):
#   0. 2 ranks x --batch 2 follow 1 process x --batch 4 (the CSV's loss at every step within
#      1e-5 relative), for `train` and for a LoRA `finetune` of the model it wrote, and
#      rank 0 alone prints;
#   0a. the same with --grad-accum 2 and --val (rank 0 alone evaluates);
#   then its faults:
#   1. rank 1 killed (SIGKILL) mid-run: the job ends within 30 s, a message names rank 1 and
#      the signal, and the last periodic checkpoint is intact (a 1-process run resumes it);
#   2. rank 1 cannot read its data: the job ends within 30 s, naming rank 1 and the file;
#   3. Ctrl-C (SIGINT to mpirun): rank 0 writes one checkpoint, which resumes.
# Exits 77 when mpirun is absent.
set -u
BITGRAD=$1
command -v mpirun >/dev/null 2>&1 || { echo "SKIP: mpirun not found"; exit 77; }
MPI=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && MPI+=(--allow-run-as-root)
export OMPI_MCA_mpi_yield_when_idle=1 OMP_NUM_THREADS=1
export OMPI_MCA_mca_base_component_disable_dlclose=1
# Full stacks for allocations (Open MPI's libraries have no frame pointers): the suppressions
# match on them. Only matters in a sanitizer build.
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
export LSAN_OPTIONS="suppressions=$(dirname "$0")/lsan_mpi.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
# Fixed, generated text (not the repository's files, which change with every commit): a full
# QAT run amplifies the reduction's different summation order whenever a latent weight sits
# on a ternary rounding boundary and flips, so the 1-vs-2-process difference depends on the
# data: ~2e-7 on this text and on tests/*.c, 1.5e-5 and 2.0e-5 on two other texts tried
# (DESIGN.md + STYLE.md; README.md + tests/*.c). test_dist checks the exact invariant: 2 ranks
# are bit-identical to 1 process running the same two slices as micro-batches.
for i in $(seq 1 3000); do
    echo "line $i: the quick brown fox $((i * 7 % 13)) jumps over $((i % 17)) lazy dogs"
done > "$W/data.txt"
ARGS=(--data "$W/data.txt" --seq 32 --n-embd 64 --n-layer 2 --n-head 4 --n-ff 128 --batch 2)
fails=0
check() { if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fails=$((fails + 1)); fi; }

# rank $2's pid among the children of mpirun $1
rank_pid() {
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"; return 0
        fi
    done
    return 1
}

# ---- 0. the same run on 1 and on 2 processes ----
"$BITGRAD" train "${ARGS[@]}" --batch 4 --steps 8 --out "$W/one.gguf" --csv "$W/one.csv" > "$W/one.log" 2>&1
"${MPI[@]}" -np 2 "$BITGRAD" train "${ARGS[@]}" --steps 8 --out "$W/two.gguf" --csv "$W/two.csv" > "$W/two.log" 2>&1
rc=$?
check "2 processes train" "[ $rc -eq 0 ]"
check "world size and global batch printed once" "[ \$(grep -c 'world size 2: 2 x batch 2 = global batch 4' '$W/two.log') = 1 ]"
worst=$(paste -d, "$W/one.csv" "$W/two.csv" | tail -n +2 | awk -F, '{d = $2 - $8; if (d < 0) d = -d; r = d / $2; if (r > m) m = r} END {printf "%.3g", m}')
echo "  CSV losses, 2 ranks vs 1 process over 8 steps: max relative difference $worst"
check "losses within 1e-5 relative at every step" "awk 'BEGIN {exit !($worst <= 1e-5)}' && [ \$(wc -l < '$W/two.csv') = 9 ]"

# ---- 0a. the same with --grad-accum 2 and validation (rank 0 evaluates) ----
head -c 4000 "$W/data.txt" > "$W/val.txt"
GA=(--grad-accum 2 --val "$W/val.txt" --eval-every 2 --steps 4)
"$BITGRAD" train "${ARGS[@]}" "${GA[@]}" --batch 4 --out "$W/ga1.gguf" --csv "$W/ga1.csv" > "$W/ga1.log" 2>&1
"${MPI[@]}" -np 2 "$BITGRAD" train "${ARGS[@]}" "${GA[@]}" --out "$W/ga2.gguf" --csv "$W/ga2.csv" \
    > "$W/ga2.log" 2>&1
rc=$?
check "2 processes with --grad-accum 2 and --val" "[ $rc -eq 0 ] && [ \$(wc -l < '$W/ga2.csv') = 5 ]"
# columns 2 and 5: loss and val_loss of 1 process; 8 and 11: of 2 ranks
worst=$(paste -d, "$W/ga1.csv" "$W/ga2.csv" | tail -n +2 | awk -F, '{d = $2 - $8; if (d < 0) d = -d; r = d / $2; if (r > m) m = r; if ($5 != "" || $11 != "") {if ($5 == "" || $11 == "") m = 1; else {d = $5 - $11; if (d < 0) d = -d; r = d / $5; if (r > m) m = r}}} END {printf "%.3g", m}')
echo "  --grad-accum 2 + validation, 2 ranks vs 1 process over 4 steps: max relative difference $worst"
check "losses and val_loss within 1e-5 relative" "awk 'BEGIN {exit !($worst <= 1e-5)}' && [ \$(cut -d, -f5 '$W/ga2.csv' | grep -c .) = 3 ]"
check "validation printed once per evaluation" "[ \$(grep -c 'val_loss' '$W/ga2.log') = 2 ]"

# ---- 0b. a LoRA fine-tune of the model just trained, on 1 and on 2 processes ----
"$BITGRAD" export "$W/one.gguf" --out "$W/model.gguf" --type f32 > "$W/export.log" 2>&1
FT=(finetune "$W/model.gguf" --data "$W/data.txt" --seq 32 --lora-r 4 --steps 6)
"$BITGRAD" "${FT[@]}" --batch 4 --out "$W/f1.gguf" --csv "$W/f1.csv" --adapter-out "$W/a1.gguf" > "$W/f1.log" 2>&1
"${MPI[@]}" -np 2 "$BITGRAD" "${FT[@]}" --batch 2 --out "$W/f2.gguf" --csv "$W/f2.csv" \
    --adapter-out "$W/a2.gguf" > "$W/f2.log" 2>&1
rc=$?
check "LoRA fine-tune on 2 processes" "[ $rc -eq 0 ] && [ -s '$W/a2.gguf' ] && [ -s '$W/f2.gguf' ]"
check "trainable parameters printed once" "[ \$(grep -c 'trainable params' '$W/f2.log') = 1 ]"
worst=$(paste -d, "$W/f1.csv" "$W/f2.csv" | tail -n +2 | awk -F, '{d = $2 - $8; if (d < 0) d = -d; r = d / $2; if (r > m) m = r} END {printf "%.3g", m}')
echo "  LoRA CSV losses, 2 ranks vs 1 process over 6 steps: max relative difference $worst"
check "LoRA losses within 1e-5 relative at every step" "awk 'BEGIN {exit !($worst <= 1e-5)}' && [ \$(wc -l < '$W/f2.csv') = 7 ]"

# ---- 1. a rank dies ----
"${MPI[@]}" -np 2 "$BITGRAD" train "${ARGS[@]}" --steps 1000000 --save-every 5 \
    --out "$W/k.gguf" --csv "$W/k.csv" > "$W/kill.log" 2>&1 &
mp=$!
for _ in $(seq 1 600); do [ -f "$W/k.gguf" ] && break; sleep 0.1; done
sleep 1
victim=$(rank_pid "$mp" 1)
t0=$(date +%s.%N)
kill -KILL "$victim"
for _ in $(seq 1 600); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
t1=$(date +%s.%N)
kill -0 "$mp" 2>/dev/null && { kill -KILL "$mp"; echo "mpirun still running after 60 s"; }
wait "$mp"; rc=$?
dt=$(echo "$t1 - $t0" | bc)
echo "  killed rank 1 (pid $victim): mpirun exited $rc after ${dt}s"
grep -i 'rank 1' "$W/kill.log" | head -3 | sed 's/^/  | /'
check "job ends within 30 s of a rank's death" "[ \$(echo \"$dt < 30\" | bc) = 1 ] && [ $rc -ne 0 ]"
check "the message names rank 1 and the signal" "grep -qiE 'rank 1 .*(signal 9|killed)' '$W/kill.log'"
step=$(tail -n 1 "$W/k.csv" | cut -d, -f1)
check "the last checkpoint resumes in one process" \
    "'$BITGRAD' train ${ARGS[*]} --batch 4 --resume '$W/k.gguf' --steps 1000000 --save-every 1 --out '$W/k2.gguf' --csv '$W/k2.csv' > '$W/resume.log' 2>&1 & p=\$!; sleep 3; kill -INT \$p; wait \$p; grep -q 'resumed' '$W/resume.log' && grep -q 'interrupted: wrote' '$W/resume.log'"
ls "$W"/*.tmp 2>/dev/null && check "no temporary file left" false

# ---- 2. a rank cannot read its data ----
t0=$(date +%s.%N)
timeout 60 "${MPI[@]}" -np 1 "$BITGRAD" train "${ARGS[@]}" --steps 50 --out "$W/d.gguf" --csv "$W/d.csv" : \
    -np 1 "$BITGRAD" train "${ARGS[@]}" --data "$W/missing.txt" --steps 50 --out "$W/d.gguf" \
    --csv "$W/d.csv" > "$W/data.log" 2>&1
rc=$?
dt=$(echo "$(date +%s.%N) - $t0" | bc)
echo "  rank 1 without data: exit $rc after ${dt}s"
grep -i 'rank 1' "$W/data.log" | head -2 | sed 's/^/  | /'
check "job ends within 30 s when a rank cannot read its data" "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ \$(echo \"$dt < 30\" | bc) = 1 ]"
check "the message names rank 1 and the file" "grep -q 'rank 1 of 2: .*missing.txt' '$W/data.log'"
check "no checkpoint from the failed job" "[ ! -f '$W/d.gguf' ]"

# ---- 3. Ctrl-C ----
"${MPI[@]}" -np 2 "$BITGRAD" train "${ARGS[@]}" --steps 1000000 --out "$W/c.gguf" --csv "$W/c.csv" \
    > "$W/int.log" 2>&1 &
mp=$!
for _ in $(seq 1 600); do [ -s "$W/c.csv" ] && [ "$(wc -l < "$W/c.csv")" -gt 3 ] && break; sleep 0.1; done
kill -INT "$mp"
for _ in $(seq 1 300); do kill -0 "$mp" 2>/dev/null || break; sleep 0.1; done
wait "$mp"
tail -n 2 "$W/int.log" | sed 's/^/  | /'
check "Ctrl-C: rank 0 wrote one checkpoint" "[ \$(grep -c 'interrupted: wrote checkpoint' '$W/int.log') = 1 ]"
check "Ctrl-C: the checkpoint resumes" "'$BITGRAD' train ${ARGS[*]} --batch 4 --resume '$W/c.gguf' --steps \$((\$(tail -n1 '$W/c.csv' | cut -d, -f1) + 2)) --out '$W/c2.gguf' --csv '$W/c2.csv' > '$W/r2.log' 2>&1"
echo "$fails failed"
[ "$fails" -eq 0 ]
