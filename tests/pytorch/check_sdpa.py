#!/usr/bin/env python3
"""Checks `qkv run` against PyTorch's scaled_dot_product_attention in float64.

Not part of `make test` (the C suite needs no Python); run it where torch and
numpy are installed:

    python3 tests/pytorch/check_sdpa.py [--qkv build/release/qkv] [--quick]

Each case writes float32 inputs, runs `qkv run`, and compares O, the weights
and the log-sum-exp with PyTorch computing in float64 from the same float32
values: relative L2 error <= 1e-5 is a pass. O comes from
F.scaled_dot_product_attention itself wherever it defines the option
(bool/float masks, is_causal, scale, enable_gqa); softcap, windows and
padding are expressed as masks or, for softcap, written out in float64
torch operations. Weights and lse are always written out in float64 torch
operations, since SDPA does not return them.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F


def rel_l2(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    same_inf = np.isinf(want) & (got == want)
    got = np.where(same_inf, 0.0, got)
    want = np.where(same_inf, 0.0, want)
    den = np.linalg.norm(want)
    num = np.linalg.norm(got - want)
    return num / den if den > 0 else num


def allowed_mask(B, H, Lq, Lk, causal, window, kv_lens):
    """Bool (B, H, Lq, Lk): True where DESIGN.md section 1 step 4 allows j."""
    i = torch.arange(Lq).view(Lq, 1)
    j = torch.arange(Lk).view(1, Lk)
    d = i + (Lk - Lq if causal == "lower_right" else 0)
    ok = torch.ones(Lq, Lk, dtype=torch.bool)
    if causal is not None:
        ok &= j <= d
    if window is not None:
        left, right = window
        if left >= 0:
            ok &= j >= d - left
        if right >= 0:
            ok &= j <= d + right
    ok = ok.view(1, 1, Lq, Lk).expand(B, H, Lq, Lk).clone()
    if kv_lens is not None:
        for b in range(B):
            ok[b, :, :, int(kv_lens[b]):] = False
    return ok


def expected(q, k, v, mask, causal, scale, softcap, window, kv_lens):
    q, k, v = (torch.from_numpy(x).double() for x in (q, k, v))
    B, H, Lq, E = q.shape
    Hkv, Lk = k.shape[1], k.shape[2]
    s_ = scale if scale is not None else 1 / E ** 0.5
    kk = k.repeat_interleave(H // Hkv, dim=1)
    vv = v.repeat_interleave(H // Hkv, dim=1)
    s = s_ * q @ kk.transpose(-1, -2)
    if softcap is not None:
        s = softcap * torch.tanh(s / softcap)
    ok = allowed_mask(B, H, Lq, Lk, causal, window, kv_lens)
    m = None if mask is None else torch.from_numpy(mask)
    if m is not None and m.dtype == torch.bool:
        ok &= m.expand(B, H, Lq, Lk)
    elif m is not None:
        s = s + m.double()
    s = s.masked_fill(~ok, float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    dead = torch.isinf(lse) & (lse < 0)
    p = torch.exp(s - lse.unsqueeze(-1).masked_fill(dead.unsqueeze(-1), 0.0))
    p = p.masked_fill(dead.unsqueeze(-1), 0.0)
    o = p @ vv
    if softcap is None:
        # The output from PyTorch's own SDPA, options expressed its way.
        attn = ok.clone()
        if m is not None and m.dtype != torch.bool:
            attn = torch.zeros(B, H, Lq, Lk, dtype=torch.float64).masked_fill(~ok, float("-inf"))
            attn = attn + m.double()
        if causal == "top_left" and window is None and kv_lens is None and m is None:
            o_sdpa = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                    enable_gqa=True)
        else:
            o_sdpa = F.scaled_dot_product_attention(q, k, v, attn_mask=attn, scale=scale,
                                                    enable_gqa=True)
        o_sdpa = torch.nan_to_num(o_sdpa.masked_fill(dead.unsqueeze(-1), 0.0))
        o = o_sdpa
    return o.numpy(), p.numpy(), lse.numpy()


def run_case(qkv, tmp, rng, name, B, H, Hkv, Lq, Lk, E, Ev, mask_kind=None, causal=None,
             scale=None, softcap=None, window=None, kv_lens=False, threads=None):
    q = rng.standard_normal((B, H, Lq, E)).astype(np.float32)
    k = rng.standard_normal((B, Hkv, Lk, E)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, Lk, Ev)).astype(np.float32)
    paths = {n: os.path.join(tmp, n + ".npy") for n in ("q", "k", "v", "o", "p", "lse", "m", "lens")}
    np.save(paths["q"], q)
    np.save(paths["k"], k)
    np.save(paths["v"], v)
    args = [qkv, "run", "-q", paths["q"], "-k", paths["k"], "-v", paths["v"], "-o", paths["o"],
            "--weights", paths["p"], "--lse", paths["lse"]]
    mask = None
    if mask_kind == "bool":
        mask = rng.random((B, 1, Lq, Lk)) < 0.7
    elif mask_kind == "float":
        mask = (rng.standard_normal((Lq, Lk)) * 2).astype(np.float32)
    if mask is not None:
        np.save(paths["m"], mask)
        args += ["--mask", paths["m"]]
    if causal == "top_left":
        args.append("--causal")
    elif causal == "lower_right":
        args.append("--causal-lower-right")
    if scale is not None:
        args += ["--scale", repr(scale)]
    if softcap is not None:
        args += ["--softcap", repr(softcap)]
    if window is not None:
        args += ["--window", "%d,%d" % window]
    lens = None
    if kv_lens:
        lens = rng.integers(0, Lk + 1, size=B).astype(np.int32)
        lens[0] = Lk
        np.save(paths["lens"], lens)
        args += ["--kv-lens", paths["lens"]]
    if threads:
        args += ["--threads", str(threads)]
    t0 = time.time()
    r = subprocess.run(args, capture_output=True, text=True)
    t_qkv = time.time() - t0
    if r.returncode != 0:
        print("FAIL %-28s qkv exited %d: %s" % (name, r.returncode, r.stderr.strip()))
        return False
    o, p, lse = expected(q, k, v, mask, causal, scale, softcap, window, lens)
    errs = (rel_l2(np.load(paths["o"]), o), rel_l2(np.load(paths["p"]), p),
            rel_l2(np.load(paths["lse"]), lse))
    ok = all(e <= 1e-5 for e in errs)
    print("%s %-28s (B=%d H=%d Hkv=%d Lq=%d Lk=%d E=%d Ev=%d) rel L2: O %.2e  P %.2e  lse %.2e  [qkv %.1fs]"
          % ("ok  " if ok else "FAIL", name, B, H, Hkv, Lq, Lk, E, Ev, *errs, t_qkv))
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--qkv", default="build/release/qkv")
    ap.add_argument("--quick", action="store_true", help="skip the largest shape")
    a = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(2024)
    print("torch", torch.__version__, "numpy", np.__version__)
    cases = [
        ("1x1", dict(B=1, H=1, Hkv=1, Lq=1, Lk=1, E=1, Ev=1)),
        ("tiny", dict(B=1, H=1, Hkv=1, Lq=3, Lk=5, E=4, Ev=2)),
        ("self", dict(B=2, H=4, Hkv=4, Lq=64, Lk=64, E=64, Ev=64)),
        ("cross Ev!=E", dict(B=2, H=3, Hkv=3, Lq=17, Lk=33, E=24, Ev=40)),
        ("gqa 8/2", dict(B=1, H=8, Hkv=2, Lq=48, Lk=80, E=32, Ev=32)),
        ("mqa 6/1", dict(B=2, H=6, Hkv=1, Lq=31, Lk=31, E=16, Ev=8)),
        ("causal top-left", dict(B=2, H=2, Hkv=2, Lq=40, Lk=57, E=32, Ev=32, causal="top_left")),
        ("causal lower-right", dict(B=2, H=2, Hkv=2, Lq=40, Lk=57, E=32, Ev=32, causal="lower_right")),
        ("causal lower-right Lq>Lk", dict(B=1, H=2, Hkv=1, Lq=50, Lk=30, E=16, Ev=16, causal="lower_right")),
        ("bool mask", dict(B=2, H=3, Hkv=3, Lq=20, Lk=30, E=16, Ev=16, mask_kind="bool")),
        ("float mask", dict(B=2, H=3, Hkv=3, Lq=20, Lk=30, E=16, Ev=16, mask_kind="float")),
        ("scale", dict(B=1, H=2, Hkv=2, Lq=20, Lk=20, E=16, Ev=16, scale=0.37)),
        ("softcap", dict(B=1, H=2, Hkv=2, Lq=20, Lk=25, E=16, Ev=16, softcap=2.5, scale=1.0)),
        ("window", dict(B=1, H=2, Hkv=2, Lq=64, Lk=64, E=16, Ev=16, window=(8, 3))),
        ("window causal", dict(B=1, H=2, Hkv=2, Lq=64, Lk=64, E=16, Ev=16, window=(8, -1), causal="top_left")),
        ("kv_lens", dict(B=3, H=2, Hkv=2, Lq=16, Lk=40, E=16, Ev=16, kv_lens=True)),
        ("everything", dict(B=3, H=4, Hkv=2, Lq=30, Lk=45, E=24, Ev=12, mask_kind="float",
                            causal="lower_right", softcap=5.0, window=(20, -1), kv_lens=True, scale=0.2)),
        ("E=512", dict(B=1, H=2, Hkv=2, Lq=128, Lk=256, E=512, Ev=512, causal="top_left")),
        ("L=2048", dict(B=1, H=2, Hkv=1, Lq=2048, Lk=2048, E=64, Ev=64, causal="top_left")),
    ]
    if not a.quick:
        cases.append(("B2 H8 L2048 E512", dict(B=2, H=8, Hkv=8, Lq=2048, Lk=2048, E=512, Ev=512)))
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for name, kw in cases:
            ok &= run_case(a.qkv, tmp, rng, name, **kw)
    print("all ok" if ok else "SOME FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
