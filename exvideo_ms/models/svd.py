"""The whole SVD model as one Cell tree whose parameter names are our checkpoint's:
``unet.*`` (sgm VideoUNet names), ``vae.{encoder,quant_conv,decoder}.*``, ``image_encoder.*`` (open_clip
visual names). The conditioner has no parameters.
"""
from typing import Optional, Sequence

from mindspore import nn

from exvideo_ms import backend
from exvideo_ms.backend import Choices
from exvideo_ms.config import SVDConfig
from exvideo_ms.models.image_encoder import ImageEncoder
from exvideo_ms.models.temporal_vae import TemporalVAE
from exvideo_ms.models.unet import VideoUNet

COMPONENTS = ("unet", "vae", "image_encoder")


class SVDModel(nn.Cell):
    """``choices``: the backend choices every network is built for (backend.py)."""

    def __init__(self, cfg: SVDConfig, components: Optional[Sequence[str]] = None, *, choices: Choices):
        super().__init__()
        self.cfg = cfg
        self.choices = choices
        components = tuple(components or COMPONENTS)
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; choose from {COMPONENTS}")
        self.components = components
        if "unet" in components:
            self.unet = VideoUNet(cfg.unet, cfg.exvideo, choices=choices)
        if "vae" in components:
            self.vae = TemporalVAE(cfg.vae, choices=choices)
        if "image_encoder" in components:
            self.image_encoder = ImageEncoder(cfg.image_encoder, choices=choices)
        backend.set_jit_level(self, choices.jit_level)


def build_model(cfg: SVDConfig, components: Optional[Sequence[str]] = None, allocate: bool = True,
                choices: Optional[Choices] = None) -> SVDModel:
    """Build the networks of ``cfg`` for ``choices`` (default: this process's, ``backend.choices()``);
    ``allocate=False`` builds a full-size tree without its weights (MindSpore ``no_init_parameters``), for
    name and shape checks."""
    choices = backend.resolve(choices or backend.choices())
    if allocate:
        return SVDModel(cfg, components, choices=choices)
    from mindspore.nn.utils import no_init_parameters
    with no_init_parameters():
        return SVDModel(cfg, components, choices=choices)
