"""``SVDPipeline``: image in, video out (Stable Video Diffusion image-to-video, and ExVideo's long videos).

Data flow (each arrow one call with plain tensors):
image -> conditioner (CLIP embedding, unscaled VAE latent of the noise-augmented image, added-time vector)
      -> Euler EDM sampler <-> denoiser (v-prediction preconditioning around the UNet, per-frame CFG)
      -> latents -> [ExVideo post-processing] -> temporal VAE decoder (chunked) -> frames

Arguments keep the names and meanings of diffusers' ``StableVideoDiffusionPipeline`` (``fps`` enters the
model as fps − 1; ``latents`` is unit-variance noise scaled internally by √(1 + σ_max²)). Unset arguments
take the model config's ``sampling`` defaults.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Union

import mindspore as ms
import numpy as np
from mindspore import Tensor, ops
from tqdm.auto import tqdm

from exvideo_ms import backend
from exvideo_ms.checkpoint import load_checkpoint
from exvideo_ms.config import SVDConfig, load_config
from exvideo_ms.diffusion.edm import initial_noise_scale, karras_sigmas, karras_sigmas_strength, v_scalings
from exvideo_ms.diffusion.guidance import frame_scales, guide, uses_guidance
from exvideo_ms.diffusion.post_process import post_process_latents
from exvideo_ms.diffusion.sampler import sample_euler
from exvideo_ms.media import load_frames, load_image, resize, to_uint8
from exvideo_ms.models.conditioner import added_time_ids, added_time_vector
from exvideo_ms.models.image_encoder import preprocess
from exvideo_ms.models.svd import SVDModel, build_model
from exvideo_ms.nn.precision import cast_weights
from exvideo_ms.settings import Settings, SettingsError, latent_factor, resolve_settings

logger = logging.getLogger(__name__)

OUTPUT_TYPES = ("np", "float", "latent")


PipelineError = SettingsError  # arguments the pipeline cannot run with (the name callers catch)


@dataclass
class Generation:
    """What ``SVDPipeline.generate`` made, and the settings that made it."""

    frames: np.ndarray  # (T, H, W, 3): uint8 for output_type "np", float in [0, 1] for "float"; latents for "latent"
    settings: Settings


def _to_frames(decoded: np.ndarray) -> np.ndarray:
    """(T, 3, H, W) decoder output in [-1, 1] -> (T, H, W, 3) in [0, 1]."""
    return np.clip(decoded.transpose(0, 2, 3, 1) / 2.0 + 0.5, 0.0, 1.0)


def window_spans(total: int, window: int, stride: int):
    """Temporal windows [start, end): starts 0, stride, 2·stride, ... until a window reaches the end."""
    spans = []
    for start in range(0, total, stride):
        if spans and spans[-1][1] >= total:
            break
        spans.append((start, min(start + window, total)))
    return spans


def window_weights(start: int, end: int, total: int, window: int) -> np.ndarray:
    """Blend weights of one window: a linear ramp 1, 2, ... towards each side that overlaps another window,
    flat at the video's own first and last frame (DiffSynth's mask restricted to time)."""
    t = np.arange(end - start, dtype=np.float64)
    front = t + 1 if start > 0 else np.full_like(t, np.inf)
    back = (end - start) - t if end < total else np.full_like(t, np.inf)
    return np.minimum(np.minimum(front, back), window)


def keyframe_denoiser(denoise: Callable, key_latents: Tensor, ids, noise: np.ndarray) -> Callable:
    """Keyframes: before every evaluation, frames ``ids`` are replaced by their latents noised to the current
    σ with the run's own noise (DiffSynth re-noises ``mask_frame_ids`` each step). Replacing inside the
    denoiser is exact: the Euler step's last move lands on D, and D only sees the replaced frames."""
    t = noise.shape[0]
    mask = np.zeros((t, 1, 1, 1), np.float32)
    keys = np.zeros(noise.shape, np.float32)
    key_np = key_latents.asnumpy()
    for j, i in enumerate(ids):
        mask[i] = 1.0
        keys[i] = key_np[j]
    mask_t, keys_t, noise_t = Tensor(mask), Tensor(keys), Tensor(noise * mask)

    def denoise_with_keys(x, sigma: float):
        return denoise(x * (1.0 - mask_t) + keys_t * mask_t + noise_t * sigma, sigma)

    return denoise_with_keys


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
        self.image_encoder = model.image_encoder
        for cell in (self.unet, self.image_encoder):
            cell.set_train(False)
            if dtype is not None:
                cast_weights(cell, backend.DTYPES[dtype])
        self.vae.set_train(False)  # stays float32, as diffusers' force_upcast and sgm's disabled first-stage AMP

    @classmethod
    def from_config(cls, config: Union[str, Path, SVDConfig], checkpoint=None, dtype: str = "auto") -> "SVDPipeline":
        """Build the networks of ``config`` and load ``checkpoint`` — one file, or a list whose later files
        replace earlier ones' tensors (a base model and an ExVideo or fine-tuned weights file); strict: every
        name and shape. Without a checkpoint the weights are random (logged): only for tests and timing."""
        cfg = config if isinstance(config, SVDConfig) else load_config(config)
        if checkpoint is None:
            logger.warning("no checkpoint given: %s runs with random weights", cfg.name)
            model = build_model(cfg)
        else:
            model = build_model(cfg, allocate=False)  # no random init: the checkpoint fills every parameter
            load_checkpoint(model, checkpoint)
        return cls(model, cfg, dtype)

    # ----------------------------------------------------------------------------------------- conditioning
    def encode_image(self, image: np.ndarray) -> Tensor:
        """CLIP embedding (1, D) of an (H, W, 3) uint8 image at its own size (as diffusers)."""
        x = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0 * 2.0 - 1.0
        pixels = preprocess(x, self.cfg.image_encoder.image_size)
        return self.image_encoder(Tensor(pixels)).astype(ms.float32)

    def encode_condition(self, image: np.ndarray, noise_aug_strength: float, rng: np.random.Generator) -> Tensor:
        """VAE mode (1, z, h, w) of the image in [-1, 1] plus noise_aug·N(0, I); **not** multiplied by the
        latent scale factor (sgm ``cond_frames``)."""
        x = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0 * 2.0 - 1.0
        noise = rng.standard_normal(x.shape).astype(np.float32)
        return self.vae.encode(Tensor(x + np.float32(noise_aug_strength) * noise))

    def encode_frames(self, frames: np.ndarray, chunk: int = 8) -> Tensor:
        """(T, H, W, 3) uint8 -> VAE modes (T, z, h, w), ``chunk`` frames per encoder call."""
        x = frames.astype(np.float32).transpose(0, 3, 1, 2) / 255.0 * 2.0 - 1.0
        parts = [self.vae.encode(Tensor(x[i:i + chunk])) for i in range(0, len(x), chunk)]
        return ops.cat(parts, 0)

    # ------------------------------------------------------------------------------------------- denoiser
    def make_denoiser(self, clip: Tensor, cond_latent: Tensor, vector: Tensor, num_frames: int, scales: np.ndarray,
                      guided: bool, cfg_mode: str) -> Callable:
        """D(x; σ) for one video: x (T, z, h, w) -> x0 estimate, with per-frame CFG over [uncond, cond]."""
        t = num_frames
        ctx_c = ops.broadcast_to(clip.reshape(1, 1, -1), (t, 1, clip.shape[-1]))
        ctx_u = ops.zeros_like(ctx_c)
        lat_c = ops.broadcast_to(cond_latent, (t,) + cond_latent.shape[1:])
        lat_u = ops.zeros_like(lat_c)
        y = ops.broadcast_to(vector, (t, vector.shape[-1]))
        scale_t = Tensor(scales.reshape(t, 1, 1, 1))
        batched = guided and cfg_mode == "batch"
        if batched:
            ctx_b, lat_b, y_b = ops.cat([ctx_u, ctx_c], 0), ops.cat([lat_u, lat_c], 0), ops.cat([y, y], 0)

        def unet(x_in, lat, ctx, yy, c_noise):
            inp = ops.cat([x_in, lat], 1)
            steps = Tensor(np.full((inp.shape[0],), c_noise, np.float32))
            return self.unet(inp, steps, ctx, yy, t)

        def denoise(x, sigma: float):
            c_skip, c_out, c_in, c_noise = (float(v) for v in v_scalings(sigma))
            x_in = x * c_in
            if batched:
                out = unet(ops.cat([x_in, x_in], 0), lat_b, ctx_b, y_b, c_noise)
                f = guide(out[:t], out[t:], scale_t)
            elif guided:
                f = guide(unet(x_in, lat_u, ctx_u, y, c_noise), unet(x_in, lat_c, ctx_c, y, c_noise), scale_t)
            else:
                f = unet(x_in, lat_c, ctx_c, y, c_noise)
            return x * c_skip + f * c_out

        return denoise

    # --------------------------------------------------------------------------------------------- decode
    def decode(self, latents: Tensor, chunk: int, progress: bool = True) -> np.ndarray:
        """(T, z, h, w) latents -> (T, H, W, 3) float frames in [0, 1]. Each chunk of ``chunk`` frames is
        decoded on its own: the decoder's temporal convs zero-pad at every chunk border (chunk = T decodes
        the video in one piece, as the original with decoding_t = T)."""
        z = latents / self.cfg.vae.scale_factor
        t = z.shape[0]
        out = []
        for i in tqdm(range(0, t, chunk), desc="decoding", disable=not progress):
            part = z[i:i + chunk]
            out.append(self.vae.decode(part, part.shape[0]).asnumpy())
        return _to_frames(np.concatenate(out, 0))

    def decode_windowed(self, latents: Tensor, window: int, stride: int, progress: bool = True,
                        reflect: bool = False) -> np.ndarray:
        """Decode overlapping temporal windows and blend them with linear ramps (ExVideo's ``decode_video``):
        memory is that of one window whatever the length, and no window border shows a seam. ``reflect``:
        the overlap (window − stride frames) is mirrored at both ends first and cut off after, so the first
        and last frames are blended from as many windows as every other frame."""
        z = latents / self.cfg.vae.scale_factor
        n = z.shape[0]
        pad = min(window - stride, n - 1) if reflect else 0
        if pad:  # frames pad..1, 0..n-1, n-2..n-1-pad
            order = list(range(pad, 0, -1)) + list(range(n)) + list(range(n - 2, n - 2 - pad, -1))
            z = ops.gather(z, Tensor(np.asarray(order, np.int32)), 0)
        t = z.shape[0]
        acc, weight = None, np.zeros((t, 1, 1, 1), np.float64)
        for start, end in tqdm(window_spans(t, window, stride), desc="decoding", disable=not progress):
            part = self.vae.decode(z[start:end], end - start).asnumpy().astype(np.float64)
            w = window_weights(start, end, t, window).reshape(-1, 1, 1, 1)
            if acc is None:
                acc = np.zeros((t,) + part.shape[1:], np.float64)
            acc[start:end] += part * w
            weight[start:end] += w
        frames = _to_frames((acc / weight).astype(np.float32))
        return frames[pad:t - pad] if pad else frames

    # ----------------------------------------------------------------------------------------------- call
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
        - ``mask_frames`` at ``mask_frame_ids``: keyframes, re-noised to the current σ before every step.
        """
        if output_type not in OUTPUT_TYPES:
            raise PipelineError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        image = load_image(image)
        settings = resolve_settings(self.cfg, image.shape[:2], dtype=self.dtype, latents_given=latents is not None,
                                    input_video_given=input_video is not None,
                                    mask_frames_given=mask_frames is not None, **options)
        st, s = settings, self.cfg.sampling
        rng = np.random.default_rng(st.seed)
        f = latent_factor(self.cfg)
        latent_shape = (st.num_frames, self.cfg.vae.z_channels, st.height // f, st.width // f)
        if latents is None:
            noise = rng.standard_normal(latent_shape).astype(np.float32)
        else:
            noise = np.asarray(latents.asnumpy() if isinstance(latents, Tensor) else latents, np.float32)
            noise = noise.reshape(noise.shape[-4:]) if noise.ndim == 5 and noise.shape[0] == 1 else noise
            if noise.shape != latent_shape:
                raise PipelineError(f"latents must have shape {latent_shape} (frames, channels, h, w), got {noise.shape}")
        t0 = time.perf_counter()

        clip = self.encode_image(image)
        sized = resize(image, st.width, st.height)
        if sized is not image:
            logger.info("resized the image from %dx%d to %dx%d", image.shape[1], image.shape[0], st.width, st.height)
        cond_latent = self.encode_condition(sized, st.noise_aug_strength, rng)
        ids = added_time_ids(st.fps, st.motion_bucket_id, st.noise_aug_strength)[None]
        vector = added_time_vector(Tensor(ids), self.cfg.conditioning.addition_time_embed_dim)

        if st.denoising_strength < 1.0:
            sigmas = karras_sigmas_strength(st.num_inference_steps, s.sigma_min, s.sigma_max, s.rho,
                                            st.denoising_strength)
            video = self.encode_video(input_video, st.num_frames, st.width, st.height)
            st.input_video_frames = st.num_frames
            x = video + Tensor(noise * np.float32(sigmas[0]))  # add_noise: x0 + σ0·ε
        else:
            sigmas = karras_sigmas(st.num_inference_steps, s.sigma_min, s.sigma_max, s.rho)
            x = Tensor(noise * np.float32(initial_noise_scale(sigmas[0])))

        guided = uses_guidance(st.min_guidance_scale, st.max_guidance_scale)
        denoiser = self.make_denoiser(clip, cond_latent, vector, st.num_frames,
                                      frame_scales(st.min_guidance_scale, st.max_guidance_scale, st.num_frames),
                                      guided, st.cfg_mode)
        if st.mask_frame_ids:
            keys = self.encode_video(mask_frames, len(st.mask_frame_ids), st.width, st.height, what="mask_frames")
            denoiser = keyframe_denoiser(denoiser, keys, st.mask_frame_ids, noise)
        t1 = time.perf_counter()
        x = sample_euler(denoiser, x, sigmas, disable=not progress)
        t2 = time.perf_counter()
        st.timings = {"conditioning_s": t1 - t0, "sampling_s": t2 - t1}
        if st.post_normalize or st.contrast_enhance_scale != 1.0:
            x = post_process_latents(x, st.post_normalize, st.contrast_enhance_scale)
        if output_type == "latent":
            return Generation(x.asnumpy(), st)
        if st.decode_window is not None:
            frames = self.decode_windowed(x, st.decode_window, st.decode_stride, progress, st.decode_reflect)
        else:
            frames = self.decode(x, st.decode_chunk_size, progress)
        st.timings["decoding_s"] = time.perf_counter() - t2
        return Generation(to_uint8(frames) if output_type == "np" else frames.astype(np.float32), st)

    def encode_video(self, frames, count: int, width: int, height: int, what: str = "input_video") -> Tensor:
        """Frames (path, folder, list or array) resized to width×height -> latents × the encode scale."""
        frames = load_frames(frames)
        if len(frames) != count:
            raise PipelineError(f"{what} has {len(frames)} frames, expected {count}")
        frames = np.stack([resize(fr, width, height) for fr in frames])
        return self.encode_frames(frames) * self.cfg.vae.encode_scale
