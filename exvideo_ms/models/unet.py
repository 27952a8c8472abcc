"""The spatio-temporal UNet of SVD (generative-models ``sgm/modules/diffusionmodules/video_model.py``,
``VideoUNet``), with the original parameter names (``input_blocks.4.1.time_stack.0.attn1.to_q`` ...).

Inputs follow the original: x (B·T, C_in, h, w) = [c_in·noisy latent ‖ conditioning latent],
timesteps (B·T,) = c_noise, context (B·T, 1, D) CLIP image embedding, y (B·T, adm_in_channels) added-time
vector, num_video_frames T. The frame count is a call argument, not part of the network.
"""
from typing import Optional

from mindspore import nn, ops

from exvideo_ms.backend import Choices
from exvideo_ms.config import ExVideoConfig, UNetConfig
from exvideo_ms.nn.embeddings import mlp, timestep_embedding
from exvideo_ms.nn.layers import SiLU, Upsample, conv2d
from exvideo_ms.nn.norm import UNET_RESBLOCK_EPS, GroupNorm
from exvideo_ms.nn.resblock import VideoResBlock
from exvideo_ms.nn.transformer import SpatialVideoTransformer

TIME_EMBED_MULT = 4  # sgm VideoUNet: time_embed_dim = model_channels * 4


class Downsample(nn.Cell):
    """Conv 3×3, stride 2, padding 1 (``op``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.op = conv2d(channels, channels, 3, stride=2, padding=1)

    def construct(self, x):
        return self.op(x)


class TimestepEmbedSequential(nn.SequentialCell):
    """One ``input_blocks.i`` / ``output_blocks.i`` / ``middle_block``: layers indexed as in the checkpoint,
    each called with the arguments its kind needs."""

    def __init__(self, layers):
        super().__init__(layers)
        kinds = []
        for layer in layers:
            if isinstance(layer, VideoResBlock):
                kinds.append("res")
            elif isinstance(layer, SpatialVideoTransformer):
                kinds.append("attn")
            else:
                kinds.append("plain")
        self.kinds = tuple(kinds)

    def construct(self, x, emb, context, num_frames: int):
        for i, layer in enumerate(self.cell_list):
            kind = self.kinds[i]
            if kind == "res":
                x = layer(x, emb, num_frames)
            elif kind == "attn":
                x = layer(x, context, num_frames)
            else:
                x = layer(x)
        return x


class VideoUNet(nn.Cell):
    """``choices``: the backend choices the network is built for (attention kernels, GroupNorm and Conv3d
    precision; backend.py)."""

    def __init__(self, cfg: UNetConfig, exvideo: Optional[ExVideoConfig] = None, *, choices: Choices):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        mc = cfg.model_channels
        ted = mc * TIME_EMBED_MULT
        self.model_channels = mc
        self.time_embed = mlp(mc, ted, ted)
        self.label_emb = nn.CellList([mlp(cfg.adm_in_channels, ted, ted)])
        groups = cfg.norm_groups

        def res(cin, cout):
            return VideoResBlock(cin, ted, cout, cfg.video_kernel_size, cfg.merge_factor, norm_groups=groups,
                                 choices=choices)

        def attn(ch, level):
            heads = cfg.heads_at(level)
            ext = {}
            if exvideo is not None:
                from exvideo_ms.models.exvideo import extension_layers
                ext = extension_layers(exvideo, ch, choices)
            return SpatialVideoTransformer(ch, heads, ch // heads, cfg.transformer_depth, cfg.context_dim,
                                           cfg.merge_factor, **ext, norm_groups=groups, choices=choices)

        blocks = [TimestepEmbedSequential([conv2d(cfg.in_channels, mc, 3, padding=1)])]
        chans = [mc]
        ch = mc
        ds = 1
        levels = len(cfg.channel_mult)
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch, level))
                blocks.append(TimestepEmbedSequential(layers))
                chans.append(ch)
            if level != levels - 1:
                blocks.append(TimestepEmbedSequential([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
        self.input_blocks = nn.CellList(blocks)
        self.middle_block = TimestepEmbedSequential([res(ch, ch), attn(ch, levels - 1), res(ch, ch)])
        blocks = []
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + chans.pop(), mc * mult)]
                ch = mc * mult
                if ds in cfg.attention_resolutions:
                    layers.append(attn(ch, level))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                blocks.append(TimestepEmbedSequential(layers))
        self.output_blocks = nn.CellList(blocks)
        self.out = nn.SequentialCell([GroupNorm(ch, UNET_RESBLOCK_EPS, groups, choices.group_norm), SiLU(),
                                      conv2d(mc, cfg.out_channels, 3, padding=1)])
        self.num_input_blocks = len(self.input_blocks)
        # ExVideo's learned position table has num_positions rows: the model's maximum frame count
        self.max_frames = exvideo.num_positions if exvideo is not None else None

    def construct(self, x, timesteps, context, y, num_video_frames: int):
        """x (B·T, C_in, h, w), timesteps (B·T,), context (B·T, M, D), y (B·T, adm) -> (B·T, C_out, h, w)."""
        if self.max_frames is not None and num_video_frames > self.max_frames:
            raise ValueError(f"{num_video_frames} frames requested; this ExVideo model's position table has "
                             f"{self.max_frames} rows, its maximum frame count")
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels)) + self.label_emb[0](y)
        h = x
        hs = []
        for block in self.input_blocks:
            h = block(h, emb, context, num_video_frames)
            hs.append(h)
        h = self.middle_block(h, emb, context, num_video_frames)
        for i, block in enumerate(self.output_blocks):
            h = ops.cat([h, hs[self.num_input_blocks - 1 - i]], 1)
            h = block(h, emb, context, num_video_frames)
        return self.out(h).astype(x.dtype)  # each layer casts its input to its own weight dtype

    def attention_calls(self, videos: int, frames: int, h: int, w: int, context_tokens: int = 1):
        """The attention calls of one forward on (videos·frames, C, h, w) latents, in order: the transformers
        found by walking the blocks as ``construct`` does, each at the spatial size its level has."""
        calls = []
        size = (h, w)
        blocks = list(self.input_blocks) + [self.middle_block] + list(self.output_blocks)
        skips = []
        for i, block in enumerate(blocks):
            if i > self.num_input_blocks:  # output blocks take the size of the skip they concatenate
                size = skips.pop()
            for layer in block.cell_list:
                if isinstance(layer, SpatialVideoTransformer):
                    calls += layer.attention_calls(videos, frames, size[0], size[1], context_tokens)
                elif isinstance(layer, Downsample):
                    size = tuple((s + 1) // 2 for s in size)  # conv 3x3, stride 2, padding 1
                elif isinstance(layer, Upsample):
                    size = tuple(2 * s for s in size)
            if i < self.num_input_blocks:
                skips.append(size)
        return calls
