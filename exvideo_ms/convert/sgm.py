"""Stability single-file layout (``svd.safetensors`` / ``svd_xt.safetensors``, generative-models names).

Our parameter names are the original's below a component prefix, so this table is a prefix swap.
Tensors the image-to-video model never uses are listed as knowingly unused (252 in SVD-XT,
reference/svd_architecture.md §9.2).
"""
from typing import Optional

# sgm prefix -> our prefix
PREFIXES = (
    ("model.diffusion_model.", "unet."),
    ("first_stage_model.decoder.", "vae.decoder."),
    ("conditioner.embedders.3.encoder.encoder.", "vae.encoder."),  # the conditioning-frame encoder
    ("conditioner.embedders.3.encoder.quant_conv.", "vae.quant_conv."),
    ("conditioner.embedders.0.open_clip.model.visual.", "image_encoder."),
)

# present in the file, not used by image-to-video
UNUSED_PREFIXES = (
    "first_stage_model.encoder.",  # first-stage encoder without quant_conv; sampling encodes with embedders.3
    "conditioner.embedders.3.encoder.decoder.",  # the conditioning VAE's 2-D decoder
    "conditioner.embedders.3.encoder.post_quant_conv.",
)
UNUSED_KEYS = tuple(f"conditioner.embedders.0.open_clip.model.{k}" for k in (  # OpenCLIP text-side leftovers
    "positional_embedding", "token_embedding.weight", "ln_final.weight", "ln_final.bias",
    "text_projection", "logit_scale"))

MARKER = "model.diffusion_model."  # a key with this prefix identifies the layout


def is_sgm(keys) -> bool:
    return any(k.startswith(MARKER) for k in keys)


def target(key: str) -> Optional[str]:
    """Our parameter name for an sgm key, or None if the key is not a network parameter of ours."""
    for src, dst in PREFIXES:
        if key.startswith(src):
            return dst + key[len(src):]
    return None


def is_unused(key: str) -> bool:
    return key in UNUSED_KEYS or key.startswith(UNUSED_PREFIXES)
