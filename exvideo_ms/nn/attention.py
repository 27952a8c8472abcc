"""Multi-head attention through one function, and the attention modules of sgm / OpenCLIP.

``dot_product_attention`` is the only place that picks a kernel: on Ascend ``ops.flash_attention_score``
(BSH layout, no dense mask is ever built), elsewhere a batched-matmul softmax attention in float32.
"""
import math

import mindspore as ms
from mindspore import Parameter, mint, nn, ops
from mindspore.common.initializer import initializer

from exvideo_ms import backend
from exvideo_ms.nn.layers import Linear, row_spans


def plain_attention(q, k, v, heads: int, budget: int = None):
    """softmax(q kᵀ/√d) v; q (B, N, H·D), k and v (B, M, H·D) -> (B, N, H·D). Softmax in float32.
    With ``budget`` (bytes), batches whose float32 scores would exceed it are computed in exact slices."""
    spans = row_spans(q.shape[0], heads * q.shape[1] * k.shape[1] * 4, budget) if budget is not None else ((0, 0),)
    if len(spans) == 1:
        return _attention(q, k, v, heads)
    parts = []
    for start, end in spans:
        parts.append(_attention(q[start:end], k[start:end], v[start:end], heads))
    return ops.cat(parts, 0)


def _attention(q, k, v, heads: int):
    b, n, c = q.shape
    m = k.shape[1]
    d = c // heads
    scale = 1.0 / math.sqrt(d)
    dtype = q.dtype
    q = mint.permute(q.reshape(b, n, heads, d), (0, 2, 1, 3)).reshape(b * heads, n, d)
    k = mint.permute(k.reshape(b, m, heads, d), (0, 2, 3, 1)).reshape(b * heads, d, m)
    v = mint.permute(v.reshape(b, m, heads, d), (0, 2, 1, 3)).reshape(b * heads, m, d)
    scores = ops.bmm(q * scale, k)
    probs = ops.softmax(scores.astype(ms.float32), -1).astype(dtype)
    out = ops.bmm(probs, v).reshape(b, heads, n, d)
    return mint.permute(out, (0, 2, 1, 3)).reshape(b, n, c)


def flash_attention(q, k, v, heads: int):
    """Ascend FlashAttentionScore in BSH layout (fp16/bf16 inside, result in the input dtype)."""
    d = q.shape[-1] // heads
    dtype = q.dtype
    low = backend.low_precision_dtype("Ascend")
    out = ops.flash_attention_score(q.astype(low), k.astype(low), v.astype(low), heads,
                                    input_layout="BSH", scalar_value=1.0 / math.sqrt(d))
    return out.astype(dtype)


def dot_product_attention(q, k, v, heads: int, impl: str = "plain", budget: int = None):
    if impl == "flash":
        return flash_attention(q, k, v, heads)  # tiled by the kernel: no score matrix in memory
    return plain_attention(q, k, v, heads, budget)


class CrossAttention(nn.Cell):
    """sgm ``attention.CrossAttention`` / ``MemoryEfficientCrossAttention``: to_q, to_k, to_v without bias,
    ``to_out.0`` with bias; self-attention when no context is given.

    With a single context token (SVD's CLIP embedding) softmax weights are exactly 1, so the output is
    ``to_out(to_v(context))`` for every query: ``single_token`` computes just that.
    """

    def __init__(self, query_dim: int, heads: int, dim_head: int, context_dim=None):
        super().__init__()
        inner = heads * dim_head
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = Linear(query_dim, inner, has_bias=False)
        self.to_k = Linear(context_dim, inner, has_bias=False)
        self.to_v = Linear(context_dim, inner, has_bias=False)
        self.to_out = nn.SequentialCell([Linear(inner, query_dim)])
        self.impl = backend.attention_impl()
        self.budget = backend.chunk_bytes()

    def construct(self, x, context=None):
        ctx = x if context is None else context
        out = dot_product_attention(self.to_q(x), self.to_k(ctx), self.to_v(ctx), self.heads, self.impl,
                                    self.budget)
        return self.to_out(out)

    def single_token(self, context):
        """Output for a one-token context (B, 1, D) -> (B, 1, query_dim), independent of the queries."""
        return self.to_out(self.to_v(context))


class MultiheadAttention(nn.Cell):
    """torch.nn.MultiheadAttention as OpenCLIP uses it: stacked ``in_proj_weight`` (3C, C) / ``in_proj_bias``
    in q, k, v order, and ``out_proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.dim = dim
        self.in_proj_weight = Parameter(initializer("xavier_uniform", (3 * dim, dim), ms.float32),
                                        name="in_proj_weight")
        self.in_proj_bias = Parameter(initializer("zeros", (3 * dim,), ms.float32), name="in_proj_bias")
        self.out_proj = Linear(dim, dim)
        self.impl = backend.attention_impl()

    def construct(self, x):
        b, n, c = x.shape
        qkv = ops.matmul(x.reshape(b * n, c), self.in_proj_weight.astype(x.dtype).T)
        qkv = (qkv + self.in_proj_bias.astype(x.dtype)).reshape(b, n, 3 * c)
        q, k, v = ops.split(qkv, c, -1)
        return self.out_proj(dot_product_attention(q, k, v, self.heads, self.impl))
