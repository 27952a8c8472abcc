"""``SVDPipeline``: image in, video out (Stable Video Diffusion image-to-video, and ExVideo's long videos).

Generation is four steps, each a method with plain inputs and outputs (docs/architecture.md):

    settings = resolve_settings(cfg, image size, **options)        every option resolved and checked
    cond     = pipe.condition(image, settings, rng)                 CLIP embedding, conditioning latent, vector
    latents  = pipe.sample(cond, settings, noise, ...)              Euler EDM sampler ⇄ denoiser (diffusion/)
    frames   = pipe.decode(latents, settings)                       [after ExVideo's post-processing] VAE decoder

Arguments keep the names and meanings of diffusers' ``StableVideoDiffusionPipeline`` (``fps`` enters the
model as fps − 1; ``latents`` is unit-variance noise scaled internally by √(1 + σ_max²)). Unset arguments
take the model config's ``sampling`` defaults.
"""
from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Union

import numpy as np
from mindspore import Tensor

from exvideo_ms import backend, lora
from exvideo_ms.checkpoint import load_checkpoint
from exvideo_ms.config import SVDConfig, load_config
from exvideo_ms.decoding import iter_decode_chunked, iter_decode_windowed
from exvideo_ms.diffusion.denoiser import denoise_guided, with_keyframes
from exvideo_ms.diffusion.edm import initial_noise_scale, karras_sigmas, karras_sigmas_strength
from exvideo_ms.diffusion.guidance import frame_scales, uses_guidance
from exvideo_ms.diffusion.post_process import post_process_latents
from exvideo_ms.diffusion.sampler import sample_euler
from exvideo_ms.diffusion.temporal_windows import reschedule_noise, temporal_spans, windowed_denoiser
from exvideo_ms.media import load_frames, load_image, resize, to_uint8
from exvideo_ms.models.conditioner import Conditioner, Conditioning, to_model_range
from exvideo_ms.models.svd import SVDModel, build_model
from exvideo_ms.nn.precision import cast_weights
from exvideo_ms.settings import Settings, SettingsError, latent_factor, resolve_settings

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("np", "float", "latent")
RESCHEDULE_STREAM = 1  # FreeNoise's shuffles draw from their own stream of the seed: the noise itself is unchanged
PipelineError = SettingsError  # arguments the pipeline cannot run with (the name callers catch)


@dataclass
class Generation:
    """What ``SVDPipeline.generate`` made, and the settings that made it."""

    frames: np.ndarray  # (T, H, W, 3): uint8 for output_type "np", float in [0, 1] for "float"; latents for "latent"
    settings: Settings


class SVDPipeline:
    def __init__(self, model: SVDModel, cfg: SVDConfig, dtype: Optional[str] = "auto"):
        """``dtype`` casts the UNet and image encoder, norms excepted: fp32, fp16, bf16, or auto (the backend's
        inference dtype: bf16 on Atlas A2, fp16 on 910A, fp32 on GPU and CPU); None keeps the weights as they
        are (e.g. a model that is being trained with mixed precision). The VAE stays float32."""
        if dtype == "auto":
            dtype = model.choices.inference_dtype
        if dtype is not None and dtype not in backend.DTYPES:
            raise PipelineError(f"dtype must be one of {sorted(backend.DTYPES)}, got {dtype!r}")
        if dtype == "bf16" and not model.choices.bf16:
            raise PipelineError(f"bf16 needs an Atlas A2 NPU or a GPU; this model is built for {model.choices.device} "
                                f"({model.choices.chip}), which has no bfloat16 conv/matmul kernels: use fp16 or fp32")
        self.model = model
        self.cfg = cfg
        self.dtype = dtype
        self.unet = model.unet
        self.vae = model.vae
        for cell in (self.unet, model.image_encoder):
            cell.set_train(False)
            if dtype is not None:
                cast_weights(cell, backend.DTYPES[dtype])
        self.vae.set_train(False)  # stays float32, as diffusers' force_upcast and sgm's disabled first-stage AMP
        self.conditioner = Conditioner(self.vae, model.image_encoder, cfg)

    @classmethod
    def from_config(cls, config: Union[str, Path, SVDConfig], checkpoint=None, dtype: str = "auto",
                    loras: Sequence = ()) -> "SVDPipeline":
        """Build the networks of ``config`` and load ``checkpoint`` — one file, or a list whose later files
        replace earlier ones' tensors (a base model and an ExVideo or fine-tuned weights file); strict: every
        name and shape. Without a checkpoint the weights are random (logged): only for tests and timing.
        ``loras``: (``lora.read`` file, scale) pairs, checked against the UNet before the weights load and
        merged into its float32 weights in order, before the cast to ``dtype``."""
        cfg = config if isinstance(config, SVDConfig) else load_config(config)
        if checkpoint is None:
            logger.warning("no checkpoint given: %s runs with random weights", cfg.name)
            model = build_model(cfg)
        else:
            model = build_model(cfg, allocate=False)  # no random init: the checkpoint fills every parameter
        shapes = lora.unet_shapes(model.unet) if loras else {}
        resolved = [(f, lora.resolve(f, cfg, shapes), scale) for f, scale in loras]
        if checkpoint is not None:
            load_checkpoint(model, checkpoint)
        for f, layers, scale in resolved:
            lora.merge(model.unet, layers, scale)
            logger.info("merged LoRA %s (%s naming, %d layers) at scale %g", f.path, f.naming, len(layers), scale)
        return cls(model, cfg, dtype)

    # ------------------------------------------------------------------------------------------------ steps
    def condition(self, image: np.ndarray, settings: Settings, rng: np.random.Generator) -> Conditioning:
        """The video's conditions from the (H, W, 3) uint8 image: CLIP at its own size (as diffusers), the VAE
        on the image resized to the output size, noise augmentation drawn from ``rng``."""
        st = settings
        sized = resize(image, st.width, st.height)
        if sized is not image:
            logger.info("resized the image from %dx%d to %dx%d", image.shape[1], image.shape[0], st.width, st.height)
        return self.conditioner.condition(image, sized, st.fps, st.motion_bucket_id, st.noise_aug_strength, rng)

    def sample(self, cond: Conditioning, settings: Settings, noise: np.ndarray, input_video=None, mask_frames=None,
               progress: bool = True) -> Tensor:
        """Final latents (T, z, h, w) from unit ``noise`` (T, z, h, w): the Karras schedule (its last fraction for
        video-to-video, from ``input_video``'s latents noised to the first σ), Euler steps of the guided
        denoiser, keyframes (``mask_frames``) re-noised to every σ."""
        st, s = settings, self.cfg.sampling
        if st.denoising_strength < 1.0:
            sigmas = karras_sigmas_strength(st.num_inference_steps, s.sigma_min, s.sigma_max, s.rho,
                                            st.denoising_strength)
            x = self.encode_video(input_video, st.num_frames, st.width, st.height) + Tensor(noise * np.float32(sigmas[0]))
        else:
            sigmas = karras_sigmas(st.num_inference_steps, s.sigma_min, s.sigma_max, s.rho)
            x = Tensor(noise * np.float32(initial_noise_scale(sigmas[0])))
        guided = uses_guidance(st.min_guidance_scale, st.max_guidance_scale)
        scales = frame_scales(st.min_guidance_scale, st.max_guidance_scale, st.num_frames).reshape(-1, 1, 1, 1)

        def window_denoiser(start: int, end: int):  # frames [start, end): the whole video's rows and CFG scales
            return functools.partial(denoise_guided, self.unet, cond=cond.per_frame(end - start),
                                     num_frames=end - start, scales=Tensor(scales[start:end]) if guided else None,
                                     cfg_mode=st.cfg_mode)
        spans = (temporal_spans(st.num_frames, st.temporal_window, st.temporal_stride) if st.temporal_window
                 else [(0, st.num_frames)])
        if len(spans) > 1:
            logger.info("denoising %d frames in %d windows of %d (stride %d)", st.num_frames, len(spans),
                        st.temporal_window, st.temporal_stride)
        denoiser = windowed_denoiser(window_denoiser, spans, st.num_frames)
        if st.mask_frame_ids:
            keys = self.encode_video(mask_frames, len(st.mask_frame_ids), st.width, st.height, what="mask_frames")
            denoiser = with_keyframes(denoiser, keys.asnumpy(), st.mask_frame_ids, noise)
        return sample_euler(denoiser, x, sigmas, disable=not progress)

    def decode(self, latents: Tensor, settings: Settings, progress: bool = True) -> np.ndarray:
        """Latents -> (T, H, W, 3) float frames in [0, 1]: the VAE in windows (``decode_window``) or chunks
        (``decode_chunk_size``); see decoding.py."""
        return np.concatenate(list(self.decode_stream(latents, settings, progress)), 0)

    def decode_stream(self, latents: Tensor, settings: Settings, progress: bool = True) -> Iterator[np.ndarray]:
        """``decode`` as (n, H, W, 3) float blocks in frame order, each yielded as soon as it is final, so a
        long video reaches a writer (``media.write_video``) in the memory of one decoding window."""
        st = settings
        scale = self.cfg.vae.scale_factor
        if st.decode_window is not None:
            return iter_decode_windowed(self.vae, latents, scale, st.decode_window, st.decode_stride, progress,
                                        st.decode_reflect)
        return iter_decode_chunked(self.vae, latents, scale, st.decode_chunk_size, progress)

    # ------------------------------------------------------------------------------------------------- call
    def __call__(self, image, **options) -> np.ndarray:
        """Generate a video from ``image`` and return its frames (``generate`` also returns the settings)."""
        return self.generate(image, **options).frames

    def generate(self, image, latents=None, output_type: str = "np", progress: bool = True, input_video=None,
                 mask_frames=None, **options) -> Generation:
        """Generate a video from ``image``: settings → condition → sample → decode. ``options`` are those of
        ``settings.resolve_settings`` (diffusers' argument names; unset ones from the config's ``sampling``).
        ExVideo options:

        - ``contrast_enhance_scale``, ``post_normalize``: latent post-processing before decoding;
        - ``decode_window``/``decode_stride``/``decode_reflect``: blended overlapping temporal windows (default
          from the config; an explicit ``decode_chunk_size`` selects plain chunked decoding instead);
        - ``denoising_strength`` < 1 with ``input_video`` (frames resized to the output size): video-to-video
          refinement, starting from the encoded video noised to the schedule's first σ;
        - ``mask_frames`` at ``mask_frame_ids``: keyframes, re-noised to the current σ before every step;
        - ``temporal_window``/``temporal_stride``/``noise_reschedule``: denoising in overlapping windows of frames
          (chosen automatically, window = the trained length, when ``num_frames`` exceeds it), with FreeNoise's
          noise rescheduling (default on with windows); see diffusion/temporal_windows.py.
        """
        if output_type not in OUTPUT_TYPES:
            raise PipelineError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        image = load_image(image)
        st = resolve_settings(self.cfg, image.shape[:2], dtype=self.dtype, latents_given=latents is not None,
                              input_video_given=input_video is not None, mask_frames_given=mask_frames is not None,
                              **options)
        f = latent_factor(self.cfg)
        shape = (st.num_frames, self.cfg.vae.z_channels, st.height // f, st.width // f)
        if latents is not None:
            latents = np.asarray(latents.asnumpy() if isinstance(latents, Tensor) else latents, np.float32)
            latents = latents.reshape(latents.shape[-4:]) if latents.ndim == 5 and latents.shape[0] == 1 else latents
            if latents.shape != shape:
                raise PipelineError(f"latents must have shape {shape} (frames, channels, h, w), got {latents.shape}")
        if input_video is not None:
            st.input_video_frames = st.num_frames
        rng = np.random.default_rng(st.seed)
        t0 = time.perf_counter()
        cond = self.condition(image, st, rng)
        noise = rng.standard_normal(shape).astype(np.float32) if latents is None else latents
        if st.noise_reschedule:  # FreeNoise (never on given latents: settings refuse that)
            noise = reschedule_noise(noise, st.temporal_window, st.temporal_stride,
                                     np.random.default_rng([st.seed, RESCHEDULE_STREAM]))
        t1 = time.perf_counter()
        x = self.sample(cond, st, noise, input_video, mask_frames, progress)
        t2 = time.perf_counter()
        st.timings = {"conditioning_s": t1 - t0, "sampling_s": t2 - t1}
        if st.post_normalize or st.contrast_enhance_scale != 1.0:  # ExVideo's post-processing of the latents
            x = post_process_latents(x, st.post_normalize, st.contrast_enhance_scale)
        if output_type == "latent":
            return Generation(x.asnumpy(), st)
        frames = self.decode(x, st, progress)
        st.timings["decoding_s"] = time.perf_counter() - t2
        return Generation(to_uint8(frames) if output_type == "np" else frames.astype(np.float32), st)

    def encode_video(self, frames, count: int, width: int, height: int, what: str = "input_video") -> Tensor:
        """Frames (path, folder, list or array) resized to width×height -> latents × the encode scale."""
        frames = load_frames(frames)
        if len(frames) != count:
            raise PipelineError(f"{what} has {len(frames)} frames, expected {count}")
        frames = np.stack([resize(fr, width, height) for fr in frames])
        return self.conditioner.latents(to_model_range(frames))
