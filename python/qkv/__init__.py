"""qkv: scaled dot-product attention from libqkv, on numpy arrays.

    >>> import numpy as np, qkv
    >>> q = np.random.rand(2, 8, 128, 64).astype(np.float32)      # (..., L, E)
    >>> k = np.random.rand(2, 2, 128, 64).astype(np.float32)      # 2 kv heads
    >>> v = np.random.rand(2, 2, 128, 64).astype(np.float32)
    >>> o = qkv.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    >>> o.shape
    (2, 8, 128, 64)

The calling convention is PyTorch's torch.nn.functional.scaled_dot_product_attention,
positional order included: (query, key, value, attn_mask, dropout_p, is_causal,
scale, enable_gqa), with attn_mask bool (True = may attend) or float (added),
is_causal top-left, dropout_p 0 only (there is no dropout yet); qkv's own
options come after the `*`. Flags take only bools and numbers only numbers, so
an argument shifted by one position is an error, not another meaning. The library is released
from the GIL while it computes (ctypes releases it for every foreign call).

qkv.MultiheadAttention is the whole layer with torch.nn.MultiheadAttention's
calling convention (and its gradients, `grad`), qkv.KVCache its cache for
incremental decoding (MultiheadAttention.decode); see qkv.layer.
"""
import ctypes
import threading

import numpy as np

from . import _args, _lib

__all__ = ["scaled_dot_product_attention", "attention_backward", "version",
           "MultiheadAttention", "KVCache", "attention_merge"]

_LIB = _lib.load()


def version():
    """The version of the libqkv that was loaded, e.g. "0.1.0"."""
    return _LIB.qkv_version_string().decode()


def _raise(status, what):
    detail = _LIB.qkv_error_detail().decode(errors="replace")
    name = _LIB.qkv_status_string(status).decode()
    msg = "%s: %s" % (what, detail or name)
    if status == _lib.ERR_DTYPE:
        raise TypeError(msg)
    if status == _lib.ERR_OUT_OF_MEMORY:
        raise MemoryError(msg)
    if status == _lib.ERR_IO:
        raise OSError(msg)
    raise ValueError(msg)


_CONTEXTS = {}  # (threads, impl) -> a qkv_context *, made once and kept for the process
_CONTEXTS_LOCK = threading.Lock()


def _context(threads, reference, what):
    """The qkv_context * for a call with `threads` worker threads (0 or None
    for one per CPU; already checked) and the reference implementation or
    not: None, libqkv's default context, for the defaults, otherwise one
    made on first use and shared by every later call with the same
    settings. A context is only read by the calls, so sharing one between
    Python threads is safe, and it is never freed while a call could be
    using it. Counts past QKV_MAX_THREADS mean QKV_MAX_THREADS, so at most
    2 x (QKV_MAX_THREADS + 1) contexts are ever made."""
    impl = _lib.IMPL_REFERENCE if reference else _lib.IMPL_AUTO
    key = (min(threads or 0, _lib.MAX_THREADS), impl)
    if key == (0, _lib.IMPL_AUTO):
        return None
    with _CONTEXTS_LOCK:
        ctx = _CONTEXTS.get(key)
        if ctx is None:
            ptr = ctypes.c_void_p()
            st = _LIB.qkv_context_create(ctypes.byref(ptr))
            if st == _lib.OK:
                st = _LIB.qkv_context_set_threads(ptr, key[0])
            if st == _lib.OK:
                st = _LIB.qkv_context_set_impl(ptr, key[1])
            if st != _lib.OK:
                _LIB.qkv_context_free(ptr)
                _raise(st, what)
            ctx = _CONTEXTS[key] = ptr
    return ctx


def _as_float32(name, x):
    x = np.asarray(x)
    if x.dtype == np.float32:
        return x
    if x.dtype in (np.float64, np.float16) or x.dtype.name == "bfloat16":
        return x.astype(np.float32)
    raise TypeError("%s: dtype %s, expected float32, float64 or float16" % (name, x.dtype))


def _as_input(name, x):
    """x as an array attention takes as it is, and its libqkv dtype code:
    float32, float16 and bfloat16 (ml_dtypes' numpy dtype) stay; float64
    becomes float32."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        return x, _lib.DTYPE_F16
    if x.dtype.name == "bfloat16":
        return x, _lib.DTYPE_BF16
    return _as_float32(name, x), _lib.DTYPE_F32


def _same_dtype(names, arrays):
    """query, key and value (and grad_out) share one dtype, as in torch."""
    for name, a in zip(names[1:], arrays[1:]):
        if a.dtype != arrays[0].dtype:
            raise TypeError("%s: dtype %s, expected %s as %s has (they share one dtype)"
                            % (name, a.dtype, arrays[0].dtype, names[0]))


def _view(x, dtype_code, shape4):
    """A qkv_tensor over numpy array x, seen with the 4-d shape shape4 (x
    must already have that many elements in that order; a reshape that
    needs no copy is made, or a copy)."""
    x4 = x.reshape(shape4)
    item = x4.itemsize
    if any(s % item for s in x4.strides):
        x4 = np.ascontiguousarray(x4)
    t = _lib.Tensor()
    t.data = x4.ctypes.data if x4.size else None
    t.dtype = dtype_code
    for d in range(4):
        t.shape[d] = x4.shape[d]
        t.stride[d] = x4.strides[d] // item
    return t, x4


def _empty_view():
    return _lib.Tensor()


def _split(name, x):
    """(..., L, E) -> batch dims, L, E; at least 2 dims."""
    if x.ndim < 2:
        raise ValueError("%s: %d dims, expected (..., L, E)" % (name, x.ndim))
    return x.shape[:-2], x.shape[-2], x.shape[-1]


def _heads_and_batch(query, key, value, enable_gqa):
    """The (B, H, Hkv) of the 4-d views and the broadcast batch shape."""
    qb, _, _ = _split("query", query)
    kb, _, _ = _split("key", key)
    vb, _, _ = _split("value", value)
    if kb != vb:
        raise ValueError("key and value: leading dims %s and %s differ" % (kb, vb))
    if len(qb) == 0:
        qb, kb = (1,), (1,)
    if enable_gqa and len(qb) >= 1 and len(kb) >= 1:
        H, Hkv = qb[-1], kb[-1]
        if Hkv == 0 or H % Hkv:
            raise ValueError("key: %d heads do not divide query's %d heads" % (Hkv, H))
        try:
            batch = np.broadcast_shapes(qb[:-1], kb[:-1])
        except ValueError:
            raise ValueError("query and key: batch dims %s and %s do not broadcast"
                             % (qb[:-1], kb[:-1])) from None
        return batch, H, Hkv
    try:
        batch = np.broadcast_shapes(qb, kb)
    except ValueError:
        raise ValueError("query and key: leading dims %s and %s do not broadcast (for fewer "
                         "key heads pass enable_gqa=True)" % (qb, kb)) from None
    return batch[:-1], batch[-1], batch[-1]


def _window(window):
    """(left, right) as int64s: None or -1 = unlimited, otherwise >= 0."""
    if np.ndim(window) != 1:
        raise TypeError("window: %r, expected (left, right)" % (window,))
    if len(window) != 2:
        raise ValueError("window: %r, expected (left, right)" % (window,))
    return tuple(-1 if w is None else
                 _args.integer("window[%d]" % i, w, -1, expected=">= -1 (-1 = unlimited)")
                 for i, w in enumerate(window))


def _options(query_E, attn_mask, mask_shape4, is_causal, scale, causal_alignment, window,
             kv_lens, softcap, keep, positions=(None, None), dtype=np.dtype(np.float32)):
    opt = _lib.Options()
    if scale is not None:
        # Only 0 is refused here, since 0 means the default in qkv_attention_options;
        # which magnitudes the kernels can take is libqkv's to say.
        opt.scale = _args.number("scale", scale)
        if opt.scale == 0:
            raise ValueError("scale: %r, expected a nonzero number (None for 1/sqrt(E))"
                             % (scale,))
    if softcap is not None:
        opt.softcap = _args.number("softcap", softcap)
        if not opt.softcap > 0:  # 0 would mean no softcap
            raise ValueError("softcap: %r, expected a number > 0" % (softcap,))
    if causal_alignment not in ("top_left", "bottom_right"):
        raise ValueError("causal_alignment: %r, expected 'top_left' or 'bottom_right'"
                         % (causal_alignment,))
    opt.causal = 1 if is_causal else 0
    opt.align = _lib.ALIGN_BOTTOM_RIGHT if causal_alignment == "bottom_right" else 0
    if window is not None:
        opt.use_window = 1
        opt.window_left, opt.window_right = _window(window)
    if attn_mask is not None:
        m = np.asarray(attn_mask)
        if m.dtype == np.bool_:
            code = _lib.DTYPE_BOOL
        elif m.dtype == dtype and dtype != np.float32:
            code = _lib.DTYPE_F16 if dtype == np.float16 else _lib.DTYPE_BF16
        else:  # a float mask in the inputs' 16-bit dtype stays, any other is float32
            m = _as_float32("attn_mask", m)
            code = _lib.DTYPE_F32
        try:
            m = np.broadcast_to(m, mask_shape4)
        except ValueError:
            raise ValueError("attn_mask: shape %s does not broadcast to %s"
                             % (np.shape(attn_mask), mask_shape4)) from None
        opt.mask, m4 = _view(m, code, mask_shape4)
        keep.append(m4)
    if kv_lens is not None:
        lens = _args.int64_array("kv_lens", kv_lens, 0, expected="0..Lk")
        if len(lens) != mask_shape4[0]:
            raise ValueError("kv_lens: %d lengths, expected one per batch entry (%d)"
                             % (len(lens), mask_shape4[0]))
        keep.append(lens)
        opt.kv_lens = lens.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
    for name, pos in zip(("q_offsets", "k_offsets"), positions):
        if pos is not None:
            a = _args.int64_array(name, pos, 0, 2 ** 60, expected="0..2^60")
            if len(a) != mask_shape4[0]:
                raise ValueError("%s: %d positions, expected one per batch entry (%d)"
                                 % (name, len(a), mask_shape4[0]))
            keep.append(a)
            setattr(opt, name, a.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)))
    return opt


def _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
             causal_alignment, window, kv_lens, softcap, threads, reference,
             positions=(None, None)):
    if _args.number("dropout_p", dropout_p) != 0:
        raise ValueError("dropout_p: %r; qkv has no dropout yet, pass 0" % (dropout_p,))
    is_causal = _args.flag("is_causal", is_causal)
    enable_gqa = _args.flag("enable_gqa", enable_gqa)
    reference = _args.flag("reference", reference)
    query, code = _as_input("query", query)
    key, _ = _as_input("key", key)
    value, _ = _as_input("value", value)
    _same_dtype(("query", "key", "value"), (query, key, value))
    batch, H, Hkv = _heads_and_batch(query, key, value, enable_gqa)
    L, E = query.shape[-2], query.shape[-1]
    S, Ev = key.shape[-2], value.shape[-1]
    B = int(np.prod(batch)) if len(batch) else 1
    qfull = batch + (H, L, E)
    kfull = batch + (Hkv, S, key.shape[-1])
    vfull = batch + (Hkv, S, Ev)
    q = np.broadcast_to(query.reshape((1,) * (len(qfull) - query.ndim) + query.shape), qfull)
    k = np.broadcast_to(key.reshape((1,) * (len(kfull) - key.ndim) + key.shape), kfull)
    v = np.broadcast_to(value.reshape((1,) * (len(vfull) - value.ndim) + value.shape), vfull)
    keep = []
    tq, q4 = _view(q, code, (B, H, L, E))
    tk, k4 = _view(k, code, (B, Hkv, S, key.shape[-1]))
    tv, v4 = _view(v, code, (B, Hkv, S, Ev))
    keep += [q4, k4, v4]
    if attn_mask is not None:
        mshape = batch + (H, L, S)
        try:
            m = np.broadcast_to(np.asarray(attn_mask), mshape)
        except ValueError:
            raise ValueError("attn_mask: shape %s does not broadcast to %s"
                             % (np.shape(attn_mask), mshape)) from None
        attn_mask = m.reshape((B, H, L, S))
    opt = _options(E, attn_mask, (B, H, L, S), is_causal, scale, causal_alignment, window,
                   kv_lens, softcap, keep, positions, query.dtype)
    if threads is not None:
        threads = _args.integer("threads", threads, 1, _args.INT_MAX)
    # Rank-2 inputs have no head dim to give back: (L, Ev), as torch does.
    plain = query.ndim == 2 and key.ndim == 2 and value.ndim == 2
    return dict(batch=batch, B=B, H=H, Hkv=Hkv, L=L, S=S, E=E, Ev=Ev, tq=tq, tk=tk, tv=tv,
                dtype=query.dtype, code=code,
                opt=opt, threads=threads, reference=reference, keep=keep,
                lead=() if plain else batch + (H,),
                kv_lead=() if plain else batch + (Hkv,))


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False, *,
                                 causal_alignment="top_left", window=None,
                                 kv_lens=None, softcap=None, return_weights=False,
                                 return_lse=False, threads=None, reference=False,
                                 q_offsets=None, k_offsets=None):
    """softmax(scale * query @ key^T + mask) @ value, as torch's function.

    query (..., H, L, E), key (..., Hkv, S, E), value (..., Hkv, S, Ev);
    leading dims broadcast as numpy does; Hkv == H unless enable_gqa, then
    H % Hkv == 0 and query head h reads kv head h // (H // Hkv). The
    three share one dtype: float32, float16, or bfloat16 (ml_dtypes'
    numpy dtype), computed as they are (every sum in float32) with the
    result a new array of that dtype (..., H, L, Ev); float64 is read as
    float32.

    attn_mask: bool (True = may attend) or float (added to the scores),
        broadcast to (..., H, L, S).
    dropout_p: torch's dropout probability; only 0 (ValueError otherwise:
        qkv has no dropout yet). It holds torch's place in the positional
        order (query, key, value, attn_mask, dropout_p, is_causal, scale,
        enable_gqa).
    is_causal: query i sees keys j <= i (top-left, torch's is_causal), or
        j <= i + S - L with causal_alignment="bottom_right".
    scale: default 1 / sqrt(E).
    window: (left, right): keys d - left .. d + right around the diagonal d
        (aligned as causal_alignment says); None or -1 = unlimited.
    kv_lens: one length per batch entry (the product of the leading dims):
        keys at and past it are padding.
    softcap: scores become softcap * tanh(s / softcap) before the mask.
    q_offsets, k_offsets: one position per batch entry (0..2^60): query i
        sits at q_offsets[b] + i and key j at k_offsets[b] + j, which moves
        the causal diagonal and the window (a block of keys that starts at
        position 4096 in its sequence; queries that continue a cache).
    return_weights, return_lse: also return the softmax weights
        (..., H, L, S) and the log-sum-exp (..., H, L); the result is then a
        tuple (out, weights?, lse?).
    threads: worker threads (default: all CPUs the process may use).
    reference: use the reference kernel (double accumulation).

    Flags (is_causal, enable_gqa, return_*, reference) take only bools;
    numbers (dropout_p, scale, softcap) not bools; integers (window,
    kv_lens, threads) ints or numpy integers, in range, never floats.

    Rows with no allowed key give 0 (lse -inf). Errors raise ValueError or
    TypeError with a message (libqkv's, where it decides) that names the
    argument.
    """
    return_weights = _args.flag("return_weights", return_weights)
    return_lse = _args.flag("return_lse", return_lse)
    p = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                 causal_alignment, window, kv_lens, softcap, threads, reference,
                 (q_offsets, k_offsets))
    B, H, L, S, Ev, batch = p["B"], p["H"], p["L"], p["S"], p["Ev"], p["batch"]
    out = np.empty((B, H, L, Ev), dtype=p["dtype"])
    to, _ = _view(out, p["code"], out.shape)
    w = np.empty((B, H, L, S), dtype=p["dtype"]) if return_weights else None
    lse = np.empty((B, H, L, 1), dtype=np.float32) if return_lse else None
    tw = _view(w, p["code"], w.shape)[0] if w is not None else _empty_view()
    tl = _view(lse, _lib.DTYPE_F32, lse.shape)[0] if lse is not None else _empty_view()
    ctx = _context(p["threads"], p["reference"], "scaled_dot_product_attention")
    st = _LIB.qkv_attention_forward(ctx, ctypes.byref(to), ctypes.byref(tw), ctypes.byref(tl),
                                    ctypes.byref(p["tq"]), ctypes.byref(p["tk"]),
                                    ctypes.byref(p["tv"]), ctypes.byref(p["opt"]))
    if st != _lib.OK:
        _raise(st, "scaled_dot_product_attention")
    lead = p["lead"]
    out = out.reshape(lead + (L, Ev))
    if not return_weights and not return_lse:
        return out
    res = [out]
    if return_weights:
        res.append(w.reshape(lead + (L, S)))
    if return_lse:
        res.append(lse.reshape(lead + (L,)))
    return tuple(res)


def attention_backward(grad_out, query, key, value, attn_mask=None, dropout_p=0.0,
                       is_causal=False, scale=None, enable_gqa=False, *,
                       causal_alignment="top_left", window=None, kv_lens=None, softcap=None,
                       return_mask_grad=False, threads=None, q_offsets=None, k_offsets=None):
    """The gradients (dq, dk, dv) of a loss given grad_out = dL/dout, for the
    attention scaled_dot_product_attention computes with the same
    arguments. dk and dv have key's and value's shapes after broadcasting
    the batch dims, summed over the query heads of each kv head. With
    return_mask_grad and a float attn_mask, also dL/dmask in the mask's own
    shape (summed over the dims it was broadcast along). Runs libqkv's
    fast backward (the reference one when the mask's gradient is asked
    for). The arguments after grad_out are the forward's, in its order."""
    return_mask_grad = _args.flag("return_mask_grad", return_mask_grad)
    p = _prepare(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa,
                 causal_alignment, window, kv_lens, softcap, threads, False,
                 (q_offsets, k_offsets))
    B, H, Hkv, L, S, E, Ev, batch = (p["B"], p["H"], p["Hkv"], p["L"], p["S"], p["E"], p["Ev"],
                                     p["batch"])
    dout, _ = _as_input("grad_out", grad_out)
    _same_dtype(("query", "grad_out"), (np.empty(0, p["dtype"]), dout))
    if dout.shape != batch + (H, L, Ev) and dout.shape != (H, L, Ev) and dout.shape != (L, Ev):
        raise ValueError("grad_out: shape %s, expected the output's %s"
                         % (dout.shape, batch + (H, L, Ev)))
    tdo, do4 = _view(np.ascontiguousarray(dout), p["code"], (B, H, L, Ev))
    o = np.empty((B, H, L, Ev), np.float32)
    lse = np.empty((B, H, L, 1), np.float32)
    to, _ = _view(o, _lib.DTYPE_F32, o.shape)
    tl, _ = _view(lse, _lib.DTYPE_F32, lse.shape)
    ctx = _context(p["threads"], False, "attention_backward")
    st = _LIB.qkv_attention_forward(ctx, ctypes.byref(to), None, ctypes.byref(tl),
                                    ctypes.byref(p["tq"]), ctypes.byref(p["tk"]),
                                    ctypes.byref(p["tv"]), ctypes.byref(p["opt"]))
    if st != _lib.OK:
        _raise(st, "attention_backward")
    dq = np.empty((B, H, L, E), p["dtype"])
    dk = np.empty((B, Hkv, S, E), p["dtype"])
    dv = np.empty((B, Hkv, S, Ev), p["dtype"])
    tdq, _ = _view(dq, p["code"], dq.shape)
    tdk, _ = _view(dk, p["code"], dk.shape)
    tdv, _ = _view(dv, p["code"], dv.shape)
    dm = None
    tdm = _empty_view()
    if return_mask_grad:
        m = p["opt"].mask
        if attn_mask is None or m.dtype == _lib.DTYPE_BOOL:
            raise ValueError("return_mask_grad: needs a float attn_mask")
        dm = np.empty(tuple(m.shape), np.float32)
        tdm, _ = _view(dm, _lib.DTYPE_F32, dm.shape)
    st = _LIB.qkv_attention_backward(ctx, ctypes.byref(tdq), ctypes.byref(tdk),
                                     ctypes.byref(tdv), ctypes.byref(tdm), ctypes.byref(tdo),
                                     ctypes.byref(p["tq"]), ctypes.byref(p["tk"]),
                                     ctypes.byref(p["tv"]), ctypes.byref(to), ctypes.byref(tl),
                                     ctypes.byref(p["opt"]))
    if st != _lib.OK:
        _raise(st, "attention_backward")
    lead, kv_lead = p["lead"], p["kv_lead"]
    res = (dq.reshape(lead + (L, E)), dk.reshape(kv_lead + (S, E)), dv.reshape(kv_lead + (S, Ev)))
    if not return_mask_grad:
        return res
    return res + (_unbroadcast(dm.reshape(batch + (H, L, S)), np.shape(attn_mask)),)


def attention_merge(out1, lse1, out2, lse2):
    """The attention of the same queries over the union of two disjoint
    sets of keys, from each set's result: out1, out2 (..., L, Ev) as
    scaled_dot_product_attention returns them and lse1, lse2 (..., L) as it
    returns with return_lse=True. Returns (out, lse), new float32 arrays of
    those shapes; a part whose lse is -inf (every key masked) weighs
    nothing. Merging the parts of a split in a fixed order gives the same
    bits every time and, to rounding, the one call over all keys."""
    out1 = _as_float32("out1", out1)
    out2 = _as_float32("out2", out2)
    lse1 = _as_float32("lse1", lse1)
    lse2 = _as_float32("lse2", lse2)
    if out1.ndim < 1:
        raise ValueError("out1: a scalar, expected (..., L, Ev)")
    rows, Ev = out1.shape[:-1], out1.shape[-1]
    for name, x, want in (("out2", out2, out1.shape), ("lse1", lse1, rows), ("lse2", lse2, rows)):
        if x.shape != want:
            raise ValueError("%s: shape %s, expected %s" % (name, x.shape, want))
    n = int(np.prod(rows)) if len(rows) else 1
    out = np.empty(out1.shape, dtype=np.float32)
    lse = np.empty(rows, dtype=np.float32)
    views = [_view(x, _lib.DTYPE_F32, (1, 1, n, d))
             for x, d in ((out, Ev), (lse, 1), (out1, Ev), (lse1, 1), (out2, Ev), (lse2, 1))]
    st = _LIB.qkv_attention_merge(*[ctypes.byref(t) for t, _ in views])
    if st != _lib.OK:
        _raise(st, "attention_merge")
    return out, lse


def _unbroadcast(g, shape):
    """g summed back to `shape`, the shape it was broadcast from."""
    g = g.sum(axis=tuple(range(g.ndim - len(shape)))) if g.ndim > len(shape) else g
    axes = tuple(d for d, n in enumerate(shape) if n == 1 and g.shape[d] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


# The layer's module uses the helpers above.
from .layer import KVCache, MultiheadAttention  # noqa: E402
