"""The state of a training run — everything it needs to continue exactly: the trainable weights, AdamW's
moments and step count, the dynamic loss scale and its counter, the in-training EMA — as one object with
``state_dict`` / ``load_state_dict`` over NumPy arrays keyed by checkpoint name (``unet.<name>``).
``train/checkpoint.py`` writes and reads these dictionaries."""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from mindspore import Tensor

from exvideo_ms.checkpoint import CheckpointError


def _arrays(names: List[str], params) -> Dict[str, np.ndarray]:
    return {f"unet.{n}": p.asnumpy() for n, p in zip(names, params)}


def check_arrays(expected: Dict[str, tuple], arrays: Dict[str, np.ndarray], what: str) -> None:
    """``arrays`` hold exactly the ``expected`` names with their shapes, or CheckpointError naming the difference."""
    if set(arrays) != set(expected):
        differ = sorted(set(arrays) ^ set(expected))
        raise CheckpointError(f"the checkpoint's {what} tensors differ from this run's ({len(differ)} names, e.g. "
                              f"{differ[:3]})")
    for name, shape in expected.items():
        if tuple(shape) == () and arrays[name].size == 1:  # a scalar; .ckpt files store it with shape (1,)
            continue
        if tuple(arrays[name].shape) != tuple(shape):
            raise CheckpointError(f"{what} {name}: checkpoint {tuple(arrays[name].shape)}, run {tuple(shape)}")


def _set(names: List[str], params, arrays: Dict[str, np.ndarray]) -> None:
    for n, p in zip(names, params):
        p.set_data(Tensor(arrays[f"unet.{n}"]))


class TrainingState:
    def __init__(self, names: List[str], params, optimizer, step_cell, ema=None):
        self.names, self.params, self.optimizer, self.step_cell, self.ema = names, list(params), optimizer, step_cell, ema

    def state_dict(self) -> Dict[str, Optional[Dict[str, np.ndarray]]]:
        """{"trainable": ..., "optimizer": ..., "ema": ... or None}"""
        return {"trainable": _arrays(self.names, self.params),
                "optimizer": {**self.optimizer.state_dict(self.names), **self.step_cell.state_dict()},
                "ema": _arrays(self.names, self.ema.shadow) if self.ema is not None else None}

    def load_state_dict(self, state: Dict[str, Optional[Dict[str, np.ndarray]]]) -> None:
        """Set every tensor of the run from ``state``; names and shapes are all checked before anything is set."""
        shapes = {f"unet.{n}": tuple(p.shape) for n, p in zip(self.names, self.params)}
        check_arrays(shapes, state["trainable"], "trainable")
        check_arrays({**self.optimizer.state_shapes(self.names), **self.step_cell.state_shapes()}, state["optimizer"],
                     "optimizer")
        ema = (state["ema"] or state["trainable"]) if self.ema is not None else None  # no EMA saved: start at the weights
        if ema is not None:
            check_arrays(shapes, ema, "EMA")
        _set(self.names, self.params, state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"], self.names)
        self.step_cell.load_state_dict(state["optimizer"])
        if ema is not None:
            _set(self.names, self.ema.shadow, ema)
