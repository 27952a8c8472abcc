"""The documented contracts of the NPU-specific MindSpore calls this package makes, and their CPU doubles.

Each limit is quoted from the installed MindSpore 2.8.0 wheel (``tests/test_ascend_contracts.py`` reads the
docstrings back and checks the numbers below against them). ``nn/attention.py`` plans every call within
these limits; the doubles let the tests prove it on a machine without an NPU:

- ``flash_attention_score_double`` stands in for ``ops.flash_attention_score`` when a network is built with
  an NPU's choices on another device (``backend.use`` / ``backend.emulate``): it asserts the documented
  preconditions, records the call, and computes the same attention in float32 from the inputs it was given.
- ``check_conv3d`` asserts the Ascend contract of every 3-D convolution (float16 only) in emulated networks.

The doubles run in PyNative mode (they record through Python), which is how the tests run them.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import List, Optional

import mindspore as ms
from mindspore import mint, ops

# ops.flash_attention_score (mindspore/ops/operations/manually_defined/ops_def.py l.1769-1789, MindSpore 2.8.0)
FLASH_MAX_BATCH = 2048  # "B: Batch size. Value range 1 to 2k."
FLASH_MAX_SEQ = 512 * 1024  # "S1: Sequence length of `query`. Value range 1 to 512k." (S2 likewise)
FLASH_MAX_HEADS = 256  # "N1: Num heads of `query`. Value range 1 to 256."
FLASH_HEAD_SIZE_MULTIPLE = 16  # "D: Head size. The value ranges is a multiple of 16, with the max value of 512."
FLASH_MAX_HEAD_SIZE = 512
FLASH_DTYPES = ("fp16", "bf16")  # "The supported dtype is float16 and bfloat16."
FLASH_LAYOUT = "BSH"  # the layout we call it with: query (B, S1, N1·D), key and value (B, S2, N1·D)
# nn.Conv3d (mindspore/nn/layer/conv.py l.717): "only float16 in Ascend"
ASCEND_CONV3D_DTYPES = ("fp16",)

_NAMES = {ms.float16: "fp16", ms.bfloat16: "bf16", ms.float32: "fp32"}


class ContractError(AssertionError):
    """A call that breaks the documented contract of the kernel it would reach on an NPU."""


def dtype_name(dtype) -> str:
    return _NAMES.get(dtype, str(dtype))


def flash_head_size_ok(head_size: int) -> bool:
    return head_size % FLASH_HEAD_SIZE_MULTIPLE == 0 and 0 < head_size <= FLASH_MAX_HEAD_SIZE


def flash_violations(batch: int, seq_q: int, seq_kv: int, heads: int, head_size: int, dtype: str,
                     layout: str = FLASH_LAYOUT) -> List[str]:
    """Every documented precondition of ``ops.flash_attention_score`` that a call of these sizes breaks."""
    broken = []
    if not 1 <= batch <= FLASH_MAX_BATCH:
        broken.append(f"B = {batch} outside 1..{FLASH_MAX_BATCH}")
    for name, s in (("S1", seq_q), ("S2", seq_kv)):
        if not 1 <= s <= FLASH_MAX_SEQ:
            broken.append(f"{name} = {s} outside 1..{FLASH_MAX_SEQ}")
    if not 1 <= heads <= FLASH_MAX_HEADS:
        broken.append(f"N1 = {heads} outside 1..{FLASH_MAX_HEADS}")
    if not flash_head_size_ok(head_size):
        broken.append(f"D = {head_size} is not a multiple of {FLASH_HEAD_SIZE_MULTIPLE} up to {FLASH_MAX_HEAD_SIZE}")
    if dtype not in FLASH_DTYPES:
        broken.append(f"dtype {dtype} is not one of {FLASH_DTYPES}")
    if layout != FLASH_LAYOUT:
        broken.append(f"layout {layout} is not {FLASH_LAYOUT}")
    return broken


@dataclass(frozen=True)
class KernelCall:
    """One call of an NPU kernel, as a double saw it or as ``nn.attention.plan`` predicts it."""

    op: str  # "flash_attention_score" | "conv3d"
    kind: str  # attention kind (backend.ATTENTION_KINDS), "" for convolutions
    batch: int
    seq_q: int
    seq_kv: int
    heads: int
    head_size: int
    dtype: str


_RECORDS: Optional[List[KernelCall]] = None


@contextlib.contextmanager
def record():
    """Collect the ``KernelCall``s the doubles see while the block runs: ``with contracts.record() as calls:``."""
    global _RECORDS
    previous, _RECORDS = _RECORDS, []
    try:
        yield _RECORDS
    finally:
        _RECORDS = previous


def _note(call: KernelCall) -> None:
    if _RECORDS is not None:
        _RECORDS.append(call)


def flash_attention_score_double(query, key, value, head_num: int, scalar_value: float, input_layout: str,
                                 kind: str):
    """``ops.flash_attention_score(query, key, value, head_num, input_layout=..., scalar_value=...)`` on any
    device: preconditions asserted, call recorded, attention computed in float32, result in the input dtype."""
    if query.ndim != 3 or key.ndim != 3 or value.ndim != 3:
        raise ContractError(f"BSH layout takes 3-D query/key/value, got {query.shape}, {key.shape}, {value.shape}")
    b, s1, h1 = query.shape
    s2 = key.shape[1]
    if key.shape != value.shape or key.shape[0] != b or h1 % head_num or key.shape[2] != h1:
        raise ContractError(f"shapes do not fit BSH with N1 = N2 = {head_num}: query {query.shape}, key {key.shape}, "
                            f"value {value.shape}")
    d = h1 // head_num
    dtype = dtype_name(query.dtype)
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise ContractError(f"key/value dtype {key.dtype}/{value.dtype} differ from query's {query.dtype}")
    broken = flash_violations(b, s1, s2, head_num, d, dtype, input_layout)
    if broken:
        raise ContractError(f"flash_attention_score({kind}) breaks its documented contract: {'; '.join(broken)}")
    _note(KernelCall("flash_attention_score", kind, b, s1, s2, head_num, d, dtype))
    q = mint.permute(query.astype(ms.float32).reshape(b, s1, head_num, d), (0, 2, 1, 3))
    k = mint.permute(key.astype(ms.float32).reshape(b, s2, head_num, d), (0, 2, 3, 1))
    v = mint.permute(value.astype(ms.float32).reshape(b, s2, head_num, d), (0, 2, 1, 3))
    probs = ops.softmax(ops.matmul(q, k) * scalar_value, -1)
    out = mint.permute(ops.matmul(probs, v), (0, 2, 1, 3)).reshape(b, s1, h1)
    return out.astype(query.dtype)


def check_conv3d(x, weight) -> None:
    """The Ascend contract of a 3-D convolution (input and weight float16, NCDHW), asserted and recorded."""
    dtypes = (dtype_name(x.dtype), dtype_name(weight.dtype))
    if any(d not in ASCEND_CONV3D_DTYPES for d in dtypes) or x.ndim != 5:
        raise ContractError(f"Conv3d on Ascend takes 5-D float16 input and weight, got input {x.shape} "
                            f"{dtypes[0]} and weight {dtypes[1]}")
    _note(KernelCall("conv3d", "", x.shape[0], x.shape[2], x.shape[2], 1, x.shape[1], dtypes[0]))


def flash_scale(head_size: int) -> float:
    return 1.0 / math.sqrt(head_size)
