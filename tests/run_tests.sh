#!/usr/bin/env bash
# Runs every unit test binary of the optimized build, then of the sanitizer build, then the layout
# check and the report's headless-browser test, and prints one closing line "N passed, N failed"
# counting them. Exits non-zero if any failed.
set -u
build=${1:-build}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
passed=0
failed=0
failed_names=()
run() {
    local name=$1
    shift
    echo "=== $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names+=("$name")
    fi
}
for t in "$build"/test_*; do
    [ -x "$t" ] || continue
    run "$(basename "$t")" "$t"
done
for t in "$build"/asan/test_*; do
    [ -x "$t" ] || continue
    run "asan/$(basename "$t")" env PF_SANITIZER=1 PF_BIN="$build/asan/pathformer" \
        ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$t"
done
# The same bits on other builds: plain x86-64, AVX2, and ARM64 under qemu-user (each skipped, saying
# so, where this machine cannot run it), all agreeing on the golden run (scripts/variant_tests.sh).
run "variant_builds" bash scripts/variant_tests.sh "$build"
# Data-parallel training under mpirun: the one-process bits for 1 to 4 ranks, resume with another
# rank count, a killed rank, Ctrl-C (tests/mpi_test.sh; skipped, saying so, without MPI).
run "mpi" bash tests/mpi_test.sh "$root/pathformer"
# The layout's rules (scripts/check_layers.py): dependencies one way between the areas of src/, and
# no cycle of includes or of symbols between modules.
run "check_layers" python3 scripts/check_layers.py --objects "$build/obj"
# The report in a real browser: a tiny pipeline run, opened in headless Chromium; the screenshot
# stays as a CI artefact.
browser_test() {
    local dir
    dir=$(mktemp -d)
    if ! ./pathformer run --preset tiny --out "$dir/run" >"$dir/log" 2>&1; then
        cat "$dir/log"
        rm -rf "$dir"
        return 1
    fi
    node tests/report_browser.mjs "$dir/run/report.html" "$build/report-screenshot.png"
    local rc=$?
    rm -rf "$dir"
    return $rc
}
run "report_browser" browser_test
# make install into a temporary DESTDIR; the installed binary writes a report (tests/install_test.sh)
run "install" bash tests/install_test.sh
# Each fuzz target briefly (FUZZ_SMOKE_SECONDS, default 10) from its seed corpus and the inputs that
# once crashed it (fuzz/regressions/NAME, all run first); a long run is `make fuzz`.
fuzz_smoke() {
    local target=$1 name dir rc
    name=$(basename "$target")
    name=${name#fuzz_}
    dir=$(mktemp -d)
    "$target" -max_total_time="${FUZZ_SMOKE_SECONDS:-10}" -artifact_prefix="$build/fuzz/crash-$name-" "$dir" \
        "fuzz/corpus/$name" $(test -d "fuzz/regressions/$name" && echo "fuzz/regressions/$name") >"$dir.log" 2>&1
    rc=$?
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs" "$dir.log" | tail -1
    [ $rc -eq 0 ] || tail -30 "$dir.log"
    rm -rf "$dir" "$dir.log"
    return $rc
}
for t in "$build"/fuzz/fuzz_*; do
    [ -x "$t" ] || continue
    run "fuzz/$(basename "$t")" fuzz_smoke "$t"
done
echo
[ "$failed" -eq 0 ] || echo "failed: ${failed_names[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
