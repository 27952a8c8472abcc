"""OpenCLIP vision tower: against transformers (converted diffusers folder) and against open_clip's own
VisionTransformer in its original naming; preprocessing against diffusers' antialiased resize."""
import numpy as np
import pytest
import torch
from tests.helpers import rel_err
from mindspore import Tensor

from exvideo_ms import backend
from exvideo_ms.config import ImageEncoderConfig
from exvideo_ms.convert import sgm
from exvideo_ms.models.image_encoder import CLIP_MEAN, CLIP_STD, ImageEncoder, preprocess

TOL = 1e-4


def test_embedding_matches_transformers(ms_model, torch_models):
    pix = np.random.default_rng(0).standard_normal((3, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = torch_models[2](torch.from_numpy(pix)).image_embeds.numpy()
    assert rel_err(ms_model.image_encoder(Tensor(pix)).asnumpy(), ref) <= TOL


def test_embedding_matches_open_clip_in_original_naming():
    """Weights in open_clip's own names, placed by the Stability-layout table (prefix swap only)."""
    from tests import references
    oc = references.open_clip_transformer()
    torch.manual_seed(0)
    vit = oc.VisionTransformer(image_size=28, patch_size=14, width=64, layers=2, heads=4, mlp_ratio=2.0,
                               output_dim=48).eval()
    references.randomise_(vit, 0)
    ours = ImageEncoder(ImageEncoderConfig(image_size=28, patch_size=14, width=64, layers=2, heads=4,
                                           mlp_width=128, output_dim=48), choices=backend.choices())
    params = dict(ours.parameters_and_names())
    filled = set()
    for key, value in vit.state_dict().items():
        name = sgm.target("conditioner.embedders.0.open_clip.model.visual." + key)
        assert name.startswith("image_encoder."), key
        name = name[len("image_encoder."):]
        assert tuple(params[name].shape) == tuple(value.shape), key
        params[name].set_data(Tensor(value.numpy()))
        filled.add(name)
    assert filled == set(params)
    pix = np.random.default_rng(1).standard_normal((2, 3, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = vit(torch.from_numpy(pix))
    ref = (ref[0] if isinstance(ref, tuple) else ref).numpy()
    assert rel_err(ours(Tensor(pix)).asnumpy(), ref) <= TOL


@pytest.mark.parametrize("size", [(64, 96), (300, 200), (20, 30), (224, 224)])
def test_preprocess_matches_diffusers(size):
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import _resize_with_antialiasing
    img = np.random.default_rng(size[0]).uniform(-1, 1, (2, 3) + size).astype(np.float32)
    ref = _resize_with_antialiasing(torch.from_numpy(img), (224, 224)).numpy()
    ref = ((ref + 1) / 2 - np.reshape(CLIP_MEAN, (1, 3, 1, 1))) / np.reshape(CLIP_STD, (1, 3, 1, 1))
    out = preprocess(img)
    assert out.shape == (2, 3, 224, 224)
    assert np.abs(out - ref).max() <= 1e-4


def test_preprocess_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        preprocess(np.zeros((3, 64, 64), np.float32))
