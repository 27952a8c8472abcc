"""Spatial and temporal transformers of the SVD UNet (sgm ``attention.py`` and ``video_attention.py``).

Names follow the original: ``norm``, ``proj_in``, ``transformer_blocks.i``, ``time_stack.i``,
``time_pos_embed.{0,2}``, ``time_mixer.mix_factor``, ``proj_out``; feed-forwards ``ff.net.0.proj`` (GEGLU)
and ``ff.net.2``.
"""
import mindspore as ms
from mindspore import mint, nn, ops

from exvideo_ms.backend import Choices
from exvideo_ms.nn import geglu
from exvideo_ms.nn.attention import CrossAttention
from exvideo_ms.nn.blend import AlphaBlender
from exvideo_ms.nn.embeddings import mlp, timestep_embedding
from exvideo_ms.nn.layers import Identity, Linear, gelu, map_rows
from exvideo_ms.nn.norm import UNET_TRANSFORMER_EPS, GroupNorm, LayerNorm

FF_MULT = 4  # sgm FeedForward(mult=4): GEGLU projects C -> 2·4C, output Linear 4C -> C
POS_MLP_MULT = 4  # sgm SpatialVideoTransformer: time_pos_embed hidden width = 4 · in_channels


class GEGLU(nn.Cell):
    """Linear(C, 2·inner) split into [value, gate]; value · GELU(gate) (exact GELU). On CPU in float32 the
    product is one fused kernel (exvideo_ms/nn/geglu.py); otherwise MindSpore's ops compute the same."""

    def __init__(self, dim: int, inner: int, impl: str):
        super().__init__()
        self.inner = inner
        self.proj = Linear(dim, 2 * inner)
        fused = geglu.fused_ops() if impl == "fused" else None
        self.fused = fused[0] if fused is not None else None

    def construct(self, x):
        h = self.proj(x)
        if self.fused is not None and h.dtype == ms.float32:
            return self.fused(h)
        value, gate = ops.split(h, self.inner, -1)
        return value * gelu(gate)


class FeedForward(nn.Cell):
    """GEGLU -> Linear. Its (rows, tokens, 8C) hidden layer is computed in exact slices of rows when it would
    exceed the backend's chunk budget."""

    def __init__(self, dim: int, dim_out: int = None, *, choices: Choices):
        super().__init__()
        inner = dim * FF_MULT
        self.inner = inner
        self.net = nn.SequentialCell([GEGLU(dim, inner, choices.geglu), Identity(), Linear(inner, dim_out or dim)])
        self.budget = choices.chunk_bytes

    def construct(self, x):
        row_bytes = 3 * self.inner * x.shape[1] * 4  # projection (2·inner) + product (inner), float32
        return map_rows(self.net, x, row_bytes, self.budget)


def _cross(attn: CrossAttention, norm: LayerNorm, x, context):
    """attn(norm(x), context), taking the exact one-token shortcut when the context is a single token."""
    if context.shape[1] == 1:
        return ops.broadcast_to(attn.single_token(context), x.shape)
    return attn(norm(x), context)


class BasicTransformerBlock(nn.Cell):
    """Spatial block over the h·w tokens of each frame: self-attention, cross-attention, GEGLU FF."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, *, choices: Choices):
        super().__init__()
        self.attn1 = CrossAttention(dim, heads, dim_head, kind="spatial", choices=choices)
        self.ff = FeedForward(dim, choices=choices)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim, kind="spatial", choices=choices)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def construct(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = _cross(self.attn2, self.norm2, x, context) + x
        return self.ff(self.norm3(x)) + x

    def attention_calls(self, frames: int, tokens: int, context_tokens: int):
        """The attention calls of one forward over ``frames`` frames of ``tokens`` tokens each."""
        calls = [self.attn1.call(frames, tokens, tokens)]
        if context_tokens > 1:
            calls.append(self.attn2.call(frames, tokens, context_tokens))
        return calls


class VideoTransformerBlock(nn.Cell):
    """Temporal block: every spatial location is a sequence of T frames (sgm ``VideoTransformerBlock`` with
    ``ff_in``): x += ff_in(norm_in(x)); x += attn1(norm1(x)); x += attn2(norm2(x), ctx); x += ff(norm3(x))."""

    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int, *, choices: Choices):
        super().__init__()
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim, choices=choices)
        self.attn1 = CrossAttention(dim, heads, dim_head, kind="temporal", choices=choices)
        self.ff = FeedForward(dim, choices=choices)
        self.norm2 = LayerNorm(dim)
        self.attn2 = CrossAttention(dim, heads, dim_head, context_dim, kind="temporal", choices=choices)
        self.norm1 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def construct(self, x, context, num_frames: int):
        """x (B·T, S, C) tokens; context (B, M, D), the first frame's context of each video."""
        bt, s, c = x.shape
        b = bt // num_frames
        # (b t) s c -> (b s) t c
        x = mint.permute(x.reshape(b, num_frames, s, c), (0, 2, 1, 3)).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        if context.shape[1] == 1:
            ctx_out = ops.broadcast_to(self.attn2.single_token(context), (b, s * num_frames, c))
            x = (x.reshape(b, s * num_frames, c) + ctx_out).reshape(b * s, num_frames, c)
        else:
            m, d = context.shape[1], context.shape[2]
            ctx = ops.broadcast_to(context.reshape(b, 1, m, d), (b, s, m, d)).reshape(b * s, m, d)
            x = self.attn2(self.norm2(x), ctx) + x
        x = self.ff(self.norm3(x)) + x
        # (b s) t c -> (b t) s c
        return mint.permute(x.reshape(b, s, num_frames, c), (0, 2, 1, 3)).reshape(bt, s, c)

    def attention_calls(self, videos: int, frames: int, tokens: int, context_tokens: int):
        """Every spatial position of every video is a sequence of ``frames``."""
        calls = [self.attn1.call(videos * tokens, frames, frames)]
        if context_tokens > 1:
            calls.append(self.attn2.call(videos * tokens, frames, context_tokens))
        return calls


class SpatialVideoTransformer(nn.Cell):
    """sgm ``SpatialVideoTransformer`` (use_linear, use_spatial_context, extra_ff_mix_layer).

    x (B·T, C, H, W) -> GroupNorm -> tokens -> proj_in; per depth: spatial block, then the temporal block on
    (spatial output + frame-position embedding), mixed α·spatial + (1−α)·temporal; proj_out; + x.

    ExVideo (``models/exvideo.py``) passes ``positional_embedding`` (a learned (N, C) table that replaces the
    sinusoid of the frame index) and ``positional_conv`` (a 3×3×3 conv on the temporal-branch input).
    """

    def __init__(self, channels: int, heads: int, dim_head: int, depth: int, context_dim: int,
                 merge_factor: float, positional_embedding=None, positional_conv=None, *, norm_groups: int,
                 choices: Choices):
        super().__init__()
        inner = heads * dim_head
        self.channels = channels
        self.depth = depth
        self.norm = GroupNorm(channels, UNET_TRANSFORMER_EPS, norm_groups, choices.group_norm)
        self.proj_in = Linear(channels, inner)
        self.transformer_blocks = nn.CellList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim, choices=choices) for _ in range(depth)])
        self.time_stack = nn.CellList(
            [VideoTransformerBlock(inner, heads, dim_head, context_dim, choices=choices) for _ in range(depth)])
        self.time_pos_embed = mlp(channels, channels * POS_MLP_MULT, channels)
        self.time_mixer = AlphaBlender(merge_factor, alpha_on="spatial")
        self.proj_out = Linear(inner, channels)
        self.has_table = positional_embedding is not None
        if self.has_table:
            self.positional_embedding = positional_embedding
        self.has_conv = positional_conv is not None
        if self.has_conv:
            self.positional_conv = positional_conv

    def frame_positions(self, num_frames: int):
        """time_pos_embed(position features of frames 0..T-1): (T, C)."""
        if self.has_table:
            features = self.positional_embedding(num_frames)
        else:
            features = timestep_embedding(ops.arange(0, num_frames, dtype=ms.float32), self.channels)
        return self.time_pos_embed(features)

    def construct(self, x, context, num_frames: int):
        """x (B·T, C, H, W); context (B·T, M, D), identical within a video."""
        bt, c, h, w = x.shape
        b = bt // num_frames
        x_in = x
        x = self.norm(x)
        x = mint.permute(x.reshape(bt, c, h * w), (0, 2, 1))
        x = self.proj_in(x)
        time_context = context.reshape(b, num_frames, context.shape[1], context.shape[2])[:, 0]
        pos = self.frame_positions(num_frames).astype(x.dtype)
        pos = ops.broadcast_to(pos.reshape(1, num_frames, 1, c), (b, num_frames, h * w, c)).reshape(bt, h * w, c)
        for i in range(self.depth):
            x = self.transformer_blocks[i](x, context)
            x_mix = x + pos
            if self.has_conv:
                x_mix = self.positional_conv(x_mix, num_frames, h, w)
            x_mix = self.time_stack[i](x_mix, time_context, num_frames)
            x = self.time_mixer(x, x_mix)
        x = self.proj_out(x)
        x = mint.permute(x, (0, 2, 1)).reshape(bt, c, h, w)
        return x + x_in

    def attention_calls(self, videos: int, frames: int, h: int, w: int, context_tokens: int = 1):
        """The attention calls of ``construct`` on (videos·frames, C, h, w), in the order it makes them."""
        calls = []
        for i in range(self.depth):
            calls += self.transformer_blocks[i].attention_calls(videos * frames, h * w, context_tokens)
            calls += self.time_stack[i].attention_calls(videos, frames, h * w, context_tokens)
        return calls
