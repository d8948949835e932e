#!/usr/bin/env bash
# Data-parallel training under mpirun (README: Scaling out) gives the bits of one process:
#   same_bits_for_every_rank_count  the golden run of tests/test_determinism.c with K = 1, 2, 3, 4
#       ranks: model.safetensors and optimizer.safetensors have the golden SHA-256 (the non-MPI
#       library's bits) and equal those of the same binary run without mpirun, and train.csv equals
#       that run's but for its two timing columns (examples_per_s, elapsed_s);
#   resume_with_another_rank_count  2 steps with K = 2, resumed with K = 3: the uninterrupted run's
#       files;
#   killed_rank_ends_the_job  a longer run with K = 2 whose rank 1 is killed (SIGKILL) after some
#       steps: mpirun exits non-zero within LIMIT seconds, and --resume (K = 3) ends with the
#       uninterrupted run's files;
#   interrupt_saves  SIGINT to mpirun: a non-zero exit within LIMIT seconds, rank 0's checkpoint
#       of the last step it logged ("interrupted: checkpoint saved"), and --resume (K = 2) ends with
#       the uninterrupted run's files;
#   run_same_results  `pathformer run` (pre-training, fine-tuning, evaluations) with K = 3: the
#       checkpoints and evaluations of the run without mpirun, and a report.
# Skipped, saying so, where pathformer was built without MPI or mpirun is missing.
# Usage: tests/mpi_test.sh [PATHFORMER]  (default ./pathformer)
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(realpath "${1:-$root/pathformer}")
if ! command -v mpirun >/dev/null; then
    echo "mpi test: skipped (no mpirun: apt-get install openmpi-bin)"
    exit 0
fi
if "$bin" --version | grep -q "^MPI: none"; then
    echo "mpi test: skipped ($bin was built without MPI: apt-get install libopenmpi-dev, then make)"
    exit 0
fi
mpirun=(mpirun --oversubscribe)
[ "$(id -u)" -ne 0 ] || mpirun+=(--allow-run-as-root)  # CI runs as root
LIMIT=60
# A resume runs the rest of a run: up to 3,940 tiny steps, each with an allreduce between ranks that
# may outnumber the cores. Its limit only guards against a hang (on 2 loaded cores the K = 3 resume
# of the long run took 67 s, past LIMIT: CI failed on it once).
RUN_LIMIT=600
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
failed=0
fail() {
    echo "FAIL: $*"
    failed=1
}

# The golden run's settings and hashes, from the determinism test (one source for both).
golden=(d_model=32 n_layers=2 n_heads=2 d_ff=64 batch_size=300 micro_batch=32 "lr=1e-3..1e-4@4:cos" seed=7
        eval_examples=0 checkpoint_every=0)
golden_hash() { grep -o "$1 = \"[0-9a-f]*\"" "$root/tests/test_determinism.c" | cut -d'"' -f2; }
golden_model=$(golden_hash GOLDEN_MODEL)
golden_optimizer=$(golden_hash GOLDEN_OPTIMIZER)
[ -n "$golden_model" ] && [ -n "$golden_optimizer" ] || { echo "mpi test: no golden hashes in test_determinism.c"; exit 1; }

# train.csv without its last two columns (the timings)
log_bits() { sed -E 's/,[^,]*,[^,]*$//' "$1/train.csv"; }
# Whether run folder $2 holds the same model, optimizer and train.csv (timings aside) as $1.
same_run() {
    cmp -s "$1/model.safetensors" "$2/model.safetensors" && cmp -s "$1/optimizer.safetensors" "$2/optimizer.safetensors" &&
        diff -q <(log_bits "$1") <(log_bits "$2") >/dev/null
}
train() {  # train K OUT SETTINGS...: the tiny preset's pre-training; K = 0 runs without mpirun
    local k=$1 out=$2
    shift 2
    if [ "$k" -eq 0 ]; then
        "$bin" train --preset tiny --threads 1 --out "$out" "$@" >"$out.log" 2>&1
    else
        timeout $RUN_LIMIT "${mpirun[@]}" -np "$k" "$bin" train --preset tiny --threads 1 --out "$out" "$@" >"$out.log" 2>&1
    fi
}
resume() {  # resume K OUT: continues the run in OUT with K ranks
    timeout $RUN_LIMIT "${mpirun[@]}" -np "$1" "$bin" train --resume --threads 1 --out "$2" >"$2.log" 2>&1
}

echo "--- same_bits_for_every_rank_count"
train 0 "$dir/plain" "${golden[@]}" || { cat "$dir/plain.log"; exit 1; }
for k in 1 2 3 4; do
    if ! train $k "$dir/k$k" "${golden[@]}"; then
        fail "K=$k: mpirun failed"
        tail -20 "$dir/k$k.log"
        continue
    fi
    model=$(sha256sum <"$dir/k$k/model.safetensors" | cut -d' ' -f1)
    optimizer=$(sha256sum <"$dir/k$k/optimizer.safetensors" | cut -d' ' -f1)
    [ "$model" = "$golden_model" ] || fail "K=$k: model.safetensors $model, golden $golden_model"
    [ "$optimizer" = "$golden_optimizer" ] || fail "K=$k: optimizer.safetensors $optimizer, golden $golden_optimizer"
    same_run "$dir/plain" "$dir/k$k" || fail "K=$k: files differ from the run without mpirun"
    grep -q "over $k MPI ranks" "$dir/k$k.log" || [ $k -eq 1 ] || fail "K=$k: the log does not name $k ranks"
    lines=$(grep -c "^run folder:" "$dir/k$k.log")
    [ "$lines" -eq 1 ] || fail "K=$k: $lines ranks printed (rank 0 alone prints)"
    echo "K=$k: golden model and optimizer, train.csv as without mpirun"
done

echo "--- resume_with_another_rank_count"
train 2 "$dir/resumed" "${golden[@]}" --stop-after 2 || fail "K=2, 2 steps: mpirun failed"
grep -q "stopped after 2 steps" "$dir/resumed.log" || fail "K=2 did not stop after 2 steps"
resume 3 "$dir/resumed" || fail "resume with K=3: mpirun failed"
same_run "$dir/plain" "$dir/resumed" && echo "2 steps with K=2, resumed with K=3: the uninterrupted run's files" ||
    fail "resumed run differs from the uninterrupted one"

# A run long enough to be stopped part-way: 4,000 steps, a checkpoint every 20. (400 steps took
# 0.5 s on the quiet machine: the run ended before mpirun's SIGTERM reached it.)
long=(steps=4000 checkpoint_every=20 micro_batch=8 eval_examples=0 lr=1e-3 seed=3)
train 0 "$dir/long" "${long[@]}" || { cat "$dir/long.log"; exit 1; }
# Starts a K-rank run of the long settings in the background; sets $job to mpirun's pid once its
# train.csv has $2 rows.
start_long() {
    local k=$1 rows=$2 out=$3
    "${mpirun[@]}" -np "$k" "$bin" train --preset tiny --threads 1 --out "$out" "${long[@]}" >"$out.log" 2>&1 &
    job=$!
    for _ in $(seq 3000); do  # up to 150 s for the first rows (a loaded machine)
        [ "$({ wc -l <"$out/train.csv"; } 2>/dev/null || echo 0)" -gt "$rows" ] && return 0
        kill -0 $job 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}
# Waits for $job up to LIMIT seconds; its exit status, or 124 (killed) when it outlives the limit.
wait_job() {
    for _ in $(seq $((LIMIT * 10))); do
        kill -0 "$job" 2>/dev/null || { wait "$job"; return; }
        sleep 0.1
    done
    kill -9 "$job"
    wait "$job"
    return 124
}
# The pid of rank $2 among the children of mpirun $1 (Open MPI starts local ranks as its children).
rank_pid() {
    for pid in $(pgrep -P "$1"); do
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$pid"; return; }
    done
}

echo "--- killed_rank_ends_the_job"
if start_long 2 60 "$dir/killed"; then
    victim=$(rank_pid "$job" 1)
    if [ -z "$victim" ]; then
        fail "no rank 1 among mpirun's children"
        kill "$job"
        wait "$job"
    else
        started=$(date +%s)
        kill -9 "$victim"
        wait_job
        rc=$?
        took=$(($(date +%s) - started))
        [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "rank 1 killed: mpirun exited with $rc after ${took} s" ||
            fail "rank 1 killed: mpirun exit status $rc (124: still running after $LIMIT s)"
        resume 3 "$dir/killed" || fail "resume with K=3 after the kill: mpirun failed"
        same_run "$dir/long" "$dir/killed" && echo "resumed with K=3: the uninterrupted run's files" ||
            fail "the run resumed after the kill differs from the uninterrupted one"
    fi
else
    fail "the long run ended before 60 steps (or never wrote them)"
    tail -5 "$dir/killed.log"
fi

echo "--- interrupt_saves"
if start_long 2 60 "$dir/interrupted"; then
    started=$(date +%s)
    kill -INT "$job"
    wait_job
    rc=$?
    took=$(($(date +%s) - started))
    [ $rc -ne 0 ] && [ $rc -ne 124 ] && echo "SIGINT: mpirun exited with $rc after ${took} s" ||
        fail "SIGINT: mpirun exit status $rc (124: still running after $LIMIT s)"
    # the checkpoint is of the last step train.csv logged (not the last checkpoint_every's)
    saved=$(head -c 4096 "$dir/interrupted/model.safetensors" | grep -a -o '"step":"[0-9]*"' | tr -dc 0-9)
    logged=$(($(wc -l <"$dir/interrupted/train.csv") - 1))
    if grep -q "interrupted: checkpoint saved at step $saved " "$dir/interrupted.log" && [ "$saved" = "$logged" ]; then
        echo "rank 0 saved the checkpoint of step $saved, the last it logged"
    else
        fail "SIGINT: rank 0 did not save its checkpoint"
        tail -5 "$dir/interrupted.log"
    fi
    resume 2 "$dir/interrupted" || fail "resume with K=2 after SIGINT: mpirun failed"
    same_run "$dir/long" "$dir/interrupted" && echo "resumed with K=2: the uninterrupted run's files" ||
        fail "the run resumed after SIGINT differs from the uninterrupted one"
else
    fail "the long run ended before 60 steps (or never wrote them)"
    tail -5 "$dir/interrupted.log"
fi

echo "--- run_same_results"
# The whole experiment (pre-training, fine-tuning, the evaluations split across ranks, the report by
# rank 0) with K = 3: the checkpoints and every evaluation of the run without mpirun.
"$bin" run --preset tiny --threads 1 --out "$dir/run0" >"$dir/run0.log" 2>&1 || { cat "$dir/run0.log"; exit 1; }
if timeout $RUN_LIMIT "${mpirun[@]}" -np 3 "$bin" run --preset tiny --threads 1 --out "$dir/run3" >"$dir/run3.log" 2>&1; then
    compared=0
    for f in $(cd "$dir/run0" && find . -name "*.safetensors" -o -name "*.json" -path "./eval/*" | sort); do
        compared=$((compared + 1))
        cmp -s "$dir/run0/$f" "$dir/run3/$f" || fail "run with K=3: $f differs"
    done
    [ $compared -ge 8 ] || fail "run: only $compared files to compare"
    [ -f "$dir/run3/report.html" ] || fail "run with K=3: no report"
    echo "run with K=3: $compared checkpoints and evaluations as without mpirun, and the report"
else
    fail "run with K=3: mpirun failed"
    tail -20 "$dir/run3.log"
fi

[ $failed -eq 0 ] && echo "mpi test: passed" || echo "mpi test: FAILED"
exit $failed
