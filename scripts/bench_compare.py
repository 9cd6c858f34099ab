#!/usr/bin/env python3
"""Two builds of qkv side by side on `qkv bench`: for a change that must
not slow anything down (BENCHMARKS.md records the result).

    python3 scripts/bench_compare.py OLD/qkv NEW/qkv [--rounds N] [-- BENCH ARGS]

Runs `qkv bench --json` with the given arguments (default: the whole
suite) from the two binaries in turn, OLD NEW OLD NEW ... for N rounds (2
by default), so that both see the same drift of a shared machine's clock,
and prints a Markdown table: each case's median rate (GFLOP/s; GB/s for
decode, tokens/s not counted) under each build, new / old, and each
build's median ratio to its ceiling measured in the same run, which is
the number to compare when the clock moves between runs. Exit status 1
when a run fails or the two builds do not time the same cases.
"""
import json
import statistics
import subprocess
import sys


def run(binary, args):
    out = subprocess.run([binary, "bench", "--json"] + args, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("bench_compare: %s bench failed (%d): %s" % (binary, out.returncode,
                                                             out.stderr.strip()[-500:]))
    cases = {}
    for line in out.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        rec = json.loads(line)
        rate = rec.get("gflops", rec.get("gbps"))
        if rate is None:
            continue
        cases[rec["name"]] = (rate, rec.get("ratio"))
    return cases


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    old, new = argv[0], argv[1]
    rest = argv[2:]
    rounds = 2
    if rest[:1] == ["--rounds"]:
        rounds = int(rest[1])
        rest = rest[2:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    runs = {old: [], new: []}
    for _ in range(rounds):
        for b in (old, new):
            runs[b].append(run(b, rest))
    names = list(runs[old][0])
    if any(list(r) != names for b in runs for r in runs[b]):
        sys.exit("bench_compare: the two builds did not time the same cases")

    def fmt(x, spec):
        return "–" if x is None else format(x, spec)

    print("| case | old rate | new rate | new / old | old ratio | new ratio |")
    print("|---|---|---|---|---|---|")
    for n in names:
        ro = median([r[n][0] for r in runs[old]])
        rn = median([r[n][0] for r in runs[new]])
        qo = median([r[n][1] for r in runs[old]])
        qn = median([r[n][1] for r in runs[new]])
        print("| %s | %s | %s | %s | %s | %s |" % (n, fmt(ro, ".4g"), fmt(rn, ".4g"),
                                                   fmt(rn / ro if ro else None, ".3f"),
                                                   fmt(qo, ".3f"), fmt(qn, ".3f")))


if __name__ == "__main__":
    main(sys.argv[1:])
