"""Sinusoidal embeddings (sgm ``diffusionmodules.util.timestep_embedding``) and the MLPs that follow them."""
import math

import mindspore as ms
from mindspore import nn, ops

from exvideo_ms.nn.layers import Linear, SiLU

MAX_PERIOD = 10000  # sgm timestep_embedding(max_period=10000), used for every sinusoid in SVD


def timestep_embedding(t, dim: int, max_period: int = MAX_PERIOD):
    """[cos(t·f), sin(t·f)] with f_i = exp(-ln(max_period)·i/half), **cos first**; t (N,) -> (N, dim) float32."""
    half = dim // 2
    freqs = ops.exp(ops.arange(0, half, dtype=ms.float32) * (-math.log(max_period) / half))
    args = t.astype(ms.float32).reshape(-1, 1) * freqs.reshape(1, -1)
    emb = ops.cat([ops.cos(args), ops.sin(args)], -1)
    if dim % 2:
        emb = ops.cat([emb, ops.zeros_like(emb[:, :1])], -1)
    return emb


def mlp(cin: int, hidden: int, cout: int) -> nn.SequentialCell:
    """Linear -> SiLU -> Linear, indexed 0 and 2 as in sgm's ``nn.Sequential`` (time_embed, label_emb.0,
    time_pos_embed)."""
    return nn.SequentialCell([Linear(cin, hidden), SiLU(), Linear(hidden, cout)])
