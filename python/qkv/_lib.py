"""Loading libqkv and the ctypes mirror of the structs in include/qkv.h.

The structs must match the C declarations field for field; ctypes lays
them out with the platform's C rules, as the compiler does.
"""
import ctypes
import ctypes.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


class Tensor(ctypes.Structure):
    """qkv_tensor: a strided 4-d view; strides in elements."""
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("dtype", ctypes.c_int),
        ("shape", ctypes.c_int64 * 4),
        ("stride", ctypes.c_int64 * 4),
    ]


PROGRESS = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_double)


class Options(ctypes.Structure):
    """qkv_attention_options: what a call computes; zero means every
    default. struct_size is filled in, as a C caller's sizeof would be."""
    _fields_ = [
        ("struct_size", ctypes.c_size_t),
        ("scale", ctypes.c_double),
        ("softcap", ctypes.c_double),
        ("mask", Tensor),
        ("causal", ctypes.c_int),
        ("align", ctypes.c_int),
        ("use_window", ctypes.c_int),
        ("window_left", ctypes.c_int64),
        ("window_right", ctypes.c_int64),
        ("kv_lens", ctypes.POINTER(ctypes.c_int64)),
        ("q_offsets", ctypes.POINTER(ctypes.c_int64)),
        ("k_offsets", ctypes.POINTER(ctypes.c_int64)),
    ]

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.struct_size = ctypes.sizeof(Options)


class KvCacheOptions(ctypes.Structure):
    """qkv_kv_cache_options."""
    _fields_ = [("struct_size", ctypes.c_size_t), ("k_format", ctypes.c_int),
                ("v_format", ctypes.c_int), ("rolling", ctypes.c_int),
                ("sinks", ctypes.c_int64)]


class MhaConfig(ctypes.Structure):
    """qkv_mha_config; a 0 field means its default (see qkv.h)."""
    _fields_ = [
        ("d_model", ctypes.c_int64),
        ("d_context", ctypes.c_int64),
        ("heads", ctypes.c_int64),
        ("kv_heads", ctypes.c_int64),
        ("head_dim", ctypes.c_int64),
        ("v_head_dim", ctypes.c_int64),
        ("bias", ctypes.c_int),
        ("rope", ctypes.c_int),
        ("rope_base", ctypes.c_double),
        ("weight_dtype", ctypes.c_int),  # qkv_dtype: 0 = float32
    ]


# enum values of qkv.h
(DTYPE_F32, DTYPE_F64, DTYPE_F16, DTYPE_BF16, DTYPE_BOOL, DTYPE_I32, DTYPE_I64, DTYPE_Q8_0,
 DTYPE_Q4_0) = range(9)
ALIGN_TOP_LEFT, ALIGN_BOTTOM_RIGHT = 0, 1
ROPE_NONE, ROPE_INTERLEAVED, ROPE_HALF = range(3)
MHA_WQ, MHA_WK, MHA_WV, MHA_WO, MHA_BQ, MHA_BK, MHA_BV, MHA_BO = range(8)
IMPL_AUTO, IMPL_REFERENCE = 0, 1
MAX_THREADS = 1024  # QKV_MAX_THREADS: a larger count means this many
(OK, ERR_NULL_ARGUMENT, ERR_INVALID_ARGUMENT, ERR_SHAPE, ERR_DTYPE, ERR_OVERFLOW,
 ERR_OUT_OF_MEMORY, ERR_IO, ERR_FORMAT, ERR_THREAD, ERR_UNSUPPORTED) = range(11)


def _candidates():
    env = os.environ.get("QKV_LIBRARY")
    if env:
        yield env
        return
    yield os.path.join(_HERE, "libqkv.so")  # installed with the package
    root = os.path.dirname(os.path.dirname(_HERE))  # the source tree
    for build in ("build/release", "build"):
        yield os.path.join(root, build, "libqkv.so")
    found = ctypes.util.find_library("qkv")
    if found:
        yield found


def load():
    """The first libqkv that loads: $QKV_LIBRARY, the copy installed beside
    this file, the source tree's build/release, then the system's."""
    tried = []
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path)
            continue
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
            continue
        if not hasattr(lib, "qkv_context_create"):  # the calls before it took no context
            tried.append("%s (older than the execution context; rebuild it)" % path)
            continue
        _declare(lib)
        return lib
    raise ImportError("qkv: cannot find libqkv; build it (make) or set QKV_LIBRARY. Tried: "
                      + ", ".join(tried))


def _set_types(lib, decl):
    for name, (args, res) in decl.items():
        f = getattr(lib, name)
        f.argtypes = args
        f.restype = res


def _declare(lib):
    """The execution context (the first argument of every computing call,
    a qkv_context * or None for the default one), attention and errors."""
    T = ctypes.POINTER(Tensor)
    C, I = ctypes.c_void_p, ctypes.c_int  # qkv_context *, a C int or enum
    pOpt = ctypes.POINTER(Options)
    _set_types(lib, {
        "qkv_context_create": ([ctypes.POINTER(C)], I),
        "qkv_context_free": ([C], None),
        "qkv_context_set_threads": ([C, I], I),
        "qkv_context_threads": ([C], I),
        "qkv_context_set_isa": ([C, I], I),
        "qkv_context_set_impl": ([C, I], I),
        "qkv_context_set_progress": ([C, PROGRESS, ctypes.c_void_p], I),
        "qkv_attention_forward": ([C, T, T, T, T, T, T, pOpt], I),
        "qkv_attention_backward": ([C, T, T, T, T, T, T, T, T, T, T, pOpt], I),
        "qkv_attention_merge": ([T, T, T, T, T, T], I),
        "qkv_error_detail": ([], ctypes.c_char_p),
        "qkv_status_string": ([I], ctypes.c_char_p),
        "qkv_version_string": ([], ctypes.c_char_p),
    })
    if hasattr(lib, "qkv_mha_create"):  # a libqkv older than the layer still gives attention
        _declare_layer(lib)


def _declare_layer(lib):
    """The multi-head attention layer, its KV cache and the .safetensors
    reader the layer's loader takes."""
    P, I64 = ctypes.c_void_p, ctypes.c_int64  # opaque handles (the context too), sizes
    FP = ctypes.c_void_p  # float *: a numpy array's .ctypes.data, or None
    pI64 = ctypes.POINTER(ctypes.c_int64)
    pCfg = ctypes.POINTER(MhaConfig)
    pOpt = ctypes.POINTER(Options)
    decl = {
        "qkv_safetensors_read": ([ctypes.c_char_p, ctypes.POINTER(P)], ctypes.c_int),
        "qkv_safetensors_free": ([P], None),
        "qkv_mha_create": ([ctypes.POINTER(P), pCfg], ctypes.c_int),
        "qkv_mha_free": ([P], None),
        "qkv_mha_get_config": ([P], MhaConfig),
        "qkv_mha_param_data": ([P, ctypes.c_int, pI64, pI64], FP),
        "qkv_mha_load": ([ctypes.POINTER(P), pCfg, P, ctypes.c_char_p], ctypes.c_int),
        "qkv_mha_save": ([P, ctypes.c_char_p, ctypes.c_char_p], ctypes.c_int),
        "qkv_mha_forward": ([P, P, FP, FP, FP, I64, I64, FP, I64, pOpt], ctypes.c_int),
        "qkv_mha_backward": ([P, P, P, FP, FP, FP, FP, I64, I64, FP, I64, pOpt], ctypes.c_int),
        "qkv_kv_cache_create": ([ctypes.POINTER(P), P, I64, I64], ctypes.c_int),
        "qkv_kv_cache_create_with": ([ctypes.POINTER(P), P, I64, I64,
                                      ctypes.POINTER(KvCacheOptions)], ctypes.c_int),
        "qkv_dequantize": ([FP, ctypes.c_int, P, I64], ctypes.c_int),
        "qkv_kv_cache_free": ([P], None),
        "qkv_kv_cache_length": ([P, I64], I64),
        "qkv_kv_cache_truncate": ([P, I64, I64], ctypes.c_int),
        "qkv_kv_cache_bytes": ([P], ctypes.c_size_t),
        "qkv_kv_cache_append": ([P, I64, FP, FP, I64], ctypes.c_int),
        "qkv_kv_cache_view": ([P, I64, ctypes.POINTER(Tensor), ctypes.POINTER(Tensor)],
                              ctypes.c_int),
        "qkv_mha_decode": ([P, P, P, FP, FP, FP, I64, pOpt], ctypes.c_int),
        "qkv_mha_kv_cost": ([P, P, FP, I64, I64, ctypes.POINTER(KvCacheOptions),
                             ctypes.POINTER(ctypes.c_double), ctypes.POINTER(ctypes.c_double)],
                            ctypes.c_int),
    }
    _set_types(lib, decl)
