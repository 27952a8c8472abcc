"""OpenCLIP's text tower (the ``CLIP.encode_text`` half of the ViT-H/14 model whose image tower SVD uses), for
CLIP-T. Parameter names are the open_clip checkpoint's (``token_embedding.weight``, ``positional_embedding``,
``transformer.resblocks.i.attn.in_proj_weight``, ``ln_final.weight``, ``text_projection``), so its converter
keeps the text keys and leaves ``visual.*`` and ``logit_scale`` knowingly unused.

tokens (N, 77) -> token embedding + positions -> pre-norm transformer with causal attention -> final LayerNorm
-> the features at each sequence's end-of-text token (its largest id, as open_clip's argmax pooling) ->
``text_projection``. No L2 normalisation (the scores normalise).
"""
from dataclasses import dataclass

import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Normal, initializer

from exvideo_ms.backend import Choices
from exvideo_ms.models.image_encoder import Transformer
from exvideo_ms.nn.norm import LayerNorm


@dataclass(frozen=True)
class TextConfig:
    """open_clip ``CLIPTextCfg`` fields the tower needs."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 1024
    heads: int = 16
    layers: int = 24
    mlp_width: int = 4096
    output_dim: int = 1024


VIT_H_14 = TextConfig()  # open_clip model_configs/ViT-H-14.json: text_cfg width 1024, heads 16, layers 24; embed 1024
HEAD_WIDTH = 64  # open_clip's text towers: heads = width / 64 (ViT-H/14: 1024 / 16)


def config_from_shapes(shapes) -> TextConfig:
    """The tower's configuration read off its parameter shapes ({our name: shape}); heads = width / 64, the
    one number the shapes do not hold (true of open_clip's ViT-B, L, H and bigG text towers)."""
    try:
        vocab, width = shapes["token_embedding.weight"]
        context = shapes["positional_embedding"][0]
        mlp = shapes["transformer.resblocks.0.mlp.c_fc.weight"][0]
        out = shapes["text_projection"][1]
    except KeyError as e:
        raise ValueError(f"not an open_clip text tower: no {e.args[0]}") from None
    layers = len({k.split(".")[2] for k in shapes if k.startswith("transformer.resblocks.")})
    if width % HEAD_WIDTH:
        raise ValueError(f"text tower width {width} is not a multiple of the head width {HEAD_WIDTH}")
    return TextConfig(context, vocab, width, width // HEAD_WIDTH, layers, mlp, out)


class Embedding(nn.Cell):
    """torch.nn.Embedding: rows of ``weight`` (num, dim) looked up by index."""

    def __init__(self, num: int, dim: int):
        super().__init__()
        self.weight = Parameter(initializer(Normal(0.02), (num, dim), ms.float32), name="weight")

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class TextEncoder(nn.Cell):
    """tokens (N, context_length) int -> text embedding (N, output_dim) float32."""

    def __init__(self, cfg: TextConfig, *, choices: Choices):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.token_embedding = Embedding(cfg.vocab_size, w)
        self.positional_embedding = Parameter(initializer(Normal(0.01), (cfg.context_length, w), ms.float32),
                                              name="positional_embedding")
        self.transformer = Transformer(w, cfg.layers, cfg.heads, cfg.mlp_width, choices, kind="text")
        self.ln_final = LayerNorm(w)
        self.text_projection = Parameter(initializer(Normal(w ** -0.5), (w, cfg.output_dim), ms.float32),
                                         name="text_projection")

    def construct(self, tokens):
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x))
        end = ops.argmax(tokens, -1)  # the end-of-text token has the largest id
        pooled = ops.gather_d(x, 1, ops.broadcast_to(end.reshape(-1, 1, 1), (x.shape[0], 1, x.shape[2])))
        return ops.matmul(pooled.reshape(x.shape[0], -1), self.text_projection).astype(ms.float32)


def text_key(key: str):
    """open_clip checkpoint key -> our name: the text tower's keys as they are; the image tower's and the
    logit scale None (knowingly unused)."""
    return None if key.startswith("visual.") or key in ("logit_scale", "logit_bias") else key
