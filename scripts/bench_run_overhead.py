#!/usr/bin/env python3
"""The cost of `qkv run` around its attention call: the whole process
(start, reading the .npy inputs, the NaN scan, writing and renaming the
output, exit) against the same call timed in-process by `qkv bench`, in
one run, the two measured in turn so that the machine's drift hits both.

    python3 scripts/bench_run_overhead.py [--build build/release]
        [--compare OTHER_BUILD] [--shape H,L,E] [--rounds 7] [--threads N]

For each round: one `qkv bench --shape 1,H,H,L,L,E --json` (its median of
repeated calls, buffers on huge pages), then `qkv run` twice, once onto a
fresh output path and once replacing the output of the run before (the
old file's pages are freed during the rename). Prints the medians and the
ratio process / in-process, of the medians and the median of each
round's own ratio (the steadier one on a machine whose clock drifts);
1.05 is the issue's bar. --compare times another build's `qkv run` in the
same rounds (an older commit, say), against the same in-process time. Needs only the
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
    ap.add_argument("--compare", default=None, help="another build tree whose qkv run to time")
    ap.add_argument("--shape", default="16,4096,128", help="H,L,E (self-attention, B = 1)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="0: qkv's default (all CPUs)")
    args = ap.parse_args()
    h, l, e = (int(x) for x in args.shape.split(","))
    builds = [args.build] + ([args.compare] if args.compare else [])
    make_inputs = os.path.join(args.build, "make_inputs")
    for exe in [make_inputs] + [os.path.join(b, "qkv") for b in builds]:
        if not os.access(exe, os.X_OK):
            sys.exit(f"bench_run_overhead: {exe} not found; build first (make build)")
    threads = ["--threads", str(args.threads)] if args.threads else []
    inproc = []
    times = {b: ([], []) for b in builds}  # fresh, replacing
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as d:
        subprocess.run([make_inputs, d, "1", str(h), str(h), str(l), str(e)], check=True,
                       stdout=subprocess.DEVNULL)
        inputs = ["-q", f"{d}/q.npy", "-k", f"{d}/k.npy", "-v", f"{d}/v.npy"] + threads
        bench = [os.path.join(args.build, "qkv"), "bench", "--json", "--shape",
                 f"1,{h},{h},{l},{l},{e}"] + threads
        # One untimed run first, so that the page cache holds the inputs.
        for b in builds:
            subprocess.run([os.path.join(b, "qkv"), "run"] + inputs + ["-o", f"{d}/o.npy"],
                           check=True)
        for r in range(args.rounds):
            out = subprocess.run(bench, check=True, capture_output=True, text=True).stdout
            inproc.append(json.loads(out.splitlines()[-1])["seconds"])
            for b in builds:
                run = [os.path.join(b, "qkv"), "run"] + inputs
                path = f"{d}/fresh.npy"
                t = time.perf_counter()
                subprocess.run(run + ["-o", path], check=True)
                times[b][0].append(time.perf_counter() - t)
                os.unlink(path)  # keep the page cache from filling with outputs
                t = time.perf_counter()
                subprocess.run(run + ["-o", f"{d}/o.npy"], check=True)
                times[b][1].append(time.perf_counter() - t)
    flops = 4.0 * h * l * l * e
    m_in = statistics.median(inproc)
    print(f"qkv run overhead: H={h} L={l} E={e}, {args.rounds} rounds, "
          f"threads {args.threads or 'default'}")
    print(f"  in-process (qkv bench of {args.build})  median {m_in:.4f} s  "
          f"{flops / m_in / 1e9:.1f} GFLOP/s")
    for b in builds:
        for kind, ts in (("fresh output", times[b][0]), ("replacing it", times[b][1])):
            m = statistics.median(ts)
            own = statistics.median(t / a for a, t in zip(inproc, ts))
            print(f"  {b}: qkv run, {kind:13s} median {m:.4f} s  {flops / m / 1e9:6.1f} GFLOP/s"
                  f"  process / in-process {m / m_in:.3f} (rounds' own ratios: {own:.3f})")
    print("  per round, in-process then each build's fresh/replacing: " + "; ".join(
        f"{inproc[r]:.3f} " + " ".join(f"{times[b][0][r]:.3f}/{times[b][1][r]:.3f}" for b in builds)
        for r in range(args.rounds)))


if __name__ == "__main__":
    main()
