#!/bin/sh
# Runs the libFuzzer harnesses of the file parsers (.npy, .safetensors), each
# for a bounded time (the first argument, in seconds; 30 by default) over a
# copy of its seed corpus with its dictionary. Needs clang with libFuzzer;
# says so and skips without it (the corpus replay tests in ctest run
# everywhere).
set -eu
seconds=${1:-30}
if ! command -v clang >/dev/null 2>&1; then
    echo "fuzz: clang not found; skipping the libFuzzer run"
    exit 0
fi
cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
    -DQKV_BUILD_FUZZ=ON -DQKV_BUILD_TESTS=OFF >/dev/null
cmake --build build/fuzz --target fuzz_npy fuzz_safetensors -j 2 >/dev/null
for h in npy safetensors; do
    work=build/fuzz/corpus-$h
    log=build/fuzz/fuzz-$h.log
    rm -rf "$work"
    mkdir -p "$work"
    cp tests/fuzz/corpus/$h/* "$work"/
    echo "fuzz: fuzz_$h for ${seconds}s"
    build/fuzz/fuzz_$h -max_total_time="$seconds" -max_len=4096 -print_final_stats=1 \
        -dict=tests/fuzz/$h.dict \
        "$work" 2>"$log" || { tail -n 40 "$log"; exit 1; }
    grep -E '^stat::(number_of_executed_units|new_units_added)' "$log" | sed "s/^/fuzz: $h: /"
done
echo "fuzz: no crash"
