"""Graph mode (static compilation) gives the PyNative results."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor
from tests.helpers import ms_unet, rel_err, unet_inputs

TOL = 1e-5


@pytest.mark.slow
def test_unet_graph_equals_pynative(ms_model):
    x, t, ctx, ids = unet_inputs(5, seed=11)
    eager = ms_unet(ms_model.unet, x, t, ctx, ids)
    ms.set_context(mode=ms.GRAPH_MODE)
    graph = ms_unet(ms_model.unet, x, t, ctx, ids)
    assert rel_err(graph, eager) <= TOL


def test_vae_and_image_encoder_graph_equal_pynative(ms_model):
    g = np.random.default_rng(12)
    z = Tensor(g.standard_normal((5, 4, 8, 16)).astype(np.float32))
    img = Tensor(g.uniform(-1, 1, (2, 3, 64, 128)).astype(np.float32))
    pix = Tensor(g.standard_normal((2, 3, 224, 224)).astype(np.float32))
    eager = [ms_model.vae.decode(z, 5).asnumpy(), ms_model.vae.encode(img).asnumpy(),
             ms_model.image_encoder(pix).asnumpy()]
    ms.set_context(mode=ms.GRAPH_MODE)
    graph = [ms_model.vae.decode(z, 5).asnumpy(), ms_model.vae.encode(img).asnumpy(),
             ms_model.image_encoder(pix).asnumpy()]
    for a, b in zip(graph, eager):
        assert rel_err(a, b) <= TOL
