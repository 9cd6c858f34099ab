#!/usr/bin/env python3
"""The cost of `qkv run` around its attention call: the whole process
(start, reading the .npy inputs, the NaN scan, writing and renaming the
output, exit) against the same call timed in-process by `qkv bench`, in
one run, the two measured in turn so that the machine's drift hits both.

    python3 scripts/bench_run_overhead.py [--build build/release]
        [--shape H,L,E] [--rounds 7] [--threads N]

For each round: one `qkv bench --shape 1,H,H,L,L,E --json` (its median of
repeated calls, buffers on huge pages), then `qkv run` twice, once onto a
fresh output path and once replacing the output of the run before (the
old file's pages are freed during the rename). Prints the medians and the
ratio process / in-process; 1.05 is the issue's bar. Needs only the
standard library; make_inputs (built beside qkv) writes the inputs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/release")
    ap.add_argument("--shape", default="16,4096,128", help="H,L,E (self-attention, B = 1)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="0: qkv's default (all CPUs)")
    args = ap.parse_args()
    h, l, e = (int(x) for x in args.shape.split(","))
    qkv = os.path.join(args.build, "qkv")
    make_inputs = os.path.join(args.build, "make_inputs")
    for exe in (qkv, make_inputs):
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench_run_overhead: {exe} not found; build first (make build)")
    threads = ["--threads", str(args.threads)] if args.threads else []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        subprocess.run([make_inputs, d, "1", str(h), str(h), str(l), str(e)], check=True,
                       stdout=subprocess.DEVNULL)
        run = [qkv, "run", "-q", f"{d}/q.npy", "-k", f"{d}/k.npy", "-v", f"{d}/v.npy"] + threads
        bench = [qkv, "bench", "--json", "--shape", f"1,{h},{h},{l},{l},{e}"] + threads
        # One untimed run first, so that the page cache holds the inputs.
        subprocess.run(run + ["-o", f"{d}/o.npy"], check=True)
        inproc, fresh, replace = [], [], []
        for r in range(args.rounds):
            out = subprocess.run(bench, check=True, capture_output=True, text=True).stdout
            inproc.append(json.loads(out.splitlines()[-1])["seconds"])
            path = f"{d}/fresh{r}.npy"
            t = time.perf_counter()
            subprocess.run(run + ["-o", path], check=True)
            fresh.append(time.perf_counter() - t)
            os.unlink(path)  # keep the page cache from filling with outputs
            t = time.perf_counter()
            subprocess.run(run + ["-o", f"{d}/o.npy"], check=True)
            replace.append(time.perf_counter() - t)
    flops = 4.0 * h * l * l * e
    m_in, m_fresh, m_rep = (statistics.median(x) for x in (inproc, fresh, replace))
    print(f"qkv run overhead: H={h} L={l} E={e}, {args.rounds} rounds, "
          f"threads {args.threads or 'default'}; medians")
    print(f"  in-process (qkv bench)   {m_in:8.4f} s  {flops / m_in / 1e9:6.1f} GFLOP/s")
    print(f"  qkv run, fresh output    {m_fresh:8.4f} s  {flops / m_fresh / 1e9:6.1f} GFLOP/s"
          f"  process / in-process {m_fresh / m_in:.3f}")
    print(f"  qkv run, replacing it    {m_rep:8.4f} s  {flops / m_rep / 1e9:6.1f} GFLOP/s"
          f"  process / in-process {m_rep / m_in:.3f}")
    print("  per round (in, fresh, replace): " +
          ", ".join(f"{a:.3f}/{b:.3f}/{c:.3f}" for a, b, c in zip(inproc, fresh, replace)))


if __name__ == "__main__":
    main()
