"""Typed configuration read from YAML.

Architecture numbers live in the YAML files under ``configs/`` (each with a comment naming its source);
the dataclasses below only give their types. Unknown keys and wrong types are errors that name the
dotted key, so a misspelt ``num_res_block`` cannot silently fall back to something else.
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple, Union

import yaml

logger = logging.getLogger(__name__)

NORM_GROUPS = 32  # every GroupNorm in SVD: sgm normalization() / Normalize() use 32 groups


class ConfigError(ValueError):
    """A configuration file or value that does not describe a valid model."""


@dataclass(frozen=True)
class UNetConfig:
    """sgm ``VideoUNet`` arguments (generative-models ``video_model.py``)."""

    in_channels: int
    out_channels: int
    model_channels: int
    channel_mult: Tuple[int, ...]
    num_res_blocks: int
    attention_resolutions: Tuple[int, ...]
    context_dim: int
    adm_in_channels: int
    video_kernel_size: Tuple[int, int, int]
    transformer_depth: int = 1
    # exactly one of the two: sgm uses a head width, diffusers a head count per level
    num_head_channels: Optional[int] = None
    num_heads: Optional[Tuple[int, ...]] = None
    # initial value of every UNet mix_factor (only matters when training from scratch)
    merge_factor: float = 0.5
    # GroupNorm groups (SVD: 32). A small model needs fewer: at 32 channels, 32 groups is an instance norm,
    # which removes every feature map's mean (e.g. a frame's colour) before the output convolution
    norm_groups: int = NORM_GROUPS

    def heads_at(self, level: int) -> int:
        channels = self.model_channels * self.channel_mult[level]
        if self.num_heads is not None:
            return self.num_heads[level]
        return channels // self.num_head_channels

    def validate(self, where: str = "unet") -> None:
        if (self.num_head_channels is None) == (self.num_heads is None):
            raise ConfigError(f"{where}: set exactly one of num_head_channels and num_heads "
                              f"(got {self.num_head_channels!r} and {self.num_heads!r})")
        if self.num_heads is not None and len(self.num_heads) != len(self.channel_mult):
            raise ConfigError(f"{where}.num_heads has {len(self.num_heads)} entries, channel_mult has "
                              f"{len(self.channel_mult)}")
        for level, mult in enumerate(self.channel_mult):
            channels = self.model_channels * mult
            heads = self.heads_at(level)
            if heads < 1 or channels % heads:
                raise ConfigError(f"{where}: level {level} has {channels} channels, not divisible into "
                                  f"{heads} heads")
            if channels % self.norm_groups:
                raise ConfigError(f"{where}: level {level} has {channels} channels; GroupNorm needs a "
                                  f"multiple of norm_groups ({self.norm_groups})")
        if len(self.video_kernel_size) != 3:
            raise ConfigError(f"{where}.video_kernel_size must have 3 entries (t, h, w), got "
                              f"{self.video_kernel_size}")


@dataclass(frozen=True)
class VAEConfig:
    """sgm ``Encoder`` / ``VideoDecoder`` arguments (``ddconfig`` in svd_xt.yaml)."""

    in_channels: int
    out_ch: int
    ch: int
    ch_mult: Tuple[int, ...]
    num_res_blocks: int
    z_channels: int
    scale_factor: float
    video_kernel_size: Tuple[int, int, int]
    # multiplies latents of *encoded* frames (video-to-video, keyframes, training targets); None = scale_factor.
    # ExVideo/DiffSynth encode with 0.13025 but decode with 1/0.18215 (reference/exvideo.md §10.1)
    encode_scale_factor: Optional[float] = None
    norm_groups: int = NORM_GROUPS  # GroupNorm groups (SVD: 32), see UNetConfig.norm_groups

    @property
    def encode_scale(self) -> float:
        return self.scale_factor if self.encode_scale_factor is None else self.encode_scale_factor

    def validate(self, where: str = "vae") -> None:
        for mult in self.ch_mult:
            if (self.ch * mult) % self.norm_groups:
                raise ConfigError(f"{where}: width {self.ch * mult} is not a multiple of norm_groups "
                                  f"({self.norm_groups}, GroupNorm)")


@dataclass(frozen=True)
class ImageEncoderConfig:
    """OpenCLIP ``VisionTransformer`` arguments (ViT-H/14 for SVD)."""

    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_width: int
    output_dim: int

    def validate(self, where: str = "image_encoder") -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(f"{where}: image_size {self.image_size} is not a multiple of patch_size "
                              f"{self.patch_size}")
        if self.width % self.heads:
            raise ConfigError(f"{where}: width {self.width} is not divisible by heads {self.heads}")


@dataclass(frozen=True)
class ConditioningConfig:
    """The three scalar conditions (fps_id, motion_bucket_id, cond_aug), each a sinusoid of this width."""

    addition_time_embed_dim: int


@dataclass(frozen=True)
class ExVideoConfig:
    """ExVideo's extension of every temporal attention block (reference/exvideo.md §2-3)."""

    num_positions: int
    positional_conv: bool = True


@dataclass(frozen=True)
class SamplingConfig:
    """Sampler and guidance defaults of a released model (sgm sampling config / ExVideo test script)."""

    num_frames: int
    num_inference_steps: int  # Euler steps (the diffusers argument's name; --SVD.sampling_steps on the CLI)
    min_cfg: float
    max_cfg: float
    sigma_min: float
    sigma_max: float
    rho: float
    fps: int = 7
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    decode_chunk_size: Optional[int] = None
    height: Optional[int] = None
    width: Optional[int] = None
    # ExVideo inference options (reference/exvideo.md §8.2); neutral values for plain SVD
    contrast_enhance_scale: float = 1.0
    post_normalize: bool = False
    decode_window: Optional[int] = None
    decode_stride: Optional[int] = None
    # windowed decoding: also decode the window overlap mirrored at both ends, so the first and last frames
    # are blended from as many windows as the others (a VAE trained on short clips shows a jump there otherwise)
    decode_reflect: bool = False


@dataclass(frozen=True)
class SVDConfig:
    unet: UNetConfig
    vae: VAEConfig
    image_encoder: ImageEncoderConfig
    conditioning: ConditioningConfig
    sampling: SamplingConfig
    exvideo: Optional[ExVideoConfig] = None
    name: str = "svd"

    def validate(self) -> "SVDConfig":
        self.unet.validate()
        self.vae.validate()
        self.image_encoder.validate()
        vector = 3 * self.conditioning.addition_time_embed_dim
        if vector != self.unet.adm_in_channels:
            raise ConfigError(f"unet.adm_in_channels is {self.unet.adm_in_channels} but the three added-time "
                              f"embeddings give 3 x {self.conditioning.addition_time_embed_dim} = {vector}")
        if self.unet.context_dim != self.image_encoder.output_dim:
            raise ConfigError(f"unet.context_dim {self.unet.context_dim} != image_encoder.output_dim "
                              f"{self.image_encoder.output_dim}")
        if self.unet.in_channels != 2 * self.vae.z_channels:
            raise ConfigError(f"unet.in_channels {self.unet.in_channels} must be 2 x vae.z_channels "
                              f"({self.vae.z_channels}): noisy latent and conditioning latent")
        if self.exvideo is not None and self.sampling.num_frames > self.exvideo.num_positions:
            raise ConfigError(f"sampling.num_frames {self.sampling.num_frames} exceeds "
                              f"exvideo.num_positions {self.exvideo.num_positions}")
        return self


# ----------------------------------------------------------------------------------------------------------
# strict YAML -> dataclass
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, getattr(types, "UnionType", Union)):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: null is not allowed")
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(tp, value, key)
    if origin in (tuple, Tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def from_dict(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``; unknown or missing keys raise ConfigError naming the key."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    unknown = [k for k in data if k not in names]
    if unknown:
        hints_txt = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), names, n=1)
            hints_txt.append(f"{prefix}{k}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
        raise ConfigError(f"unknown config key(s): {', '.join(hints_txt)}; allowed in "
                          f"{where or 'the top level'}: {', '.join(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing config key {prefix}{f.name} ({_type_name(hints[f.name])})")
    return cls(**kwargs)


def to_dict(cfg) -> dict:
    """Plain-YAML form of a config (tuples as lists), the inverse of ``from_dict``."""
    def plain(v):
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        return v
    return plain(cfg)


def load_config(path: Union[str, Path]) -> SVDConfig:
    """Read and validate an ``SVDConfig`` YAML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a YAML text file (a checkpoint? pass weights with --SVD.checkpoint / "
                          f"--model.checkpoint)") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    sampling = data.get("sampling")
    if isinstance(sampling, dict) and "num_steps" in sampling and "num_inference_steps" not in sampling:
        # configs written before the rename (converter outputs in users' hands) keep working
        logger.warning("%s: sampling.num_steps is now sampling.num_inference_steps; read it as such", path)
        sampling["num_inference_steps"] = sampling.pop("num_steps")
    try:
        return from_dict(SVDConfig, data).validate()
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def save_config(cfg: SVDConfig, path: Union[str, Path], header: str = "") -> None:
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
    Path(path).write_text((header + "\n" if header else "") + text)


def instantiate(parser, namespace):
    """jsonargparse's dataclass instantiation (``instantiate`` from 4.49, ``instantiate_classes`` before)."""
    method = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return method(namespace)
