"""DiffSynth-Studio layout of ExVideo's patch file (``ExVideo-SVD-128f-v1.safetensors``): 16 temporal
attention blocks named by their index in DiffSynth's flat ``SVDUNet.blocks`` list, 33 tensors each
(reference/exvideo.md §4, keys/exvideo_svd_128f_keys.txt).
"""
import re
from typing import Dict, Iterable, List, Tuple

from exvideo_ms.config import SVDConfig

# DiffSynth block index -> our SpatialVideoTransformer (sgm) prefix, for the SVD-XT UNet
BLOCKS = {
    7: "input_blocks.1.1", 17: "input_blocks.2.1", 29: "input_blocks.4.1", 39: "input_blocks.5.1",
    51: "input_blocks.7.1", 61: "input_blocks.8.1", 83: "middle_block.1",
    113: "output_blocks.3.1", 123: "output_blocks.4.1", 133: "output_blocks.5.1",
    144: "output_blocks.6.1", 154: "output_blocks.7.1", 164: "output_blocks.8.1",
    175: "output_blocks.9.1", 185: "output_blocks.10.1", 195: "output_blocks.11.1",
}

# DiffSynth name inside a block -> ours inside the transformer
NAMES = (
    ("positional_embedding.embeddings", "positional_embedding.embeddings"),
    ("positional_conv.", "positional_conv."),
    ("positional_embedding_proj.0.", "time_pos_embed.0."),
    ("positional_embedding_proj.2.", "time_pos_embed.2."),
    ("norm_in.", "time_stack.0.norm_in."),
    ("act_fn_in.proj.", "time_stack.0.ff_in.net.0.proj."),
    ("ff_in.", "time_stack.0.ff_in.net.2."),
    ("norm1.", "time_stack.0.norm1."),
    ("attn1.to_out.", "time_stack.0.attn1.to_out.0."),
    ("attn1.", "time_stack.0.attn1."),
    ("norm2.", "time_stack.0.norm2."),
    ("attn2.to_out.", "time_stack.0.attn2.to_out.0."),
    ("attn2.", "time_stack.0.attn2."),
    ("norm_out.", "time_stack.0.norm3."),
    ("act_fn_out.proj.", "time_stack.0.ff.net.0.proj."),
    ("ff_out.", "time_stack.0.ff.net.2."),
)
_KEY = re.compile(r"blocks\.(\d+)\.(.+)")


def is_patch(keys: Iterable[str]) -> bool:
    keys = list(keys)
    return bool(keys) and all(_KEY.fullmatch(k) for k in keys)


def our_name(key: str) -> str:
    """``blocks.185.attn1.to_out.weight`` -> ``unet.output_blocks.10.1.time_stack.0.attn1.to_out.0.weight``."""
    m = _KEY.fullmatch(key)
    if not m or int(m.group(1)) not in BLOCKS:
        raise KeyError(f"{key}: not a block of the ExVideo patch (known blocks: {sorted(BLOCKS)})")
    rest = m.group(2)
    for theirs, ours in NAMES:
        if rest.startswith(theirs):
            return f"unet.{BLOCKS[int(m.group(1))]}.{ours}{rest[len(theirs):]}"
    raise KeyError(f"{key}: unknown tensor name {rest!r} in an ExVideo block")


def diffsynth_name(name: str) -> str:
    """Inverse of ``our_name`` (used by the exporter)."""
    inverse = {v: k for k, v in BLOCKS.items()}
    for idx_prefix, idx in inverse.items():
        prefix = f"unet.{idx_prefix}."
        if name.startswith(prefix):
            rest = name[len(prefix):]
            for theirs, ours in NAMES:
                if rest.startswith(ours):
                    return f"blocks.{idx}.{theirs}{rest[len(ours):]}"
    raise KeyError(f"{name}: not a parameter of an ExVideo temporal attention block")


def table(cfg: SVDConfig, keys: Iterable[str]) -> Dict[str, str]:
    """our parameter name -> patch key, for every key of the patch; unknown keys raise KeyError."""
    out, unknown = {}, []
    for key in keys:
        try:
            out[our_name(key)] = key
        except KeyError as e:
            unknown.append(str(e.args[0]))
    if unknown:
        raise KeyError(f"{len(unknown)} patch key(s) not understood: " + "; ".join(unknown[:8]))
    return out


def block_parameter_names(names: Iterable[str]) -> List[str]:
    """The parameters ExVideo trains and ships: every name that ``diffsynth_name`` can express."""
    keep = []
    for n in names:
        try:
            diffsynth_name(n)
        except KeyError:
            continue
        keep.append(n)
    return keep
