"""qkv.MultiheadAttention and qkv.KVCache: libqkv's multi-head attention
layer (qkv_mha_* in qkv.h) with torch.nn.MultiheadAttention's calling
convention, on numpy arrays.

The layer's parameters live in libqkv's own storage; the properties
(q_proj_weight, ..., out_proj_bias) are writable numpy views of it, which
keep the layer's memory alive for as long as they exist.
"""
import ctypes
import math

import numpy as np

from . import _args, _lib
from . import _LIB, _as_float32, _context, _raise

__all__ = ["MultiheadAttention", "KVCache"]

_ROPE = {None: _lib.ROPE_NONE, "none": _lib.ROPE_NONE, "interleaved": _lib.ROPE_INTERLEAVED,
         "half": _lib.ROPE_HALF}
_ROPE_NAME = {_lib.ROPE_NONE: None, _lib.ROPE_INTERLEAVED: "interleaved",
              _lib.ROPE_HALF: "half"}

# (parameter, its state-dict name in the separate-projection family)
_WEIGHTS = ((_lib.MHA_WQ, "q_proj_weight"), (_lib.MHA_WK, "k_proj_weight"),
            (_lib.MHA_WV, "v_proj_weight"), (_lib.MHA_WO, "out_proj_weight"))
_BIASES = ((_lib.MHA_BQ, "q_proj_bias"), (_lib.MHA_BK, "k_proj_bias"),
           (_lib.MHA_BV, "v_proj_bias"), (_lib.MHA_BO, "out_proj_bias"))
# Llama-style names that load_state_dict also takes
_SEPARATE = {"q_proj.weight": _lib.MHA_WQ, "k_proj.weight": _lib.MHA_WK,
             "v_proj.weight": _lib.MHA_WV, "o_proj.weight": _lib.MHA_WO,
             "q_proj.bias": _lib.MHA_BQ, "k_proj.bias": _lib.MHA_BK,
             "v_proj.bias": _lib.MHA_BV, "o_proj.bias": _lib.MHA_BO}


def _need_layer():
    if not hasattr(_LIB, "qkv_mha_create"):
        raise RuntimeError("qkv: the libqkv that was loaded has no multi-head attention layer "
                           "(qkv_mha_*); rebuild it")


class _Owned:
    """A C object (layer, cache, .safetensors) freed when the last Python
    reference to it goes: the layer, or any numpy view of its memory."""

    def __init__(self, ptr, free):
        self.ptr = ptr
        self._free = free

    def close(self):
        ptr, self.ptr = self.ptr, None
        if ptr:
            self._free(ptr)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the library may be gone
            pass


class _Memory:
    """Lends libqkv's memory to numpy: np.asarray(_Memory(...)) is a view
    whose .base keeps `owner` (and so the C object) alive; typestr "<f4"
    (float32), "<f2" (float16) or "<u2" (bfloat16's bits)."""

    def __init__(self, owner, addr, shape, strides=None, typestr="<f4"):
        self._owner = owner
        self.__array_interface__ = {"version": 3, "shape": tuple(int(n) for n in shape),
                                    "typestr": typestr, "data": (addr, False),
                                    "strides": None if strides is None else tuple(strides)}


def _check(status, what):
    if status != _lib.OK:
        _raise(status, what)


def _ptr(a):
    """The data pointer of a contiguous float32 array, for a float * argument."""
    return a.ctypes.data if a is not None else None


def _f32(name, x):
    """A C-contiguous float32 copy or view of x (float32/64/16 only)."""
    return np.ascontiguousarray(_as_float32(name, x))


def _run_context(threads, what):
    """The execution context of a call with the layer's threads, checked
    again here since it is a plain attribute a caller may have set."""
    return _context(_threads(threads), False, what)


def _options(mask=None, causal=False, kv_lens=None, keep=None):
    """The attention options of a call."""
    opt = _lib.Options()
    opt.causal = 1 if causal else 0
    if mask is not None:
        m = mask.reshape((1,) * (4 - mask.ndim) + mask.shape)
        t = opt.mask
        t.data = m.ctypes.data if m.size else None
        t.dtype = _lib.DTYPE_BOOL if m.dtype == np.bool_ else _lib.DTYPE_F32
        for d in range(4):
            t.shape[d] = m.shape[d]
            t.stride[d] = m.strides[d] // m.itemsize if m.shape[d] > 1 else 0
        keep.append(m)
    if kv_lens is not None:
        lens = np.ascontiguousarray(kv_lens, dtype=np.int64)
        keep.append(lens)
        opt.kv_lens = lens.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))
    return opt


def _same_array(a, b):
    """Are a and b the same values (the same object, or equal arrays)?"""
    if a is b:
        return True
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return False
    ia, ib = a.__array_interface__, b.__array_interface__
    if a.dtype == b.dtype and ia["data"] == ib["data"] and ia.get("strides") == ib.get("strides"):
        return True
    return bool(np.array_equal(a, b))


def _mask_dtype(name, m):
    if m.dtype == np.bool_:
        return m
    if np.issubdtype(m.dtype, np.floating):
        return m.astype(np.float32, copy=False)
    raise TypeError("%s: dtype %s, expected bool (True = not allowed) or float (added to the "
                    "scores)" % (name, m.dtype))


class MultiheadAttention:
    """Multi-head attention with projections, as torch.nn.MultiheadAttention
    computes it (dropout 0, no add_bias_kv / add_zero_attn), computed by
    libqkv on numpy arrays:

        Q = query Wq^T + bq, K = key Wk^T + bk, V = value Wv^T + bv,
        attention per head, attn_output = A Wo^T + bo

    The arguments are torch's, in torch's positional order: embed_dim,
    num_heads, dropout (0 only), bias, add_bias_kv and add_zero_attn (False
    only), kdim, vdim, batch_first, device (None or 'cpu'), dtype (None or
    float32). kdim and vdim must be equal (the layer projects one context
    for both keys and values). Flags take only bools and sizes only
    integers (numpy's too), so an argument shifted by one position is an
    error rather than another meaning. After the `*`, qkv's own options:

        num_kv_heads  key/value heads (grouped-query attention), dividing
                      num_heads; default num_heads
        head_dim      per-head width E; default embed_dim // num_heads
        rope          None, 'half' (pairs i, i + E/2: Llama, GPT-NeoX) or
                      'interleaved' (pairs 2i, 2i+1: GPT-J): rotary position
                      embedding on q and k at positions 0 .. L-1
        rope_base     RoPE's base frequency
        threads       worker threads, 0 = one per CPU

    The parameters start as torch initialises them (Xavier-uniform input
    projections, Kaiming-uniform output projection, zero biases), drawn from
    numpy's global random state. They are the properties q_proj_weight
    (H*E, embed_dim), k_proj_weight (Hkv*E, kdim), v_proj_weight
    (Hkv*E, kdim), out_proj_weight (embed_dim, H*E) and the biases
    q_proj_bias ... out_proj_bias (None without bias): writable numpy
    views of the layer's own float32 storage. state_dict() and
    load_state_dict() use torch's names.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False,
                 add_zero_attn=False, kdim=None, vdim=None, batch_first=False, device=None,
                 dtype=None, *, num_kv_heads=None, head_dim=None, rope=None,
                 rope_base=10000.0, threads=0):
        _need_layer()
        if _args.number("dropout", dropout) != 0:
            raise ValueError("dropout: %r; this layer has no dropout (inference and exact "
                             "gradients only), pass 0" % (dropout,))
        for name, value in (("add_bias_kv", add_bias_kv), ("add_zero_attn", add_zero_attn)):
            if _args.flag(name, value):
                raise ValueError("%s: True is not supported by this layer" % name)
        bias = _args.flag("bias", bias)
        batch_first = _args.flag("batch_first", batch_first)
        if device is not None and str(device) != "cpu":
            raise ValueError("device: %r; libqkv computes on the CPU, pass None or 'cpu'"
                             % (device,))
        if dtype is not None and not _is_float32(dtype):
            raise ValueError("dtype: %r; the layer's parameters are float32, pass None or "
                             "float32" % (dtype,))
        embed_dim = _size("embed_dim", embed_dim)
        num_heads = _size("num_heads", num_heads)
        kdim = embed_dim if kdim is None else _size("kdim", kdim)
        vdim = embed_dim if vdim is None else _size("vdim", vdim)
        if kdim != vdim:
            raise ValueError("kdim, vdim: %r and %r differ; this layer projects keys and values "
                             "from one context, so they must be equal" % (kdim, vdim))
        if head_dim is not None:
            head_dim = _size("head_dim", head_dim)
        elif embed_dim % num_heads:
            raise ValueError("embed_dim: %d is not a multiple of num_heads = %d (or give "
                             "head_dim)" % (embed_dim, num_heads))
        if num_kv_heads is not None:
            num_kv_heads = _size("num_kv_heads", num_kv_heads)
            if num_heads % num_kv_heads:
                raise ValueError("num_kv_heads: %d does not divide num_heads = %d"
                                 % (num_kv_heads, num_heads))
        cfg = _lib.MhaConfig()
        cfg.d_model = embed_dim
        cfg.d_context = kdim
        cfg.heads = num_heads
        cfg.kv_heads = num_kv_heads or 0
        cfg.head_dim = head_dim or 0
        cfg.bias = 1 if bias else 0
        cfg.rope = _rope_code(rope)
        cfg.rope_base = _args.number("rope_base", rope_base)
        threads = _threads(threads)
        ptr = ctypes.c_void_p()
        _check(_LIB.qkv_mha_create(ctypes.byref(ptr), ctypes.byref(cfg)), "MultiheadAttention")
        self._adopt(ptr.value, batch_first, threads)
        self._reset_parameters()

    @classmethod
    def from_safetensors(cls, path, num_heads, num_kv_heads=None, prefix="", rope=None,
                         rope_base=10000.0, *, batch_first=False, threads=0):
        """A layer with the parameters of a .safetensors file (F32, F16 or
        BF16), under torch.nn.MultiheadAttention's state-dict names
        (in_proj_weight or q/k/v_proj_weight, in_proj_bias, out_proj.weight,
        out_proj.bias) or the separate projections' (q_proj.weight ...
        o_proj.weight and optional .bias; these allow num_kv_heads <
        num_heads), each looked up with `prefix` prepended. The widths come
        from the tensors' shapes; biases are there when the file has them."""
        _need_layer()
        cfg = _lib.MhaConfig()
        cfg.heads = _size("num_heads", num_heads)
        cfg.kv_heads = 0 if num_kv_heads is None else _size("num_kv_heads", num_kv_heads)
        cfg.rope = _rope_code(rope)
        cfg.rope_base = _args.number("rope_base", rope_base)
        batch_first = _args.flag("batch_first", batch_first)
        threads = _threads(threads)
        st = ctypes.c_void_p()
        _check(_LIB.qkv_safetensors_read(_path(path), ctypes.byref(st)), "from_safetensors")
        try:
            ptr = ctypes.c_void_p()
            _check(_LIB.qkv_mha_load(ctypes.byref(ptr), ctypes.byref(cfg), st,
                                     (prefix or "").encode()), "from_safetensors")
        finally:
            _LIB.qkv_safetensors_free(st)
        self = cls.__new__(cls)
        self._adopt(ptr.value, batch_first, threads)
        return self

    def save(self, path, prefix=""):
        """Writes the parameters as a .safetensors file (float32) under the
        separate-projection names q_proj.weight, k_proj.weight,
        v_proj.weight, o_proj.weight (and .bias of each), with `prefix`
        prepended; from_safetensors reads it back."""
        _check(_LIB.qkv_mha_save(self._handle.ptr, _path(path), (prefix or "").encode()),
               "save")

    # ---------------------------------------------------------- parameters

    def _adopt(self, ptr, batch_first, threads):
        self._handle = _Owned(ptr, _LIB.qkv_mha_free)
        c = _LIB.qkv_mha_get_config(ptr)
        self.embed_dim = int(c.d_model)
        self.kdim = self.vdim = int(c.d_context)
        self.num_heads = int(c.heads)
        self.num_kv_heads = int(c.kv_heads)
        self.head_dim = int(c.head_dim)
        self.v_head_dim = int(c.v_head_dim)
        self.rope = _ROPE_NAME[c.rope]
        self.rope_base = float(c.rope_base)
        self.batch_first = batch_first
        self.threads = threads
        self._params = _param_views(self._handle)
        self._has_bias = self._params[_lib.MHA_BQ] is not None

    def _reset_parameters(self):
        p = self._params
        if self._packable():
            # torch draws in_proj_weight (3 D, D) as one matrix
            D = self.embed_dim
            w = _xavier((3 * D, D))
            p[_lib.MHA_WQ][...], p[_lib.MHA_WK][...], p[_lib.MHA_WV][...] = w[:D], w[D:2 * D], w[2 * D:]
        else:
            for which in (_lib.MHA_WQ, _lib.MHA_WK, _lib.MHA_WV):
                p[which][...] = _xavier(p[which].shape)
        wo = p[_lib.MHA_WO]
        bound = 1.0 / math.sqrt(wo.shape[1])  # nn.Linear's kaiming_uniform_(a=sqrt(5))
        wo[...] = np.random.uniform(-bound, bound, wo.shape)
        for which, _ in _BIASES:
            if p[which] is not None:
                p[which][...] = 0

    def _packable(self):
        """Do torch's packed names (in_proj_weight) describe this layer?"""
        return (self.kdim == self.embed_dim and self.num_kv_heads == self.num_heads
                and self.num_heads * self.head_dim == self.embed_dim
                and self.v_head_dim == self.head_dim)

    def _state(self, params):
        """torch's state-dict entries of the given parameter arrays, copied."""
        p = params
        d = {}
        if self._packable():
            d["in_proj_weight"] = np.concatenate([p[_lib.MHA_WQ], p[_lib.MHA_WK],
                                                  p[_lib.MHA_WV]])
        else:
            for which, name in _WEIGHTS[:3]:
                d[name] = p[which].copy()
        if self._has_bias:
            d["in_proj_bias"] = np.concatenate([p[_lib.MHA_BQ], p[_lib.MHA_BK],
                                                p[_lib.MHA_BV]])
        d["out_proj.weight"] = p[_lib.MHA_WO].copy()
        if self._has_bias:
            d["out_proj.bias"] = p[_lib.MHA_BO].copy()
        return d

    def state_dict(self):
        """The parameters under torch.nn.MultiheadAttention's names, as new
        float32 arrays: in_proj_weight (packed q, k, v; when kdim ==
        embed_dim, num_kv_heads == num_heads and head_dim * num_heads ==
        embed_dim) or q_proj_weight, k_proj_weight, v_proj_weight;
        in_proj_bias (bq, bk, bv one after another); out_proj.weight;
        out_proj.bias. Without bias, no bias entries."""
        return self._state(self._params)

    def load_state_dict(self, state_dict, strict=True):
        """Copies parameters in from a mapping of torch's names (what
        state_dict() gives, or a torch module's state_dict() with each
        tensor converted by .numpy()) or the separate projections' names
        (q_proj.weight ... o_proj.bias). Values are anything np.asarray
        takes, float32/64/16. Everything is checked before anything is
        written. With strict, a missing or unexpected name raises
        ValueError; without, they are returned as (missing, unexpected)."""
        p = self._params
        H, Hkv, E, Ev = self.num_heads, self.num_kv_heads, self.head_dim, self.v_head_dim
        nq, nk, nv = H * E, Hkv * E, Hkv * Ev
        updates = []  # (parameter, array)
        unexpected = []

        def take(name, value, shape):
            a = _as_float32(name, value)
            if a.shape != shape:
                raise ValueError("%s: shape %s, expected %s" % (name, a.shape, shape))
            return a

        for name, value in state_dict.items():
            if name in ("bias_k", "bias_v"):
                raise ValueError("%s: add_bias_kv is not supported by this layer" % name)
            if name == "in_proj_weight":
                if self.kdim != self.embed_dim:
                    raise ValueError("in_proj_weight: the layer's kdim %d differs from embed_dim "
                                     "%d; give q_proj_weight, k_proj_weight, v_proj_weight"
                                     % (self.kdim, self.embed_dim))
                a = take(name, value, (nq + nk + nv, self.embed_dim))
                updates += [(_lib.MHA_WQ, a[:nq]), (_lib.MHA_WK, a[nq:nq + nk]),
                            (_lib.MHA_WV, a[nq + nk:])]
            elif name == "in_proj_bias" and self._has_bias:
                a = take(name, value, (nq + nk + nv,))
                updates += [(_lib.MHA_BQ, a[:nq]), (_lib.MHA_BK, a[nq:nq + nk]),
                            (_lib.MHA_BV, a[nq + nk:])]
            elif name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                which = dict((n, w) for w, n in _WEIGHTS)[name]
                updates.append((which, take(name, value, p[which].shape)))
            elif name in ("out_proj.weight", "out_proj_weight"):
                updates.append((_lib.MHA_WO, take(name, value, p[_lib.MHA_WO].shape)))
            elif name in ("out_proj.bias", "out_proj_bias") and self._has_bias:
                updates.append((_lib.MHA_BO, take(name, value, p[_lib.MHA_BO].shape)))
            elif name in _SEPARATE and p[_SEPARATE[name]] is not None:
                which = _SEPARATE[name]
                shape = p[which].shape
                updates.append((which, take(name, value, shape)))
            elif name in ("q_proj_bias", "k_proj_bias", "v_proj_bias") and self._has_bias:
                which = dict((n, w) for w, n in _BIASES)[name]
                updates.append((which, take(name, value, p[which].shape)))
            else:
                unexpected.append(name)
        seen = [w for w, _ in updates]
        dup = sorted(set(w for w in seen if seen.count(w) > 1))
        if dup:
            raise ValueError("state_dict: %s given more than once (e.g. in_proj_weight and "
                             "q_proj_weight)" % ", ".join(_param_name(w) for w in dup))
        missing = [_param_name(w) for w in range(8) if p[w] is not None and w not in seen]
        if strict and (missing or unexpected):
            raise ValueError("state_dict: missing %s, unexpected %s"
                             % (missing or "nothing", unexpected or "nothing"))
        for which, a in updates:
            p[which][...] = a
        return missing, unexpected

    q_proj_weight = property(lambda self: self._params[_lib.MHA_WQ],
                             lambda self, v: self._set(_lib.MHA_WQ, v),
                             doc="Wq (num_heads * head_dim, embed_dim), a view")
    k_proj_weight = property(lambda self: self._params[_lib.MHA_WK],
                             lambda self, v: self._set(_lib.MHA_WK, v),
                             doc="Wk (num_kv_heads * head_dim, kdim), a view")
    v_proj_weight = property(lambda self: self._params[_lib.MHA_WV],
                             lambda self, v: self._set(_lib.MHA_WV, v),
                             doc="Wv (num_kv_heads * head_dim, vdim), a view")
    out_proj_weight = property(lambda self: self._params[_lib.MHA_WO],
                               lambda self, v: self._set(_lib.MHA_WO, v),
                               doc="Wo (embed_dim, num_heads * head_dim), a view")
    q_proj_bias = property(lambda self: self._params[_lib.MHA_BQ],
                           lambda self, v: self._set(_lib.MHA_BQ, v),
                           doc="bq (num_heads * head_dim,), a view; None without bias")
    k_proj_bias = property(lambda self: self._params[_lib.MHA_BK],
                           lambda self, v: self._set(_lib.MHA_BK, v),
                           doc="bk (num_kv_heads * head_dim,), a view; None without bias")
    v_proj_bias = property(lambda self: self._params[_lib.MHA_BV],
                           lambda self, v: self._set(_lib.MHA_BV, v),
                           doc="bv (num_kv_heads * head_dim,), a view; None without bias")
    out_proj_bias = property(lambda self: self._params[_lib.MHA_BO],
                             lambda self, v: self._set(_lib.MHA_BO, v),
                             doc="bo (embed_dim,), a view; None without bias")

    def _set(self, which, value):
        dst = self._params[which]
        name = _param_name(which)
        if dst is None:
            raise ValueError("%s: the layer was made with bias=False" % name)
        a = _as_float32(name, value)
        if a.shape != dst.shape:
            raise ValueError("%s: shape %s, expected %s" % (name, a.shape, dst.shape))
        dst[...] = a

    def __repr__(self):
        extra = ""
        if self.num_kv_heads != self.num_heads:
            extra += ", num_kv_heads=%d" % self.num_kv_heads
        if self.rope:
            extra += ", rope=%r, rope_base=%g" % (self.rope, self.rope_base)
        return ("qkv.MultiheadAttention(embed_dim=%d, num_heads=%d, bias=%s, kdim=%d, "
                "batch_first=%s, head_dim=%d%s)"
                % (self.embed_dim, self.num_heads, self._has_bias, self.kdim, self.batch_first,
                   self.head_dim, extra))

    # ------------------------------------------------------------- calling

    def _prepare(self, query, key, value, key_padding_mask, attn_mask, is_causal):
        """The (B, L, D) query rows, the (B, S, Dkv) context (None for
        self-attention), the execution context ("run") and the options, and
        how to lay results back out."""
        is_causal = _args.flag("is_causal", is_causal)
        if query is None:
            raise ValueError("query: is None")
        query = _as_float32("query", query)
        if query.ndim not in (2, 3):
            raise ValueError("query: shape %s, expected %s or unbatched (L, embed_dim)"
                             % (query.shape, "(N, L, embed_dim)" if self.batch_first
                                else "(L, N, embed_dim)"))
        if query.shape[-1] != self.embed_dim:
            raise ValueError("query: last dim %d differs from embed_dim %d"
                             % (query.shape[-1], self.embed_dim))
        batched = query.ndim == 3
        swap = batched and not self.batch_first  # (L, N, E) <-> (N, L, E)

        def rows(a):
            if not batched:
                a = a[None]
            elif swap:
                a = a.transpose(1, 0, 2)
            return np.ascontiguousarray(a)

        x = rows(query)
        B, L = x.shape[0], x.shape[1]
        if key is None and value is not None:
            raise ValueError("value: given without key; pass key and value as the same array, "
                             "or neither for self-attention")
        ctx = None
        if key is not None:
            if value is None:
                value = key
            elif not _same_array(key, value):
                raise ValueError("key, value: differ; this layer projects keys and values from "
                                 "one context, so key and value must be the same array (or "
                                 "both None for self-attention)")
            k = _as_float32("key", key)
            if k.ndim != query.ndim:
                raise ValueError("key: %d dims, but query has %d (both batched or both "
                                 "unbatched)" % (k.ndim, query.ndim))
            if k.shape[-1] != self.kdim:
                raise ValueError("key: last dim %d differs from kdim %d"
                                 % (k.shape[-1], self.kdim))
            ctx = rows(k)
            if ctx.shape[0] != B:
                raise ValueError("key: batch size %d differs from query's %d"
                                 % (ctx.shape[0], B))
        elif self.kdim != self.embed_dim:
            raise ValueError("key: needed, since the layer's kdim %d differs from embed_dim %d"
                             % (self.kdim, self.embed_dim))
        S = ctx.shape[1] if ctx is not None else L
        H = self.num_heads
        keep = []
        allowed = add = kv_lens = None
        causal = False
        if attn_mask is not None:
            m = _mask_dtype("attn_mask", np.asarray(attn_mask))
            if m.ndim == 2:
                if m.shape != (L, S):
                    raise ValueError("attn_mask: shape %s, expected (L, S) = %s or "
                                     "(N * num_heads, L, S)" % (m.shape, (L, S)))
                m4 = m[None, None]
            elif m.ndim == 3:
                want = (B * H, L, S) if batched else (H, L, S)
                if m.shape != want:
                    raise ValueError("attn_mask: shape %s, expected (L, S) = %s or %s"
                                     % (m.shape, (L, S), want))
                m4 = m.reshape(B, H, L, S)
            else:
                raise ValueError("attn_mask: %d dims, expected (L, S) or (N * num_heads, L, S)"
                                 % m.ndim)
            if m4.shape[:2] == (1, 1) and _is_causal_mask(m4[0, 0]):
                causal = True  # the kernel skips the masked blocks itself
            elif m4.dtype == np.bool_:
                allowed = ~m4  # torch: True = may NOT attend
            else:
                add = m4
        elif is_causal:
            causal = True
        if key_padding_mask is not None:
            km = _mask_dtype("key_padding_mask", np.asarray(key_padding_mask))
            want = (B, S) if batched else (S,)
            if km.shape != want:
                raise ValueError("key_padding_mask: shape %s, expected %s" % (km.shape, want))
            km = km.reshape(B, S)
            if km.dtype == np.bool_:
                n = S - km.sum(axis=1)
                if np.array_equal(km, np.arange(S)[None, :] >= n[:, None]):
                    kv_lens = n  # padding at the end of each row
                else:
                    a = ~km[:, None, None, :]
                    allowed = a if allowed is None else allowed & a
            else:
                a = km[:, None, None, :]
                add = a if add is None else add + a
        mask = None
        if allowed is not None and add is not None:
            mask = np.where(allowed, add, np.float32(-np.inf)).astype(np.float32)
        elif allowed is not None or add is not None:
            mask = allowed if allowed is not None else add
        if mask is not None:
            mask = np.ascontiguousarray(mask)
        run = _run_context(self.threads, "MultiheadAttention")
        opt = _options(mask, causal, kv_lens, keep)
        return dict(x=x, ctx=ctx, B=B, L=L, S=S, run=run, opt=opt, keep=keep, batched=batched,
                    swap=swap)

    def _out(self, p, y):
        """(B, L, width) rows back to the caller's layout."""
        if not p["batched"]:
            return y[0]
        if p["swap"]:
            return np.ascontiguousarray(y.transpose(1, 0, 2))
        return y

    def forward(self, query, key=None, value=None, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        """(attn_output, attn_weights) as torch.nn.MultiheadAttention.forward.

        query: (L, N, embed_dim), (N, L, embed_dim) with batch_first, or
            unbatched (L, embed_dim).
        key, value: the context, (S, N, kdim) / (N, S, kdim) / (S, kdim); they
            must be the same array (ValueError otherwise), or both None for
            self-attention.
        key_padding_mask: (N, S) or (S,), bool (True = padding, ignored) or
            float (added). A bool mask that pads the end of each row becomes
            per-row key lengths; any other pattern a mask.
        attn_mask: (L, S) or (N * num_heads, L, S) ((num_heads, L, S)
            unbatched), bool (True = NOT allowed) or float (added).
        is_causal: with attn_mask None, query i sees keys j <= i (top-left,
            also when L != S). With an attn_mask, torch's hint that the mask
            is causal: the mask is used.
        need_weights, average_attn_weights: attn_weights is (N, L, S)
            averaged over heads, or (N, num_heads, L, S), or None.

        The positional order is torch's. need_weights, average_attn_weights
        and is_causal take only bools.

        Returns new float32 arrays; attn_output has query's layout. A query
        row whose keys are all masked gives zeros (torch gives NaN)."""
        need_weights = _args.flag("need_weights", need_weights)
        average_attn_weights = _args.flag("average_attn_weights", average_attn_weights)
        p = self._prepare(query, key, value, key_padding_mask, attn_mask, is_causal)
        B, L, S = p["B"], p["L"], p["S"]
        y = np.empty((B, L, self.embed_dim), np.float32)
        w = np.empty((B, self.num_heads, L, S), np.float32) if need_weights else None
        ctx = p["ctx"]
        _check(_LIB.qkv_mha_forward(p["run"], self._handle.ptr, _ptr(y), _ptr(w), _ptr(p["x"]),
                                    B, L, _ptr(ctx), S, ctypes.byref(p["opt"])),
               "MultiheadAttention.forward")
        if w is not None:
            if average_attn_weights:
                w = w.mean(axis=1)
            if not p["batched"]:
                w = w[0]
        return self._out(p, y), w

    __call__ = forward

    def grad(self, query, grad_output, key=None, value=None, key_padding_mask=None,
             attn_mask=None, is_causal=False):
        """The gradients of a loss L given grad_output = dL/d attn_output
        (attn_output's shape), for the forward with the same arguments.

        Returns (d_query, d_key, grads): d_query in query's layout (for
        self-attention it includes the paths through the keys and values);
        d_key in key's layout, the gradient of the context, or None for
        self-attention; grads the parameters' gradients under state_dict()'s
        names. Nothing is kept from a forward: libqkv recomputes it."""
        p = self._prepare(query, key, value, key_padding_mask, attn_mask, is_causal)
        B, L, S = p["B"], p["L"], p["S"]
        dy = _as_float32("grad_output", grad_output)
        shape = self._out(p, np.empty((B, L, self.embed_dim), np.float32)).shape
        if dy.shape != shape:
            raise ValueError("grad_output: shape %s, expected attn_output's %s"
                             % (dy.shape, shape))
        if p["swap"]:
            dy = dy.transpose(1, 0, 2)
        dy = np.ascontiguousarray(dy).reshape(B, L, self.embed_dim)
        ctx = p["ctx"]
        dx = np.empty((B, L, self.embed_dim), np.float32)
        dctx = np.empty(ctx.shape, np.float32) if ctx is not None else None
        cfg = _LIB.qkv_mha_get_config(self._handle.ptr)
        gptr = ctypes.c_void_p()
        _check(_LIB.qkv_mha_create(ctypes.byref(gptr), ctypes.byref(cfg)),
               "MultiheadAttention.grad")
        g = _Owned(gptr.value, _LIB.qkv_mha_free)
        try:
            _check(_LIB.qkv_mha_backward(p["run"], self._handle.ptr, g.ptr, _ptr(dx),
                                         _ptr(dctx), _ptr(dy), _ptr(p["x"]), B, L, _ptr(ctx), S,
                                         ctypes.byref(p["opt"])), "MultiheadAttention.grad")
            grads = self._state(_param_views(g))
        finally:
            g.close()
        return self._out(p, dx), (self._out(p, dctx) if dctx is not None else None), grads

    def decode(self, cache, x, need_weights=False):
        """One incremental step: x (B, n, embed_dim) holds n new tokens for
        each of the cache's B sequences (always batch first). Their keys and
        values join the cache, and their queries attend everything the
        sequence holds, causally. Returns y (B, n, embed_dim), or (y, w)
        with need_weights: w (B, num_heads, n, longest + n), zero past each
        sequence's own length. The same as a causal forward over the whole
        sequences."""
        need_weights = _args.flag("need_weights", need_weights)
        if not isinstance(cache, KVCache):
            raise TypeError("cache: %s, expected a qkv.KVCache" % type(cache).__name__)
        x = _f32("x", x)
        if x.ndim != 3 or x.shape[0] != cache.batch or x.shape[2] != self.embed_dim:
            raise ValueError("x: shape %s, expected (batch, n, embed_dim) = (%d, n, %d)"
                             % (x.shape, cache.batch, self.embed_dim))
        n = x.shape[1]
        y = np.empty(x.shape, np.float32)
        w = None
        if need_weights:
            longest = max(cache.length(b) for b in range(cache.batch))
            width = cache.max_len if cache.rolling else longest + n  # a rolling cache's rows
            w = np.empty((cache.batch, self.num_heads, n, width), np.float32)
        run = _run_context(self.threads, "MultiheadAttention.decode")
        opt = _options()
        _check(_LIB.qkv_mha_decode(run, self._handle.ptr, cache._handle.ptr, _ptr(y), _ptr(w),
                                   _ptr(x), n, ctypes.byref(opt)), "MultiheadAttention.decode")
        return (y, w) if need_weights else y

    def kv_cost(self, x, format, v_format=None):
        """What a KV cache of `format` (and `v_format` for the values)
        costs each head of the causal self-attention over x (B, L,
        embed_dim, batch first): (kl, err), each (num_heads + 1,) float64,
        per head the mean KL divergence of the attention weights (nats) and
        the relative L2 error of the head's output against an f32 cache,
        the last entry over all heads (qkv_mha_kv_cost)."""
        x = _f32("x", x)
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError("x: shape %s, expected (batch, L, embed_dim) with embed_dim %d"
                             % (x.shape, self.embed_dim))
        opts = _cache_options(format, v_format, False, 0)
        kl = np.empty(self.num_heads + 1, np.float64)
        err = np.empty(self.num_heads + 1, np.float64)
        dp = ctypes.POINTER(ctypes.c_double)
        run = _run_context(self.threads, "MultiheadAttention.kv_cost")
        _check(_LIB.qkv_mha_kv_cost(run, self._handle.ptr, _ptr(x), x.shape[0], x.shape[1],
                                    ctypes.byref(opts), kl.ctypes.data_as(dp),
                                    err.ctypes.data_as(dp)), "MultiheadAttention.kv_cost")
        return kl, err


# A cache's formats: qkv_kv_format's value, the element's bytes and typestr
# (the block formats: qkv_dtype's code and a block's bytes instead).
_CACHE_FORMATS = {"f32": (0, 4, "<f4"), "f16": (1, 2, "<f2"), "bf16": (2, 2, "<u2"),
                  "q8_0": (3, 34, None), "q4_0": (4, 18, None)}
_BLOCK_DTYPE = {"q8_0": _lib.DTYPE_Q8_0, "q4_0": _lib.DTYPE_Q4_0}


def _cache_options(format, v_format, rolling, sinks):
    """qkv_kv_cache_options from the formats' names (v_format None: format's)."""
    v_format = format if v_format is None else v_format
    for name, f in (("format", format), ("v_format", v_format)):
        if not isinstance(f, str) or f not in _CACHE_FORMATS:
            raise ValueError("%s: %r, expected 'f32', 'f16', 'bf16', 'q8_0' or 'q4_0'" % (name, f))
    return _lib.KvCacheOptions(ctypes.sizeof(_lib.KvCacheOptions), _CACHE_FORMATS[format][0],
                               _CACHE_FORMATS[v_format][0], int(rolling), sinks)


class KVCache:
    """Keys and values (after RoPE) of `batch` sequences of up to max_len
    tokens for one layer, for MultiheadAttention.decode. Memory is taken
    once: batch x num_kv_heads x max_len x (head_dim + v_head_dim)
    elements of `format`: "f32" (float32, the default), "f16" or "bf16",
    which round each stored element once and halve the bytes a decode step
    reads (the step then attends in that dtype, its queries rounded to it
    too), or "q8_0" / "q4_0", llama.cpp's blocks of 32 (about 1.06 and
    0.56 bytes a value; head dims must be multiples of 32). `v_format`
    gives the values another format than the keys (two float formats must
    be the same). `rolling=True` keeps of each sequence its first `sinks`
    tokens and its last max_len - sinks however long it runs (StreamingLLM,
    sliding-window layers): lengths count every token, decode attends to
    the kept ones, and its weights are per row (max_len of them)."""

    def __init__(self, layer, batch, max_len, format="f32", *, v_format=None, rolling=False,
                 sinks=0):
        if not isinstance(layer, MultiheadAttention):
            raise TypeError("layer: %s, expected a qkv.MultiheadAttention"
                            % type(layer).__name__)
        batch = _args.integer("batch", batch)
        max_len = _args.integer("max_len", max_len)
        rolling = _args.flag("rolling", rolling)
        sinks = _args.integer("sinks", sinks, 0, expected="0 .. max_len - 1")
        opts = _cache_options(format, v_format, rolling, sinks)
        v_format = format if v_format is None else v_format
        ptr = ctypes.c_void_p()
        _check(_LIB.qkv_kv_cache_create_with(ctypes.byref(ptr), layer._handle.ptr, batch, max_len,
                                             ctypes.byref(opts)), "KVCache")
        self._handle = _Owned(ptr.value, _LIB.qkv_kv_cache_free)
        self.layer = layer
        self.batch = batch
        self.max_len = max_len
        self.format = format
        self.v_format = v_format
        self.rolling = rolling
        self.sinks = sinks

    def _seq(self, b):
        b = _args.integer("b", b, -float("inf"), float("inf"))  # the range is the IndexError's
        if not 0 <= b < self.batch:
            raise IndexError("b: %d is not a sequence of the cache (0..%d)"
                             % (b, self.batch - 1))
        return b

    def length(self, b):
        """Tokens held for sequence b."""
        return int(_LIB.qkv_kv_cache_length(self._handle.ptr, self._seq(b)))

    def lengths(self):
        return [self.length(b) for b in range(self.batch)]

    def truncate(self, b, n):
        """Keeps the first n tokens of sequence b (0 resets it)."""
        _check(_LIB.qkv_kv_cache_truncate(self._handle.ptr, self._seq(b),
                                          _args.integer("n", n, 0, expected="0..its length")),
               "KVCache.truncate")

    @property
    def nbytes(self):
        """Bytes the cache holds."""
        return int(_LIB.qkv_kv_cache_bytes(self._handle.ptr))

    def append(self, b, k, v):
        """Appends n tokens to sequence b from keys k (n, num_kv_heads,
        head_dim) and values v (n, num_kv_heads, v_head_dim), as they are to
        be stored (keys already rotated where the layer has RoPE)."""
        b = self._seq(b)
        m = self.layer
        k, v = _f32("k", k), _f32("v", v)
        if k.ndim != 3 or k.shape[1:] != (m.num_kv_heads, m.head_dim):
            raise ValueError("k: shape %s, expected (n, num_kv_heads, head_dim) = (n, %d, %d)"
                             % (k.shape, m.num_kv_heads, m.head_dim))
        if v.shape != (k.shape[0], m.num_kv_heads, m.v_head_dim):
            raise ValueError("v: shape %s, expected %s"
                             % (v.shape, (k.shape[0], m.num_kv_heads, m.v_head_dim)))
        _check(_LIB.qkv_kv_cache_append(self._handle.ptr, b, _ptr(k), _ptr(v), k.shape[0]),
               "KVCache.append")

    def view(self, b):
        """Sequence b's cached keys (num_kv_heads, length, head_dim) and
        values (num_kv_heads, length, v_head_dim): writable views in a
        float format (float32, float16, or ml_dtypes.bfloat16, which a
        "bf16" side's view needs installed), valid while the cache lives
        (they keep it alive); for "q8_0" / "q4_0" float32 copies,
        dequantized exactly."""
        tk, tv = _lib.Tensor(), _lib.Tensor()
        _check(_LIB.qkv_kv_cache_view(self._handle.ptr, self._seq(b), ctypes.byref(tk),
                                      ctypes.byref(tv)), "KVCache.view")
        out = []
        for t, fmt in ((tk, self.format), (tv, self.v_format)):
            shape = tuple(t.shape)[1:]
            _, size, typestr = _CACHE_FORMATS[fmt]
            if typestr is None:  # a block format: rows of whole blocks, one run per head
                heads, length, width = shape
                a = np.empty(shape, np.float32)
                per_head = int(t.stride[1]) // 32 * size
                for h in range(heads):
                    if length:
                        _check(_LIB.qkv_dequantize(_ptr(a[h]), _BLOCK_DTYPE[fmt],
                                                   t.data + h * per_head, length * width),
                               "KVCache.view")
                out.append(a)
                continue
            a = np.asarray(_Memory(self._handle, t.data, shape,
                                   tuple(s * size for s in tuple(t.stride)[1:]), typestr))
            if fmt == "bf16":
                try:
                    import ml_dtypes
                except ImportError:
                    raise TypeError("KVCache.view: a bf16 cache's view is an "
                                    "ml_dtypes.bfloat16 array, and ml_dtypes is not installed "
                                    "(pip install ml_dtypes)") from None
                a = a.view(ml_dtypes.bfloat16)
            out.append(a)
        return tuple(out)

    def __repr__(self):
        vf = "" if self.v_format == self.format else ", v_format=%r" % self.v_format
        return "qkv.KVCache(batch=%d, max_len=%d, format=%r%s, lengths=%s)" % (
            self.batch, self.max_len, self.format, vf, self.lengths())


def _size(name, x):
    """A dimension of the layer: an integer from 1 to int64's largest."""
    return _args.integer(name, x, 1, expected=">= 1")


def _threads(threads):
    """The layer's worker threads: 0 (one per CPU) up to C int's largest."""
    return _args.integer("threads", threads, 0, _args.INT_MAX,
                         expected="0 (one per CPU) .. %d" % _args.INT_MAX)


def _is_float32(dtype):
    """numpy's float32 in any spelling, or torch.float32 (torch need not be
    installed, so by name)."""
    try:
        return np.dtype(dtype) == np.float32
    except TypeError:
        return str(dtype) == "torch.float32"


def _rope_code(rope):
    key = rope.lower() if isinstance(rope, str) else rope
    if key not in _ROPE:
        raise ValueError("rope: %r, expected None, 'half' or 'interleaved'" % (rope,))
    return _ROPE[key]


def _path(path):
    import os
    return os.fsencode(path)


def _param_name(which):
    return dict(_WEIGHTS + _BIASES)[which]


def _param_views(handle):
    """numpy views of the 8 parameters of a layer (None for absent biases)."""
    views = []
    for which in range(8):
        rows, cols = ctypes.c_int64(), ctypes.c_int64()
        addr = _LIB.qkv_mha_param_data(handle.ptr, which, ctypes.byref(rows), ctypes.byref(cols))
        if not addr:
            views.append(None)
            continue
        shape = (rows.value, cols.value) if which < _lib.MHA_BQ else (cols.value,)
        views.append(np.asarray(_Memory(handle, addr, shape)))
    return views


def _xavier(shape):
    fan_out, fan_in = shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return np.random.uniform(-bound, bound, shape)


def _is_causal_mask(m):
    """Is the (L, S) mask m torch's top-left causal mask: bool True above
    the diagonal, or float 0 on and below it and -inf above?"""
    L, S = m.shape
    tril = np.arange(S)[None, :] <= np.arange(L)[:, None]
    if m.dtype == np.bool_:
        return bool(np.array_equal(m, ~tril))
    return bool(np.all(np.where(tril, m == 0, np.isneginf(m))))
