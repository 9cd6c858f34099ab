"""Checks for the scalar and integer arguments the binding hands to libqkv.

ctypes converts a Python int to a C integer by wrapping it modulo 2^n and
int() truncates a float, so without these a wrong value (2**64 + 2, 3.9,
a bool that slid into a number's place) would reach the library as some
other, valid-looking value. Each check names the argument; a wrong type is
a TypeError, a number that is not an integer or is out of range a
ValueError. numpy scalars and arrays of any integer width are taken.
"""
import numbers

import numpy as np

INT_MAX = 2 ** 31 - 1  # C int, e.g. num_threads
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1  # int64_t: sizes, lengths, the window


def _scalar(x):
    """A 0-d numpy array as its scalar; anything else as it is."""
    return x[()] if isinstance(x, np.ndarray) and x.ndim == 0 else x


def _is_bool(x):
    return isinstance(x, (bool, np.bool_))


def flag(name, x):
    """x as a Python bool; only True, False and numpy bools are flags (as
    torch's typed bool arguments), so a number or an array that landed here
    from a shifted positional argument is refused."""
    x = _scalar(x)
    if not _is_bool(x):
        raise TypeError("%s: %r (%s), expected True or False" % (name, x, type(x).__name__))
    return bool(x)


def number(name, x):
    """x as a Python float (a C double, nothing narrowed): an int, a float
    or a numpy number, not a bool."""
    x = _scalar(x)
    if _is_bool(x) or not isinstance(x, numbers.Real):
        raise TypeError("%s: %r (%s), expected a number" % (name, x, type(x).__name__))
    try:
        return float(x)
    except OverflowError:
        raise ValueError("%s: %r is too large for a double" % (name, x)) from None


def integer(name, x, lo=INT64_MIN, hi=INT64_MAX, expected=None):
    """x as a Python int in lo..hi: an int or a numpy integer, not a bool
    (TypeError) nor a float, even a whole one (ValueError). `expected`
    words the range in the message (default "lo..hi")."""
    x = _scalar(x)
    if _is_bool(x) or not isinstance(x, numbers.Real):
        raise TypeError("%s: %r (%s), expected an integer" % (name, x, type(x).__name__))
    if not isinstance(x, numbers.Integral):
        raise ValueError("%s: %r is not an integer" % (name, x))
    x = int(x)
    if not lo <= x <= hi:
        if expected is None:
            expected = ("a 64-bit signed integer" if (lo, hi) == (INT64_MIN, INT64_MAX)
                        else "%d..%d" % (lo, hi))
        raise ValueError("%s: %d, expected %s" % (name, x, expected))
    return x


def int64_array(name, x, lo=INT64_MIN, hi=INT64_MAX, expected=None):
    """x (anything np.asarray takes) as a flat, contiguous int64 array, each
    element checked as integer() checks a scalar (named name[i])."""
    a = np.asarray(x)
    if a.dtype.kind == "b":
        raise TypeError("%s: bool values, expected integers" % name)
    if a.dtype.kind not in "iufO":
        raise TypeError("%s: dtype %s, expected integers" % (name, a.dtype))
    flat = a.reshape(-1).tolist()  # Python scalars: the range check cannot wrap
    vals = [integer("%s[%d]" % (name, i), v, lo, hi, expected) for i, v in enumerate(flat)]
    return np.array(vals, dtype=np.int64)
