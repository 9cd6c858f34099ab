#!/bin/sh
# The demonstration `make` ends with: qkv run on generated data with the
# options people use, then on a case whose answer PyTorch computed, checked;
# a usage error as scripts see it; a heatmap; and the worked example.
set -eu
bin=${1:-build/release}
out=$bin/demo
mkdir -p "$out"
"$bin/make_inputs" "$out"
echo
echo "\$ qkv run -q q.npy -k k.npy -v v.npy -o out.npy --causal --kv-lens kv_lens.npy --weights p.npy --lse lse.npy"
"$bin/qkv" run -q "$out/q.npy" -k "$out/k.npy" -v "$out/v.npy" -o "$out/out.npy" \
    --causal --kv-lens "$out/kv_lens.npy" --weights "$out/p.npy" --lse "$out/lse.npy"
ls -l "$out"/out.npy "$out"/p.npy "$out"/lse.npy
echo
echo "Against PyTorch (tests/data/oracle/seed_example_like: one head, 4 tokens, d_k = 64):"
case=tests/data/oracle/seed_example_like
"$bin/qkv" run -q $case/q.npy -k $case/k.npy -v $case/v.npy -o "$out/seed_out.npy" \
    --weights "$out/seed_p.npy" --lse "$out/seed_lse.npy"
"$bin/npy_compare" "$out/seed_out.npy" $case/out.npy
"$bin/npy_compare" "$out/seed_p.npy" $case/weights.npy
"$bin/npy_compare" "$out/seed_lse.npy" $case/lse.npy
echo
echo "A usage error, as scripts see it (exit status 2, one line on stderr):"
set +e
"$bin/qkv" run -q "$out/q.npy" -k "$out/k.npy" -v "$out/v.npy" -o "$out/x.npy" --scale abc
echo "exit status $?"

echo
echo "\$ qkv heatmap p.npy -o p.svg --head 0     (one head of the causal weights above)"
"$bin/qkv" heatmap "$out/p.npy" -o "$out/p.svg" --head 0
ls -l "$out/p.svg"
echo
echo "\$ qkv explain                              (the worked example, number by number)"
"$bin/qkv" explain
