#!/usr/bin/env python3
"""Writes the PyTorch oracle cases of the multi-head attention layer
(`qkv mha`, qkv_mha_load + qkv_mha_forward) into tests/data/mha/.

Not part of `make test` (the C suite reads the committed files and needs no
Python); rerun it, where torch, numpy and safetensors are installed, only to
change the cases:

    python3 tests/pytorch/make_mha_cases.py [--out tests/data/mha]

Every case is a folder:

    params.safetensors  the layer, under the names PyTorch's state_dict uses
    x.npy               the queries' input X, float32 (B, Lq, D)
    c.npy               the context C (B, Lk, Dkv), for cross-attention only
    lens.npy            key lengths (B,), int32 or int64, where keys are padded
    y.npy               PyTorch's output Y (B, Lq, D), float32
    w.npy               PyTorch's per-head attention weights (B, H, Lq, Lk)
    args.txt            the options of `qkv mha` that describe the layer and
                        the masking (one line, separated by spaces)

Two families of layers:

- torch.nn.MultiheadAttention(batch_first=True), called with
  need_weights=True and average_attn_weights=False so that it returns one
  weight matrix per head; the causal mask, key_padding_mask (True = pad),
  kdim/vdim and bias=False variants;
- a Llama-style layer written here in plain torch: nn.Linear q_proj, k_proj,
  v_proj, o_proj, grouped-query heads, rotary embedding (the "half" pairing
  of GPT-NeoX/Llama and the interleaved pairing of GPT-J), causal
  F.scaled_dot_product_attention with enable_gqa; the weights written out
  in torch operations since SDPA does not return them. Two of these store
  their parameters in BF16 and F16: the expected outputs then come from the
  rounded parameters upcast to float32, which is what the loader does.

Everything is computed in float32 with fixed seeds; `qkv mha` should agree
to a relative L2 error of 1e-5 on Y and on the weights.
"""
import argparse
import math
import os
import shutil

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file


def write_case(root, name, params, args, x, y, w, c=None, lens=None):
    d = os.path.join(root, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    save_file({k: v.detach().contiguous() for k, v in params.items()},
              os.path.join(d, "params.safetensors"))
    np.save(os.path.join(d, "x.npy"), x.detach().numpy().astype(np.float32))
    if c is not None:
        np.save(os.path.join(d, "c.npy"), c.detach().numpy().astype(np.float32))
    if lens is not None:
        np.save(os.path.join(d, "lens.npy"), lens)
    np.save(os.path.join(d, "y.npy"), y.detach().numpy().astype(np.float32))
    np.save(os.path.join(d, "w.npy"), w.detach().numpy().astype(np.float32))
    with open(os.path.join(d, "args.txt"), "w") as f:
        f.write(" ".join(args) + "\n")
    print(f"{name}: x {tuple(x.shape)} y {tuple(y.shape)} w {tuple(w.shape)}  qkv mha {' '.join(args)}")


def check_causal_convention():
    """PyTorch's is_causal is the lower triangle of an (Lq, Lk) matrix of
    ones, starting at the top left, also when Lq != Lk: the mask the
    nn.MultiheadAttention cases pass and `qkv mha --causal` apply."""
    g = torch.Generator().manual_seed(7)
    q = torch.randn(1, 2, 3, 4, generator=g)
    k = torch.randn(1, 2, 6, 4, generator=g)
    v = torch.randn(1, 2, 6, 4, generator=g)
    a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    allowed = torch.ones(3, 6, dtype=torch.bool).tril(0)
    b = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    assert torch.allclose(a, b, atol=1e-6), "is_causal is not top-left"


def top_left_forbidden(lq, lk):
    """nn.MultiheadAttention's bool attn_mask marks what may NOT be attended."""
    return ~torch.ones(lq, lk, dtype=torch.bool).tril(0)


# ------------------------------------------------ nn.MultiheadAttention cases

def mha_case(root, name, seed, B, Lq, D, H, bias=True, kdim=None, Lk=None, causal=False,
             lens=None, lens_dtype=np.int32):
    torch.manual_seed(seed)
    cross = kdim is not None or Lk is not None
    kdim = kdim if kdim is not None else D
    Lk = Lk if Lk is not None else Lq
    m = nn.MultiheadAttention(D, H, bias=bias, batch_first=True, kdim=kdim, vdim=kdim)
    if bias:
        # PyTorch starts the biases at zero; random ones test that they are read.
        with torch.no_grad():
            for p in (m.in_proj_bias, m.out_proj.bias):
                p.uniform_(-0.5, 0.5)
    m.eval()
    x = torch.randn(B, Lq, D)
    c = torch.randn(B, Lk, kdim) if cross else None
    kv = c if cross else x
    kw = {}
    if causal:
        kw["attn_mask"] = top_left_forbidden(Lq, Lk)
        if not cross:
            kw["is_causal"] = True  # a hint beside the mask, as the docs ask
    if lens is not None:
        kw["key_padding_mask"] = torch.arange(Lk)[None, :] >= torch.tensor(lens)[:, None]
    with torch.no_grad():
        y, w = m(x, kv, kv, need_weights=True, average_attn_weights=False, **kw)
    args = ["--heads", str(H)] + (["--causal"] if causal else [])
    write_case(root, name, dict(m.state_dict()), args, x, y, w, c=c,
               lens=None if lens is None else np.array(lens, dtype=lens_dtype))


# ----------------------------------------------------- Llama-style layer

def rotate_half(t):
    a, b = t.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def rotate_pairs(t):
    a, b = t[..., 0::2], t[..., 1::2]
    return torch.stack([-b, a], dim=-1).flatten(-2)


def rope(t, base, style):
    """t (B, heads, L, E) rotated at positions 0 .. L-1: pair i turns by
    pos * base^(-2i/E); "half" pairs dims (i, i + E/2), "interleaved"
    pairs (2i, 2i + 1)."""
    L, E = t.shape[-2], t.shape[-1]
    inv_freq = base ** (-torch.arange(0, E, 2, dtype=torch.float32) / E)
    ang = torch.arange(L, dtype=torch.float32)[:, None] * inv_freq[None, :]
    cos, sin = ang.cos(), ang.sin()
    if style == "half":
        cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        return t * cos + rotate_half(t) * sin
    cos, sin = cos.repeat_interleave(2, -1), sin.repeat_interleave(2, -1)
    return t * cos + rotate_pairs(t) * sin


class LlamaAttention(nn.Module):
    def __init__(self, D, H, Hkv, bias=False):
        super().__init__()
        self.H, self.Hkv, self.E = H, Hkv, D // H
        self.q_proj = nn.Linear(D, H * self.E, bias=bias)
        self.k_proj = nn.Linear(D, Hkv * self.E, bias=bias)
        self.v_proj = nn.Linear(D, Hkv * self.E, bias=bias)
        self.o_proj = nn.Linear(H * self.E, D, bias=bias)

    def forward(self, x, base, style):
        B, L, _ = x.shape
        H, Hkv, E = self.H, self.Hkv, self.E
        q = self.q_proj(x).view(B, L, H, E).transpose(1, 2)
        k = self.k_proj(x).view(B, L, Hkv, E).transpose(1, 2)
        v = self.v_proj(x).view(B, L, Hkv, E).transpose(1, 2)
        q, k = rope(q, base, style), rope(k, base, style)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        # The weights, which SDPA keeps to itself; query head h reads kv
        # head h // (H / Hkv) as enable_gqa does.
        kk = k.repeat_interleave(H // Hkv, dim=1)
        vv = v.repeat_interleave(H // Hkv, dim=1)
        s = (q @ kk.transpose(-1, -2)) / math.sqrt(E)
        s = s.masked_fill(top_left_forbidden(L, L), float("-inf"))
        w = torch.softmax(s, dim=-1)
        assert torch.allclose(w @ vv, a, atol=1e-5), "weights disagree with SDPA"
        y = self.o_proj(a.transpose(1, 2).reshape(B, L, H * E))
        return y, w


def llama_case(root, name, seed, B, L, D, H, Hkv, base, style, prefix="", store=None,
               bias=False):
    torch.manual_seed(seed)
    m = LlamaAttention(D, H, Hkv, bias=bias)
    if store is not None:
        # Round the parameters to the stored type; torch then computes with
        # the rounded values upcast to float32, as qkv_mha_load reads them.
        with torch.no_grad():
            for p in m.parameters():
                p.copy_(p.to(store).float())
    m.eval()
    x = torch.randn(B, L, D)
    with torch.no_grad():
        y, w = m(x, base, style)
    params = {prefix + k: (v.to(store) if store is not None else v)
              for k, v in m.state_dict().items()}
    args = ["--heads", str(H), "--kv-heads", str(Hkv), "--causal", "--rope", f"{base:g}"]
    if style != "half":
        args += ["--rope-style", style]
    if prefix:
        args += ["--prefix", prefix]
    write_case(root, name, params, args, x, y, w)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "..", "data", "mha"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    check_causal_convention()

    mha_case(out, "mha_self", 1, B=2, Lq=5, D=16, H=4)
    mha_case(out, "mha_causal", 2, B=2, Lq=6, D=16, H=2, causal=True)
    mha_case(out, "mha_padding", 3, B=3, Lq=6, D=12, H=3, lens=[6, 3, 1])
    mha_case(out, "mha_cross_kdim", 4, B=2, Lq=4, D=12, H=3, kdim=8, Lk=7,
             lens=[7, 4], lens_dtype=np.int64)
    # Lq < Lk with the top-left causal mask (packed in_proj_weight, kdim = D).
    mha_case(out, "mha_cross_causal", 5, B=2, Lq=4, D=8, H=2, Lk=7, causal=True)
    mha_case(out, "mha_nobias", 6, B=1, Lq=7, D=16, H=4, bias=False)

    llama_case(out, "llama_gqa_rope", 10, B=2, L=6, D=32, H=4, Hkv=2, base=10000.0,
               style="half", prefix="model.layers.0.self_attn.")
    llama_case(out, "llama_rope_interleaved", 11, B=2, L=6, D=32, H=4, Hkv=2, base=500.0,
               style="interleaved")
    llama_case(out, "llama_bf16", 12, B=2, L=5, D=32, H=4, Hkv=2, base=10000.0, style="half",
               store=torch.bfloat16)
    # Multi-query (one kv head), with biases on every projection (Qwen-style).
    llama_case(out, "llama_f16_bias", 13, B=2, L=5, D=32, H=4, Hkv=1, base=10000.0,
               style="half", store=torch.float16, bias=True)


if __name__ == "__main__":
    main()
