"""The whole SVD model as one Cell tree whose parameter names are our checkpoint's:
``unet.*`` (sgm VideoUNet names), ``vae.{encoder,quant_conv,decoder}.*``, ``image_encoder.*`` (open_clip
visual names). The conditioner has no parameters.
"""
from typing import Optional, Sequence

from mindspore import nn

from exvideo_ms.config import SVDConfig
from exvideo_ms.models.image_encoder import ImageEncoder
from exvideo_ms.models.temporal_vae import TemporalVAE
from exvideo_ms.models.unet import VideoUNet
from exvideo_ms.nn import norm

COMPONENTS = ("unet", "vae", "image_encoder")


class SVDModel(nn.Cell):
    def __init__(self, cfg: SVDConfig, components: Optional[Sequence[str]] = None):
        super().__init__()
        self.cfg = cfg
        components = tuple(components or COMPONENTS)
        unknown = set(components) - set(COMPONENTS)
        if unknown:
            raise ValueError(f"unknown component(s) {sorted(unknown)}; choose from {COMPONENTS}")
        self.components = components
        if "unet" in components:
            with norm.groups(cfg.unet.norm_groups):
                self.unet = VideoUNet(cfg.unet, cfg.exvideo)
        if "vae" in components:
            with norm.groups(cfg.vae.norm_groups):
                self.vae = TemporalVAE(cfg.vae)
        if "image_encoder" in components:
            self.image_encoder = ImageEncoder(cfg.image_encoder)


def build_model(cfg: SVDConfig, components: Optional[Sequence[str]] = None, allocate: bool = True) -> SVDModel:
    """Build the networks of ``cfg``; ``allocate=False`` builds a full-size tree without its weights
    (MindSpore ``no_init_parameters``), for name and shape checks."""
    if allocate:
        return SVDModel(cfg, components)
    from mindspore.nn.utils import no_init_parameters
    with no_init_parameters():
        return SVDModel(cfg, components)
