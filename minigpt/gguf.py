"""GGUF, llama.cpp's model file, read and written. The reader trusts nothing.

    magic "GGUF", version u32 (2 or 3), n_tensors u64, n_kv u64
    n_kv x (key: string, value type u32, value)        string = u64 length + UTF-8 bytes
    n_tensors x (name: string, n_dims u32, ne[n_dims] u64, ggml type u32, offset u64)
    padding to `general.alignment` (32 unless the file says), then the tensor data

Every count, length and offset is checked against the bytes the file has left before anything is
allocated or read (each check answers a CVE of llama.cpp's own reader: DESIGN.md, "GGUF from
strangers"). A bad file is one GGUFError line naming the file and the defect.
ne lists the fastest axis first; a TensorInfo's shape is NumPy's, the reverse: a matrix is (out, in).
"""
import os
import struct
from dataclasses import dataclass

import numpy as np

from . import quant
from .fileio import atomic_write

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_BYTES = 1 << 30      # a string or array longer than 1 GiB is refused, as ggml refuses it
MAX_NAME = 63            # ggml's GGML_MAX_NAME is 64 with the terminating zero
MAX_DIMS = 4

# value types: id -> (name, struct format); strings (8) and arrays (9) have no fixed size
U8, I8, U16, I16, U32, I32, F32, BOOL, STRING, ARRAY, U64, I64, F64 = range(13)
SCALARS = {U8: ("u8", "<B"), I8: ("i8", "<b"), U16: ("u16", "<H"), I16: ("i16", "<h"),
           U32: ("u32", "<I"), I32: ("i32", "<i"), F32: ("f32", "<f"), BOOL: ("bool", "<B"),
           U64: ("u64", "<Q"), I64: ("i64", "<q"), F64: ("f64", "<d")}
DTYPES = {t: np.dtype(fmt) for t, (_, fmt) in SCALARS.items()}
VALUE_NAMES = {**{t: n for t, (n, _) in SCALARS.items()}, STRING: "string", ARRAY: "array"}


class GGUFError(ValueError):
    """A file is not a GGUF minigpt can trust: the message names the file and the defect."""


@dataclass
class GGUFValue:
    """A metadata value with its GGUF type; for arrays, `elem` is the element type."""
    type: int
    value: object
    elem: int = None


@dataclass
class TensorInfo:
    name: str
    ggml_type: int
    shape: tuple      # NumPy order (ne reversed)
    offset: int       # absolute, in the file
    nbytes: int


def _show(s, n=40):
    """A name from the file, quoted and escaped on one line, cut at n characters."""
    return repr(s[:n]) + ("..." if len(s) > n else "")


class _Cursor:
    """Reads the header with a bound check before every read."""

    def __init__(self, path, buf):
        self.path, self.buf, self.pos, self.size = path, buf, 0, len(buf)

    def fail(self, defect):
        raise GGUFError(f"{self.path}: {defect}")

    def need(self, n, what):
        if n > self.size - self.pos:
            self.fail(f"truncated {what}: needs {n} bytes at offset {self.pos}, the file has "
                      f"{self.size - self.pos} left")

    def scalar(self, t, what):
        fmt = SCALARS[t][1]
        self.need(struct.calcsize(fmt), what)
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        if t == BOOL:
            if v > 1:
                self.fail(f"{what}: bool byte {v} is neither 0 nor 1")
            return bool(v)
        return v

    def string(self, what, strict=False):
        n = self.scalar(U64, f"{what} length")
        if n > MAX_BYTES:
            self.fail(f"{what}: string length {n} is over the 1 GiB limit")
        self.need(n, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        try:  # names must be text; values keep any bytes (surrogateescape), so they write back as read
            return raw.decode("utf-8", "strict" if strict else "surrogateescape")
        except UnicodeDecodeError:
            self.fail(f"{what} {_show(raw)} is not UTF-8")

    def value(self, t, what):
        if t in SCALARS:
            return self.scalar(t, what)
        if t == STRING:
            return self.string(what)
        if t != ARRAY:
            self.fail(f"{what}: unknown value type {t}")
        elem = self.scalar(U32, f"{what} element type")
        n = self.scalar(U64, f"{what} length")
        if elem == ARRAY:
            self.fail(f"{what}: an array of arrays")
        if elem not in SCALARS and elem != STRING:
            self.fail(f"{what}: unknown array element type {elem}")
        least = 8 if elem == STRING else DTYPES[elem].itemsize  # a string is at least its length
        if n * least > MAX_BYTES:
            self.fail(f"{what}: array of {n} {VALUE_NAMES[elem]} is over the 1 GiB limit")
        self.need(n * least, f"{what} ({n} x {VALUE_NAMES[elem]})")
        if elem == STRING:
            return GGUFValue(ARRAY, [self.string(f"{what}[{i}]") for i in range(n)], STRING)
        a = np.frombuffer(self.buf, DTYPES[elem], count=n, offset=self.pos).copy()
        self.pos += n * least
        if elem == BOOL:
            if a.size and a.max() > 1:
                self.fail(f"{what}: a bool byte is neither 0 nor 1")
            a = a.astype(bool)
        return GGUFValue(ARRAY, a, elem)


class GGUFFile:
    """A GGUF's header, read and checked; tensor data stays on disk (memory-mapped) until asked for."""

    def __init__(self, path, version, alignment, metadata, types, array_types, tensors, data_offset, mm):
        self.path, self.version, self.alignment = path, version, alignment
        self.metadata, self.types, self.tensors = metadata, types, tensors
        self.array_types = array_types  # key -> element type, for the arrays
        self.data_offset, self._mm = data_offset, mm

    def value(self, key):
        """The metadata value with its GGUF type (what write_gguf needs to write it back the same)."""
        t = self.types[key]
        v = self.metadata[key]
        return GGUFValue(t, v, self.array_types.get(key))

    def require(self, key, kind):
        """metadata[key], which must be there and of Python type `kind` (str, int, float, bool or
        list for any array); a clear GGUFError otherwise."""
        if key not in self.metadata:
            raise GGUFError(f"{self.path}: metadata key {key!r} is missing")
        v = self.metadata[key]
        ok = {list: isinstance(v, (list, np.ndarray)), float: isinstance(v, float),
              int: isinstance(v, int) and not isinstance(v, bool)}.get(kind, isinstance(v, kind))
        if not ok:
            raise GGUFError(f"{self.path}: metadata key {key!r} is {VALUE_NAMES[self.types[key]]}, "
                            f"expected {kind.__name__}")
        return v

    def info(self, name):
        if name not in self.tensors:
            raise GGUFError(f"{self.path}: no tensor named {_show(name)}")
        return self.tensors[name]

    def raw(self, name):
        """The tensor's bytes as stored (a read-only uint8 view of the mapped file)."""
        t = self.info(name)
        return self._mm[t.offset:t.offset + t.nbytes]

    def tensor(self, name):
        """The tensor dequantized: a float32 array of its shape."""
        t = self.info(name)
        if t.ggml_type not in quant.SUPPORTED:
            raise GGUFError(f"{self.path}: tensor {_show(name)} is {quant.type_name(t.ggml_type)}, "
                            f"which minigpt cannot dequantize")
        return quant.dequantize(self.raw(name), t.ggml_type, t.shape)


def read_gguf(path):
    """Open a GGUF file and check all of its header against its size -> GGUFFile."""
    path = os.fspath(path)
    size = os.path.getsize(path)
    if size < 24:
        raise GGUFError(f"{path}: truncated header: {size} bytes, a GGUF header has 24")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    c = _Cursor(path, mm)
    magic = bytes(mm[:4])
    if magic != MAGIC:
        c.fail(f"not a GGUF file: magic {magic!r}, expected {MAGIC!r}")
    c.pos = 4
    version = c.scalar(U32, "version")
    if version not in VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        c.fail(f"GGUF version {version} is not supported (2 or 3)"
               + (" (a big-endian file)" if swapped in VERSIONS else ""))
    n_tensors = c.scalar(U64, "tensor count")
    n_kv = c.scalar(U64, "metadata count")
    # the smallest key-value is 13 bytes (8 length + 1 key byte + 4 type), the smallest info 25
    if n_kv * 13 > size - c.pos:
        c.fail(f"metadata count {n_kv} cannot fit in the {size - c.pos} bytes left")

    metadata, types, array_types = {}, {}, {}
    for i in range(n_kv):
        key = c.string(f"metadata key {i}", strict=True)
        if not key:
            c.fail(f"metadata key {i} is empty")
        if key in metadata:
            c.fail(f"duplicate metadata key {_show(key)}")
        t = c.scalar(U32, f"type of {_show(key)}")
        v = c.value(t, f"metadata {_show(key)}")
        if isinstance(v, GGUFValue):
            v, array_types[key] = v.value, v.elem
        metadata[key], types[key] = v, t

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        alignment = metadata["general.alignment"]
        if types["general.alignment"] != U32 or alignment == 0 or alignment & (alignment - 1):
            c.fail(f"general.alignment {alignment!r} ({VALUE_NAMES[types['general.alignment']]}) "
                   f"is not a u32 power of two")

    if n_tensors * 25 > size - c.pos:
        c.fail(f"tensor count {n_tensors} cannot fit in the {size - c.pos} bytes left")
    infos, seen = [], set()
    for i in range(n_tensors):
        name = c.string(f"tensor {i} name", strict=True)
        what = f"tensor {_show(name)}"
        if not name or len(name.encode()) > MAX_NAME:
            c.fail(f"{what}: a tensor name must be 1 to {MAX_NAME} bytes")
        if name in seen:
            c.fail(f"duplicate {what}")
        seen.add(name)
        n_dims = c.scalar(U32, f"{what} n_dims")
        if not 1 <= n_dims <= MAX_DIMS:
            c.fail(f"{what} has {n_dims} dims (1 to {MAX_DIMS})")
        ne = [c.scalar(U64, f"{what} dims") for _ in range(n_dims)]
        t = c.scalar(U32, f"{what} type")
        offset = c.scalar(U64, f"{what} offset")
        if min(ne) < 1:
            c.fail(f"{what} has a dim of 0: {ne}")
        if t not in quant.TYPES:
            c.fail(f"{what} has unknown type {t}")
        tname, block, _ = quant.TYPES[t]
        if ne[0] % block:
            c.fail(f"{what}: {tname} rows of {ne[0]} are not whole blocks of {block}")
        n = 1
        for d in ne:  # Python ints cannot overflow; stop as soon as the count is beyond any file
            n *= d
            if n > size * block:
                c.fail(f"{what}: dims {ne} hold more weights than the file has bytes")
        infos.append((name, t, tuple(reversed(ne)), offset, quant.nbytes_of(t, tuple(reversed(ne)))))

    data_offset = -(-c.pos // alignment) * alignment
    if n_tensors and data_offset > size:
        c.fail(f"truncated: the tensor data would start at {data_offset}, past the end ({size})")
    tensors = {}
    for name, t, shape, offset, nbytes in infos:
        if offset % alignment:
            c.fail(f"tensor {_show(name)} offset {offset} is not a multiple of the alignment {alignment}")
        if offset + nbytes > size - data_offset:
            c.fail(f"tensor {_show(name)} ({nbytes} bytes at data offset {offset}) runs past the end "
                   f"of the file ({size - data_offset} bytes of data)")
        tensors[name] = TensorInfo(name, t, shape, data_offset + offset, nbytes)
    spans = sorted((t.offset, t.offset + t.nbytes, t.name) for t in tensors.values())
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            c.fail(f"tensors {_show(a)} and {_show(b)} overlap")
    return GGUFFile(path, version, alignment, metadata, types, array_types, tensors, data_offset, mm)


# --------------------------------------------------------------------------------------------------
# the writer: version 3, little-endian, every tensor at an aligned offset, written atomically

def _int_type(values):
    lo, hi = min(values, default=0), max(values, default=0)
    return I32 if -2**31 <= lo and hi < 2**31 else I64 if -2**63 <= lo and hi < 2**63 else U64


def typed(key, v):
    """A metadata value -> GGUFValue: a GGUFValue as given; otherwise str, bool, int (i32, or i64
    when it needs it), float (f32), NumPy scalars and arrays by their dtype, lists by their items."""
    if isinstance(v, GGUFValue):
        if v.type == ARRAY and v.elem is None:
            return GGUFValue(ARRAY, v.value, typed(key, v.value).elem)
        return v
    if key == "general.alignment":
        return GGUFValue(U32, v)
    if isinstance(v, (bool, np.bool_)):
        return GGUFValue(BOOL, bool(v))
    if isinstance(v, np.generic):
        return GGUFValue(_dtype_type(key, v.dtype), v.item())
    if isinstance(v, int):
        return GGUFValue(_int_type([v]), v)
    if isinstance(v, float):
        return GGUFValue(F32, v)
    if isinstance(v, str):
        return GGUFValue(STRING, v)
    if isinstance(v, np.ndarray):
        return GGUFValue(ARRAY, v, _dtype_type(key, v.dtype))
    if isinstance(v, (list, tuple)):
        if all(isinstance(x, str) for x in v):
            return GGUFValue(ARRAY, list(v), STRING)
        if all(isinstance(x, bool) for x in v):
            return GGUFValue(ARRAY, list(v), BOOL)
        if all(isinstance(x, int) and not isinstance(x, bool) for x in v):
            return GGUFValue(ARRAY, list(v), _int_type(v))
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            return GGUFValue(ARRAY, list(v), F32)
    raise ValueError(f"metadata {key!r}: cannot write a {type(v).__name__} as a GGUF value")


def _dtype_type(key, dtype):
    for t, d in DTYPES.items():
        if d == dtype.newbyteorder("<") and t != BOOL:
            return t
    if dtype == np.bool_:
        return BOOL
    raise ValueError(f"metadata {key!r}: no GGUF type holds {dtype}")


def _encode_string(s):
    b = s.encode("utf-8", "surrogateescape")
    return struct.pack("<Q", len(b)) + b


def _encode(key, v):
    """A GGUFValue -> its bytes (without the type id in front)."""
    try:
        if v.type in SCALARS:
            return struct.pack(SCALARS[v.type][1], v.value)
        if v.type == STRING:
            return _encode_string(v.value)
        if v.type == ARRAY:
            head = struct.pack("<IQ", v.elem, len(v.value))
            if v.elem == STRING:
                return head + b"".join(_encode_string(s) for s in v.value)
            if v.elem not in SCALARS:
                raise ValueError(f"arrays of {VALUE_NAMES.get(v.elem, v.elem)} are not GGUF")
            a = np.asarray(v.value)
            if v.elem == BOOL:
                a = a.astype(bool)
            return head + a.astype(DTYPES[v.elem]).tobytes()
    except (struct.error, OverflowError, TypeError) as e:
        raise ValueError(f"metadata {key!r}: cannot write {v.value!r:.60} as {VALUE_NAMES.get(v.type)}: {e}") from None
    raise ValueError(f"metadata {key!r}: unknown value type {v.type}")


def _tensor_bytes(name, t):
    """A tensor to write -> (ggml type, NumPy shape, raw uint8 bytes). A float array is written as
    F32 (F16 if it is float16); (type, x) quantizes x; (type, raw, shape) is written as it is."""
    if isinstance(t, np.ndarray):
        t = (quant.F16 if t.dtype == np.float16 else quant.F32, t)
    if len(t) == 2:
        ggml_type, x = t
        x = np.asarray(x)
        raw, shape = quant.quantize(x, ggml_type), x.shape
    else:
        ggml_type, raw, shape = t
        raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
        shape = tuple(int(s) for s in shape)
        if ggml_type not in quant.TYPES:
            raise ValueError(f"tensor {name!r}: unknown ggml type {ggml_type}")
        if raw.size != quant.nbytes_of(ggml_type, shape):
            raise ValueError(f"tensor {name!r}: {raw.size} bytes, a {quant.type_name(ggml_type)} "
                             f"{shape} has {quant.nbytes_of(ggml_type, shape)}")
    if not 1 <= len(shape) <= MAX_DIMS or min(shape) < 1:
        raise ValueError(f"tensor {name!r}: shape {shape} (GGUF holds 1 to {MAX_DIMS} dims, each >= 1)")
    if not name or len(name.encode()) > MAX_NAME:
        raise ValueError(f"tensor {name!r}: a tensor name must be 1 to {MAX_NAME} bytes")
    return ggml_type, tuple(shape), raw


def write_gguf(path, metadata, tensors, alignment=DEFAULT_ALIGNMENT):
    """Write a GGUF version 3 file atomically: metadata key -> value (see typed()), tensors name ->
    float array, (ggml type, float array) or (ggml type, raw bytes, shape)."""
    kv = {k: typed(k, v) for k, v in metadata.items()}
    if "general.alignment" in kv:
        if kv["general.alignment"].type != U32:
            raise ValueError("general.alignment must be a u32 (readers refuse any other type)")
        alignment = kv["general.alignment"].value
    elif alignment != DEFAULT_ALIGNMENT:
        kv["general.alignment"] = GGUFValue(U32, alignment)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1) or alignment >= 2**32:
        raise ValueError(f"alignment {alignment!r} is not a u32 power of two")
    if any(not k for k in kv):
        raise ValueError("a metadata key is empty")
    parts = [MAGIC, struct.pack("<IQQ", 3, len(tensors), len(kv))]
    for k, v in kv.items():
        parts += [_encode_string(k), struct.pack("<I", v.type), _encode(k, v)]
    pad = lambda n: -n % alignment  # noqa: E731
    data, offset = [], 0
    for name, t in tensors.items():
        ggml_type, shape, raw = _tensor_bytes(name, t)
        ne = tuple(reversed(shape))
        parts += [_encode_string(name), struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, ggml_type, offset)]
        data += [raw, b"\0" * pad(raw.size)]
        offset += raw.size + pad(raw.size)
    header = b"".join(parts)

    def write(f):
        f.write(header + b"\0" * pad(len(header)))
        for d in data:
            f.write(memoryview(d))
    atomic_write(path, write)
