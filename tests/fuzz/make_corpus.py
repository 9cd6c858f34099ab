#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses. tests/fuzz/corpus/npy:
small valid files laid out exactly as numpy.save does, a few header spellings
NumPy accepts, and a few files the reader must refuse. tests/fuzz/corpus/
safetensors: small files as the safetensors package writes them, the header
spellings JSON allows (escapes, whitespace, offsets out of order, metadata),
the format's other dtypes, and a few files the reader must refuse. Standard
library only; run it from anywhere, it writes next to itself. The output is
committed."""
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "npy")
ST_OUT = os.path.join(HERE, "corpus", "safetensors")


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



def st_raw(text, data, pad=True):
    """A .safetensors image from header text as given (padded with spaces
    to 8 bytes when pad), then the data bytes."""
    header = text.encode("utf8") if isinstance(text, str) else text
    if pad:
        header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + data


def st(tensors, metadata=None):
    """tensors: (name, dtype, shape, data bytes), laid out in that order
    with the compact JSON the safetensors package writes."""
    header, off = {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False)
    return st_raw(text, b"".join(t[3] for t in tensors))


ST_FILES = {
    # Valid, one per dtype qkv has, ranks 0..4, zero-size tensors.
    "f32_2x3.safetensors": st([("w", "F32", (2, 3), struct.pack("<6f", 1, -2, 0.5, 1e-40,
                                                                math.inf, math.nan))]),
    "mixed.safetensors": st([
        ("layers.0.q.weight", "BF16", (2, 2), struct.pack("<4H", 0x3f80, 0xc000, 0x7f80, 0x7fc0)),
        ("layers.0.k.weight", "F16", (1, 2, 1, 2), b"".join(struct.pack("<e", x) for x in (1, 65504, -0.0, 6e-8))),
        ("scale", "F64", (), struct.pack("<d", math.pi)),
        ("mask", "BOOL", (3,), bytes([1, 0, 200])),
        ("lens", "I32", (2,), struct.pack("<2i", 6, -3)),
        ("big", "I64", (1, 2), struct.pack("<2q", 2**62, -1)),
        ("empty", "F32", (0, 4), b""),
    ], metadata={"format": "pt"}),
    "other_dtypes.safetensors": st([
        ("i8", "I8", (3,), bytes([0x80, 0, 0x7f])),
        ("u8", "U8", (2,), bytes([0, 255])),
        ("i16", "I16", (1,), b"\x01\x80"),
        ("u16", "U16", (1,), b"\xff\xff"),
        ("u32", "U32", (1,), b"\x01\x02\x03\x04"),
        ("u64", "U64", (1,), bytes(8)),
        ("c64", "C64", (1,), bytes(8)),
        ("e4m3", "F8_E4M3", (2,), b"\x38\xb8"),
        ("e5m2", "F8_E5M2", (1,), b"\x3c"),
        ("e8m0", "F8_E8M0", (1,), b"\x7f"),
        ("f4", "F4", (2, 2), b"\x12\x34"),
        ("f6", "F6_E2M3", (4,), bytes(3)),
    ]),
    "empty.safetensors": st([]),
    "metadata_only.safetensors": st([], metadata={"k": "v", "": "caf\u00e9"}),
    # Valid spellings the package does not write.
    "escapes.safetensors": st_raw(
        '{"a\\"q\\\\b\\/c\\t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},'
        '"\\u00e9t\\ud83d\\ude00":{"dtype":"I32","shape":[],"data_offsets":[1,5]},'
        '"caf\u00e9 \U0001F600":{"dtype":"F16","shape":[1],"data_offsets":[5,7]}}',
        b"\x01\x02\x00\x00\x00\x00\x3c"),
    "unordered_ws.safetensors": st_raw(
        '{ "w" : { "data_offsets" : [ 3 , 11 ] ,\n\t"shape" : [ 2 ] , "dtype" : "F32" } ,\r\n'
        '"b":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},'
        '"z":{"dtype":"F64","shape":[0,5],"data_offsets":[11,11]}}',
        b"\x80\x00\x7f" + struct.pack("<2f", -2.5, 0.25), pad=False),
    "rank32.safetensors": st([("r", "F16", (1,) * 31 + (2,), bytes(4))]),
    # Refused.
    "bad_size.safetensors": st_raw('{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,12]}}', bytes(12)),
    "bad_overlap.safetensors": st_raw(
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
        '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)),
    "bad_gap.safetensors": st_raw('{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}', bytes(12)),
    "bad_dtype.safetensors": st_raw('{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', bytes(16)),
    "bad_field.safetensors": st_raw('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}}', bytes(4)),
    "bad_dup.safetensors": st_raw(
        '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
        '"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', bytes(8)),
    "bad_overflow.safetensors": st_raw(
        '{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}', bytes(8)),
    "bad_surrogate.safetensors": st_raw('{"\\ud800":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}', b"\x00"),
    "bad_hlen.safetensors": struct.pack("<Q", 2**64 - 1) + b'{"a":{}}',
    "bad_trailing.safetensors": st_raw('{} x', b"", pad=False),
}


def write(out, files):
    os.makedirs(out, exist_ok=True)
    for name, data in sorted(files.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("wrote %d files to %s" % (len(files), out))


write(OUT, FILES)
write(ST_OUT, ST_FILES)
