"""Exponential moving averages of the trainable weights.

- in training: ``ema ← decay·ema + (1 − decay)·w`` after every applied step (``EMA`` cell);
- after training (``svd_tools/ema.py``), ExVideo's post-hoc EMA over saved checkpoints in step order:
  ``ema_0 = w_0``, ``ema_k = γ·ema_{k−1} + (1 − γ)·w_k`` (γ = 0.9), one averaged file per checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Tuple

import mindspore as ms
import numpy as np
from mindspore import nn, ops

POST_HOC_GAMMA = 0.9  # ExVideo_ema.py default


_ema = ops.MultitypeFuncGraph("ema")


@_ema.register("Number", "Tensor", "Tensor")
def _ema_update(decay, shadow, param):
    return ops.assign(shadow, shadow * decay + param * (1.0 - decay))


class EMA(nn.Cell):
    def __init__(self, params, decay: float):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.params = ms.ParameterTuple(params)
        self.shadow = self.params.clone(prefix="ema", init="same")
        self.decay = float(decay)
        self.hyper_map = ops.HyperMap()

    def construct(self):
        return self.hyper_map(ops.partial(_ema, self.decay), self.shadow, self.params)


def post_hoc(checkpoints: Iterable[Path], gamma: float = POST_HOC_GAMMA) -> Iterable[Tuple[Path, dict]]:
    """Yield (checkpoint, running EMA after it) in the given order; holds one EMA copy in memory."""
    from exvideo_ms.checkpoint import iter_checkpoint
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    ema = None
    for path in checkpoints:
        current = {k: v.astype(np.float64) for k, v in iter_checkpoint(path)}
        if ema is None:
            ema = current
        else:
            if set(current) != set(ema):
                raise ValueError(f"{path} holds other tensors than the earlier checkpoints "
                                 f"({len(set(current) ^ set(ema))} differ)")
            for k in ema:
                ema[k] = gamma * ema[k] + (1.0 - gamma) * current[k]
        yield path, {k: v.astype(np.float32) for k, v in ema.items()}
