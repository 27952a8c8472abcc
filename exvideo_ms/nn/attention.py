"""Multi-head attention through one function, and the attention modules of sgm / OpenCLIP / the VAE.

``dot_product_attention`` is the only place that runs an attention kernel. Each module is built for one
attention kind (``backend.ATTENTION_KINDS``: spatial, temporal, vae, image, text) and gets from ``backend.Choices``
its kernel, ``"flash"`` (Ascend ``ops.flash_attention_score``, BSH layout, no score matrix in memory) or
``"plain"`` (batched matmul, softmax in float32), and the memory budget. ``plan`` splits every call along its
batch axis so that each piece stays within the budget and, for flash, within the kernel's documented limits
(batch ≤ 2048: temporal attention at 576×1024 has 18,432 sequences with batched CFG). A head size the flash
kernel does not take (not a multiple of 16, or above 512) makes that module plain, logged when it is built.

Flash inputs keep a low-precision model's dtype (float16 stays float16 on a bf16 chip); float32 inputs are
cast to float16, whose 11-bit significand keeps more of them than bfloat16's 8, and the result is cast back.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Tuple

import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import initializer

from exvideo_ms import contracts
from exvideo_ms.backend import Choices
from exvideo_ms.nn.layers import Linear, row_spans

logger = logging.getLogger(__name__)

FLOAT32_BYTES = 4
LOW_PRECISION_BYTES = 2
# FlashAttentionScore also returns softmax_max and softmax_sum, each (B, N1, S1, 8) float32
# (mindspore/ops/auto_generate/gen_ops_prim.py l.11255)
FLASH_STATS_PER_QUERY = 2 * 8


@dataclass(frozen=True)
class Kernel:
    """How one attention module computes: its kind, kernel, memory budget, and whether the NPU-only kernel is
    the contract double (networks built with another chip's choices)."""

    kind: str
    impl: str
    budget: int
    emulated: bool = False

    @classmethod
    def choose(cls, choices: Choices, kind: str, heads: int, head_size: int) -> "Kernel":
        impl = choices.attention_impl(kind)
        if impl == "flash" and (not contracts.flash_head_size_ok(head_size) or heads > contracts.FLASH_MAX_HEADS):
            logger.info("%s attention with %d heads of size %d: plain kernel (flash_attention_score takes head sizes "
                        "that are multiples of %d up to %d and at most %d heads)", kind, heads, head_size,
                        contracts.FLASH_HEAD_SIZE_MULTIPLE, contracts.FLASH_MAX_HEAD_SIZE, contracts.FLASH_MAX_HEADS)
            impl = "plain"
        return cls(kind, impl, choices.chunk_bytes, choices.emulated)


@dataclass(frozen=True)
class AttentionCall:
    """One call of ``dot_product_attention`` by a module built with ``kernel``: q (batch, seq_q, heads·head_size),
    k and v (batch, seq_kv, heads·head_size)."""

    kernel: Kernel
    batch: int
    seq_q: int
    seq_kv: int
    heads: int
    head_size: int


def flash_dtype(dtype):
    """The dtype the flash kernel is given for inputs of ``dtype`` (see the module docstring)."""
    return dtype if dtype in (ms.float16, ms.bfloat16) else ms.float16


def row_bytes(impl: str, seq_q: int, seq_kv: int, heads: int, head_size: int) -> int:
    """Temporary bytes per batch row: plain, the float32 score matrix; flash, its 16-bit q, k, v and output and
    its float32 softmax statistics (no score matrix)."""
    if impl == "flash":
        return (LOW_PRECISION_BYTES * heads * head_size * 2 * (seq_q + seq_kv)
                + FLOAT32_BYTES * FLASH_STATS_PER_QUERY * heads * seq_q)
    return FLOAT32_BYTES * heads * seq_q * seq_kv


def spans(kernel: Kernel, batch: int, seq_q: int, seq_kv: int, heads: int, head_size: int) -> Tuple[Tuple[int, int], ...]:
    """The batch slices [start, end) a call is computed in."""
    limit = contracts.FLASH_MAX_BATCH if kernel.impl == "flash" else None
    return row_spans(batch, row_bytes(kernel.impl, seq_q, seq_kv, heads, head_size), kernel.budget, limit)


def plan(call: AttentionCall, dtype=ms.float32) -> List[contracts.KernelCall]:
    """The NPU kernel calls ``call`` makes with q, k, v of ``dtype`` (none on the plain path)."""
    kernel = call.kernel
    if kernel.impl != "flash":
        return []
    name = contracts.dtype_name(flash_dtype(dtype))
    return [contracts.KernelCall("flash_attention_score", kernel.kind, end - start, call.seq_q, call.seq_kv,
                                 call.heads, call.head_size, name)
            for start, end in spans(kernel, call.batch, call.seq_q, call.seq_kv, call.heads, call.head_size)]


def _plain(q, k, v, heads: int, causal: bool = False):
    """softmax(q kᵀ/√d) v; q (B, N, H·D), k and v (B, M, H·D) -> (B, N, H·D). Softmax in float32. ``causal``:
    query i sees keys 0..i only (N = M)."""
    b, n, c = q.shape
    m = k.shape[1]
    d = c // heads
    scale = 1.0 / math.sqrt(d)
    dtype = q.dtype
    q = mint.permute(q.reshape(b, n, heads, d), (0, 2, 1, 3)).reshape(b * heads, n, d)
    k = mint.permute(k.reshape(b, m, heads, d), (0, 2, 3, 1)).reshape(b * heads, d, m)
    v = mint.permute(v.reshape(b, m, heads, d), (0, 2, 1, 3)).reshape(b * heads, m, d)
    scores = ops.bmm(q * scale, k).astype(ms.float32)
    if causal:
        scores = scores + ops.triu(ops.full((n, m), float("-inf"), dtype=ms.float32), 1)
    probs = ops.softmax(scores, -1).astype(dtype)
    out = ops.bmm(probs, v).reshape(b, heads, n, d)
    return mint.permute(out, (0, 2, 1, 3)).reshape(b, n, c)


def _flash(q, k, v, heads: int, kind: str, emulated: bool):
    d = q.shape[-1] // heads
    dtype = q.dtype
    low = flash_dtype(dtype)
    q, k, v = q.astype(low), k.astype(low), v.astype(low)
    if emulated:
        out = contracts.flash_attention_score_double(q, k, v, heads, 1.0 / math.sqrt(d), contracts.FLASH_LAYOUT,
                                                     kind)
    else:
        out = ops.flash_attention_score(q, k, v, heads, input_layout=contracts.FLASH_LAYOUT,
                                        scalar_value=1.0 / math.sqrt(d))
    return out.astype(dtype)


def dot_product_attention(q, k, v, heads: int, kernel: Kernel, causal: bool = False):
    """Attention of q (B, N, H·D) over k, v (B, M, H·D), computed in the slices ``spans`` gives; ``causal``
    (plain kernels only): query i attends to keys 0..i."""
    b, n, c = q.shape
    if causal and kernel.impl != "plain":
        raise ValueError(f"causal attention runs on the plain kernel only, got {kernel.impl} for {kernel.kind}")
    parts = spans(kernel, b, n, k.shape[1], heads, c // heads)
    fn = _flash if kernel.impl == "flash" else None
    outs = []
    for start, end in parts:
        qs, ks, vs = (q, k, v) if len(parts) == 1 else (q[start:end], k[start:end], v[start:end])
        if fn is None:
            outs.append(_plain(qs, ks, vs, heads, causal))
        else:
            outs.append(_flash(qs, ks, vs, heads, kernel.kind, kernel.emulated))
    return outs[0] if len(outs) == 1 else ops.cat(outs, 0)


class CrossAttention(nn.Cell):
    """sgm ``attention.CrossAttention`` / ``MemoryEfficientCrossAttention``: to_q, to_k, to_v without bias,
    ``to_out.0`` with bias; self-attention when no context is given.

    With a single context token (SVD's CLIP embedding) softmax weights are exactly 1, so the output is
    ``to_out(to_v(context))`` for every query: ``single_token`` computes just that.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim=None, *, kind: str,
                 choices: Choices):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.dim_head = dim_head
        self.to_q = Linear(query_dim, inner, has_bias=False)
        self.to_k = Linear(context_dim, inner, has_bias=False)
        self.to_v = Linear(context_dim, inner, has_bias=False)
        self.to_out = nn.SequentialCell([Linear(inner, query_dim)])
        self.kernel = Kernel.choose(choices, kind, heads, dim_head)

    def construct(self, x, context=None):
        ctx = x if context is None else context
        out = dot_product_attention(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads, self.kernel)
        return self.to_out(out)

    def single_token(self, context):
        """Output for a one-token context (B, 1, D) -> (B, 1, query_dim), independent of the queries."""
        return self.to_out(self.to_v(context))

    def call(self, batch: int, seq_q: int, seq_kv: int) -> AttentionCall:
        return AttentionCall(self.kernel, batch, seq_q, seq_kv, self.heads, self.dim_head)


class MultiheadAttention(nn.Cell):
    """torch.nn.MultiheadAttention as OpenCLIP uses it: stacked ``in_proj_weight`` (3C, C) / ``in_proj_bias``
    in q, k, v order, and ``out_proj``. ``kind`` "text": causal, as OpenCLIP's text tower's attention mask."""

    def __init__(self, dim: int, heads: int, *, choices: Choices, kind: str = "image"):
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.in_proj_weight = Parameter(initializer("xavier_uniform", (3 * dim, dim), ms.float32),
                                        name="in_proj_weight")
        self.in_proj_bias = Parameter(initializer("zeros", (3 * dim,), ms.float32), name="in_proj_bias")
        self.out_proj = Linear(dim, dim)
        self.kernel = Kernel.choose(choices, kind, heads, dim // heads)
        self.causal = kind == "text"

    def construct(self, x):
        b, n, c = x.shape
        qkv = ops.matmul(x.reshape(b * n, c), self.in_proj_weight.astype(x.dtype).T)
        qkv = (qkv + self.in_proj_bias.astype(x.dtype)).reshape(b, n, 3 * c)
        q, k, v = ops.split(qkv, c, -1)
        return self.out_proj(dot_product_attention(q, k, v, self.heads, self.kernel, self.causal))

    def call(self, batch: int, tokens: int) -> AttentionCall:
        return AttentionCall(self.kernel, batch, tokens, tokens, self.heads, self.dim // self.heads)
