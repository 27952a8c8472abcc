"""MindSpore checkpoint files: streaming writers (``.ckpt`` protobuf and ``.safetensors``), a streaming
reader, and a strict loader that checks every name and shape before it copies anything.

The writers hold one tensor at a time and write to ``<name>.tmp`` first, renaming only when every tensor is
written, so an interrupted or failed write never leaves a partial file under the final name.
"""
from __future__ import annotations

import json
import logging
import os
import struct
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

import mindspore as ms
import numpy as np

logger = logging.getLogger(__name__)

# MindSpore's checkpoint writer splits tensors above 512 MiB into consecutive records with one tag
# (mindspore.train.serialization.SLICE_SIZE); we do the same so its own loader reads our files.
CKPT_SLICE_BYTES = 512 * 1024 * 1024

# name -> (numpy storage dtype, MindSpore checkpoint tensor_type, safetensors dtype). bfloat16 is carried
# as its raw uint16 bits, since numpy has no bfloat16.
STORAGE_DTYPES = {
    "fp32": (np.float32, "Float32", "F32"),
    "fp16": (np.float16, "Float16", "F16"),
    "bf16": (np.uint16, "BFloat16", "BF16"),
}
_CKPT_TYPES = {"Float32": np.float32, "Float16": np.float16, "Float64": np.float64, "Int32": np.int32,
               "Int64": np.int64, "Int8": np.int8, "UInt8": np.uint8, "Bool": np.bool_, "BFloat16": np.uint16}
_INT_TYPES = {"int64": ("Int64", "I64"), "int32": ("Int32", "I32"), "int8": ("Int8", "I8"),
              "uint8": ("UInt8", "U8"), "bool": ("Bool", "BOOL"), "float64": ("Float64", "F64")}


def storage(dtype: str) -> Tuple[np.dtype, str, str]:
    """(numpy storage dtype, ckpt tensor_type, safetensors code) for a dtype key (fp32/fp16/bf16) or the
    name of a non-float numpy dtype (int64, ...)."""
    if dtype in STORAGE_DTYPES:
        np_type, ckpt_type, st_code = STORAGE_DTYPES[dtype]
        return np.dtype(np_type), ckpt_type, st_code
    if dtype in _INT_TYPES:
        return np.dtype(dtype), _INT_TYPES[dtype][0], _INT_TYPES[dtype][1]
    raise ValueError(f"unsupported dtype {dtype!r}")


def dtype_key(array: np.ndarray, float_dtype: str) -> str:
    """The storage key of ``array`` once ``cast`` to ``float_dtype``."""
    return float_dtype if np.issubdtype(array.dtype, np.floating) else str(array.dtype)


class CheckpointError(ValueError):
    """A checkpoint that is unreadable or does not match the network it is loaded into."""


# ----------------------------------------------------------------------------------------------------------
# bfloat16 <-> float32 on raw bits
def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """Round to nearest even, as torch's ``.to(torch.bfloat16)``; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = np.uint16(0x7FC0)
    return rounded


def cast(array: np.ndarray, dtype: str) -> np.ndarray:
    """Float tensors to the output dtype (``fp32``/``fp16``/``bf16``); integer tensors unchanged."""
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {sorted(STORAGE_DTYPES)}, got {dtype!r}")
    if not np.issubdtype(array.dtype, np.floating):
        return array
    if dtype == "bf16":
        return f32_to_bf16_bits(array.astype(np.float32, copy=False))
    return array.astype(STORAGE_DTYPES[dtype][0], copy=False)


# ----------------------------------------------------------------------------------------------------------
# writers
class _AtomicFile:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")  # unique per process
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(self.tmp, "wb")

    def commit(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if not self.f.closed:
            self.f.close()
        if self.tmp.exists():
            self.tmp.unlink()


class CheckpointWriter:
    """Write tensors one at a time to ``path`` (``.ckpt`` or ``.safetensors``), atomically.

    For safetensors the header needs every name, shape and dtype up front: pass ``layout`` as
    ``{name: (shape, dtype_key)}`` in write order. Use as a context manager; an exception discards the file.
    """

    def __init__(self, path, layout: Optional[Dict[str, Tuple[tuple, str]]] = None):
        self.path = Path(path)
        self.format = "safetensors" if self.path.suffix == ".safetensors" else "ckpt"
        if self.format == "safetensors" and layout is None:
            raise ValueError("writing safetensors needs the layout (names, shapes, dtypes) up front")
        self.layout = layout
        self._file = None
        self._written = []

    def __enter__(self):
        self._file = _AtomicFile(self.path)
        if self.format == "safetensors":
            header, offset = {}, 0
            for name, (shape, dtype) in self.layout.items():
                np_type, _, st_code = storage(dtype)
                nbytes = int(np.prod(shape, dtype=np.int64)) * np_type.itemsize
                header[name] = {"dtype": st_code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
            header["__metadata__"] = {"format": "ms"}
            blob = json.dumps(header, separators=(",", ":")).encode()
            blob += b" " * (-len(blob) % 8)
            self._file.f.write(struct.pack("<Q", len(blob)) + blob)
        return self

    def write(self, name: str, array: np.ndarray, dtype: str) -> None:
        """``array`` already ``cast`` to ``dtype`` (a storage key: fp32/fp16/bf16 or e.g. int64)."""
        data = np.ascontiguousarray(array)
        if self.format == "safetensors":
            expected = self.layout.get(name) if self.layout else None
            if len(self._written) >= len(self.layout) or list(self.layout)[len(self._written)] != name:
                raise ValueError(f"safetensors writer: {name!r} written out of the declared order")
            if tuple(expected[0]) != tuple(data.shape):
                raise ValueError(f"safetensors writer: {name!r} has shape {data.shape}, declared {expected[0]}")
            self._file.f.write(data.tobytes())
        else:
            from mindspore.train.checkpoint_pb2 import Checkpoint
            np_type, tensor_type, _ = storage(dtype)
            if data.dtype != np_type:
                raise ValueError(f"checkpoint writer: {name!r} is {data.dtype}, expected {np_type} for {dtype}")
            raw = data.tobytes()
            for start in range(0, max(len(raw), 1), CKPT_SLICE_BYTES):
                record = Checkpoint()
                value = record.value.add()
                value.tag = name
                value.tensor.dims.extend(list(data.shape) if data.shape else [])
                value.tensor.tensor_type = tensor_type
                value.tensor.tensor_content = raw[start:start + CKPT_SLICE_BYTES]
                self._file.f.write(record.SerializeToString())
        self._written.append(name)

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self._file.abort()
            return False
        if self.format == "safetensors" and len(self._written) != len(self.layout):
            self._file.abort()
            raise ValueError(f"safetensors writer: {len(self._written)} of {len(self.layout)} tensors written")
        self._file.commit()
        return False


# ----------------------------------------------------------------------------------------------------------
# reader
def _varint(buf, pos: int) -> Tuple[int, int]:
    result, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise EOFError
        b = buf[pos]
        result |= (b & 0x7F) << shift
        pos += 1
        if not b & 0x80:
            return result, pos
        shift += 7


def _iter_records(path: Path) -> Iterator[Tuple[str, list, str, bytes]]:
    """Yield (tag, dims, tensor_type, content) per top-level record of a MindSpore ``.ckpt`` file."""
    from mindspore.train.checkpoint_pb2 import Checkpoint
    size = path.stat().st_size
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            head = f.read(11)
            if not head:
                break
            try:
                key, p = _varint(head, 0)
                length, p = _varint(head, p)
            except EOFError:
                raise CheckpointError(f"{path}: truncated checkpoint (incomplete record header at byte {pos})")
            if key != 0x0A:
                raise CheckpointError(f"{path}: not a MindSpore checkpoint (unexpected field key {key} at byte {pos})")
            if pos + p + length > size:
                raise CheckpointError(f"{path}: truncated checkpoint (record at byte {pos} needs {length} bytes, "
                                      f"file has {size - pos - p})")
            f.seek(pos + p)
            body = f.read(length)
            pos += p + length
            try:
                value = Checkpoint.Value.FromString(body)
            except Exception as e:
                raise CheckpointError(f"{path}: corrupt record at byte {pos}: {e}") from None
            yield value.tag, list(value.tensor.dims), value.tensor.tensor_type, value.tensor.tensor_content


class SafetensorsReader:
    """Keys, shapes, dtypes and one tensor at a time of a ``.safetensors`` file, through the safetensors NumPy
    API (no torch); bfloat16 tensors, which NumPy cannot hold, are read from the file's own offsets and widened
    to float32. Errors are ``error`` (CheckpointError here, SourceError for conversion sources)."""

    error = CheckpointError

    def __init__(self, path):
        from safetensors import safe_open
        self.path = Path(path)
        if not self.path.is_file():
            raise self.error(f"source not found: {self.path}")
        try:
            self._f = safe_open(str(self.path), framework="numpy")
            keys = list(self._f.keys())
        except Exception as e:  # SafetensorError: truncated or not a safetensors file
            raise self.error(f"{self.path}: not a readable safetensors file ({e})") from None
        self._keys = keys
        self._meta = {}
        for k in keys:
            sl = self._f.get_slice(k)
            self._meta[k] = (tuple(sl.get_shape()), sl.get_dtype())
        self._offsets = None

    def keys(self):
        return list(self._keys)

    def shape(self, key):
        return self._meta[key][0]

    def dtype(self, key):
        return self._meta[key][1]

    def get(self, key):
        shape, dtype = self._meta[key]
        if dtype == "BF16":
            return bf16_bits_to_f32(self._raw(key, np.uint16)).reshape(shape)
        try:
            return self._f.get_tensor(key)
        except Exception as e:
            raise self.error(f"{self.path}: cannot read tensor {key!r} ({e})") from None

    def _raw(self, key, np_type):
        if self._offsets is None:
            with open(self.path, "rb") as f:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
            self._offsets = {k: (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
                             for k, v in header.items() if k != "__metadata__"}
        start, end = self._offsets[key]
        return np.fromfile(self.path, dtype=np_type, count=(end - start) // np.dtype(np_type).itemsize,
                           offset=start)


def iter_checkpoint(path) -> Iterator[Tuple[str, np.ndarray]]:
    """Stream (name, array) pairs from a ``.ckpt`` or ``.safetensors`` file; bf16 arrives as float32."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        src = SafetensorsReader(path)
        for key in src.keys():
            yield key, src.get(key)
        return
    pending_tag, parts, dims, ttype = None, [], None, None
    for tag, d, t, content in _iter_records(path):
        if pending_tag is not None and tag != pending_tag:
            yield pending_tag, _decode(parts, dims, ttype, path, pending_tag)
            parts = []
        pending_tag, dims, ttype = tag, d, t
        parts.append(content)
    if pending_tag is not None:
        yield pending_tag, _decode(parts, dims, ttype, path, pending_tag)


def _decode(parts, dims, ttype, path, tag) -> np.ndarray:
    if ttype not in _CKPT_TYPES:
        raise CheckpointError(f"{path}: tensor {tag!r} has unsupported type {ttype!r}")
    arr = np.frombuffer(b"".join(parts), dtype=_CKPT_TYPES[ttype])
    shape = tuple(dims) if dims != [0] else ()
    if arr.size != int(np.prod(shape, dtype=np.int64)):
        raise CheckpointError(f"{path}: tensor {tag!r} holds {arr.size} values for shape {shape}")
    arr = arr.reshape(shape)
    return bf16_bits_to_f32(arr) if ttype == "BFloat16" else arr


def checkpoint_index(path) -> Dict[str, tuple]:
    """name -> shape of every tensor in a checkpoint (reads the file once, one tensor at a time)."""
    return {name: tuple(arr.shape) for name, arr in iter_checkpoint(path)}


# ----------------------------------------------------------------------------------------------------------
# strict load
def compare_names_and_shapes(expected: Dict[str, tuple], found: Dict[str, tuple], what: str) -> None:
    """Raise CheckpointError listing missing, unexpected and mismatched names (both shapes)."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(found) if tuple(expected[k]) != tuple(found[k]))
    if not (missing or unexpected or mismatched):
        return
    lines = [f"{what} does not match the network:"]

    def show(title, keys, fmt):
        if keys:
            lines.append(f"  {title} ({len(keys)}): " + ", ".join(fmt(k) for k in keys[:12])
                         + (" ..." if len(keys) > 12 else ""))
    show("missing", missing, lambda k: f"{k} {tuple(expected[k])}")
    show("unexpected", unexpected, lambda k: f"{k} {tuple(found[k])}")
    show("shape mismatch", mismatched, lambda k: f"{k}: file {tuple(found[k])} vs network {tuple(expected[k])}")
    raise CheckpointError("\n".join(lines))


def network_shapes(net) -> Dict[str, tuple]:
    return {name: tuple(p.shape) for name, p in net.parameters_and_names()}


def load_checkpoint(net, path, strict: bool = True, ignore: Optional[Callable[[str], bool]] = None,
                    may_miss: Optional[Callable[[str], bool]] = None) -> Dict[str, str]:
    """Load one checkpoint file, or several (a list: later files replace earlier ones' tensors, e.g. a base
    model and a trainable-weights file), into ``net``. Tensors whose name satisfies ``ignore`` are neither
    checked nor read (e.g. components this network does not build). With ``strict`` the union of the rest
    must hold every parameter except those satisfying ``may_miss`` (they keep their initialisation), nothing
    else; without it, absent and extra names are allowed. Shapes of the common names are always checked, and
    everything is checked before anything is copied. Returns {parameter name: file it came from}."""
    paths = [Path(p) for p in (path if isinstance(path, (list, tuple)) else [path])]
    if not paths:
        raise CheckpointError("no checkpoint file given")
    owner: Dict[str, Path] = {}
    found: Dict[str, tuple] = {}
    replaced = 0
    for p in paths:
        for name, shape in checkpoint_index(p).items():
            if ignore is not None and ignore(name):
                continue
            replaced += name in owner
            owner[name], found[name] = p, shape
    what = f"checkpoint {paths[0]}" if len(paths) == 1 else f"checkpoints {', '.join(map(str, paths))}"
    expected = network_shapes(net)
    if strict:
        absent_ok = {n for n in expected if n not in found and may_miss is not None and may_miss(n)}
        compare_names_and_shapes({n: s for n, s in expected.items() if n not in absent_ok}, found, what)
    else:
        common = set(expected) & set(found)
        compare_names_and_shapes({n: expected[n] for n in common}, {n: found[n] for n in common}, what)
    params = dict(net.parameters_and_names())
    if replaced:
        logger.info("%d tensors of earlier files replaced by later ones (%s)", replaced, what)
    for p in paths:
        for name, arr in iter_checkpoint(p):
            if owner.get(name) == p and name in params:
                prm = params[name]
                prm.set_data(ms.Tensor(arr.astype(np.float32) if arr.dtype == np.float64 else arr).astype(prm.dtype))
    return {n: str(p) for n, p in owner.items()}


def save_checkpoint(named_arrays: Iterable[Tuple[str, np.ndarray]], path, dtype: str = "fp32") -> None:
    """Write (name, array) pairs; float arrays are cast to ``dtype``."""
    items = [(n, np.asarray(a)) for n, a in named_arrays]
    layout = {n: (a.shape, dtype_key(a, dtype)) for n, a in items}
    with CheckpointWriter(path, layout) as w:
        for n, a in items:
            w.write(n, cast(a, dtype), layout[n][1])


def save_network(net, path, dtype: str = "fp32", names: Optional[Iterable[str]] = None) -> None:
    """Save a network's parameters (all, or ``names``) through the same atomic writer."""
    params = dict(net.parameters_and_names())
    keep = list(names) if names is not None else list(params)
    save_checkpoint(((n, params[n].asnumpy()) for n in keep), path, dtype)
