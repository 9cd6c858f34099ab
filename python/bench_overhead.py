"""How much a call from Python costs over the same call from C: times
qkv.scaled_dot_product_attention on an (H=16, L=4096, E=64) problem, then
runs `qkv bench` on the same shape (its median of runs), alternating five
times, and compares the fastest of each.

    QKV_LIBRARY=build/release/libqkv.so python3 python/bench_overhead.py build/release/qkv
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qkv  # noqa: E402


def main():
    tool = sys.argv[1] if len(sys.argv) > 1 else "build/release/qkv"
    rng = np.random.default_rng(1)
    q, k, v = (rng.uniform(-1, 1, (1, 16, 4096, 64)).astype(np.float32) for _ in range(3))
    qkv.scaled_dot_product_attention(q, k, v)  # warm-up
    py, c = [], []
    for _ in range(5):
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            qkv.scaled_dot_product_attention(q, k, v)
            runs.append(time.perf_counter() - t)
        py.append(sorted(runs)[1])
        out = subprocess.run([tool, "bench", "--shape", "1,16,16,4096,4096,64", "--json"],
                             capture_output=True, text=True, check=True).stdout
        c.append(json.loads(out)["seconds"])
    # The fastest of each: on a shared machine the slow runs are the noise.
    py_s, c_s = min(py), min(c)
    print("python %.4f s, C %.4f s (fastest of %d each): python costs %+.1f%%"
          % (py_s, c_s, len(py), 100 * (py_s / c_s - 1)))


if __name__ == "__main__":
    main()
