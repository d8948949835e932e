#!/usr/bin/env bash
# The same bits on every build (README: Reproducibility). Builds the library and the tests that hold
# the guarantee (test_determinism: threads, kernel variants and the golden run; test_kernels and
# test_backends: every kernel against the reference) for plain x86-64 (-march=x86-64) and for AVX2
# (-march=x86-64-v3), and, with the ARM64 cross compiler and qemu-user (scripts/deps.sh installs
# them), for ARM64 under emulation, and the x86-64 build again on an emulated AVX2-only CPU; runs
# each, skipping a build this CPU cannot run and saying so; and checks that every build's golden
# run printed the same SHA-256 (each also checks it against the constant in
# tests/test_determinism.c). The native build's tests run in tests/run_tests.sh.
# usage: scripts/variant_tests.sh [BUILD [NAME...]]   (builds go to BUILD/variants/NAME; NAMEs:
#        x86-64, x86-64-v3, aarch64; all by default)
set -u
build=${1:-build}
shift || true
only=("$@")
unset MAKEFLAGS MFLAGS MAKEOVERRIDES  # under `make check`: its CFLAGS and BUILD are not these builds'

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
tests=(test_determinism test_kernels test_backends)
failed=0
hashes=()
built=()  # the builds made by this invocation

# x86-64-v3's features, as /proc/cpuinfo names them (LZCNT left out: some hypervisors hide its flag,
# abm, on CPUs that have it, and compiled code rarely uses it)
runs_v3() {
    local flags
    flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null) || return 1
    for f in avx2 fma bmi1 bmi2 f16c movbe; do
        [[ " $flags " == *" $f "* ]] || return 1
    done
}

# build_and_run NAME RUNNER MAKE_ARGS...: RUNNER is "" or the emulator the binaries run under.
build_and_run() {
    local name=$1 runner=$2
    shift 2
    if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $name "* ]]; then return; fi
    local dir=$build/variants/$name
    echo "--- $name: building ($*)"
    if ! make --no-print-directory -j2 BUILD="$dir" "$@" $(printf "$dir/%s " "${tests[@]}") >"$dir.log" 2>&1; then
        tail -30 "$dir.log"
        echo "--- $name: build FAILED"
        failed=1
        return
    fi
    built+=("$name")
    run_tests "$name" "$dir" "$runner"
}

# run_tests NAME DIR RUNNER [FILTER]: the tests of the build in DIR, logs in DIR/NAME-TEST.log. With
# FILTER, test_determinism alone, only its tests whose names match FILTER (cmocka's * and ?).
run_tests() {
    local name=$1 dir=$2 runner=$3 filter=${4:-}
    local chosen=("${tests[@]}")
    [ -n "$filter" ] && chosen=(test_determinism)
    for t in "${chosen[@]}"; do
        local log=$dir/$name-$t.log
        if ! $runner "$dir/$t" $filter >"$log" 2>&1; then
            grep -vE '^(step|\s*$)' "$log" | tail -30
            echo "--- $name: $t FAILED"
            failed=1
        else
            echo "--- $name: $t passed"
        fi
    done
    local hash
    hash=$(grep -o 'golden run (kernels [a-z0-9]*): model [0-9a-f]*' "$dir/$name-test_determinism.log" | head -1)
    [ -n "$hash" ] && hashes+=("$name: $hash")
}

mkdir -p "$build/variants"
case "$(uname -m)" in
x86_64)
    build_and_run x86-64 "" CFLAGS="-O3 -march=x86-64"
    # The same binaries on an AVX2-only CPU (AVX2 and FMA, no AVX-512: qemu's Haswell model, whose
    # FMA is exact): the dispatch must pick the avx2 kernels there and give the golden hash. Only
    # the golden run: the kernels' and determinism tests ran on these binaries natively just above,
    # on every variant this CPU runs, avx2 and plain among them, where under qemu they take about
    # 13 minutes. The model's flags that qemu's emulator lacks are switched off (it warns of each
    # otherwise).
    if [[ " ${built[*]} " != *" x86-64 "* ]]; then
        :  # not built here (not asked for, or its build failed)
    elif command -v qemu-x86_64 >/dev/null; then
        run_tests x86-64-on-avx2-cpu "$build/variants/x86-64" \
            "env PF_EMULATED=1 OMP_THREAD_LIMIT=1 qemu-x86_64 -cpu Haswell,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm" \
            test_golden_run
        if ! grep -q 'golden run (kernels avx2)' "$build/variants/x86-64/x86-64-on-avx2-cpu-test_determinism.log"; then
            echo "--- x86-64-on-avx2-cpu: the dispatch did not pick the avx2 kernels"
            failed=1
        fi
    else
        echo "--- x86-64-on-avx2-cpu: skipped (needs qemu-user: scripts/deps.sh installs it)"
    fi
    if runs_v3; then
        build_and_run x86-64-v3 "" CFLAGS="-O3 -march=x86-64-v3"
    else
        echo "--- x86-64-v3: skipped (this CPU lacks some of AVX2, FMA, BMI1/2, F16C, MOVBE)"
    fi
    if command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64 >/dev/null &&
        [ -e /usr/lib/aarch64-linux-gnu/libcjson.so ] && [ -e /usr/lib/aarch64-linux-gnu/libcmocka.so ]; then
        # NO_BLAS: OpenBLAS stays outside the guarantee; the ARM64 libraries come through multiarch.
        # -fno-tree-loop-vectorize: Debian's gcc 12 cross compiler stops with an internal error
        # (vect_transform_reduction) on two tests' reduction loops; the kernels use NEON explicitly.
        build_and_run aarch64 "env PF_EMULATED=1 OMP_THREAD_LIMIT=1 qemu-aarch64 -L /usr/aarch64-linux-gnu" CC=aarch64-linux-gnu-gcc NO_BLAS=1 \
            CFLAGS="-O3 -fno-tree-loop-vectorize"
    else
        echo "--- aarch64: skipped (needs gcc-aarch64-linux-gnu, qemu-user and libcjson-dev:arm64, libcmocka-dev:arm64:" \
            "scripts/deps.sh installs them)"
    fi
    ;;
*)
    echo "--- x86-64 variants: skipped (not an x86-64 machine: the native build's tests cover this one)"
    ;;
esac

printf '%s\n' "${hashes[@]}"
distinct=$(printf '%s\n' "${hashes[@]}" | sed 's/.*: model //' | sort -u | wc -l)
if [ "${#hashes[@]}" -gt 0 ] && [ "$distinct" -ne 1 ]; then
    echo "the builds' golden runs differ"
    failed=1
fi
[ $failed -eq 0 ] && echo "variant builds: all passed, one golden hash"
exit $failed
