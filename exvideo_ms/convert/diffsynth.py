"""DiffSynth-Studio layout of ExVideo's patch file (``ExVideo-SVD-128f-v1.safetensors``): 16 temporal
attention blocks named by their index in DiffSynth's flat ``SVDUNet.blocks`` list, 33 tensors each
(reference/exvideo.md §4, keys/exvideo_svd_128f_keys.txt).
"""
import re
from typing import Dict, Iterable

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

# the 33 tensors of one block in the published file (keys/exvideo_svd_128f_keys.txt)
PATCH_NAMES = (
    "positional_embedding.embeddings", "positional_conv.weight", "positional_conv.bias",
    "positional_embedding_proj.0.weight", "positional_embedding_proj.0.bias",
    "positional_embedding_proj.2.weight", "positional_embedding_proj.2.bias",
    "norm_in.weight", "norm_in.bias", "act_fn_in.proj.weight", "act_fn_in.proj.bias", "ff_in.weight", "ff_in.bias",
    "norm1.weight", "norm1.bias", "attn1.to_q.weight", "attn1.to_k.weight", "attn1.to_v.weight",
    "attn1.to_out.weight", "attn1.to_out.bias", "norm2.weight", "norm2.bias", "attn2.to_q.weight",
    "attn2.to_k.weight", "attn2.to_v.weight", "attn2.to_out.weight", "attn2.to_out.bias",
    "norm_out.weight", "norm_out.bias", "act_fn_out.proj.weight", "act_fn_out.proj.bias",
    "ff_out.weight", "ff_out.bias",
)


def patch_keys():
    """All 528 keys of a complete ExVideo patch, in DiffSynth's block order."""
    return [f"blocks.{i}.{n}" for i in sorted(BLOCKS) for n in PATCH_NAMES]


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


def table(keys: Iterable[str]) -> Dict[str, str]:
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


def export_patch(checkpoint, output, progress: bool = True) -> int:
    """Write the ExVideo tensors of one of our checkpoints (a whole model or trainable weights only) as a
    patch in DiffSynth's names, float32 safetensors, loadable by DiffSynth-Studio's ExVideo code.
    Returns the number of tensors written; a checkpoint without all 528 is an error naming what is missing."""
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from exvideo_ms.checkpoint import CheckpointError, CheckpointWriter, checkpoint_index, iter_checkpoint
    if Path(output).suffix != ".safetensors":
        raise CheckpointError(f"the patch is a safetensors file; --output must end in .safetensors, got {output}")
    index = checkpoint_index(checkpoint)
    ours = {}
    for name in index:
        try:
            ours[diffsynth_name(name)] = name
        except KeyError:
            continue
    expected = patch_keys()
    missing = [k for k in expected if k not in ours]
    if missing:
        raise CheckpointError(f"{checkpoint} lacks {len(missing)} of the {len(expected)} ExVideo tensors, e.g. "
                              + ", ".join(f"{k} (our {our_name(k)})" for k in missing[:4]))
    # tensors go into the file in the checkpoint's order, so one tensor at a time is in memory
    allowed = set(expected)
    by_name = {name: key for key, name in ours.items() if key in allowed}
    order = [by_name[name] for name in index if name in by_name]
    layout = {k: (index[ours[k]], "fp32") for k in order}
    with CheckpointWriter(output, layout) as writer:
        for name, array in tqdm(iter_checkpoint(checkpoint), total=len(index), desc="exporting", disable=not progress):
            if name in by_name:
                writer.write(by_name[name], array.astype(np.float32, copy=False), "fp32")
    return len(order)
