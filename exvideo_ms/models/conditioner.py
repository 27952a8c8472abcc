"""SVD's conditioning (sgm ``GeneralConditioner`` with the embedders of svd_xt.yaml):

| slot        | source                                         | here                                   |
|-------------|------------------------------------------------|----------------------------------------|
| crossattn   | OpenCLIP embedding of the clean first frame    | ``ImageEncoder`` + ``preprocess``      |
| vector      | sinusoids of fps_id, motion_bucket_id, cond_aug| ``added_time_vector``                  |
| concat      | VAE mode of first frame + cond_aug·N(0, I)     | ``TemporalVAE.encode`` (unscaled)      |

Unconditional inputs (classifier-free guidance) are zeros for crossattn and concat, the same vector.
"""
import mindspore as ms
import numpy as np
from mindspore import ops

from exvideo_ms.nn.embeddings import timestep_embedding


def added_time_ids(fps: float, motion_bucket_id: float, noise_aug_strength: float) -> np.ndarray:
    """[fps_id, motion_bucket_id, cond_aug] with fps_id = fps − 1 (SVD was conditioned on fps − 1; diffusers
    and DiffSynth take fps and subtract 1)."""
    return np.asarray([fps - 1, motion_bucket_id, noise_aug_strength], np.float32)


def added_time_vector(ids, dim: int):
    """ids (N, 3) -> (N, 3·dim): concatenated sinusoids in embedder order [fps_id, motion_bucket, cond_aug]."""
    ids = ids.astype(ms.float32)
    n = ids.shape[0]
    emb = timestep_embedding(ids.reshape(-1), dim)  # (N·3, dim)
    return emb.reshape(n, 3 * dim)


def repeat_frames(x, num_frames: int):
    """(B, ...) -> (B·T, ...) with the frames of a video consecutive ("b ... -> (b t) ...")."""
    shape = x.shape
    x = ops.broadcast_to(x.reshape((shape[0], 1) + shape[1:]), (shape[0], num_frames) + shape[1:])
    return x.reshape((shape[0] * num_frames,) + shape[1:])
