"""Image to video with Stable Video Diffusion / ExVideo on MindSpore (Ascend, GPU or CPU).

  python image_to_video.py --SVD.config models/svd_xt.yaml --image photo.png
  python image_to_video.py --config configs/demo/i2v.yaml                # every option from a YAML file
  python image_to_video.py --SVD.config models/exvideo_svd_128f.yaml --SVD.checkpoint '[base.ckpt, ext.ckpt]' \\
      --image photo.png --gif

Flags follow mindone's SVD example (--mode, --SVD.config, --SVD.checkpoint, --SVD.num_frames, --SVD.fps,
--SVD.motion_bucket_id, --SVD.noise_aug_strength, --SVD.decode_chunk_size, --SVD.sampling_steps, --image,
--output_dir, --seed). Without --SVD.checkpoint the checkpoint beside the config is used (svd_tools/convert.py
writes the pair m.yaml / m.ckpt).

Writes <output_dir>/<time>_<image>_s<seed>.mp4 and a .json sidecar with every setting (and, on request, a GIF
and PNG frames); a name another run already has gets -1, -2, ... Every option is checked before the weights
are loaded: bad input exits with code 2 and one line naming the problem, and writes nothing; so does Ctrl-C.
"""
from __future__ import annotations

import datetime
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Optional, Union

logger = logging.getLogger("image_to_video")

AMP_LEVELS = {"O0": "fp32", "O2": None}  # O2: the chip's low-precision dtype (bf16 on Atlas A2, fp16 elsewhere)


@dataclass
class SVDOptions:
    """Model and sampling options; unset ones come from the model config's sampling section."""

    config: str = "configs/svd_xt.yaml"
    """model YAML (architecture and sampling defaults)"""
    checkpoint: Optional[Union[str, List[str]]] = None
    """weights: one file, or a list whose later files replace earlier ones' tensors (base + ExVideo); default: the
    .ckpt beside the config"""
    num_frames: Optional[int] = None
    """frames to generate (>= 1); past the model's trained length (ExVideo: its table's rows) in temporal windows"""
    fps: Optional[int] = None
    """frames per second: conditions the model (as fps - 1) and sets the mp4's rate (>= 1)"""
    motion_bucket_id: Optional[int] = None
    """amount of motion the model is asked for (>= 0; SVD's default 127)"""
    noise_aug_strength: Optional[float] = None
    """noise added to the conditioning image (>= 0)"""
    decode_chunk_size: Optional[int] = None
    """frames per VAE decoder call (>= 1); selects chunked instead of windowed decoding"""
    sampling_steps: Optional[int] = None
    """Euler steps (>= 1)"""
    min_cfg: Optional[float] = None
    """guidance scale of the first frame (>= 0)"""
    max_cfg: Optional[float] = None
    """guidance scale of the last frame (>= 0; the scale ramps linearly between)"""
    amp_level: Optional[Literal["O0", "O2"]] = None
    """O0: float32; O2: the chip's low precision (bf16 on Atlas A2, fp16 elsewhere)"""
    dtype: Optional[Literal["fp32", "fp16", "bf16"]] = None
    """UNet and image-encoder dtype; default: bf16 on Atlas A2, fp16 on 910A, fp32 on GPU and CPU"""
    cfg_mode: Literal["batch", "sequential"] = "batch"
    """unconditional and conditional passes as one batch, or one after the other (half the memory)"""
    contrast_enhance_scale: Optional[float] = None
    """ExVideo: gain on the final latents (> 0)"""
    post_normalize: Optional[bool] = None
    """ExVideo: renormalise each frame's latents to the video's mean and std"""
    decode_window: Optional[int] = None
    """ExVideo: frames per overlapping decoding window (>= 1)"""
    decode_stride: Optional[int] = None
    """ExVideo: frames between window starts (1..decode_window)"""
    decode_reflect: Optional[bool] = None
    """windowed decoding: mirror the overlap at both ends (first and last frame blended like the others)"""
    denoising_strength: float = 1.0
    """video-to-video: the fraction of the schedule run from the noised input video (0 < s <= 1)"""
    input_video: Optional[str] = None
    """video-to-video: a video file or a folder of frames, resized to the output size"""
    mask_frames: Optional[List[str]] = None
    """keyframes: image files, one per --SVD.mask_frame_ids entry"""
    mask_frame_ids: Optional[List[int]] = None
    """keyframes: the frame index of each mask frame"""
    temporal_window: Optional[int] = None
    """long videos: frames per denoising window (1..the trained length; default: the trained length, used only
    when num_frames exceeds it)"""
    temporal_stride: Optional[int] = None
    """long videos: frames between window starts (1..temporal_window; default: half the window)"""
    noise_reschedule: Optional[bool] = None
    """long videos: FreeNoise's window-local shuffles of the initial noise (default: on with windows)"""
    lora: Optional[Union[List[str], str]] = None
    """a LoRA .safetensors file (PEFT/diffusers or kohya naming), or a list of them merged into the UNet in order"""
    lora_scale: Optional[Union[List[float], float]] = None
    """one scale for every --SVD.lora file or a list of one per file (default 1.0)"""


def build_parser():
    from jsonargparse import ActionConfigFile, ActionYesNo

    from exvideo_ms.cli import parser
    p = parser(__doc__)
    p.add_argument("--config", action=ActionConfigFile, help="YAML file holding any of these options")
    p.add_argument("--mode", type=Literal[0, 1], default=0, help="0: graph mode (compiled), 1: PyNative")
    p.add_argument("--device_target", type=Optional[Literal["Ascend", "GPU", "CPU"]], default=None,
                   help="device to run on (default: the best available)")
    p.add_argument("--SVD", type=SVDOptions, default=SVDOptions())
    p.add_argument("--image", type=str, required=True, help="conditioning image (any PIL-readable file)")
    p.add_argument("--height", type=Optional[int], default=None,
                   help="output height: a multiple of the model's size step (default: the config's, else the "
                        "image's rounded)")
    p.add_argument("--width", type=Optional[int], default=None, help="output width (as --height)")
    p.add_argument("--output_dir", type=str, default="outputs", help="folder for the video and its sidecar")
    p.add_argument("--seed", type=Optional[int], default=None, help="0 <= seed < 2^32 (default: random, recorded "
                                                                    "in the sidecar)")
    p.add_argument("--gif", action=ActionYesNo, default=False, help="also write an animated GIF")
    p.add_argument("--png_frames", action=ActionYesNo, default=False, help="also write every frame as PNG")
    p.add_argument("--compile_cache", type=Optional[str], default="auto",
                   help="graph mode: MindSpore's compile cache, one folder per configuration under this root "
                        "(auto: $XDG_CACHE_HOME/exvideo_ms/compile; null: off)")
    return p


def resolve_dtype(opts: SVDOptions, choices) -> str:
    """--SVD.dtype, else --SVD.amp_level, else the backend's inference dtype (bf16 on Atlas A2, fp16 on 910A,
    fp32 on GPU and CPU; exvideo_ms/backend.py)."""
    from exvideo_ms.cli import CommandError
    if opts.amp_level is not None and opts.amp_level not in AMP_LEVELS:
        raise CommandError(f"--SVD.amp_level must be O0 or O2, got {opts.amp_level!r}")
    amp = None
    if opts.amp_level is not None:
        amp = AMP_LEVELS[opts.amp_level] or choices.low_precision
    if opts.dtype is not None and amp is not None and opts.dtype != amp:
        raise CommandError(f"--SVD.dtype {opts.dtype} contradicts --SVD.amp_level {opts.amp_level} ({amp})")
    return opts.dtype or amp or choices.inference_dtype


def resolve_checkpoint(opts: SVDOptions):
    from exvideo_ms.checkpoint import CheckpointError
    if opts.checkpoint:
        paths = [Path(p) for p in opts.checkpoint] if isinstance(opts.checkpoint, list) else [Path(opts.checkpoint)]
        for p in paths:
            if not p.is_file():
                raise CheckpointError(f"--SVD.checkpoint {p}: no such file")
        return paths if isinstance(opts.checkpoint, list) else paths[0]
    beside = Path(opts.config).with_suffix(".ckpt")
    if beside.is_file():
        return beside
    raise CheckpointError(f"no checkpoint: pass --SVD.checkpoint, or place {beside} beside the config "
                          f"(svd_tools/convert.py writes such pairs)")


def resolve_loras(opts: SVDOptions) -> list:
    """[(LoRAFile, scale)] of --SVD.lora / --SVD.lora_scale, every file read now (before the weights load)."""
    from exvideo_ms import lora
    from exvideo_ms.cli import CommandError
    files = [opts.lora] if isinstance(opts.lora, str) else (opts.lora or [])
    scales = ([opts.lora_scale] if isinstance(opts.lora_scale, (int, float)) else opts.lora_scale
              if opts.lora_scale is not None else [1.0])
    if not files and opts.lora_scale is not None:
        raise CommandError("--SVD.lora_scale without --SVD.lora")
    if files and len(scales) not in (1, len(files)):
        raise CommandError(f"--SVD.lora_scale has {len(scales)} values for {len(files)} --SVD.lora files: give one "
                           f"for all or one per file")
    return [(lora.read(f), float(scales[0] if len(scales) == 1 else scales[i])) for i, f in enumerate(files)]


def sampling_options(args) -> dict:
    """The pipeline's options (its argument names) from the command line."""
    o: SVDOptions = args.SVD
    return dict(height=args.height, width=args.width, num_frames=o.num_frames, num_inference_steps=o.sampling_steps,
                min_guidance_scale=o.min_cfg, max_guidance_scale=o.max_cfg, fps=o.fps,
                motion_bucket_id=o.motion_bucket_id, noise_aug_strength=o.noise_aug_strength,
                decode_chunk_size=o.decode_chunk_size, seed=args.seed, cfg_mode=o.cfg_mode,
                contrast_enhance_scale=o.contrast_enhance_scale, post_normalize=o.post_normalize,
                decode_window=o.decode_window, decode_stride=o.decode_stride, decode_reflect=o.decode_reflect,
                denoising_strength=o.denoising_strength, mask_frame_ids=o.mask_frame_ids,
                temporal_window=o.temporal_window, temporal_stride=o.temporal_stride,
                noise_reschedule=o.noise_reschedule)


def generate(args) -> dict:
    """Check everything, run the pipeline, write the outputs; returns the sidecar dictionary."""
    import mindspore as ms
    import numpy as np

    import exvideo_ms
    from exvideo_ms import allocator, backend, media
    from exvideo_ms.cli import CommandError
    from exvideo_ms.config import load_config
    from exvideo_ms.settings import resolve_settings

    device = backend.setup_device(args.device_target, mode=args.mode)
    host_allocator = allocator.active()
    logger.info("device_target %s%s, %s mode, %s allocator", device,
                " (best available)" if args.device_target is None else "", "graph" if args.mode == 0 else "PyNative",
                host_allocator)
    opts: SVDOptions = args.SVD
    # every check before the weights are loaded
    cfg = load_config(opts.config)
    dtype = resolve_dtype(opts, backend.choices())
    image = media.load_image(args.image)
    options = sampling_options(args)
    planned = resolve_settings(cfg, image.shape[:2], dtype=dtype, input_video_given=opts.input_video is not None,
                               mask_frames_given=opts.mask_frames is not None, **options)
    video = media.load_frames(opts.input_video) if opts.input_video is not None else None
    if video is not None and len(video) != planned.num_frames:
        raise CommandError(f"--SVD.input_video has {len(video)} frames, expected {planned.num_frames} "
                           f"(--SVD.num_frames)")
    keys = media.load_frames(opts.mask_frames) if opts.mask_frames is not None else None
    if keys is not None and len(keys) != len(planned.mask_frame_ids):
        raise CommandError(f"--SVD.mask_frames has {len(keys)} images for {len(planned.mask_frame_ids)} "
                           f"--SVD.mask_frame_ids")
    checkpoint = resolve_checkpoint(opts)
    loras = resolve_loras(opts)
    out_dir = media.check_output_dir(args.output_dir)
    cache_root = backend.compile_cache_root(args.compile_cache, "--compile_cache") if args.mode == 0 else None

    from exvideo_ms.pipeline import SVDPipeline
    pipe = SVDPipeline.from_config(cfg, checkpoint, dtype=dtype, loras=loras)
    cache, new_cache = None, None
    if cache_root is not None:
        # everything that shapes a compiled graph; the weights do not (the checkpoint is left out)
        key = {"model": asdict(pipe.cfg), "dtype": dtype, "device": device, "image_hw": image.shape[:2],
               "height": args.height, "width": args.width,
               "SVD": {k: v for k, v in asdict(opts).items() if k not in ("config", "checkpoint", "lora", "lora_scale")}}
        path = backend.compile_cache_dir(cache_root, key)
        reused = backend.enable_compile_cache(path)
        cache, new_cache = {"path": str(path), "reused": reused}, (None if reused else path)
    outputs = None
    try:
        result = pipe.generate(image, output_type="latent", input_video=video, mask_frames=keys, **options)
        settings = asdict(result.settings)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        outputs = media.RunOutputs(out_dir, f"{stamp}_{Path(args.image).stem}_s{settings['seed']}")
        targets = {"mp4": outputs.add(outputs.path(".mp4"))}
        if args.gif:
            targets["gif"] = outputs.add(outputs.path(".gif"))
        if args.png_frames:
            targets["png_frames"] = outputs.add(outputs.path("_frames"))
        # decoded frames stream to the writers as each decoding window completes: memory of one window
        t0 = time.perf_counter()
        blocks = (media.to_uint8(b) for b in pipe.decode_stream(ms.Tensor(result.frames), result.settings))
        written = {k: str(v) for k, v in media.write_video(blocks, targets, settings["fps"]).items()}
        settings["timings"]["decoding_and_writing_s"] = time.perf_counter() - t0
        sidecar = {
            "outputs": written, "image": str(args.image), "config": str(opts.config),
            "checkpoint": [str(c) for c in checkpoint] if isinstance(checkpoint, list) else str(checkpoint),
            "model": pipe.cfg.name, "device_target": device, "mode": args.mode, "allocator": host_allocator,
            "compile_cache": cache,
            "lora": [{"file": f.path, "naming": f.naming, "layers": len(f.updates), "scale": s} for f, s in loras],
            "settings": settings,
            "options": {**{k: v for k, v in vars(args).items() if k not in ("SVD", "config", "__path__")},
                        "SVD": asdict(opts)},
            "command": " ".join(sys.argv),
            "versions": {"exvideo_ms": exvideo_ms.__version__, "mindspore": ms.__version__, "numpy": np.__version__},
        }
        outputs.write_sidecar(json.dumps(sidecar, indent=2, default=str))
    except BaseException:  # failures and interrupts alike: remove what this run wrote
        if outputs is not None:
            outputs.rollback()
        if new_cache is not None:
            shutil.rmtree(new_cache, ignore_errors=True)
        raise
    logger.info("wrote %s (%d frames, %dx%d, seed %d) and %s.json", written["mp4"], settings["num_frames"],
                settings["width"], settings["height"], settings["seed"], outputs.stem)
    return sidecar


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from exvideo_ms import cli
    return cli.command(argv, build_parser, generate)


if __name__ == "__main__":
    from exvideo_ms.allocator import relaunch
    relaunch()  # first: jemalloc is preloaded into a fresh process (exvideo_ms/allocator.py)
    sys.exit(main())
