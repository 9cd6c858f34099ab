"""qkv.MultiheadAttention and qkv.KVCache against a float64 numpy layer
written here (projections, RoPE in both pairings, attention with every
mask torch's layer takes, output projection), the PyTorch cases of
tests/data/mha, finite differences of the numpy layer for the gradients,
and torch.nn.MultiheadAttention itself where torch is installed."""
import os
import shlex

import numpy as np
import pytest

import qkv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES_DIR = os.path.join(ROOT, "tests", "data", "mha")
RNG = np.random.default_rng(11)


def rand(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    den = np.linalg.norm(want)
    return np.linalg.norm(got - want) / den if den else np.linalg.norm(got)


# ------------------------------------------------------ the numpy layer

def rope64(t, base, style):
    """t (B, heads, L, E) rotated at positions 0 .. L-1."""
    L, E = t.shape[-2], t.shape[-1]
    ang = np.arange(L)[:, None] * base ** (-2.0 * np.arange(E // 2) / E)[None, :]
    c, s = np.cos(ang), np.sin(ang)
    if style == "half":
        a, b = t[..., :E // 2], t[..., E // 2:]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)
    a, b = t[..., 0::2], t[..., 1::2]
    out = np.empty_like(t)
    out[..., 0::2], out[..., 1::2] = a * c - b * s, a * s + b * c
    return out


def params64(m):
    names = ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj_weight",
             "q_proj_bias", "k_proj_bias", "v_proj_bias", "out_proj_bias")
    return {n: None if getattr(m, n) is None else getattr(m, n).astype(np.float64)
            for n in names}


def layer64(P, x, c=None, *, H, Hkv, rope=None, base=10000.0, allowed=None, add=None,
            causal=False, kv_lens=None):
    """y (B, L, D) and the per-head weights (B, H, L, S) in float64.
    allowed: bool, True = may attend; add: float added; both broadcast to
    (B, H, L, S). Rows with nothing allowed give weights 0."""
    x = np.asarray(x, np.float64)
    c = x if c is None else np.asarray(c, np.float64)
    B, L, _ = x.shape
    S = c.shape[1]

    def proj(a, w, b):
        return a @ w.T + (0 if b is None else b)

    q = proj(x, P["q_proj_weight"], P["q_proj_bias"]).reshape(B, L, H, -1).transpose(0, 2, 1, 3)
    k = proj(c, P["k_proj_weight"], P["k_proj_bias"]).reshape(B, S, Hkv, -1).transpose(0, 2, 1, 3)
    v = proj(c, P["v_proj_weight"], P["v_proj_bias"]).reshape(B, S, Hkv, -1).transpose(0, 2, 1, 3)
    if rope:
        q, k = rope64(q, base, rope), rope64(k, base, rope)
    k, v = np.repeat(k, H // Hkv, axis=1), np.repeat(v, H // Hkv, axis=1)
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    ok = np.ones(s.shape, bool)
    if causal:
        ok &= np.arange(S)[None, :] <= np.arange(L)[:, None]
    if allowed is not None:
        ok &= allowed
    if kv_lens is not None:
        ok &= (np.arange(S)[None, :] < np.asarray(kv_lens)[:, None])[:, None, None, :]
    if add is not None:
        s = s + np.asarray(add, np.float64)
        ok &= ~np.isneginf(s)
    s = np.where(ok, s, -np.inf)
    mx = s.max(-1, keepdims=True)
    dead = np.isneginf(mx)
    e = np.where(ok, np.exp(s - np.where(dead, 0, mx)), 0)
    p = np.where(dead, 0, e / np.where(dead, 1, e.sum(-1, keepdims=True)))
    a = (p @ v).transpose(0, 2, 1, 3).reshape(B, L, -1)
    return proj(a, P["out_proj_weight"], P["out_proj_bias"]), p


def randomize(m, scale=0.4):
    """Random parameters of unit-ish scale (biases included), so that the
    attention is far from uniform."""
    for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight", "out_proj_weight",
                 "q_proj_bias", "k_proj_bias", "v_proj_bias", "out_proj_bias"):
        p = getattr(m, name)
        if p is not None:
            p[...] = rand(*p.shape, scale=scale)
    return m


# ----------------------------------------------- layouts of torch's layer

def to_layout(a, layout):
    """(B, L, F) -> what the caller passes: 'batch_first' (B, L, F),
    'seq_first' (L, B, F), 'unbatched' (L, F) (B must be 1)."""
    if a is None:
        return None
    if layout == "batch_first":
        return a
    if layout == "seq_first":
        return np.ascontiguousarray(a.transpose(1, 0, 2))
    assert a.shape[0] == 1
    return a[0]


def from_layout(a, layout):
    if layout == "batch_first":
        return a
    if layout == "seq_first":
        return a.transpose(1, 0, 2)
    return a[None]


# ------------------------------------------------------ forward vs numpy

FORWARD = {
    "self": dict(),
    "self_nobias": dict(bias=False),
    "cross_kdim": dict(kdim=6, S=9),
    "gqa_rope_half": dict(H=4, Hkv=2, rope="half"),
    "gqa_rope_interleaved": dict(H=4, Hkv=1, rope="interleaved", base=500.0, causal=True),
    "head_dim": dict(head_dim=3),
    "causal": dict(causal=True),
    "cross_causal_short_query": dict(S=11, causal=True),
    "kpm_suffix": dict(kpm="suffix"),
    "kpm_holes": dict(kpm="holes"),
    "kpm_float": dict(kpm="float"),
    "bool_mask_2d": dict(mask="bool2"),
    "bool_mask_3d": dict(mask="bool3"),
    "float_mask_2d": dict(mask="float2"),
    "float_mask_3d_and_kpm": dict(mask="float3", kpm="holes", S=8),
    "bool_mask_and_kpm_suffix_causal_hint": dict(mask="bool2", kpm="suffix", causal=True),
    "causal_as_mask": dict(mask="causal_bool"),
    "causal_as_float_mask": dict(mask="causal_float", Hkv=1),
}


def build_case(name, layout, seed=0):
    """The layer, the call's keyword arguments in (B, L, D) layout, and
    the numpy layer's result."""
    o = dict(FORWARD[name])
    B = 1 if layout == "unbatched" else 3
    D, H, L = 8, o.get("H", 2), 5
    Hkv = o.get("Hkv", H)
    kdim = o.get("kdim")
    cross = kdim is not None or "S" in o
    S = o.get("S", L)
    m = qkv.MultiheadAttention(D, H, bias=o.get("bias", True), kdim=kdim, vdim=kdim,
                               batch_first=layout == "batch_first", num_kv_heads=Hkv,
                               head_dim=o.get("head_dim"), rope=o.get("rope"),
                               rope_base=o.get("base", 10000.0))
    randomize(m)
    x = rand(B, L, D)
    c = rand(B, S, kdim or D) if cross else None
    call, ref = {}, dict(H=H, Hkv=Hkv, rope=o.get("rope"), base=o.get("base", 10000.0))
    if o.get("causal"):
        call["is_causal"] = ref["causal"] = True
    kpm = o.get("kpm")
    if kpm == "suffix":
        lens = RNG.integers(1, S + 1, size=B)
        lens[0] = S - 1 if S > 1 else 1
        call["key_padding_mask"] = np.arange(S)[None, :] >= lens[:, None]
        ref["kv_lens"] = lens
    elif kpm == "holes":
        k = RNG.random((B, S)) < 0.3
        k[:, 0] = False  # every row keeps a key
        k[0, -1] = True
        call["key_padding_mask"] = k
        ref["allowed"] = ~k[:, None, None, :]
    elif kpm == "float":
        k = rand(B, S)
        call["key_padding_mask"] = k
        ref["add"] = k[:, None, None, :]
    mask = o.get("mask")
    if mask is not None:
        if mask == "bool2":
            a = RNG.random((L, S)) < 0.3
            a[:, 0] = False
            ref["allowed"] = ref.get("allowed", True) & ~a
        elif mask == "bool3":
            a = RNG.random((B * H, L, S)) < 0.3
            a[:, :, 1] = False
            ref["allowed"] = ref.get("allowed", True) & ~a.reshape(B, H, L, S)
        elif mask == "float2":
            a = rand(L, S)
            a[1, 2] = -np.inf
            ref["add"] = a
        elif mask == "float3":
            a = rand(B * H, L, S)
            ref["add"] = a.reshape(B, H, L, S)
        elif mask == "causal_bool":
            a = ~np.tri(L, S, dtype=bool)
            ref["causal"] = True
        elif mask == "causal_float":
            a = np.where(np.tri(L, S, dtype=bool), 0, -np.inf).astype(np.float32)
            ref["causal"] = True
        if layout == "unbatched" and a.ndim == 3:
            a = a.reshape(H, L, S)
        call["attn_mask"] = a
        if o.get("causal"):
            # with an attn_mask, is_causal is torch's hint that the mask is
            # causal: the mask alone decides
            ref["causal"] = mask.startswith("causal")
    y, w = layer64(params64(m), x, c, **ref)
    return m, x, c, call, y, w


@pytest.mark.parametrize("layout", ["batch_first", "seq_first", "unbatched"])
@pytest.mark.parametrize("name", sorted(FORWARD))
def test_forward_against_numpy(name, layout):
    m, x, c, call, want_y, want_w = build_case(name, layout)
    args = (to_layout(x, layout),)
    if c is not None:
        cc = to_layout(c, layout)
        args += (cc, cc)
    if layout == "unbatched" and "key_padding_mask" in call:
        call["key_padding_mask"] = call["key_padding_mask"][0]
    y, w = m(*args, average_attn_weights=False, **call)
    assert y.dtype == np.float32 and w.dtype == np.float32
    assert y.shape == args[0].shape
    assert rel(from_layout(y, layout), want_y) <= 1e-5
    w4 = w[None] if layout == "unbatched" else w
    assert rel(w4, want_w) <= 1e-5
    y2, wavg = m(*args, **call)
    assert np.array_equal(y, y2)
    assert rel(wavg, w.mean(axis=-3)) <= 1e-6 and wavg.shape == w.shape[:-3] + w.shape[-2:]
    y3, none = m(*args, need_weights=False, **call)
    assert none is None and rel(y3, y) <= 1e-6


def test_self_attention_spellings():
    """key/value omitted, the query passed as key and value, an equal copy:
    the same result."""
    m = randomize(qkv.MultiheadAttention(8, 2, batch_first=True))
    x = rand(2, 4, 8)
    y0, _ = m(x)
    assert np.array_equal(m(x, x, x)[0], y0)
    assert rel(m(x, x.copy(), x.copy())[0], y0) <= 1e-6
    assert rel(m(x.astype(np.float64))[0], y0) == 0
    assert rel(m.forward(x, key=x)[0], y0) <= 1e-6  # value defaults to key


def test_threads_do_not_change_the_result():
    m1 = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, threads=1))
    m3 = qkv.MultiheadAttention(16, 4, batch_first=True, threads=3)
    m3.load_state_dict(m1.state_dict())
    x = rand(2, 33, 16)
    assert np.array_equal(m1(x, is_causal=True)[0], m3(x, is_causal=True)[0])


def test_calls_from_several_python_threads():
    """libqkv runs without the GIL; one layer serves several threads."""
    from concurrent.futures import ThreadPoolExecutor
    m = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, threads=1))
    xs = [rand(2, 20, 16) for _ in range(8)]
    want = [m(x, is_causal=True)[0] for x in xs]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda x: m(x, is_causal=True)[0], xs))
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


def test_empty_inputs():
    m = randomize(qkv.MultiheadAttention(8, 2, batch_first=True))
    y, w = m(rand(0, 3, 8))
    assert y.shape == (0, 3, 8) and w.shape == (0, 3, 3)
    c = rand(2, 0, 8)
    y, w = m(rand(2, 3, 8), c, c)  # no keys: the attention gives 0, y = out_proj_bias
    assert w.shape == (2, 3, 0) and np.allclose(y, m.out_proj_bias)


# ------------------------------------------------------ the PyTorch cases

def case_dirs():
    if not os.path.isdir(CASES_DIR):
        return []
    return sorted(d for d in os.listdir(CASES_DIR) if os.path.isdir(os.path.join(CASES_DIR, d)))


def read_args(path):
    """args.txt's `qkv mha` options as from_safetensors' arguments."""
    words = shlex.split(open(path).read())
    out = dict(num_heads=None, num_kv_heads=None, prefix="", rope=None, rope_base=10000.0,
               causal=False)
    i = 0
    while i < len(words):
        w = words[i]
        if w == "--causal":
            out["causal"] = True
            i += 1
            continue
        val = words[i + 1]
        if w == "--heads":
            out["num_heads"] = int(val)
        elif w == "--kv-heads":
            out["num_kv_heads"] = int(val)
        elif w == "--rope":
            out["rope_base"] = float(val)
            out["rope"] = out["rope"] or "half"
        elif w == "--rope-style":
            out["rope"] = val
        elif w == "--prefix":
            out["prefix"] = val
        else:
            raise AssertionError("args.txt: unknown option %s" % w)
        i += 2
    return out


PT_ERRORS = {}


@pytest.mark.parametrize("case", case_dirs())
def test_pytorch_cases(case):
    d = os.path.join(CASES_DIR, case)
    a = read_args(os.path.join(d, "args.txt"))
    causal = a.pop("causal")
    m = qkv.MultiheadAttention.from_safetensors(os.path.join(d, "params.safetensors"),
                                                batch_first=True, **a)
    x = np.load(os.path.join(d, "x.npy"))
    c = np.load(os.path.join(d, "c.npy")) if os.path.exists(os.path.join(d, "c.npy")) else None
    lens = np.load(os.path.join(d, "lens.npy")) if os.path.exists(
        os.path.join(d, "lens.npy")) else None
    want_y, want_w = np.load(os.path.join(d, "y.npy")), np.load(os.path.join(d, "w.npy"))
    B, L, S = x.shape[0], x.shape[1], (c if c is not None else x).shape[1]
    kpm = None if lens is None else np.arange(S)[None, :] >= lens[:, None]
    y, w = m(x, c, c, key_padding_mask=kpm, is_causal=causal, average_attn_weights=False)
    ey, ew = rel(y, want_y), rel(w, want_w)
    PT_ERRORS[case] = (ey, ew)
    assert ey <= 1e-5 and ew <= 1e-5, (ey, ew)
    # Everything as one explicit (B*H, L, S) bool mask: the mask path.
    H = m.num_heads
    forbid = np.zeros((B, H, L, S), bool)
    if causal:
        forbid |= ~np.tri(L, S, dtype=bool)
    if kpm is not None:
        forbid |= kpm[:, None, None, :]
    y2, w2 = m(x, c, c, attn_mask=forbid.reshape(B * H, L, S), average_attn_weights=False)
    assert rel(y2, want_y) <= 1e-5 and rel(w2, want_w) <= 1e-5


def test_pytorch_cases_found():
    assert len(case_dirs()) >= 10, CASES_DIR


# ------------------------------------------------------- parameters, files

def test_state_dict_round_trip_packed():
    m = randomize(qkv.MultiheadAttention(12, 3))
    sd = m.state_dict()
    assert list(sd) == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert sd["in_proj_weight"].shape == (36, 12) and sd["in_proj_bias"].shape == (36,)
    assert np.array_equal(sd["in_proj_weight"][12:24], m.k_proj_weight)
    assert np.array_equal(sd["in_proj_bias"][24:], m.v_proj_bias)
    n = qkv.MultiheadAttention(12, 3)
    assert n.load_state_dict(sd) == ([], [])
    for k, v in n.state_dict().items():
        assert np.array_equal(v, sd[k]), k
    x = rand(4, 2, 12)
    assert np.array_equal(m(x)[0], n(x)[0])
    # state_dict() gives copies: changing one changes nothing
    sd["in_proj_weight"][...] = 0
    assert np.array_equal(m(x)[0], n(x)[0])


def test_state_dict_round_trip_split_and_gqa():
    for kw in (dict(kdim=5, vdim=5), dict(num_kv_heads=2), dict(head_dim=3),
               dict(bias=False, num_kv_heads=1)):
        m = randomize(qkv.MultiheadAttention(8, 4, **kw))
        sd = m.state_dict()
        assert "in_proj_weight" not in sd and "q_proj_weight" in sd, kw
        assert ("in_proj_bias" in sd) == kw.get("bias", True)
        n = qkv.MultiheadAttention(8, 4, **kw)
        n.load_state_dict(sd)
        for k, v in n.state_dict().items():
            assert np.array_equal(v, sd[k]), (kw, k)


def test_load_state_dict_names_and_strictness():
    m = randomize(qkv.MultiheadAttention(8, 2))
    sd = m.state_dict()
    # the split names describe the packed layer too, and float64 is taken
    n = qkv.MultiheadAttention(8, 2)
    split = {"q_proj_weight": m.q_proj_weight.astype(np.float64),
             "k_proj_weight": m.k_proj_weight.tolist(), "v_proj_weight": m.v_proj_weight,
             "in_proj_bias": sd["in_proj_bias"], "out_proj.weight": sd["out_proj.weight"],
             "out_proj.bias": sd["out_proj.bias"]}
    n.load_state_dict(split)
    assert all(np.array_equal(v, n.state_dict()[k]) for k, v in sd.items())
    # Llama-style names
    llama = {"q_proj.weight": m.q_proj_weight, "k_proj.weight": m.k_proj_weight,
             "v_proj.weight": m.v_proj_weight, "o_proj.weight": m.out_proj_weight,
             "q_proj.bias": m.q_proj_bias, "k_proj.bias": m.k_proj_bias,
             "v_proj.bias": m.v_proj_bias, "o_proj.bias": m.out_proj_bias}
    n = qkv.MultiheadAttention(8, 2)
    n.load_state_dict(llama)
    assert all(np.array_equal(v, n.state_dict()[k]) for k, v in sd.items())
    # strict: missing and unexpected names; nothing is written on failure
    n = qkv.MultiheadAttention(8, 2)
    before = n.state_dict()
    part = dict(sd)
    del part["out_proj.bias"]
    with pytest.raises(ValueError, match="missing.*out_proj_bias"):
        n.load_state_dict(part)
    with pytest.raises(ValueError, match="unexpected.*'extra'"):
        n.load_state_dict(dict(sd, extra=np.zeros(3)))
    assert all(np.array_equal(v, n.state_dict()[k]) for k, v in before.items())
    missing, unexpected = n.load_state_dict(dict(part, extra=1.0), strict=False)
    assert missing == ["out_proj_bias"] and unexpected == ["extra"]
    assert np.array_equal(n.q_proj_weight, m.q_proj_weight)
    with pytest.raises(ValueError, match="in_proj_weight: shape"):
        n.load_state_dict(dict(sd, in_proj_weight=np.zeros((8, 8))))
    with pytest.raises(ValueError, match="more than once"):
        n.load_state_dict(dict(sd, q_proj_weight=m.q_proj_weight))
    with pytest.raises(TypeError, match="out_proj.weight"):
        n.load_state_dict(dict(sd, **{"out_proj.weight": np.zeros((8, 8), np.int32)}))
    with pytest.raises(ValueError, match="bias_k"):
        n.load_state_dict(dict(sd, bias_k=np.zeros((1, 1, 8))))


def test_parameters_are_views_of_the_layer():
    m = randomize(qkv.MultiheadAttention(8, 2, batch_first=True))
    x = rand(1, 3, 8)
    y0 = m(x)[0]
    w = m.out_proj_weight
    assert w.flags.writeable and w.dtype == np.float32 and w.shape == (8, 8)
    w *= 2
    b = m.out_proj_bias.copy()
    m.out_proj_bias[...] = 0
    assert rel(m(x)[0], 2 * (y0 - b)) <= 1e-6
    m.out_proj_bias = 2 * b  # the setter copies in
    assert rel(m(x)[0], 2 * y0) <= 1e-6
    with pytest.raises(ValueError, match="out_proj_weight: shape"):
        m.out_proj_weight = np.zeros((3, 3))
    nb = qkv.MultiheadAttention(8, 2, bias=False)
    assert nb.q_proj_bias is None and nb.out_proj_bias is None
    with pytest.raises(ValueError, match="bias=False"):
        nb.q_proj_bias = np.zeros(8)
    # a view outlives the layer object and keeps its memory
    v = m.q_proj_weight
    want = v.copy()
    del m
    import gc
    gc.collect()
    assert np.array_equal(v, want)


def test_initialised_like_torch():
    np.random.seed(3)
    m = qkv.MultiheadAttention(32, 4)
    bound = np.sqrt(6 / (32 + 96))
    for w in (m.q_proj_weight, m.k_proj_weight, m.v_proj_weight):
        assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert np.abs(m.out_proj_weight).max() <= 1 / np.sqrt(32)
    assert not m.q_proj_bias.any() and not m.out_proj_bias.any()


def test_save_and_from_safetensors(tmp_path):
    m = randomize(qkv.MultiheadAttention(8, 4, num_kv_heads=2, rope="half", batch_first=True))
    path = tmp_path / "layer.safetensors"
    m.save(str(path), prefix="layers.3.attn.")
    n = qkv.MultiheadAttention.from_safetensors(path, 4, num_kv_heads=2,
                                                prefix="layers.3.attn.", rope="half",
                                                batch_first=True)
    assert (n.embed_dim, n.num_heads, n.num_kv_heads, n.head_dim, n.rope) == (8, 4, 2, 2, "half")
    for k, v in m.state_dict().items():
        assert np.array_equal(v, n.state_dict()[k]), k
    x = rand(2, 5, 8)
    assert np.array_equal(m(x, is_causal=True)[0], n(x, is_causal=True)[0])
    with pytest.raises(ValueError, match="q_proj.weight"):
        qkv.MultiheadAttention.from_safetensors(path, 4, num_kv_heads=2)  # no prefix
    with pytest.raises(ValueError, match="kv_heads|rows"):
        qkv.MultiheadAttention.from_safetensors(path, 4, num_kv_heads=4,
                                                prefix="layers.3.attn.")
    with pytest.raises(OSError, match="nowhere"):
        qkv.MultiheadAttention.from_safetensors(tmp_path / "nowhere.safetensors", 2)


# ------------------------------------------------------------- gradients

def numeric_grads(f, arrays, h=1e-6):
    """Central differences of the scalar f() with respect to every entry
    of each float64 array in `arrays` (changed in place and restored)."""
    out = []
    for a in arrays:
        g = np.zeros_like(a)
        flat, gf = a.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + h
            up = f()
            flat[i] = keep - h
            down = f()
            flat[i] = keep
            gf[i] = (up - down) / (2 * h)
        out.append(g)
    return out


GRAD = {
    "self_causal_rope_gqa": dict(H=4, Hkv=2, rope="half", causal=True),
    "self_nobias_interleaved": dict(bias=False, rope="interleaved"),
    "cross_kdim_masks": dict(kdim=5, S=4, kpm="holes", mask="float2"),
    "cross_suffix_padding": dict(S=6, kpm="suffix", layout="seq_first"),
    "unbatched_bool_mask": dict(mask="bool2", layout="unbatched"),
}


@pytest.mark.parametrize("name", sorted(GRAD))
def test_grad_against_finite_differences(name):
    o = GRAD[name]
    layout = o.get("layout", "batch_first")
    B = 1 if layout == "unbatched" else 2
    D, H, L = 4, o.get("H", 2), 3
    Hkv = o.get("Hkv", H)
    kdim = o.get("kdim")
    S = o.get("S", L)
    cross = "S" in o
    m = randomize(qkv.MultiheadAttention(D, H, bias=o.get("bias", True), kdim=kdim, vdim=kdim,
                                         batch_first=layout == "batch_first",
                                         num_kv_heads=Hkv, head_dim=2, rope=o.get("rope")),
                  scale=0.7)
    x = rand(B, L, D)
    c = rand(B, S, kdim or D) if cross else None
    dy = rand(B, L, D)
    call, ref = {}, dict(H=H, Hkv=Hkv, rope=o.get("rope"))
    if o.get("causal"):
        call["is_causal"] = ref["causal"] = True
    if o.get("kpm") == "holes":
        k = np.zeros((B, S), bool)
        k[0, 1] = k[1, 3] = True
        call["key_padding_mask"], ref["allowed"] = k, ~k[:, None, None, :]
    elif o.get("kpm") == "suffix":
        lens = np.array([S, 2])
        call["key_padding_mask"] = np.arange(S)[None, :] >= lens[:, None]
        ref["kv_lens"] = lens
    if o.get("mask") == "float2":
        call["attn_mask"] = ref["add"] = rand(L, S)
    elif o.get("mask") == "bool2":
        a = np.zeros((L, S), bool)
        a[0, 2] = a[2, 0] = True
        call["attn_mask"], ref["allowed"] = a, ~a
    args = (to_layout(x, layout),) + ((to_layout(c, layout),) * 2 if cross else ())
    dx, dc, grads = m.grad(args[0], to_layout(dy, layout), *args[1:], **call)
    assert dx.shape == args[0].shape
    assert (dc is None) == (not cross)

    P = params64(m)
    x64, c64 = x.astype(np.float64), None if c is None else c.astype(np.float64)
    dy64 = dy.astype(np.float64)

    def loss():
        return float((layer64(P, x64, c64, **ref)[0] * dy64).sum())

    names = [n for n in P if P[n] is not None]
    inputs = [x64] + ([c64] if cross else [])
    nums = numeric_grads(loss, [P[n] for n in names] + inputs)
    got = dict(zip(names, nums))
    # torch's names of the numeric gradients
    want = {}
    if m._packable():
        want["in_proj_weight"] = np.concatenate([got["q_proj_weight"], got["k_proj_weight"],
                                                 got["v_proj_weight"]])
    else:
        for n in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
            want[n] = got[n]
    if "q_proj_bias" in got:
        want["in_proj_bias"] = np.concatenate([got["q_proj_bias"], got["k_proj_bias"],
                                               got["v_proj_bias"]])
        want["out_proj.bias"] = got["out_proj_bias"]
    want["out_proj.weight"] = got["out_proj_weight"]
    assert sorted(grads) == sorted(want)
    for n in want:
        assert rel(grads[n], want[n]) <= 1e-5, (n, rel(grads[n], want[n]))
    assert rel(from_layout(dx, layout), nums[len(names)]) <= 1e-5
    if cross:
        assert rel(from_layout(dc, layout), nums[len(names) + 1]) <= 1e-5


# --------------------------------------------------------- decode, cache

def project_kv(m, x):
    """The keys (B, L, Hkv, E) after RoPE and values (B, L, Hkv, Ev) the
    layer stores for x (B, L, D), in float64."""
    P = params64(m)
    B, L, _ = x.shape
    x = x.astype(np.float64)
    k = x @ P["k_proj_weight"].T + (0 if P["k_proj_bias"] is None else P["k_proj_bias"])
    v = x @ P["v_proj_weight"].T + (0 if P["v_proj_bias"] is None else P["v_proj_bias"])
    k = k.reshape(B, L, m.num_kv_heads, -1)
    if m.rope:
        k = rope64(k.transpose(0, 2, 1, 3), m.rope_base, m.rope).transpose(0, 2, 1, 3)
    return k, v.reshape(B, L, m.num_kv_heads, -1)


@pytest.mark.parametrize("kw", [dict(num_kv_heads=2, rope="half", bias=False),
                                dict(rope="interleaved", rope_base=100.0), dict()])
def test_decode_equals_causal_forward(kw):
    m = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, **kw))
    B, T = 3, 9
    x = rand(B, T, 16)
    full, fw = m(x, is_causal=True, average_attn_weights=False)
    cache = qkv.KVCache(m, B, T + 1)
    assert cache.lengths() == [0] * B and cache.nbytes > B * (T + 1) * 4 * 4
    ys = [m.decode(cache, x[:, :4])]  # a prompt of 4, then one token at a time
    for t in range(4, T):
        y, w = m.decode(cache, x[:, t:t + 1], need_weights=True)
        ys.append(y)
        assert w.shape == (B, 4, 1, t + 1)
        assert rel(w[:, :, 0, :], fw[:, :, t, :t + 1]) <= 1e-5
    assert cache.lengths() == [T] * B
    assert rel(np.concatenate(ys, axis=1), full) <= 1e-5
    # the cached keys and values are the layer's projections
    k, v = cache.view(1)
    kk, vv = project_kv(m, x)
    assert k.shape == (m.num_kv_heads, T, m.head_dim)
    assert rel(k, kk[1].transpose(1, 0, 2)) <= 1e-5 and rel(v, vv[1].transpose(1, 0, 2)) <= 1e-5
    # past max_len: refused, the cache unchanged
    with pytest.raises(ValueError, match="max_len"):
        m.decode(cache, x[:, :2])
    assert cache.lengths() == [T] * B


@pytest.mark.parametrize("fmt,tol", [("f16", 2.0 ** -11), ("bf16", 2.0 ** -8)])
def test_cache_formats(fmt, tol):
    """A 16-bit cache holds the f32 cache's keys and values rounded, and its
    steps stay within the dtype's unit roundoff of the f32 cache's."""
    # weights of standard deviation 0.15: scores of order one, where
    # rounding q and k by u moves each weight by about u (larger scores
    # move it more; measured 1.2e-4 to 2.6e-4 for f16, 1.1e-3 to 1.5e-3
    # for bf16)
    m = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, num_kv_heads=2, rope="half"),
                  scale=0.15)
    B, T = 2, 7
    x = rand(B, T, 16)
    c32, c16 = qkv.KVCache(m, B, T), qkv.KVCache(m, B, T, format=fmt)
    assert c16.format == fmt and c16.nbytes < c32.nbytes and fmt in repr(c16)
    for a, b in ((0, 5), (5, 6), (6, 7)):
        y32, y16 = m.decode(c32, x[:, a:b]), m.decode(c16, x[:, a:b])
        assert y16.dtype == np.float32 and rel(y16, y32) <= tol, rel(y16, y32)
    (k32, v32), (k16, v16) = c32.view(1), c16.view(1)
    want = np.float16 if fmt == "f16" else pytest.importorskip("ml_dtypes").bfloat16
    assert k16.dtype == want and k16.shape == k32.shape
    assert np.array_equal(k16, k32.astype(want)) and np.array_equal(v16, v32.astype(want))
    with pytest.raises(ValueError, match="^format: 'f8'"):
        qkv.KVCache(m, 1, 4, format="f8")


@pytest.mark.parametrize("fmt,vfmt,tol", [("q8_0", "q8_0", 1e-2), ("q8_0", "q4_0", 1e-1),
                                          ("bf16", "q8_0", 1e-2)])
def test_cache_block_formats(fmt, vfmt, tol):
    """q8_0 / q4_0 caches (K and V each their own): steps within what the
    format costs of the f32 cache's, and views dequantized within half a
    block step of the f32 cache's keys."""
    m = randomize(qkv.MultiheadAttention(64, 2, batch_first=True, num_kv_heads=1, rope="half"),
                  scale=0.15)
    B, T = 2, 7
    x = rand(B, T, 64)
    c32, cq = qkv.KVCache(m, B, T), qkv.KVCache(m, B, T, fmt, v_format=vfmt)
    assert cq.nbytes < c32.nbytes and repr(cq).count(vfmt) >= 1
    for a, b in ((0, 5), (5, 7)):
        assert rel(m.decode(cq, x[:, a:b]), m.decode(c32, x[:, a:b])) <= tol
    (k32, v32), (kq, vq) = c32.view(0), cq.view(0)
    assert kq.dtype == (np.float32 if fmt != "bf16" else kq.dtype) and kq.shape == k32.shape
    if fmt == "q8_0":  # each block's step d is max|k| / 127 over its 32 values: half a step,
        # plus up to 127 times the binary16 rounding of d (2^-11 of it)
        step = np.abs(k32).reshape(*k32.shape[:2], -1, 32).max(-1, keepdims=True) / 127
        err = np.abs(kq - k32).reshape(*k32.shape[:2], -1, 32)
        assert (err <= (0.5 + 127 * 2.0 ** -11) * step + 1e-6).all()
    assert vq.dtype == np.float32 and vq.shape == v32.shape
    with pytest.raises(ValueError, match="v_format: 'q2'"):
        qkv.KVCache(m, 1, 4, v_format="q2")


def test_cache_rolling():
    """A rolling cache (2 sinks, 4 more rows) through 12 tokens: each step
    equals the causal forward under the mask that keeps the sinks and the
    last 4 tokens; lengths count every token; weights are per row."""
    m = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, num_kv_heads=2, rope="half"))
    B, T, S, CAP = 2, 12, 2, 6
    x = rand(B, T, 16)
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    keep = (j <= i) & ((j < S) | (j > i - (CAP - S)))
    full, _ = m(x, attn_mask=~keep)
    cache = qkv.KVCache(m, B, CAP, rolling=True, sinks=S)
    done = 0
    for n in (3, 1, 5, 1, 2):
        y, w = m.decode(cache, x[:, done:done + n], need_weights=True)
        assert rel(y, full[:, done:done + n]) <= 1e-5
        assert w.shape == (B, 4, n, CAP) and np.allclose(w.sum(-1), 1, atol=1e-5)
        done += n
    assert cache.lengths() == [T, T] and cache.view(0)[0].shape == (2, CAP, m.head_dim)
    with pytest.raises(ValueError, match="sinks"):
        qkv.KVCache(m, 1, CAP, rolling=True, sinks=CAP)


def test_kv_cost():
    """kv_cost: zero for f32; for bf16 small and equal to the KL computed
    here from a bf16 cache's decode weights against the f32 forward's."""
    m = randomize(qkv.MultiheadAttention(16, 4, batch_first=True, num_kv_heads=2, rope="half"))
    x = rand(2, 6, 16)
    kl, err = m.kv_cost(x, "f32")
    assert kl.shape == (5,) and not kl.any() and not err.any()
    kl, err = m.kv_cost(x, "bf16")
    _, p = m(x, is_causal=True, average_attn_weights=False)
    cache = qkv.KVCache(m, 2, 6, "bf16")
    _, q = m.decode(cache, x, need_weights=True)
    p, q = p.astype(np.float64), q.astype(np.float64)  # the library sums in double
    want = np.where(p > 0, p * np.log(np.where(p > 0, p, 1) / np.where(q > 0, q, 1)), 0)
    want = want.sum(-1).mean(axis=(0, 2))
    assert np.allclose(kl[:4], want, rtol=1e-6, atol=1e-15)
    assert abs(kl[4] - kl[:4].mean()) <= 1e-15
    assert (err > 0).all() and (err < 1e-2).all()
    with pytest.raises(ValueError, match="format"):
        m.kv_cost(x, "q3")


def test_cache_truncate_and_append():
    m = randomize(qkv.MultiheadAttention(8, 2, batch_first=True, num_kv_heads=1, rope="half"))
    B, T = 2, 6
    x = rand(B, T, 8)
    cache = qkv.KVCache(m, B, 10)
    # append precomputed keys/values of the first 4 tokens, then decode the rest
    k, v = project_kv(m, x[:, :4])
    for b in range(B):
        cache.append(b, k[b], v[b])
    assert cache.lengths() == [4, 4]
    y = m.decode(cache, x[:, 4:])
    assert rel(y, m(x, is_causal=True)[0][:, 4:]) <= 1e-5
    # truncate sequence 1 to 2 tokens: its next token follows those two
    cache.truncate(1, 2)
    assert cache.length(1) == 2 and cache.length(0) == T
    new = rand(B, 1, 8)
    y = m.decode(cache, new)
    seq0 = np.concatenate([x[0], new[0]])[None]
    seq1 = np.concatenate([x[1, :2], new[1]])[None]
    assert rel(y[0], m(seq0, is_causal=True)[0][0, -1:]) <= 1e-5
    assert rel(y[1], m(seq1, is_causal=True)[0][0, -1:]) <= 1e-5
    # sequences of different lengths: each one's weights stop at its own length
    y, w = m.decode(cache, new, need_weights=True)
    assert w.shape == (B, 2, 1, T + 2)
    assert not w[1, :, :, 4:].any()
    _, w1 = m(np.concatenate([x[1, :2], new[1], new[1]])[None], is_causal=True,
              average_attn_weights=False)
    assert rel(w[1, :, 0, :4], w1[0, :, -1]) <= 1e-5
    cache.truncate(1, 3)
    cache.truncate(0, 0)
    assert cache.lengths() == [0, 3]
    # the views write through to the cache
    kv, vv = cache.view(1)
    kv[...] = 0
    assert not cache.view(1)[0].any()
    with pytest.raises(ValueError, match="len"):
        cache.truncate(1, 5)
    with pytest.raises(IndexError, match="b: 2"):
        cache.length(2)
    with pytest.raises(ValueError, match="k: shape"):
        cache.append(0, np.zeros((1, 2, 4)), np.zeros((1, 2, 4)))
    with pytest.raises(ValueError, match="max_len"):
        cache.append(0, np.zeros((11, 1, 4)), np.zeros((11, 1, 4)))
    with pytest.raises(ValueError, match="x: shape"):
        m.decode(cache, rand(3, 1, 8))
    with pytest.raises(TypeError, match="cache"):
        m.decode(None, rand(2, 1, 8))


# ---------------------------------------------------------------- errors

def test_errors_name_the_argument():
    m = qkv.MultiheadAttention(8, 2, batch_first=True)
    x = rand(2, 3, 8)
    with pytest.raises(ValueError, match="query: shape"):
        m(rand(8))
    with pytest.raises(ValueError, match="query: last dim 7 differs from embed_dim 8"):
        m(rand(2, 3, 7))
    with pytest.raises(ValueError, match="key, value: differ"):
        m(x, rand(2, 4, 8), rand(2, 4, 8))
    with pytest.raises(ValueError, match="value: given without key"):
        m(x, None, x)
    with pytest.raises(ValueError, match="key: last dim"):
        m(x, rand(2, 4, 5), None)
    with pytest.raises(ValueError, match="key: batch size"):
        c = rand(3, 4, 8)
        m(x, c, c)
    with pytest.raises(ValueError, match="key: 2 dims"):
        c = rand(4, 8)
        m(x, c, c)
    with pytest.raises(ValueError, match="attn_mask: shape"):
        m(x, attn_mask=np.zeros((3, 4), bool))
    with pytest.raises(ValueError, match="attn_mask: shape"):
        m(x, attn_mask=np.zeros((2, 3, 3), bool))  # needs N * num_heads = 4
    with pytest.raises(TypeError, match="attn_mask: dtype int"):
        m(x, attn_mask=np.zeros((3, 3), np.int64))
    with pytest.raises(ValueError, match="key_padding_mask: shape"):
        m(x, key_padding_mask=np.zeros((2, 4), bool))
    with pytest.raises(TypeError, match="query: dtype int32"):
        m(x.astype(np.int32))
    with pytest.raises(TypeError, match="key: dtype"):
        c = np.zeros((2, 4, 8), np.int64)
        m(x, c, c)
    with pytest.raises(ValueError, match="grad_output: shape"):
        m.grad(x, rand(2, 3, 7))
    with pytest.raises(ValueError, match="kdim, vdim"):
        qkv.MultiheadAttention(8, 2, kdim=4, vdim=5)
    with pytest.raises(ValueError, match="num_kv_heads"):
        qkv.MultiheadAttention(8, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match="embed_dim: 9 is not a multiple of num_heads"):
        qkv.MultiheadAttention(9, 2)
    with pytest.raises(ValueError, match="rope: 'sideways'"):
        qkv.MultiheadAttention(8, 2, rope="sideways")
    with pytest.raises(ValueError, match="head_dim"):  # libqkv's check: RoPE needs even E
        qkv.MultiheadAttention(6, 2, rope="half")
    with pytest.raises(ValueError, match="rope_base"):
        qkv.MultiheadAttention(8, 2, rope="half", rope_base=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        qkv.MultiheadAttention(8, 2, dropout=0.1)
    cross = qkv.MultiheadAttention(8, 2, kdim=4, vdim=4)
    with pytest.raises(ValueError, match="key: needed"):
        cross(rand(3, 1, 8))


# ------------------------------------------------------- torch, if present

def torch_layer(m, kdim=None, batch_first=False):
    torch = pytest.importorskip("torch")
    t = torch.nn.MultiheadAttention(m.embed_dim, m.num_heads, kdim=kdim, vdim=kdim,
                                    batch_first=batch_first)
    t.load_state_dict({k: torch.from_numpy(v) for k, v in m.state_dict().items()})
    return torch, t


# torch warns that a bool key_padding_mask beside a float attn_mask is deprecated
@pytest.mark.filterwarnings("ignore:Support for mismatched key_padding_mask")
@pytest.mark.parametrize("layout", ["batch_first", "seq_first", "unbatched"])
@pytest.mark.parametrize("kind", ["self", "cross", "kpm_suffix", "kpm_holes", "bool2",
                                  "float3_kpm", "causal_mask"])
def test_against_torch(kind, layout):
    pytest.importorskip("torch")
    kdim = 6 if kind == "cross" else None
    m = randomize(qkv.MultiheadAttention(12, 3, kdim=kdim, vdim=kdim,
                                         batch_first=layout == "batch_first"))
    torch, t = torch_layer(m, kdim, layout == "batch_first")
    B = 1 if layout == "unbatched" else 2
    L, S = 5, (7 if kind == "cross" else 5)
    x = rand(B, L, 12)
    c = rand(B, S, kdim) if kdim else x
    kw = {}
    if kind == "kpm_suffix":
        kw["key_padding_mask"] = np.arange(S)[None, :] >= np.array([S, 3][:B])[:, None]
    elif kind in ("kpm_holes", "float3_kpm"):
        k = np.zeros((B, S), bool)
        k[:, 1] = True
        k[-1, 3] = True
        kw["key_padding_mask"] = k
    if kind == "bool2":
        a = RNG.random((L, S)) < 0.3
        a[:, 0] = False
        kw["attn_mask"] = a
    elif kind == "float3_kpm":
        kw["attn_mask"] = rand(B * 3, L, S) if layout != "unbatched" else rand(3, L, S)
    elif kind == "causal_mask":
        kw["attn_mask"] = ~np.tri(L, S, dtype=bool)
        kw["is_causal"] = True
    if layout == "unbatched" and "key_padding_mask" in kw:
        kw["key_padding_mask"] = kw["key_padding_mask"][0]
    xs, cs = to_layout(x, layout), to_layout(c, layout)
    tkw = {k: torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
           for k, v in kw.items()}
    for avg in (True, False):
        y, w = m(xs, cs, cs, average_attn_weights=avg, **kw)
        with torch.no_grad():
            ty, tw = t(torch.from_numpy(xs), torch.from_numpy(cs), torch.from_numpy(cs),
                       average_attn_weights=avg, **tkw)
        assert y.shape == tuple(ty.shape) and w.shape == tuple(tw.shape)
        assert rel(y, ty.numpy()) <= 1e-5 and rel(w, tw.numpy()) <= 1e-5
    # gradients of sum(y * dy) against autograd
    dy = rand(*y.shape)
    tx = torch.from_numpy(xs.copy()).requires_grad_(True)
    if kdim is None:
        # self-attention: one input, so dx holds every path
        ty, _ = t(tx, tx, tx, **tkw)
        (ty * torch.from_numpy(dy)).sum().backward()
        dx, dc, g = m.grad(xs, dy, **kw)
        assert dc is None
    else:
        tc = torch.from_numpy(cs.copy()).requires_grad_(True)
        ty, _ = t(tx, tc, tc, **tkw)
        (ty * torch.from_numpy(dy)).sum().backward()
        dx, dc, g = m.grad(xs, dy, cs, cs, **kw)
        assert rel(dc, tc.grad.numpy()) <= 1e-5
    assert rel(dx, tx.grad.numpy()) <= 1e-5
    tg = dict(t.named_parameters())
    for name, val in g.items():
        assert rel(val, tg[name].grad.numpy()) <= 1e-5, name


def test_torch_state_dict_loads_directly():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    for kdim in (None, 5):
        t = torch.nn.MultiheadAttention(10, 5, kdim=kdim, vdim=kdim, batch_first=True)
        m = qkv.MultiheadAttention(10, 5, kdim=kdim, vdim=kdim, batch_first=True)
        m.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})
        assert list(m.state_dict()) == list(t.state_dict())
        x = rand(2, 4, 10)
        c = rand(2, 6, kdim) if kdim else x
        with torch.no_grad():
            ty, tw = t(torch.from_numpy(x), torch.from_numpy(c), torch.from_numpy(c))
        y, w = m(x, c, c)
        assert rel(y, ty.numpy()) <= 1e-5 and rel(w, tw.numpy()) <= 1e-5


# ------------------------------------ torch's positional order, types

def test_constructor_positional_order_is_torchs():
    """torch: (embed_dim, num_heads, dropout, bias, add_bias_kv,
    add_zero_attn, kdim, vdim, batch_first, device, dtype)."""
    m = randomize(qkv.MultiheadAttention(8, 2, 0.0, True, False, False, 6, 6, True, None, None))
    assert m.q_proj_bias is not None and m.kdim == 6 and m.batch_first
    x, c = rand(2, 3, 8), rand(2, 4, 6)
    y, w = m(x, c, c, None, True, None, False)
    want_y, want_w = layer64(params64(m), x, c, H=2, Hkv=2)
    assert rel(y, want_y) <= 1e-5 and rel(w, want_w) <= 1e-5
    nb = qkv.MultiheadAttention(8, 2, 0.0, False)
    assert nb.q_proj_bias is None and nb.kdim == 8 and not nb.batch_first
    with pytest.raises(ValueError, match="dropout: 0.5"):
        qkv.MultiheadAttention(8, 2, 0.5)
    with pytest.raises(TypeError, match="dropout"):
        qkv.MultiheadAttention(8, 2, False)  # bias=False in the wrong place
    for name in ("add_bias_kv", "add_zero_attn"):
        with pytest.raises(ValueError, match=name):
            qkv.MultiheadAttention(8, 2, **{name: True})
    with pytest.raises(ValueError, match="device"):
        qkv.MultiheadAttention(8, 2, device="cuda")
    with pytest.raises(ValueError, match="dtype"):
        qkv.MultiheadAttention(8, 2, dtype=np.float64)
    assert qkv.MultiheadAttention(8, 2, device="cpu", dtype=np.float32).embed_dim == 8


def test_forward_positional_order_is_torchs():
    """forward(query, key, value, key_padding_mask, need_weights, attn_mask,
    average_attn_weights, is_causal), as torch's."""
    m = randomize(qkv.MultiheadAttention(8, 2, batch_first=True))
    x = rand(2, 5, 8)
    pad = np.zeros((2, 5), bool)
    pad[1, 3:] = True
    y, w = m(x, x, x, pad, True, None, False, True)
    want_y, want_w = layer64(params64(m), x, H=2, Hkv=2, causal=True, kv_lens=[5, 3])
    assert rel(y, want_y) <= 1e-5 and rel(w, want_w) <= 1e-5
    y, w = m.forward(x, x, x, None, False, None, True, True)
    assert w is None and rel(y, layer64(params64(m), x, H=2, Hkv=2, causal=True)[0]) <= 1e-5


@pytest.mark.parametrize("kw", [dict(need_weights=0.5), dict(need_weights=np.ones((3, 3))),
                                dict(average_attn_weights=0.0), dict(is_causal=1.0),
                                dict(is_causal=1), dict(need_weights="no")])
def test_number_where_a_flag_belongs(kw):
    m = qkv.MultiheadAttention(8, 2, batch_first=True)
    x = rand(2, 3, 8)
    with pytest.raises(TypeError, match=next(iter(kw))):
        m(x, **kw)
    if "is_causal" in kw:
        with pytest.raises(TypeError, match="is_causal"):
            m.grad(x, rand(2, 3, 8), **kw)


@pytest.mark.parametrize("kw", [dict(bias=1.0), dict(batch_first=0.0), dict(bias=None)])
def test_constructor_flags_are_bools(kw):
    with pytest.raises(TypeError, match=next(iter(kw))):
        qkv.MultiheadAttention(8, 2, **kw)


def test_decode_need_weights_is_a_flag():
    m = qkv.MultiheadAttention(8, 2, batch_first=True)
    with pytest.raises(TypeError, match="need_weights"):
        m.decode(qkv.KVCache(m, 1, 4), rand(1, 1, 8), 1.0)


@pytest.mark.parametrize("kw", [dict(rope_base=True), dict(rope_base="10000")])
def test_bool_where_a_number_belongs(kw):
    with pytest.raises(TypeError, match="rope_base"):
        qkv.MultiheadAttention(8, 2, rope="half", **kw)


# ------------------------------------------- integers handed to C

@pytest.mark.parametrize("args, kw, name", [
    ((8.0, 2), {}, "embed_dim"), ((8, 2.0), {}, "num_heads"), ((8, 2.5), {}, "num_heads"),
    ((2 ** 64 + 8, 2), {}, "embed_dim"), ((8, 2 ** 64 + 2), {}, "num_heads"),
    ((8, 2), dict(kdim=2 ** 64 + 8, vdim=2 ** 64 + 8), "kdim"),
    ((8, 2), dict(kdim=6.0, vdim=6.0), "kdim"), ((8, 2), dict(num_kv_heads=1.0), "num_kv_heads"),
    ((8, 2), dict(num_kv_heads=2 ** 64 + 1), "num_kv_heads"),
    ((8, 2), dict(head_dim=2 ** 64 + 4), "head_dim"), ((8, 2), dict(head_dim=4.0), "head_dim"),
    ((8, 2), dict(threads=2 ** 32 + 1), "threads"), ((8, 2), dict(threads=1.5), "threads"),
    ((8, 2), dict(threads=-1), "threads"),
])
def test_layer_integers_are_checked_not_wrapped(args, kw, name):
    with pytest.raises(ValueError, match=name):
        qkv.MultiheadAttention(*args, **kw)


@pytest.mark.parametrize("args, kw, name", [
    ((8, 2), dict(num_kv_heads=True), "num_kv_heads"), ((True, 2), {}, "embed_dim"),
    ((8, 2), dict(head_dim=False), "head_dim"), ((8, 2), dict(threads=True), "threads"),
    ((8, "2"), {}, "num_heads"),
])
def test_layer_integer_of_the_wrong_type(args, kw, name):
    with pytest.raises(TypeError, match=name):
        qkv.MultiheadAttention(*args, **kw)


def test_layer_takes_numpy_integers():
    m = qkv.MultiheadAttention(np.int64(8), np.int32(4), num_kv_heads=np.uint8(2),
                               head_dim=np.int16(2), threads=np.int64(1), batch_first=True)
    assert (m.embed_dim, m.num_heads, m.num_kv_heads, m.head_dim) == (8, 4, 2, 2)
    cache = qkv.KVCache(m, np.int64(2), np.uint32(5))
    assert cache.batch == 2 and cache.max_len == 5
    cache.truncate(np.int8(1), np.int64(0))
    assert cache.length(np.uint64(1)) == 0


def test_from_safetensors_integers(tmp_path):
    path = str(tmp_path / "m.safetensors")
    qkv.MultiheadAttention(8, 2).save(path)
    for args, kw, err, name in (((2.0,), {}, ValueError, "num_heads"),
                                ((2 ** 64 + 2,), {}, ValueError, "num_heads"),
                                ((2,), dict(num_kv_heads=2 ** 64 + 1), ValueError, "num_kv_heads"),
                                ((True,), {}, TypeError, "num_heads"),
                                ((2,), dict(threads=2 ** 32), ValueError, "threads"),
                                ((2,), dict(rope_base=True), TypeError, "rope_base")):
        with pytest.raises(err, match=name):
            qkv.MultiheadAttention.from_safetensors(path, *args, **kw)


@pytest.mark.parametrize("call, err, name", [
    (lambda m, c: qkv.KVCache(m, 2 ** 64 + 1, 4), ValueError, "batch"),
    (lambda m, c: qkv.KVCache(m, 1.0, 4), ValueError, "batch"),
    (lambda m, c: qkv.KVCache(m, 1, 2 ** 64 + 4), ValueError, "max_len"),
    (lambda m, c: qkv.KVCache(m, 1, 4.5), ValueError, "max_len"),
    (lambda m, c: qkv.KVCache(m, 1, True), TypeError, "max_len"),
    (lambda m, c: c.truncate(0, 2 ** 64), ValueError, "n"),
    (lambda m, c: c.truncate(0, 1.5), ValueError, "n"),
    (lambda m, c: c.truncate(0, -2 ** 64), ValueError, "n"),
    (lambda m, c: c.truncate(1.0, 0), ValueError, "b"),
    (lambda m, c: c.length(1.7), ValueError, "b"),
    (lambda m, c: c.length(True), TypeError, "b"),
    (lambda m, c: c.view(2 ** 64 + 1), IndexError, "b"),
    (lambda m, c: c.append(0.0, np.zeros((1, 2, 4)), np.zeros((1, 2, 4))), ValueError, "b"),
])
def test_cache_integers_are_checked_not_wrapped(call, err, name):
    m = qkv.MultiheadAttention(8, 2, batch_first=True)
    c = qkv.KVCache(m, 2, 4)
    c.append(0, np.zeros((2, 2, 4)), np.zeros((2, 2, 4)))
    with pytest.raises(err, match=r"\b%s\b" % name):
        call(m, c)
    assert c.lengths() == [2, 0]


def test_threads_set_after_construction_are_checked():
    m = qkv.MultiheadAttention(8, 2, batch_first=True)
    m.threads = 2 ** 32 + 1
    with pytest.raises(ValueError, match="threads"):
        m(rand(1, 2, 8))
