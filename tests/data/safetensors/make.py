#!/usr/bin/env python3
"""Writes the reference .safetensors files that test_safetensors reads: each
X.safetensors is written by the `safetensors` package itself (the format's
reference implementation), and X/NAME.npy holds what tensor NAME must read
back as, saved by NumPy from the same values. Integer tensors without a qkv
dtype (I8, U8, ...) have no .npy: the test expects QKV_ERR_DTYPE for them.
bf16 tensors are stored in the .npy as float32, which holds them exactly.

Needs numpy, safetensors and torch (for bf16):
    python3 make.py          # writes next to itself; the output is committed
"""
import os

import numpy as np
import torch
from safetensors.numpy import save_file as save_np
from safetensors.torch import save_file as save_torch

HERE = os.path.dirname(os.path.abspath(__file__))


def expected(case, arrays):
    d = os.path.join(HERE, case)
    os.makedirs(d, exist_ok=True)
    for name, a in arrays.items():
        np.save(os.path.join(d, name + ".npy"), a)


rng = np.random.default_rng(20240611)

# numpy_mix: one tensor per dtype NumPy and qkv share, plus I8 and U8
# (parsed, not convertible), a scalar, a zero-size tensor and metadata.
mix = {
    "f32_2x3": rng.standard_normal((2, 3)).astype(np.float32),
    "f64_scalar": np.array(np.pi, dtype=np.float64),
    "f16_vec": np.array([1.0, -2.5, 65504.0, 6e-8, -0.0], dtype=np.float16),
    "i32_3x1": np.array([[7], [-3], [2**31 - 1]], dtype=np.int32),
    "i64_2x2": np.array([[2**40, -1], [0, -(2**62)]], dtype=np.int64),
    "bool_5": np.array([True, False, True, True, False]),
    "f32_1x2x1x3": rng.standard_normal((1, 2, 1, 3)).astype(np.float32),
    "f32_empty_0x4": np.zeros((0, 4), dtype=np.float32),
}
save_np(dict(mix, i8_3=np.array([-128, 0, 127], dtype=np.int8),
             u8_2=np.array([0, 255], dtype=np.uint8)),
        os.path.join(HERE, "numpy_mix.safetensors"),
        metadata={"format": "np", "note": "caf\u00e9 \"quoted\" \\ tab\t"})
expected("numpy_mix", mix)

# torch_bf16: what a PyTorch checkpoint holds, bf16 and f16 weights
# beside f32 ones; names as PyTorch spells them.
w = torch.randn(4, 3, generator=torch.Generator().manual_seed(7))
tensors = {
    "layers.0.q_proj.weight": w.to(torch.bfloat16),
    "layers.0.k_proj.weight": w.to(torch.float16),
    "layers.0.norm.weight": torch.linspace(-1, 1, 5),
    "layers.0.bias": torch.tensor([1.5, -0.25], dtype=torch.bfloat16),
}
save_torch(tensors, os.path.join(HERE, "torch_bf16.safetensors"),
           metadata={"format": "pt"})
expected("torch_bf16", {n.replace(".", "_"): t.to(torch.float32).numpy()
                        for n, t in tensors.items()})
print("wrote numpy_mix.safetensors and torch_bf16.safetensors with their .npy")
