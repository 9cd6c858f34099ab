#!/bin/sh
# Runs the tests whose code uses threads on a ThreadSanitizer build
# (make test-tsan): usage: tsan.sh BUILD_DIR TESTS_REGEX [JOBS].
# Any report fails the run (halt_on_error). Some kernels place memory where
# this TSan runtime does not expect it ("FATAL: ThreadSanitizer: unexpected
# memory mapping", with vm.mmap_rnd_bits above 28 on clang before 18); a
# probe program finds that out first, and the tests then run with address
# randomisation off (setarch -R), which avoids it.
set -eu
dir=$1
tests=$2
jobs=${3:-2}
cc=$(sed -n 's/^CMAKE_C_COMPILER:[A-Z]*=//p' "$dir/CMakeCache.txt")
TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export TSAN_OPTIONS

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf 'int main(void) { return 0; }\n' >"$probe/p.c"
if ! "$cc" -fsanitize=thread -o "$probe/p" "$probe/p.c" 2>"$probe/err"; then
    echo "tsan: $cc cannot link -fsanitize=thread (Debian: libclang-rt-N-dev for clang N," \
        "libtsan2 for gcc; sh scripts/deps.sh --test installs the first):" >&2
    cat "$probe/err" >&2
    exit 1
fi
run=""
if ! "$probe/p" >"$probe/out" 2>&1; then
    arch=$(uname -m)
    if command -v setarch >/dev/null 2>&1 && setarch "$arch" -R "$probe/p" >/dev/null 2>&1; then
        echo "tsan: $(head -n 1 "$probe/out")"
        echo "tsan: running the tests under setarch $arch -R (no address randomisation)"
        run="setarch $arch -R"
    else
        echo "tsan: ThreadSanitizer programs cannot run on this machine:" >&2
        cat "$probe/out" >&2
        exit 1
    fi
fi
cd "$dir"
# shellcheck disable=SC2086
$run ctest --output-on-failure -j "$jobs" -R "$tests"
