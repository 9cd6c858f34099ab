#!/usr/bin/env python3
"""Writes the seed corpus of the .npy fuzz harness (tests/fuzz/corpus/npy):
small valid files laid out exactly as numpy.save does, a few header spellings
NumPy accepts, and a few files the reader must refuse. Standard library only;
run it from anywhere, it writes next to itself. The output is committed."""
import math
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "npy")


def npy(descr, shape, data, version=1, text=None):
    """A .npy image: numpy.save's header (or `text`), padded to 64 bytes."""
    if text is None:
        text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, shape)
        if shape:  # numpy.save's room for the first dim to grow
            text += " " * (21 - len(repr(shape[0])))
    pre = 10 if version == 1 else 12
    hlen = len(text) + 1
    pad = 64 - (pre + hlen) % 64
    header = (text + " " * pad + "\n").encode("latin1" if version < 3 else "utf8")
    fmt = "<H" if version == 1 else "<I"
    return b"\x93NUMPY" + bytes([version, 0]) + struct.pack(fmt, len(header)) + header + data


def f16(x):
    return struct.pack("<e", x)


FILES = {
    # Valid, one per dtype and a spread of ranks.
    "f4_2x3.npy": npy("<f4", (2, 3), struct.pack("<6f", 1, -2, 0.5, 1e-40, math.inf, math.nan)),
    "f8_scalar.npy": npy("<f8", (), struct.pack("<d", math.pi)),
    "f2_vec.npy": npy("<f2", (6,), b"".join(f16(x) for x in (1, 65504, -0.0, 6e-8, math.inf, math.nan))),
    "b1_mask.npy": npy("|b1", (2, 1, 3), bytes([1, 0, 1, 1, 0, 200])),
    "i4_lens.npy": npy("<i4", (2,), struct.pack("<2i", 6, -3)),
    "i8_4d.npy": npy("<i8", (1, 2, 1, 2), struct.pack("<4q", 2**62, -1, 0, 2**31)),
    "f4_rank7.npy": npy("<f4", (1, 1, 2, 1, 1, 1, 2), struct.pack("<4f", 1, 2, 3, 4)),
    "f4_empty.npy": npy("<f4", (0, 4), b""),
    "f8_empty_mid.npy": npy("<f8", (3, 0, 2), b""),
    # Valid header spellings other than numpy.save's.
    "v2_f4.npy": npy("<f4", (2,), struct.pack("<2f", 1, 2), version=2),
    "v3_i4.npy": npy("<i4", (1,), struct.pack("<i", 7), version=3),
    "spelling.npy": npy(None, None, struct.pack("<3d", 1, 2, 3),
                        text='{"shape":(3,),"descr":"<f8","fortran_order":False,}'),
    "py2_long.npy": npy(None, None, struct.pack("<2f", 1, 2),
                        text="{'descr': '<f4', 'fortran_order': False, 'shape': (2L,), }"),
    # Refused.
    "bad_bigendian.npy": npy(">f4", (2,), struct.pack(">2f", 1, 2)),
    "bad_fortran.npy": npy(None, None, bytes(24),
                           text="{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }"),
    "bad_u2.npy": npy("<u2", (2,), bytes(4)),
    "bad_overflow.npy": npy("<f4", (2**40, 2**40), b""),
    "bad_truncated.npy": npy("<f4", (2, 3), bytes(23)),
    "bad_trailing.npy": npy("<f4", (2,), bytes(9)),
    "bad_no_newline.npy": npy("<f4", (2,), bytes(8))[:127] + b" " + bytes(8),
}

os.makedirs(OUT, exist_ok=True)
for name, data in sorted(FILES.items()):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print("wrote %d files to %s" % (len(FILES), OUT))
