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
    """qkv_attn_options; zero means every default."""
    _fields_ = [
        ("scale", ctypes.c_double),
        ("softcap", ctypes.c_double),
        ("mask", Tensor),
        ("causal", ctypes.c_int),
        ("align", ctypes.c_int),
        ("use_window", ctypes.c_int),
        ("window_left", ctypes.c_int64),
        ("window_right", ctypes.c_int64),
        ("kv_lens", ctypes.POINTER(ctypes.c_int64)),
        ("impl", ctypes.c_int),
        ("isa", ctypes.c_int),
        ("num_threads", ctypes.c_int),
        ("progress", PROGRESS),
        ("progress_user", ctypes.c_void_p),
    ]


# enum values of qkv.h
DTYPE_F32, DTYPE_F64, DTYPE_F16, DTYPE_BF16, DTYPE_BOOL, DTYPE_I32, DTYPE_I64 = range(7)
ALIGN_TOP_LEFT, ALIGN_BOTTOM_RIGHT = 0, 1
IMPL_AUTO, IMPL_REFERENCE = 0, 1
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
        _declare(lib)
        return lib
    raise ImportError("qkv: cannot find libqkv; build it (make) or set QKV_LIBRARY. Tried: "
                      + ", ".join(tried))


def _declare(lib):
    T = ctypes.POINTER(Tensor)
    lib.qkv_attention_forward.argtypes = [T, T, T, T, T, T, ctypes.POINTER(Options)]
    lib.qkv_attention_forward.restype = ctypes.c_int
    lib.qkv_attention_backward.argtypes = [T, T, T, T, T, T, T, T, T, T, ctypes.POINTER(Options)]
    lib.qkv_attention_backward.restype = ctypes.c_int
    lib.qkv_error_detail.argtypes = []
    lib.qkv_error_detail.restype = ctypes.c_char_p
    lib.qkv_status_string.argtypes = [ctypes.c_int]
    lib.qkv_status_string.restype = ctypes.c_char_p
    lib.qkv_version_string.argtypes = []
    lib.qkv_version_string.restype = ctypes.c_char_p
