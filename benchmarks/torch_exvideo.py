"""ExVideo's two additions on diffusers' ``UNetSpatioTemporalConditionModel``, in PyTorch, so that a benchmark
trains the same set of layers on both sides (issue 23): in every ``TransformerSpatioTemporalModel``

- ``time_proj`` (the sinusoid of the frame index) becomes a trainable (N, C) position table, still followed by
  ``time_pos_embed``;
- the temporal branch's input (spatial output + position embedding) goes through a 3×3×3 Conv3d with reflect
  padding, per video, before the temporal transformer block.

This is where ExVideo puts them (DiffSynth-Studio 1.1.9 ``svd_unet.py``, ``TemporalAttentionBlock``; ours:
``exvideo_ms/models/exvideo.py``). The table starts from diffusers' own sinusoid of 0..N−1 and the conv from the
identity: initial values do not change a step's cost, and the equality test with our VideoUNet
(tests/test_torch_exvideo.py) copies the same random values into both models.
"""
import math
from typing import List

import torch

CONV_KERNEL = 3  # ExVideo's positional_conv: 3×3×3, padding 1, reflect


class PositionTable(torch.nn.Module):
    """Trainable rows in place of a ``time_proj``: diffusers calls it with the frame index of every frame."""

    def __init__(self, time_proj: torch.nn.Module, num_positions: int):
        super().__init__()
        with torch.no_grad():
            self.embeddings = torch.nn.Parameter(time_proj(torch.arange(num_positions)).float())

    def forward(self, frame_ids: torch.Tensor) -> torch.Tensor:
        return self.embeddings[frame_ids]


class PositionalConvBlock(torch.nn.Module):
    """The Conv3d over each video's (C, T, h, w) tokens, then the temporal transformer block it wraps (called
    by diffusers as ``block(hidden_states, num_frames, encoder_hidden_states)``; square token grids only)."""

    def __init__(self, block: torch.nn.Module, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv3d(channels, channels, CONV_KERNEL, padding=CONV_KERNEL // 2, padding_mode="reflect")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 1, 1, 1] = torch.eye(channels)
            self.conv.bias.zero_()
        self.block = block

    def forward(self, hidden_states, num_frames, encoder_hidden_states=None):
        frames_total, tokens, channels = hidden_states.shape
        side = math.isqrt(tokens)
        if side * side != tokens:
            raise ValueError(f"PositionalConvBlock: {tokens} tokens per frame are not a square grid")
        v = hidden_states.reshape(frames_total // num_frames, num_frames, side, side, channels).permute(0, 4, 1, 2, 3)
        v = self.conv(v).permute(0, 2, 3, 4, 1).reshape(frames_total, tokens, channels)
        return self.block(v, num_frames, encoder_hidden_states)


def add_exvideo(unet: torch.nn.Module, num_positions: int) -> List[str]:
    """Give every TransformerSpatioTemporalModel of ``unet`` ExVideo's table and conv, in place. Returns the
    names of the patched modules (diffusers' paths, e.g. ``down_blocks.0.attentions.0``)."""
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    patched = []
    for name, module in unet.named_modules():
        if not isinstance(module, TransformerSpatioTemporalModel):
            continue
        if len(module.temporal_transformer_blocks) != 1:
            raise ValueError(f"{name}: {len(module.temporal_transformer_blocks)} temporal blocks; ExVideo patches "
                             "SVD's transformers, which have one")
        channels = module.time_pos_embed.linear_2.out_features
        module.time_proj = PositionTable(module.time_proj, num_positions)
        module.temporal_transformer_blocks[0] = PositionalConvBlock(module.temporal_transformer_blocks[0], channels)
        patched.append(name)
    return patched


# what each train.py mode trains (exvideo_ms/train/trainable.py), in diffusers' names on a patched UNet
TRAINABLE = {
    # the temporal transformers with ExVideo's table and conv, and their time_pos_embed
    "exvideo": ("temporal_transformer_blocks.", "time_pos_embed.", "time_proj.embeddings"),
    # every temporal layer: the above and the ResBlocks' temporal halves, and every time_mixer
    "temporal_only": ("temporal_transformer_blocks.", "time_pos_embed.", "time_proj.embeddings", "temporal_res_block.",
                      "time_mixer."),
}


def trainable_set(unet: torch.nn.Module, mode: str) -> List[torch.nn.Parameter]:
    """The parameters train.py's ``mode`` ("exvideo", "temporal_only" or "full") trains, on a patched UNet."""
    if mode == "full":
        return list(unet.parameters())
    if mode not in TRAINABLE:
        raise ValueError(f"trainable_set: mode must be full or one of {sorted(TRAINABLE)}, got {mode!r}")
    return [p for n, p in unet.named_parameters() if any(k in n for k in TRAINABLE[mode])]
