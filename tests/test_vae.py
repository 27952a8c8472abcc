"""Temporal VAE against diffusers' AutoencoderKLTemporalDecoder with the same (converted) weights."""
import numpy as np
import pytest
import torch
from tests.helpers import rel_err
from mindspore import Tensor

TOL = 1e-4


def test_encode_mode_matches_diffusers(ms_model, torch_models):
    img = np.random.default_rng(0).uniform(-1, 1, (3, 3, 64, 128)).astype(np.float32)
    with torch.no_grad():
        ref = torch_models[1].encode(torch.from_numpy(img)).latent_dist.mode().numpy()
    assert rel_err(ms_model.vae.encode(Tensor(img)).asnumpy(), ref) <= TOL


@pytest.mark.parametrize("frames", [1, 5, 14])
def test_decode_matches_diffusers(ms_model, torch_models, frames):
    z = np.random.default_rng(frames).standard_normal((2 * frames, 4, 8, 16)).astype(np.float32)
    with torch.no_grad():
        ref = torch_models[1].decode(torch.from_numpy(z), num_frames=frames).sample.numpy()
    assert rel_err(ms_model.vae.decode(Tensor(z), frames).asnumpy(), ref) <= TOL


def test_decoder_mix_direction_is_the_vae_one(ms_model, torch_models):
    """The decoder blends α·temporal + (1−α)·spatial (opposite of the UNet): flipping it must break parity."""
    from exvideo_ms.models.temporal_vae import VideoResBlock
    blocks = [c for _, c in ms_model.vae.decoder.cells_and_names() if isinstance(c, VideoResBlock)]
    assert len(blocks) == 2 + 3 * 4  # mid + 3 per level, as SVD's 14
    z = np.random.default_rng(7).standard_normal((5, 4, 8, 16)).astype(np.float32)
    with torch.no_grad():
        ref = torch_models[1].decode(torch.from_numpy(z), num_frames=5).sample.numpy()
    for b in blocks:
        b.mix_factor.set_data(-b.mix_factor)  # sigmoid(-m) = 1 - sigmoid(m): the other orientation
    try:
        assert rel_err(ms_model.vae.decode(Tensor(z), 5).asnumpy(), ref) > 1e-2
    finally:
        for b in blocks:
            b.mix_factor.set_data(-b.mix_factor)
