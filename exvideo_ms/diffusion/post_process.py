"""ExVideo's latent post-processing before decoding (DiffSynth ``SVDVideoPipeline.post_process_latents``):
per-frame renormalisation to the global latent mean and std, then a contrast gain."""
import mindspore as ms
from mindspore import Tensor, ops


def _mean_std(x, axes, keep: bool):
    """mean and unbiased (N − 1) standard deviation over ``axes``, as torch's ``mean`` / ``std``."""
    n = 1
    for a in axes:
        n *= x.shape[a]
    mean = x.mean(axis=axes, keep_dims=True)
    var = ((x - mean) ** 2).sum(axis=axes, keepdims=True) / (n - 1)
    if not keep:
        return mean.reshape(()), ops.sqrt(var).reshape(())
    return mean, ops.sqrt(var)


def post_process_latents(latents: Tensor, post_normalize: bool, contrast_enhance_scale: float) -> Tensor:
    """latents (T, C, h, w) final x0 estimates. If ``post_normalize``: each frame is standardised with its own
    mean/std over (C, h, w) and mapped to the whole tensor's mean/std; then everything × contrast scale."""
    x = latents.astype(ms.float32)
    if post_normalize:
        mean, std = _mean_std(x, (0, 1, 2, 3), keep=False)
        frame_mean, frame_std = _mean_std(x, (1, 2, 3), keep=True)
        x = (x - frame_mean) / frame_std * std + mean
    return x * contrast_enhance_scale
