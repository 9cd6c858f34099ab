#!/bin/sh
# Runs the libFuzzer harness of the .npy parser for a bounded time over a
# copy of the seed corpus. Needs clang with libFuzzer; says so and skips
# without it (the corpus replay test in ctest runs everywhere).
set -eu
seconds=${1:-30}
if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found; skipping the libFuzzer run"
    exit 0
fi
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DQKV_BUILD_FUZZ=ON -DQKV_BUILD_TESTS=OFF >/dev/null
cmake --build build/fuzz --target fuzz_npy -j 2 >/dev/null
work=build/fuzz/corpus
rm -rf "$work"
mkdir -p "$work"
cp tests/fuzz/corpus/npy/* "$work"/
echo "fuzz: fuzz_npy for ${seconds}s"
build/fuzz/fuzz_npy -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
    -dict=tests/fuzz/npy.dict \
    "$work" 2>build/fuzz/fuzz.log || { tail -n 40 build/fuzz/fuzz.log; exit 1; }
grep -E '^stat::(number_of_executed_units|new_units_added)' build/fuzz/fuzz.log | sed 's/^/fuzz: /'
echo "fuzz: no crash"
