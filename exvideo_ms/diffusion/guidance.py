"""Classifier-free guidance with a per-frame scale (sgm ``LinearPredictionGuider``): frame 0 gets
``min_scale``, the last frame ``max_scale``, linearly in between; D = D_u + s_t·(D_c − D_u).

Unconditional inputs are zeros for the image embedding and the conditioning latent, the same added-time
vector (sgm ``force_uc_zero_embeddings``, diffusers). Because the denoised estimate is affine in the network
output with the same coefficients in both branches, guiding either one gives the same result.
"""
import numpy as np


def frame_scales(min_scale: float, max_scale: float, num_frames: int) -> np.ndarray:
    """(T,) float32 scales, as torch.linspace(min, max, T)."""
    return np.linspace(min_scale, max_scale, num_frames, dtype=np.float64).astype(np.float32)


def uses_guidance(min_scale: float, max_scale: float) -> bool:
    """The unconditional pass is needed only if some frame's scale exceeds 1 (diffusers
    ``do_classifier_free_guidance``); with all scales <= 1 the pipelines return the conditional output."""
    return max(min_scale, max_scale) > 1.0


def guide(uncond, cond, scales):
    """uncond + scales·(cond − uncond); ``scales`` broadcastable to ``cond`` (e.g. (T, 1, 1, 1))."""
    return uncond + scales * (cond - uncond)
