"""Sinusoidal embeddings (sgm ``diffusionmodules.util.timestep_embedding``) and the MLPs that follow them."""
import math

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from exvideo_ms.nn.layers import Linear, SiLU

MAX_PERIOD = 10000  # sgm timestep_embedding(max_period=10000), used for every sinusoid in SVD


def sinusoid_frequencies(dim: int, max_period: int = MAX_PERIOD) -> np.ndarray:
    """f_i = exp(-ln(max_period)·i/half), i < dim // 2, in float64 rounded once to float32. Not ``ops.exp``:
    MindSpore 2.8's CPU exp is off by up to 4e-6 relative (measured), which at SVD's arguments (frame ids to
    127, motion bucket 127) moved sinusoids by 5e-5 from sgm's and DiffSynth's (tests/test_diffsynth_parity.py)."""
    half = dim // 2
    return np.exp(np.arange(half, dtype=np.float64) * (-math.log(max_period) / half)).astype(np.float32)


def timestep_embedding(t, dim: int, max_period: int = MAX_PERIOD):
    """[cos(t·f), sin(t·f)] with f_i = exp(-ln(max_period)·i/half), **cos first**; t (N,) -> (N, dim) float32."""
    freqs = Tensor(sinusoid_frequencies(dim, max_period))
    args = t.astype(ms.float32).reshape(-1, 1) * freqs.reshape(1, -1)
    emb = ops.cat([ops.cos(args), ops.sin(args)], -1)
    if dim % 2:
        emb = ops.cat([emb, ops.zeros_like(emb[:, :1])], -1)
    return emb


def mlp(cin: int, hidden: int, cout: int) -> nn.SequentialCell:
    """Linear -> SiLU -> Linear, indexed 0 and 2 as in sgm's ``nn.Sequential`` (time_embed, label_emb.0,
    time_pos_embed)."""
    return nn.SequentialCell([Linear(cin, hidden), SiLU(), Linear(hidden, cout)])
