"""qkv's Python binding against a float64 numpy implementation written here
(DESIGN.md section 1 with torch's broadcasting), on random shapes and
options; strided inputs, GQA, the backward, and the errors."""
import numpy as np
import pytest

import qkv


def reference(q, k, v, mask=None, causal=False, align="top_left", scale=None, gqa=False,
              window=None, kv_lens=None, softcap=None):
    """out, weights, lse in float64; fully masked rows give 0 / 0 / -inf."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    if gqa:
        rep = q.shape[-3] // k.shape[-3]
        k = np.repeat(k, rep, axis=-3)
        v = np.repeat(v, rep, axis=-3)
    L, S, E = q.shape[-2], k.shape[-2], q.shape[-1]
    s = (scale if scale is not None else 1 / np.sqrt(E)) * q @ np.swapaxes(k, -1, -2)
    if softcap is not None:
        s = softcap * np.tanh(s / softcap)
    ok = np.ones(s.shape, bool)
    i = np.arange(L)[:, None]
    j = np.arange(S)[None, :]
    d = i + (S - L if align == "bottom_right" else 0)
    if causal:
        ok &= j <= d
    if window is not None:
        left, right = window
        if left is not None and left >= 0:
            ok &= j >= d - left
        if right is not None and right >= 0:
            ok &= j <= d + right
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype == bool:
            ok = ok & np.broadcast_to(mask, s.shape)
        else:
            s = s + mask.astype(np.float64)
    if kv_lens is not None:
        flat = ok.reshape(-1, *ok.shape[-3:])
        for b, n in enumerate(np.asarray(kv_lens).reshape(-1)):
            flat[b, :, :, n:] = False
        ok = flat.reshape(ok.shape)
    s = np.where(ok, s, -np.inf)
    m = s.max(-1, keepdims=True)
    dead = np.isneginf(m)
    e = np.where(ok, np.exp(s - np.where(dead, 0, m)), 0)
    tot = e.sum(-1, keepdims=True)
    p = np.where(dead, 0, e / np.where(dead, 1, tot))
    lse = np.where(dead[..., 0], -np.inf, (m + np.log(np.where(dead, 1, tot)))[..., 0])
    return p @ v, p, lse


def rel(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    both_inf = np.isinf(want) & (got == want)
    got, want = np.where(both_inf, 0, got), np.where(both_inf, 0, want)
    den = np.linalg.norm(want)
    return np.linalg.norm(got - want) / den if den else np.linalg.norm(got)


RNG = np.random.default_rng(7)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


CASES = [
    dict(),
    dict(causal=True),
    dict(causal=True, align="bottom_right"),
    dict(scale=0.3),
    dict(softcap=2.0),
    dict(window=(3, 1)),
    dict(window=(2, None), causal=True, align="bottom_right"),
    dict(mask="bool"),
    dict(mask="float"),
    dict(kv_lens=True),
    dict(gqa=True, causal=True, mask="float", softcap=4.0),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1, 1), (2, 4, 13, 29, 16, 8), (3, 6, 40, 17, 33, 33)])
def test_against_numpy(case, shape):
    opts = dict(CASES[case])
    B, H, L, S, E, Ev = shape
    Hkv = H // 2 if opts.get("gqa") and H % 2 == 0 else H
    q, k, v = rand(B, H, L, E), rand(B, Hkv, S, E), rand(B, Hkv, S, Ev)
    kw, ref = {}, {}
    if opts.get("mask") == "bool":
        m = RNG.random((B, 1, L, S)) < 0.7
        m[..., 0, :] = False  # a fully masked row
        kw["attn_mask"] = ref["mask"] = m
    elif opts.get("mask") == "float":
        m = rand(L, S)
        kw["attn_mask"] = ref["mask"] = m
    if opts.get("causal"):
        kw["is_causal"] = ref["causal"] = True
    if "align" in opts:
        kw["causal_alignment"] = ref["align"] = opts["align"]
    for key in ("scale", "softcap", "window"):
        if key in opts:
            kw[key] = ref[key] = opts[key]
    if opts.get("kv_lens"):
        lens = RNG.integers(0, S + 1, size=B)
        kw["kv_lens"] = ref["kv_lens"] = lens
    if Hkv != H:
        kw["enable_gqa"] = ref["gqa"] = True
    out, w, lse = qkv.scaled_dot_product_attention(q, k, v, return_weights=True, return_lse=True,
                                                   **kw)
    want_o, want_w, want_l = reference(q, k, v, **ref)
    assert out.dtype == np.float32 and out.shape == (B, H, L, Ev)
    assert rel(out, want_o) <= 1e-5
    assert rel(w, want_w) <= 1e-5
    assert rel(lse, want_l) <= 1e-5
    again = qkv.scaled_dot_product_attention(q, k, v, reference=True, **kw)
    assert rel(again, want_o) <= 1e-6


def test_ranks_broadcast_and_dtypes():
    q, k, v = rand(5, 8), rand(7, 8), rand(7, 3)
    out = qkv.scaled_dot_product_attention(q, k, v)
    assert out.shape == (5, 3)
    assert rel(out, reference(q, k, v)[0]) <= 1e-5
    # batch dims broadcast: one key/value for every batch entry
    q4 = rand(2, 3, 5, 8)
    out = qkv.scaled_dot_product_attention(q4, k[None, None], v[None, None])
    assert rel(out, reference(q4, np.broadcast_to(k, (2, 3, 7, 8)),
                              np.broadcast_to(v, (2, 3, 7, 3)))[0]) <= 1e-5
    # float64 is read as float32
    out64 = qkv.scaled_dot_product_attention(q.astype(np.float64), k.astype(np.float64),
                                             v.astype(np.float64))
    assert np.array_equal(out64, qkv.scaled_dot_product_attention(q, k, v))


def test_float16_stays_float16():
    # computed on the float16 values as they are, every sum in float32: the
    # float32 result on the same values, rounded once more to float16
    q, k, v = rand(2, 3, 9, 8), rand(2, 3, 11, 8), rand(2, 3, 11, 5)
    q16, k16, v16 = (x.astype(np.float16) for x in (q, k, v))
    for kw in ({}, {"is_causal": True}, {"attn_mask": rand(9, 11).astype(np.float16)}):
        out16 = qkv.scaled_dot_product_attention(q16, k16, v16, **kw)
        assert out16.dtype == np.float16
        kw32 = {n: (a.astype(np.float32) if isinstance(a, np.ndarray) else a)
                for n, a in kw.items()}
        want = qkv.scaled_dot_product_attention(q16.astype(np.float32), k16.astype(np.float32),
                                                v16.astype(np.float32), **kw32)
        assert np.array_equal(out16, want.astype(np.float16))
    out, w, lse = qkv.scaled_dot_product_attention(q16, k16, v16, return_weights=True,
                                                   return_lse=True)
    assert w.dtype == np.float16 and lse.dtype == np.float32
    dq, dk, dv = qkv.attention_backward(out, q16, k16, v16)
    assert dq.dtype == dk.dtype == dv.dtype == np.float16
    g32 = qkv.attention_backward(out.astype(np.float32), q16.astype(np.float32),
                                 k16.astype(np.float32), v16.astype(np.float32))
    for got, want in zip((dq, dk, dv), g32):
        assert rel(got.astype(np.float32), want) <= 2e-3
    with pytest.raises(TypeError, match="key: dtype float32, expected float16 as query has"):
        qkv.scaled_dot_product_attention(q16, k, v16)
    with pytest.raises(TypeError, match="grad_out: dtype float32"):
        qkv.attention_backward(out.astype(np.float32), q16, k16, v16)


def test_bfloat16_stays_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = ml_dtypes.bfloat16
    q, k, v = rand(2, 4, 16, 8), rand(2, 2, 20, 8), rand(2, 2, 20, 8)
    qb, kb, vb = (x.astype(bf16) for x in (q, k, v))
    out = qkv.scaled_dot_product_attention(qb, kb, vb, enable_gqa=True, is_causal=True)
    assert out.dtype == bf16
    want = qkv.scaled_dot_product_attention(qb.astype(np.float32), kb.astype(np.float32),
                                            vb.astype(np.float32), enable_gqa=True,
                                            is_causal=True, reference=True)
    assert rel(out.astype(np.float32), want) <= 4e-3
    dq, dk, dv = qkv.attention_backward(out, qb, kb, vb, enable_gqa=True, is_causal=True)
    assert dq.dtype == dk.dtype == dv.dtype == bf16


def test_strided_views():
    # (B, L, H, E) memory seen as (B, H, L, E); keys in reverse; every other value row
    q = rand(2, 16, 4, 8).transpose(0, 2, 1, 3)
    k = rand(2, 4, 16, 8)[:, :, ::-1, :]
    v = rand(2, 4, 32, 8)[:, :, ::2, :]
    out = qkv.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert rel(out, reference(q, k, v, causal=True)[0]) <= 1e-5


def test_gqa_equals_repeated_heads():
    q, k, v = rand(2, 6, 9, 8), rand(2, 2, 11, 8), rand(2, 2, 11, 5)
    a = qkv.scaled_dot_product_attention(q, k, v, enable_gqa=True, reference=True)
    b = qkv.scaled_dot_product_attention(q, np.repeat(k, 3, axis=1), np.repeat(v, 3, axis=1),
                                         reference=True)
    assert np.array_equal(a, b)


def numpy_grads(q, k, v, dout, mask=None, causal=False, softcap=None, scale=None):
    """dq, dk, dv, dmask of sum(out * dout), the formulas of DESIGN.md, in float64."""
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    E = q.shape[-1]
    sc = scale if scale is not None else 1 / np.sqrt(E)
    u = sc * q @ np.swapaxes(k, -1, -2)
    s = softcap * np.tanh(u / softcap) if softcap else u
    if mask is not None:
        s = s + mask
    L, S = s.shape[-2:]
    if causal:
        s = np.where(np.arange(S)[None, :] <= np.arange(L)[:, None], s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    o = p @ v
    dv = np.swapaxes(p, -1, -2) @ dout
    dp = dout @ np.swapaxes(v, -1, -2)
    ds = p * (dp - (dout * o).sum(-1, keepdims=True))
    du = ds * (1 - np.tanh(u / softcap) ** 2) if softcap else ds
    return sc * du @ k, sc * np.swapaxes(du, -1, -2) @ q, dv, ds


def test_backward():
    q, k, v, dout = rand(2, 3, 7, 8), rand(2, 3, 9, 8), rand(2, 3, 9, 4), rand(2, 3, 7, 4)
    m = rand(7, 9)
    dq, dk, dv, dm = qkv.attention_backward(dout, q, k, v, attn_mask=m, softcap=3.0,
                                            return_mask_grad=True)
    want = numpy_grads(q, k, v, dout, mask=m, softcap=3.0)
    assert rel(dq, want[0]) <= 1e-5 and rel(dk, want[1]) <= 1e-5 and rel(dv, want[2]) <= 1e-5
    assert dm.shape == (7, 9)
    assert rel(dm, want[3].sum(axis=(0, 1))) <= 1e-5
    dq2, dk2, dv2 = qkv.attention_backward(dout, q, k, v, is_causal=True)
    want = numpy_grads(q, k, v, dout, causal=True)
    assert rel(dq2, want[0]) <= 1e-5 and rel(dk2, want[1]) <= 1e-5 and rel(dv2, want[2]) <= 1e-5


def test_errors_name_the_argument():
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    with pytest.raises(ValueError, match="K: head dim"):
        qkv.scaled_dot_product_attention(q, rand(1, 2, 5, 6), v)
    with pytest.raises(ValueError, match="heads do not divide"):
        qkv.scaled_dot_product_attention(rand(1, 3, 4, 8), k, v, enable_gqa=True)
    with pytest.raises(ValueError, match="attn_mask"):
        qkv.scaled_dot_product_attention(q, k, v, attn_mask=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="query"):
        qkv.scaled_dot_product_attention(q.astype(np.int32), k, v)
    with pytest.raises(ValueError, match="scale"):
        qkv.scaled_dot_product_attention(q, k, v, scale=float("nan"))
    with pytest.raises(ValueError, match="kv_lens"):
        qkv.scaled_dot_product_attention(q, k, v, kv_lens=[9])
    with pytest.raises(ValueError, match="causal_alignment"):
        qkv.scaled_dot_product_attention(q, k, v, causal_alignment="middle")
    with pytest.raises(ValueError, match="return_mask_grad"):
        qkv.attention_backward(rand(1, 2, 4, 3), q, k, v, return_mask_grad=True)


# ------------------------------------------- torch's positional order

def test_positional_order_is_torchs():
    """(query, key, value, attn_mask, dropout_p, is_causal, scale,
    enable_gqa): torch's order, so a call copied from torch means the same."""
    q, k, v = rand(2, 4, 6, 8), rand(2, 2, 9, 8), rand(2, 2, 9, 5)
    kr, vr = np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1)
    out = qkv.scaled_dot_product_attention(q, kr, vr, None, 0.0, True)
    assert rel(out, reference(q, kr, vr, causal=True)[0]) <= 1e-5
    out = qkv.scaled_dot_product_attention(q, k, v, None, 0.0, True, 0.3, True)
    assert rel(out, reference(q, k, v, causal=True, scale=0.3, gqa=True)[0]) <= 1e-5
    m = rand(6, 9)
    out = qkv.scaled_dot_product_attention(q, kr, vr, m, 0, False, 0.5)
    assert rel(out, reference(q, kr, vr, mask=m, scale=0.5)[0]) <= 1e-5


def test_backward_positional_order_is_the_forwards():
    q, k, v, dout = rand(2, 3, 7, 8), rand(2, 3, 9, 8), rand(2, 3, 9, 4), rand(2, 3, 7, 4)
    dq, dk, dv = qkv.attention_backward(dout, q, k, v, None, 0.0, True, 0.3)
    want = numpy_grads(q, k, v, dout, causal=True, scale=0.3)
    assert rel(dq, want[0]) <= 1e-5 and rel(dk, want[1]) <= 1e-5 and rel(dv, want[2]) <= 1e-5


def test_dropout_p_is_refused_until_there_is_dropout():
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    dout = rand(1, 2, 4, 3)
    for f, args in ((qkv.scaled_dot_product_attention, (q, k, v)),
                    (qkv.attention_backward, (dout, q, k, v))):
        with pytest.raises(ValueError, match="dropout_p: 0.1"):
            f(*args, None, 0.1)
        with pytest.raises(ValueError, match="dropout_p"):
            f(*args, dropout_p=float("nan"))
        with pytest.raises(TypeError, match="dropout_p"):
            f(*args, None, True)


@pytest.mark.parametrize("kw", [dict(scale=True), dict(softcap=True), dict(dropout_p=False),
                                dict(scale="0.5"), dict(softcap=np.bool_(True)),
                                dict(window=(True, 0)), dict(window=(0, False)),
                                dict(threads=True), dict(kv_lens=[True])])
def test_bool_where_a_number_belongs(kw):
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    name = next(iter(kw))
    with pytest.raises(TypeError, match=name):
        qkv.scaled_dot_product_attention(q, k, v, **kw)
    with pytest.raises(TypeError, match=name):
        qkv.attention_backward(rand(1, 2, 4, 3), q, k, v, **kw)


@pytest.mark.parametrize("kw", [dict(is_causal=0.0), dict(is_causal=1), dict(enable_gqa=1.0),
                                dict(is_causal=np.ones(1, bool)), dict(enable_gqa="yes"),
                                dict(return_weights=0.5), dict(return_lse=1),
                                dict(reference=1.0)])
def test_number_where_a_flag_belongs(kw):
    """torch's is_causal and enable_gqa take a bool only; so do ours."""
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    with pytest.raises(TypeError, match=next(iter(kw))):
        qkv.scaled_dot_product_attention(q, k, v, **kw)


def test_flags_take_numpy_bools_and_numbers_take_numpy_scalars():
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    out = qkv.scaled_dot_product_attention(q, k, v, is_causal=np.bool_(True),
                                           scale=np.float32(0.25), softcap=np.float64(3.0),
                                           window=(np.int64(1), np.int32(-1)),
                                           threads=np.int16(2))
    want = reference(q, k, v, causal=True, scale=0.25, softcap=3.0, window=(1, -1))[0]
    assert rel(out, want) <= 1e-5
    out = qkv.scaled_dot_product_attention(q, k, v, scale=2)  # an int is a number
    assert rel(out, reference(q, k, v, scale=2.0)[0]) <= 1e-5


def test_scale_past_float_is_refused_or_exact():
    """A scale the float path cannot hold (issue 12, item 1) is libqkv's to
    decide: refused with ValueError naming scale, or computed as the double
    it is; never NaN. The binding hands the double over unchanged."""
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    for s in (1e300, -1e300, 1e39):
        try:
            out = qkv.scaled_dot_product_attention(q, k, v, scale=s)
        except ValueError as e:
            assert str(e).startswith("scaled_dot_product_attention: scale"), e
        else:
            assert rel(out, reference(q, k, v, scale=s)[0]) <= 1e-5


def test_scale_the_binding_checks():
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    with pytest.raises(ValueError, match="scale: .* too large for a double"):
        qkv.scaled_dot_product_attention(q, k, v, scale=10 ** 400)
    with pytest.raises(ValueError, match="scale: 0"):
        qkv.scaled_dot_product_attention(q, k, v, scale=0)  # 0 means the default in C
    with pytest.raises(ValueError, match="scaled_dot_product_attention: scale: .*finite"):
        qkv.scaled_dot_product_attention(q, k, v, scale=float("inf"))  # libqkv's message


# ------------------------------------------- integers handed to C

@pytest.mark.parametrize("kw", [dict(window=(2 ** 64 + 2, 0)), dict(window=(2 ** 63, 0)),
                                dict(window=(-5, 0)), dict(window=(0, -2)),
                                dict(window=(2.0, 0)), dict(window=(np.float64(1), 0)),
                                dict(window=(3,)), dict(window=5),
                                dict(threads=2 ** 32 + 1), dict(threads=2 ** 31),
                                dict(threads=2.0), dict(threads=0),
                                dict(kv_lens=[3.9]), dict(kv_lens=[2 ** 64]),
                                dict(kv_lens=np.array([2 ** 63], np.uint64)),
                                dict(kv_lens=[2.0]), dict(kv_lens=[-2 ** 64]),
                                dict(kv_lens="3")])
def test_integers_are_checked_not_wrapped(kw):
    q, k, v = rand(1, 2, 4, 8), rand(1, 2, 5, 8), rand(1, 2, 5, 3)
    name = next(iter(kw))
    with pytest.raises((ValueError, TypeError), match=name) as e:
        qkv.scaled_dot_product_attention(q, k, v, **kw)
    # a wrong type is a TypeError; a number that is no integer, or out of range, a ValueError
    wrong_type = isinstance(kw[name], str) or name == "window" and np.ndim(kw[name]) == 0
    assert e.type is (TypeError if wrong_type else ValueError)


def test_integer_scalars_and_arrays_of_any_width():
    q, k, v = rand(3, 2, 4, 8), rand(3, 2, 5, 8), rand(3, 2, 5, 3)
    for lens in ([1, 5, 0], np.array([1, 5, 0], np.uint8), np.array([1, 5, 0], np.int32),
                 np.array([1, 5, 0], np.uint64), (np.int64(1), 5, np.uint16(0))):
        out = qkv.scaled_dot_product_attention(q, k, v, kv_lens=lens, window=(2, None))
        want = reference(q, k, v, kv_lens=[1, 5, 0], window=(2, None))[0]
        assert rel(out, want) <= 1e-5


def test_positions_move_the_diagonal():
    """q_offsets / k_offsets against the bool mask the positions mean
    (key at position pk open to a query at pq when pk <= pq)."""
    q, k, v = rand(3, 2, 5, 8), rand(3, 2, 17, 8), rand(3, 2, 17, 4)
    qpos, kpos = np.array([12, 0, 0]), np.array([0, 0, 25])
    pq = qpos[:, None, None, None] + np.arange(5)[:, None]
    pk = kpos[:, None, None, None] + np.arange(17)[None, :]
    allowed = pk <= pq
    want = reference(q, k, v, mask=allowed)[0]
    got = qkv.scaled_dot_product_attention(q, k, v, is_causal=True, q_offsets=qpos,
                                           k_offsets=kpos)
    assert rel(got, want) < 1e-5
    # Row 0 of batch 1 sees key 0 only; batch 2's queries precede its keys.
    assert np.allclose(got[1, :, 0], v[1, :, 0], atol=1e-6)
    assert np.all(got[2, :, :1] == 0)
    dout = rand(3, 2, 5, 4)
    g = qkv.attention_backward(dout, q, k, v, is_causal=True, q_offsets=qpos, k_offsets=kpos)
    gm = qkv.attention_backward(dout, q, k, v, attn_mask=allowed)
    for a, b in zip(g, gm):
        assert rel(a, b) < 1e-5
    with pytest.raises(ValueError, match="q_offsets"):
        qkv.scaled_dot_product_attention(q, k, v, q_offsets=[1, 2])
    with pytest.raises(ValueError, match=r"k_offsets\[0\]"):
        qkv.scaled_dot_product_attention(q, k, v, k_offsets=[-1, 0, 0])


def test_merge_of_a_split_is_the_whole():
    """Attention over keys [0, c) and [c, S) merged equals one call over
    all keys, for every cut, causal keys placed by k_offsets."""
    q, k, v = rand(2, 3, 6, 8), rand(2, 3, 20, 8), rand(2, 3, 20, 8)
    qpos = np.array([14, 3])
    whole, lse = qkv.scaled_dot_product_attention(q, k, v, is_causal=True, q_offsets=qpos,
                                                  return_lse=True)
    for cut in range(21):
        a = qkv.scaled_dot_product_attention(q, k[..., :cut, :], v[..., :cut, :],
                                             is_causal=True, q_offsets=qpos,
                                             return_lse=True)
        b = qkv.scaled_dot_product_attention(q, k[..., cut:, :], v[..., cut:, :],
                                             is_causal=True, q_offsets=qpos,
                                             k_offsets=[cut, cut], return_lse=True)
        o, l = qkv.attention_merge(a[0], a[1], b[0], b[1])
        assert rel(o, whole) < 1e-6
        assert rel(l, lse) < 1e-6
    # A fully masked part (lse -inf) weighs nothing.
    o, l = qkv.attention_merge(whole, lse, np.full_like(whole, np.nan),
                               np.full_like(lse, -np.inf))
    assert np.array_equal(o, whole) and np.array_equal(l, lse)
    with pytest.raises(ValueError, match="lse2"):
        qkv.attention_merge(whole, lse, whole, lse[..., :1])
