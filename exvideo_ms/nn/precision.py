"""Casting a network's weights to a low-precision dtype, the one way every caller does it: norm affine
parameters stay float32 (the norms compute in float32 whatever their input; bf16/fp16 would round their
scale and shift), every other weight takes the dtype, and each layer casts its input to its weight dtype."""
from mindspore import nn

from exvideo_ms.nn.norm import GroupNorm, LayerNorm


def norm_parameters(cell: nn.Cell) -> set:
    """ids of the GroupNorm / LayerNorm weights and biases inside ``cell``."""
    return {id(p) for _, c in cell.cells_and_names() if isinstance(c, (GroupNorm, LayerNorm))
            for p in c.get_parameters()}


def cast_weights(cell: nn.Cell, dtype, exclude=()) -> None:
    """Cast every parameter of ``cell`` but its norms' (and those in ``exclude``, by id) to ``dtype``."""
    keep = norm_parameters(cell) | set(exclude)
    for p in cell.get_parameters():
        if id(p) not in keep and p.dtype != dtype:
            p.set_dtype(dtype)
