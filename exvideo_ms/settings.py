"""The settings of one generated video: every option resolved against the model config's ``sampling``
defaults and checked, before any network runs.

``resolve_settings`` is the first step of generation (settings → condition → sample → decode); the command
line calls it right after parsing, so a bad number stops the run before weights are loaded. Each error names
the option (in the pipeline's argument names) and the value.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple

import numpy as np

from exvideo_ms import validate
from exvideo_ms.config import SVDConfig

logger = logging.getLogger(__name__)

CFG_MODES = ("batch", "sequential")
SEED_LIMIT = 2 ** 32  # seeds are drawn below this (NumPy's SeedSequence takes any non-negative int)
# temporal windows: default stride = window // 2, every frame in two windows (our choice: DiffSynth's
# tiled_forward uses stride 5 with 25-frame windows, 5 evaluations per frame; FreeNoise stride 4 with 16)
DEFAULT_WINDOW_OVERLAP = 2


class SettingsError(validate.OptionError):
    """An option the pipeline cannot run with."""


@dataclass
class Settings:
    """Everything that determines a generated video (written to the CLI's JSON sidecar)."""

    height: int
    width: int
    num_frames: int
    num_inference_steps: int
    min_guidance_scale: float
    max_guidance_scale: float
    fps: int
    motion_bucket_id: int
    noise_aug_strength: float
    decode_chunk_size: int
    seed: int
    cfg_mode: str
    dtype: Optional[str]
    latents_given: bool = False
    decode_window: Optional[int] = None
    decode_stride: Optional[int] = None
    decode_reflect: bool = False
    contrast_enhance_scale: float = 1.0
    post_normalize: bool = False
    denoising_strength: float = 1.0
    input_video_frames: int = 0
    mask_frame_ids: Tuple[int, ...] = ()
    temporal_window: Optional[int] = None  # denoise in overlapping windows of this many frames (None: all at once)
    temporal_stride: Optional[int] = None
    noise_reschedule: bool = False  # FreeNoise's window-local shuffles of the initial noise (with windows only)
    timings: dict = field(default_factory=dict)


def _integer(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    return validate.integer(name, value, minimum, maximum, error=SettingsError)


def _number(name: str, value, minimum: Optional[float] = None, above: Optional[float] = None,
            maximum: Optional[float] = None) -> float:
    return validate.number(name, value, minimum, above, maximum, error=SettingsError)


def latent_factor(cfg: SVDConfig) -> int:
    """Pixels per latent: the VAE's 2^(levels−1)."""
    return 2 ** (len(cfg.vae.ch_mult) - 1)


def size_multiple(cfg: SVDConfig) -> int:
    """Image sides must be multiples of this: the VAE's 2^(levels−1) times the UNet's 2^(levels−1)."""
    return latent_factor(cfg) * 2 ** (len(cfg.unet.channel_mult) - 1)


def resolve_size(cfg: SVDConfig, image_hw, height: Optional[int], width: Optional[int]) -> Tuple[int, int]:
    """``height``/``width`` as given, else the config's ``sampling.height/width``, else the image's rounded to the
    model's size multiple (the image is resized, never cropped)."""
    m = size_multiple(cfg)
    sizes = []
    for name, given, default, image_side in (("height", height, cfg.sampling.height, image_hw[0]),
                                              ("width", width, cfg.sampling.width, image_hw[1])):
        value = given if given is not None else default
        if value is None:
            value = max(m, int(round(image_side / m)) * m)
            if value != image_side:
                logger.info("%s %d is not a multiple of %d: generating at %d (the image is resized, not cropped)",
                            name, image_side, m, value)
        value = _integer(name, value, minimum=m)
        if value % m:
            raise SettingsError(f"{name} must be a positive multiple of {m} for this model, got {value}")
        sizes.append(value)
    return sizes[0], sizes[1]


def resolve_settings(cfg: SVDConfig, image_hw: Sequence[int], *, height: Optional[int] = None,
                     width: Optional[int] = None, num_frames: Optional[int] = None,
                     num_inference_steps: Optional[int] = None, min_guidance_scale: Optional[float] = None,
                     max_guidance_scale: Optional[float] = None, fps: Optional[int] = None,
                     motion_bucket_id: Optional[int] = None, noise_aug_strength: Optional[float] = None,
                     decode_chunk_size: Optional[int] = None, seed: Optional[int] = None, cfg_mode: str = "batch",
                     dtype: Optional[str] = None, latents_given: bool = False, decode_window: Optional[int] = None,
                     decode_stride: Optional[int] = None, decode_reflect: Optional[bool] = None,
                     contrast_enhance_scale: Optional[float] = None, post_normalize: Optional[bool] = None,
                     denoising_strength: float = 1.0, input_video_given: bool = False, mask_frames_given: bool = False,
                     mask_frame_ids: Optional[Sequence[int]] = None, temporal_window: Optional[int] = None,
                     temporal_stride: Optional[int] = None, noise_reschedule: Optional[bool] = None) -> Settings:
    """Every option of a generation, unset ones from ``cfg.sampling``, each checked (``SettingsError`` names it).
    A video longer than the model's trained length is denoised in overlapping temporal windows of that length
    (diffusion/temporal_windows.py) unless ``temporal_window`` says otherwise."""
    s = cfg.sampling
    num_frames = _integer("num_frames", s.num_frames if num_frames is None else num_frames, 1)
    trained = trained_frames(cfg)
    if temporal_window is None and num_frames > trained:
        temporal_window = trained
        logger.info("num_frames %d exceeds the %d frames %s: denoising in overlapping windows of %d frames "
                    "(set temporal_window / temporal_stride to choose)", num_frames, trained,
                    "of its position table" if cfg.exvideo is not None else "it was trained for", trained)
    window = stride = None
    if temporal_window is not None:
        window = _integer("temporal_window", temporal_window, 1, cfg.exvideo.num_positions if cfg.exvideo else None)
        stride = _integer("temporal_stride", temporal_stride if temporal_stride is not None
                          else max(1, window // DEFAULT_WINDOW_OVERLAP), 1, window)
        if window >= num_frames:
            window = stride = None  # one window: the plain sampler
    elif temporal_stride is not None or noise_reschedule:
        raise SettingsError("temporal_stride and noise_reschedule need temporal windows: set temporal_window "
                            f"(or ask for more than the model's {trained} frames)")
    if noise_reschedule is not None and not isinstance(noise_reschedule, bool):
        raise SettingsError(f"noise_reschedule must be true or false, got {noise_reschedule!r}")
    if noise_reschedule and latents_given:
        raise SettingsError("noise_reschedule shuffles the noise the pipeline draws, and latents were given: "
                            "pass them rescheduled (diffusion/temporal_windows.reschedule_noise) or leave "
                            "noise_reschedule unset")
    # one window (the plain sampler) has no later block to reschedule: off, which is what on would compute
    reschedule = window is not None and (not latents_given if noise_reschedule is None else noise_reschedule)
    steps = _integer("num_inference_steps", s.num_inference_steps if num_inference_steps is None else num_inference_steps, 1)
    min_cfg = _number("min_guidance_scale", s.min_cfg if min_guidance_scale is None else min_guidance_scale, 0.0)
    max_cfg = _number("max_guidance_scale", s.max_cfg if max_guidance_scale is None else max_guidance_scale, 0.0)
    fps = _integer("fps", s.fps if fps is None else fps, 1)
    motion = _integer("motion_bucket_id", s.motion_bucket_id if motion_bucket_id is None else motion_bucket_id, 0)
    noise_aug = _number("noise_aug_strength", s.noise_aug_strength if noise_aug_strength is None
                        else noise_aug_strength, 0.0)
    contrast = _number("contrast_enhance_scale", s.contrast_enhance_scale if contrast_enhance_scale is None
                       else contrast_enhance_scale, above=0.0)
    post_normalize = s.post_normalize if post_normalize is None else post_normalize
    if not isinstance(post_normalize, bool):
        raise SettingsError(f"post_normalize must be true or false, got {post_normalize!r}")
    if decode_chunk_size is not None:
        decode_chunk_size = _integer("decode_chunk_size", decode_chunk_size, 1)
    if decode_window is not None:
        decode_window = _integer("decode_window", decode_window, 1)
    if decode_stride is not None:
        decode_stride = _integer("decode_stride", decode_stride, 1)
    if decode_chunk_size is None and decode_window is None:  # the config's decoding unless one is asked for
        decode_window, decode_stride = s.decode_window, decode_stride or s.decode_stride
    reflect = s.decode_reflect if decode_reflect is None else decode_reflect
    if not isinstance(reflect, bool):
        raise SettingsError(f"decode_reflect must be true or false, got {reflect!r}")
    chunk = decode_chunk_size or s.decode_chunk_size or num_frames
    if decode_window is not None:
        decode_stride = decode_stride or max(1, decode_window // 2)
        if decode_stride > decode_window:
            raise SettingsError(f"decode_stride {decode_stride} > decode_window {decode_window} leaves frames out")
    else:
        decode_stride, reflect = None, False
    if cfg_mode not in CFG_MODES:
        raise SettingsError(f"cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
    strength = _number("denoising_strength", denoising_strength, above=0.0, maximum=1.0)
    if input_video_given != (strength < 1.0):
        raise SettingsError("video-to-video needs both input_video and denoising_strength < 1 "
                            f"(got input_video={'given' if input_video_given else None}, denoising_strength={strength})")
    ids = tuple(_integer("mask_frame_ids", i, 0, num_frames - 1) for i in (mask_frame_ids or ()))
    if mask_frames_given != bool(ids):
        raise SettingsError("keyframes need both mask_frames and mask_frame_ids")
    if len(set(ids)) != len(ids):
        raise SettingsError(f"mask_frame_ids {list(ids)} name a frame twice")
    height, width = resolve_size(cfg, image_hw, height, width)
    if cfg.exvideo is not None and cfg.exvideo.positional_conv:
        from exvideo_ms.models.exvideo import check_geometry
        try:
            check_geometry(cfg.unet, window or num_frames, height // latent_factor(cfg), width // latent_factor(cfg))
        except ValueError as e:
            raise SettingsError(str(e)) from None
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % SEED_LIMIT)
    seed = _integer("seed", seed, 0, SEED_LIMIT - 1)
    return Settings(height, width, num_frames, steps, min_cfg, max_cfg, fps, motion, noise_aug, chunk, seed,
                    cfg_mode, dtype, bool(latents_given), decode_window, decode_stride, reflect, contrast,
                    post_normalize, strength, 0, ids, window, stride, reschedule and window is not None)


def trained_frames(cfg: SVDConfig) -> int:
    """The frames one UNet call was trained for: ExVideo's position table, else the config's default
    num_frames (SVD 14, SVD-XT 25)."""
    return cfg.exvideo.num_positions if cfg.exvideo is not None else cfg.sampling.num_frames
