"""What trains, in which precision, and what is recomputed.

| mode            | trainable UNet parameters                                                           |
|-----------------|-------------------------------------------------------------------------------------|
| ``exvideo``     | the 16 temporal attention blocks: ``time_stack.*``, ``time_pos_embed.*`` and ExVideo's   |
|                 | ``positional_embedding``/``positional_conv`` of every SpatialVideoTransformer (528 tensors in SVD-XT) |
| ``temporal_only`` | every temporal layer: ``time_stack`` (ResBlocks and transformers), ``time_mixer``,   |
|                 | ``time_pos_embed`` (and ExVideo's additions when present)                          |
| ``full``        | the whole UNet                                                                      |
| ``lora``        | the LoRA branches (``*.lora_A.weight``, ``*.lora_B.weight``) that ``lora.add_lora`` gave  |
|                 | the targeted Linear layers; every original weight frozen                            |

Trainable parameters and optimizer state stay float32; frozen UNet weights can be cast to fp16 or bf16
(backend.Choices.frozen_dtype), norm affine parameters excepted: every layer casts its input to its own
weight dtype.
"""
import logging
import re
from collections import OrderedDict
from typing import Dict, List

import mindspore as ms

from exvideo_ms.models.exvideo import is_extension_parameter
from exvideo_ms.nn.precision import cast_weights

logger = logging.getLogger(__name__)

MODES = ("exvideo", "temporal_only", "full", "lora")
_EXVIDEO = re.compile(r"\.(time_stack\.\d+|time_pos_embed)\.")  # a temporal transformer's own layers ...
_TEMPORAL = re.compile(r"\.(time_stack|time_mixer|time_pos_embed)\.")  # every temporal layer ...
_TRANSFORMER_TEMPORAL = re.compile(r"^(input_blocks\.\d+|middle_block|output_blocks\.\d+)\.1\.")


def trainable_names(unet, mode: str, has_extension: bool) -> List[str]:
    """Names (relative to the UNet) of the parameters ``mode`` trains."""
    if mode not in MODES:
        raise ValueError(f"training mode must be one of {MODES}, got {mode!r}")
    if mode == "exvideo" and not has_extension:
        raise ValueError("mode 'exvideo' needs a model config with an exvideo section (configs/exvideo_svd_128f.yaml)")
    names = []
    for name, _ in unet.parameters_and_names():
        dotted = "." + name + "."
        if mode == "full":
            names.append(name)
        elif mode == "temporal_only" and (_TEMPORAL.search(dotted) or is_extension_parameter(name)):
            names.append(name)  # ... and ExVideo's additions
        elif mode == "lora" and re.search(r"\.lora_[AB]\.weight$", name):
            names.append(name)  # the branches lora.add_lora gave the targeted layers
        elif mode == "exvideo" and _TRANSFORMER_TEMPORAL.match(name) and (_EXVIDEO.search(dotted)
                                                                            or is_extension_parameter(name)):
            names.append(name)
    return names


def configure(unet, names: List[str], frozen_dtype) -> List[ms.Parameter]:
    """Mark ``names`` trainable (float32) and everything else frozen (cast to ``frozen_dtype``, norms kept
    float32 as nn/precision.py does)."""
    keep = set(names)
    trainable = []
    for name, p in unet.parameters_and_names():
        if name in keep:
            p.requires_grad = True
            if p.dtype != ms.float32:
                p.set_dtype(ms.float32)
            trainable.append(p)
        else:
            p.requires_grad = False
    if frozen_dtype is not None:
        cast_weights(unet, frozen_dtype, exclude={id(p) for p in trainable})
    return trainable


def describe(names: List[str], params: Dict[str, ms.Parameter]) -> str:
    """Count and names of the trainable set, grouped by UNet block."""
    groups: "OrderedDict[str, List[str]]" = OrderedDict()
    for n in names:
        m = re.match(r"(input_blocks\.\d+|middle_block|output_blocks\.\d+|[^.]+)", n)
        groups.setdefault(m.group(1), []).append(n)
    total = sum(int(params[n].size) for n in names)
    lines = [f"trainable: {len(names)} tensors, {total:,} parameters in {len(groups)} blocks"]
    for block, members in groups.items():
        count = sum(int(params[n].size) for n in members)
        leaves = sorted({next((seg for seg in n[len(block):].split(".") if seg and not seg.isdigit()), n)
                         for n in members})
        lines.append(f"  {block}: {len(members)} tensors, {count:,} parameters ({', '.join(leaves)})")
    return "\n".join(lines)


def set_recompute(unet) -> int:
    """Recompute every UNet block in the backward pass instead of keeping its activations."""
    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    for block in blocks:
        block.recompute()
    return len(blocks)
