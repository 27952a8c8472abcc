"""Graph mode (static compilation) gives the PyNative results. The UNet's graph is compared inside the whole
pipeline (tests/test_pipeline.py: graph equals PyNative), which compiles it as generation does."""
import mindspore as ms
import numpy as np
from mindspore import Tensor
from tests.helpers import rel_err

TOL = 1e-5


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
