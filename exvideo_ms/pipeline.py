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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

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

logger = logging.getLogger(__name__)

CFG_MODES = ("batch", "sequential")
OUTPUT_TYPES = ("np", "float", "latent")


class PipelineError(ValueError):
    """Arguments the pipeline cannot run with."""


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
    contrast_enhance_scale: float = 1.0
    post_normalize: bool = False
    denoising_strength: float = 1.0
    input_video_frames: int = 0
    mask_frame_ids: tuple = ()
    timings: dict = field(default_factory=dict)


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


def _check_positive(name: str, value) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
        raise PipelineError(f"{name} must be an integer >= 1, got {value!r}")


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
        self.last_settings: Optional[Settings] = None

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

    # ------------------------------------------------------------------------------------------- geometry
    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: the VAE's 2^(levels−1) times the UNet's 2^(levels−1)."""
        return 2 ** (len(self.cfg.vae.ch_mult) - 1) * 2 ** (len(self.cfg.unet.channel_mult) - 1)

    @property
    def latent_factor(self) -> int:
        return 2 ** (len(self.cfg.vae.ch_mult) - 1)

    def resolve_size(self, image_hw, height: Optional[int], width: Optional[int]):
        m = self.size_multiple
        h0, w0 = image_hw
        if height is None:
            height = max(m, int(round(h0 / m)) * m)
            if height != h0:
                logger.info("height %d is not a multiple of %d: generating at %d (the image is resized, not cropped)",
                            h0, m, height)
        if width is None:
            width = max(m, int(round(w0 / m)) * m)
            if width != w0:
                logger.info("width %d is not a multiple of %d: generating at %d (the image is resized, not cropped)",
                            w0, m, width)
        for name, v in (("height", height), ("width", width)):
            if not isinstance(v, (int, np.integer)) or v < m or v % m:
                raise PipelineError(f"{name} must be a positive multiple of {m} for this model, got {v!r}")
        return int(height), int(width)

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

    def decode_windowed(self, latents: Tensor, window: int, stride: int, progress: bool = True) -> np.ndarray:
        """Decode overlapping temporal windows and blend them with linear ramps (ExVideo's ``decode_video``):
        memory is that of one window whatever the length, and no window border shows a seam."""
        z = latents / self.cfg.vae.scale_factor
        t = z.shape[0]
        acc, weight = None, np.zeros((t, 1, 1, 1), np.float64)
        for start, end in tqdm(window_spans(t, window, stride), desc="decoding", disable=not progress):
            part = self.vae.decode(z[start:end], end - start).asnumpy().astype(np.float64)
            w = window_weights(start, end, t, window).reshape(-1, 1, 1, 1)
            if acc is None:
                acc = np.zeros((t,) + part.shape[1:], np.float64)
            acc[start:end] += part * w
            weight[start:end] += w
        return _to_frames((acc / weight).astype(np.float32))

    # ----------------------------------------------------------------------------------------------- call
    def __call__(self, image, height: Optional[int] = None, width: Optional[int] = None,
                 num_frames: Optional[int] = None, num_inference_steps: Optional[int] = None,
                 min_guidance_scale: Optional[float] = None, max_guidance_scale: Optional[float] = None,
                 fps: Optional[int] = None, motion_bucket_id: Optional[int] = None,
                 noise_aug_strength: Optional[float] = None, decode_chunk_size: Optional[int] = None,
                 seed: Optional[int] = None, latents=None, output_type: str = "np", cfg_mode: str = "batch",
                 progress: bool = True, decode_window: Optional[int] = None, decode_stride: Optional[int] = None,
                 contrast_enhance_scale: Optional[float] = None, post_normalize: Optional[bool] = None,
                 denoising_strength: float = 1.0, input_video=None, mask_frames=None,
                 mask_frame_ids: Optional[Sequence[int]] = None) -> np.ndarray:
        """Generate a video from ``image``; see the module docstring. ExVideo options:

        - ``contrast_enhance_scale``, ``post_normalize``: latent post-processing before decoding;
        - ``decode_window``/``decode_stride``: blended overlapping temporal windows (default from the config;
          an explicit ``decode_chunk_size`` selects plain chunked decoding instead);
        - ``denoising_strength`` < 1 with ``input_video`` (frames resized to the output size): video-to-video
          refinement, starting from the encoded video noised to the schedule's first σ;
        - ``mask_frames`` at ``mask_frame_ids``: keyframes, re-noised to the current σ before every step.
        """
        s = self.cfg.sampling
        num_frames = s.num_frames if num_frames is None else num_frames
        steps = s.num_steps if num_inference_steps is None else num_inference_steps
        min_cfg = s.min_cfg if min_guidance_scale is None else float(min_guidance_scale)
        max_cfg = s.max_cfg if max_guidance_scale is None else float(max_guidance_scale)
        fps = s.fps if fps is None else fps
        motion_bucket_id = s.motion_bucket_id if motion_bucket_id is None else motion_bucket_id
        noise_aug = s.noise_aug_strength if noise_aug_strength is None else float(noise_aug_strength)
        contrast = s.contrast_enhance_scale if contrast_enhance_scale is None else float(contrast_enhance_scale)
        post_normalize = s.post_normalize if post_normalize is None else bool(post_normalize)
        if decode_chunk_size is None and decode_window is None:
            decode_window, decode_stride = s.decode_window, s.decode_stride
        chunk = decode_chunk_size or s.decode_chunk_size or num_frames
        _check_positive("num_frames", num_frames)
        _check_positive("num_inference_steps", steps)
        _check_positive("decode_chunk_size", decode_chunk_size)
        _check_positive("decode_window", decode_window)
        if decode_window is not None:
            decode_stride = decode_stride or max(1, decode_window // 2)
            _check_positive("decode_stride", decode_stride)
            if decode_stride > decode_window:
                raise PipelineError(f"decode_stride {decode_stride} > decode_window {decode_window} leaves frames out")
        if cfg_mode not in CFG_MODES:
            raise PipelineError(f"cfg_mode must be one of {CFG_MODES}, got {cfg_mode!r}")
        if output_type not in OUTPUT_TYPES:
            raise PipelineError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        if self.cfg.exvideo is not None and num_frames > self.cfg.exvideo.num_positions:
            raise PipelineError(f"num_frames {num_frames} exceeds this model's maximum of "
                                f"{self.cfg.exvideo.num_positions} frames (its learned position table)")
        if not 0.0 < denoising_strength <= 1.0:
            raise PipelineError(f"denoising_strength must be in (0, 1], got {denoising_strength}")
        if (input_video is not None) != (denoising_strength < 1.0):
            raise PipelineError("video-to-video needs both input_video and denoising_strength < 1 "
                                f"(got input_video={'given' if input_video is not None else None}, "
                                f"denoising_strength={denoising_strength})")
        mask_frame_ids = tuple(int(i) for i in (mask_frame_ids or ()))
        if (mask_frames is None) != (not mask_frame_ids):
            raise PipelineError("keyframes need both mask_frames and mask_frame_ids")
        if any(not 0 <= i < num_frames for i in mask_frame_ids):
            raise PipelineError(f"mask_frame_ids {list(mask_frame_ids)} must lie in [0, {num_frames})")

        image = load_image(image)
        height, width = self.resolve_size(image.shape[:2], height, width)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2 ** 31))
        rng = np.random.default_rng(seed)
        settings = Settings(height, width, num_frames, steps, min_cfg, max_cfg, fps, motion_bucket_id, noise_aug,
                            chunk, seed, cfg_mode, self.dtype, latents is not None, decode_window, decode_stride,
                            contrast, post_normalize, denoising_strength, 0, mask_frame_ids)
        f = self.latent_factor
        latent_shape = (num_frames, self.cfg.vae.z_channels, height // f, width // f)
        t0 = time.perf_counter()

        clip = self.encode_image(image)
        sized = resize(image, width, height)
        if sized is not image:
            logger.info("resized the image from %dx%d to %dx%d", image.shape[1], image.shape[0], width, height)
        cond_latent = self.encode_condition(sized, noise_aug, rng)
        ids = added_time_ids(fps, motion_bucket_id, noise_aug)[None]
        vector = added_time_vector(Tensor(ids), self.cfg.conditioning.addition_time_embed_dim)

        if latents is None:
            noise = rng.standard_normal(latent_shape).astype(np.float32)
        else:
            noise = np.asarray(latents.asnumpy() if isinstance(latents, Tensor) else latents, np.float32)
            noise = noise.reshape(noise.shape[-4:]) if noise.ndim == 5 and noise.shape[0] == 1 else noise
            if noise.shape != latent_shape:
                raise PipelineError(f"latents must have shape {latent_shape} (frames, channels, h, w), got {noise.shape}")
        if denoising_strength < 1.0:
            sigmas = karras_sigmas_strength(steps, s.sigma_min, s.sigma_max, s.rho, denoising_strength)
            video = self.encode_video(input_video, num_frames, width, height)
            settings.input_video_frames = num_frames
            x = video + Tensor(noise * np.float32(sigmas[0]))  # add_noise: x0 + σ0·ε
        else:
            sigmas = karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho)
            x = Tensor(noise * np.float32(initial_noise_scale(sigmas[0])))

        guided = uses_guidance(min_cfg, max_cfg)
        denoiser = self.make_denoiser(clip, cond_latent, vector, num_frames,
                                      frame_scales(min_cfg, max_cfg, num_frames), guided, cfg_mode)
        if mask_frame_ids:
            keys = self.encode_video(mask_frames, len(mask_frame_ids), width, height, what="mask_frames")
            denoiser = keyframe_denoiser(denoiser, keys, mask_frame_ids, noise)
        t1 = time.perf_counter()
        x = sample_euler(denoiser, x, sigmas, disable=not progress)
        t2 = time.perf_counter()
        settings.timings = {"conditioning_s": t1 - t0, "sampling_s": t2 - t1}
        self.last_settings = settings
        if post_normalize or contrast != 1.0:
            x = post_process_latents(x, post_normalize, contrast)
        if output_type == "latent":
            return x.asnumpy()
        if decode_window is not None:
            frames = self.decode_windowed(x, decode_window, decode_stride, progress)
        else:
            frames = self.decode(x, chunk, progress)
        settings.timings["decoding_s"] = time.perf_counter() - t2
        return to_uint8(frames) if output_type == "np" else frames.astype(np.float32)

    def encode_video(self, frames, count: int, width: int, height: int, what: str = "input_video") -> Tensor:
        """Frames (path, folder, list or array) resized to width×height -> latents × the encode scale."""
        frames = load_frames(frames)
        if len(frames) != count:
            raise PipelineError(f"{what} has {len(frames)} frames, expected {count}")
        frames = np.stack([resize(fr, width, height) for fr in frames])
        return self.encode_frames(frames) * self.cfg.vae.encode_scale

    def settings_dict(self) -> dict:
        return asdict(self.last_settings) if self.last_settings else {}
