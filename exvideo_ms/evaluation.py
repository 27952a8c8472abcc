"""Measurements of a model on held-out data: the denoising loss at fixed noise levels, simple statistics of
videos (first-frame PSNR, frame-to-frame motion, drift from the first frame), and object-level measures for
clips whose objects are known (scripts/make_synthetic_dataset.py writes their label maps): the object region's
PSNR, its colour in CIELAB and whether it is still there in every frame, and how much of each frame shows a
colour the input does not have (objects the model made up)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
from mindspore import Tensor

# noise levels of the held-out denoising loss: the EDM range from nearly clean to the sampler's largest steps
EVAL_SIGMAS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def denoising_loss(unet, addition_time_embed_dim: int, latents: np.ndarray, clip_embeddings: np.ndarray,
                   fps: float, motion_bucket_id: float, encode_scale: float, sigmas: Sequence[float] = EVAL_SIGMAS,
                   seed: int = 0) -> float:
    """Mean x0-space MSE of the v-prediction denoiser (diffusion.denoiser.denoise) over held-out clips ×
    ``sigmas`` (the same noise for every model compared). latents (N, T, C, h, w) × encode scale; clip_embeddings
    (N, 1, D) of each first frame; the condition is each clip's clean first latent."""
    from mindspore import ops

    from exvideo_ms.diffusion.denoiser import denoise
    from exvideo_ms.models.conditioner import added_time_ids, added_time_vector, repeat_frames
    rng = np.random.default_rng(seed)
    n = len(sigmas)
    sig = Tensor(np.asarray(sigmas, np.float32).reshape(n, 1, 1, 1))
    vector = added_time_vector(Tensor(np.repeat(added_time_ids(fps, motion_bucket_id, 0.0)[None], n, 0)),
                               addition_time_embed_dim)
    total = []
    for clip, emb in zip(latents, clip_embeddings):
        t = clip.shape[0]
        noise = rng.standard_normal((n,) + clip.shape).astype(np.float32)
        x0 = np.repeat(clip[None].astype(np.float32), n, 0)
        x = Tensor((x0 + np.asarray(sigmas, np.float32).reshape(n, 1, 1, 1, 1) * noise).reshape((n * t,) + clip.shape[1:]))
        rep = lambda a: repeat_frames(Tensor(np.repeat(a[None].astype(np.float32), n, 0)), t)  # noqa: E731
        pred = denoise(unet, x, repeat_frames(sig, t), rep(clip[0] / encode_scale), rep(emb),
                       repeat_frames(vector, t), t, log=ops.log)
        total.append(float(((pred.asnumpy().reshape(x0.shape) - x0) ** 2).mean()))
    return float(np.mean(total))


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB between two images of the same range (uint8 by default)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(peak ** 2 / mse))


def motion(frames: np.ndarray) -> float:
    """Mean absolute change between consecutive frames, frames (T, H, W, 3) uint8, on a 0..255 scale."""
    f = frames.astype(np.float64)
    return float(np.abs(f[1:] - f[:-1]).mean())


def drift(frames: np.ndarray) -> np.ndarray:
    """Mean absolute difference of every frame to the first, (T,), on a 0..255 scale."""
    f = frames.astype(np.float64)
    return np.abs(f - f[:1]).mean(axis=(1, 2, 3))


def heldout_conditioning(model, cfg, root: Union[str, Path], frames: int, clips: int, size: int):
    """Scaled latents (N, T, C, h, w) and first-frame CLIP embeddings (N, 1, D) of the first ``clips`` clips
    of a dataset folder (metadata.json), encoded by the model's own VAE and image encoder, from frame 0."""
    from exvideo_ms.data.dataset import DataOptions, VideoClipSource
    from exvideo_ms.models.conditioner import Conditioner
    src = VideoClipSource(DataOptions(path=str(root), num_frames=frames, start="fixed", height=size, width=size,
                                      fps=float(cfg.sampling.fps), num_workers=0), seed=0)
    cond = Conditioner(model.vae, model.image_encoder, cfg)
    lat, emb = [], []
    for clip in src.clips[:clips]:
        x, _, _ = src.load(clip, np.random.default_rng(0))
        lat.append(cond.latents(x).asnumpy())
        emb.append(cond.clip_embedding(x[:1]).asnumpy()[0])
    return np.stack(lat), np.stack(emb)


def data_ranges(root: Union[str, Path], frames: int) -> dict:
    """Motion (min, max over clips) and per-frame drift (min and max over clips) of the first ``frames`` frames
    of every clip of a dataset folder: the ranges generated videos are held to."""
    from exvideo_ms.media import read_video
    root = Path(root)
    motions, drifts = [], []
    for item in json.loads((root / "metadata.json").read_text()):
        v = read_video(root / item["path"], count=frames)
        motions.append(motion(v))
        drifts.append(drift(v))
    return {"motion": [float(min(motions)), float(max(motions))],
            "drift_max": np.max(np.stack(drifts), 0).tolist(), "drift_min": np.min(np.stack(drifts), 0).tolist()}


# ------------------------------------------------------------------------------------------------ objects
# sRGB (IEC 61966-2-1) to CIE 1976 L*a*b* under D65, 2° observer
SRGB_TO_XYZ = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
D65_WHITE = np.array([0.95047, 1.0, 1.08883])
LAB_EPSILON, LAB_KAPPA = 216 / 24389, 24389 / 27  # CIE's exact constants for the cube-root knee
# an object is "present" in a frame when the largest region of its colour covers this range of its input area
PRESENT_AREA_RANGE = (0.25, 4.0)
# pixels within this ΔE*ab of the object's input colour may belong to it (distinct colours differ by > 20)
TRACK_MAX_DELTA_E = 20.0


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) sRGB on 0..255 -> (..., 3) L*a*b* (L in 0..100)."""
    c = np.asarray(rgb, np.float64) / 255.0
    linear = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = linear @ SRGB_TO_XYZ.T / D65_WHITE
    f = np.where(xyz > LAB_EPSILON, np.cbrt(xyz), (LAB_KAPPA * xyz + 16) / 116)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


def delta_e(lab_a: np.ndarray, lab_b: np.ndarray) -> np.ndarray:
    """CIE 1976 colour difference ΔE*ab (Euclidean in L*a*b*); about 2.3 is a just-noticeable difference."""
    return np.linalg.norm(np.asarray(lab_a, np.float64) - np.asarray(lab_b, np.float64), axis=-1)


def object_masks(labels: np.ndarray, erode: int = 1) -> dict:
    """{object id: (H, W) bool} from one frame's label map (0 = background), each eroded by ``erode`` pixels
    so antialiased borders (a blend with the background) stay out; an object too small to erode keeps its
    pixels."""
    import cv2
    out = {}
    kernel = np.ones((2 * erode + 1, 2 * erode + 1), np.uint8)
    for k in np.unique(labels):
        if k == 0:
            continue
        mask = (labels == k).astype(np.uint8)
        inner = cv2.erode(mask, kernel) if erode else mask
        out[int(k)] = (inner if inner.any() else mask).astype(bool)
    return out


def object_psnr(frame: np.ndarray, image: np.ndarray, mask: np.ndarray, peak: float = 255.0) -> float:
    """PSNR in dB of ``frame`` against ``image`` over the pixels of ``mask`` only."""
    if not mask.any():
        raise ValueError("object_psnr: the mask selects no pixel")
    return psnr(frame[mask], image[mask], peak)


def track_object(frames: np.ndarray, colour_lab: np.ndarray, area: int,
                 max_delta_e: float = TRACK_MAX_DELTA_E, area_range=PRESENT_AREA_RANGE) -> dict:
    """Find an object of input colour ``colour_lab`` and input ``area`` (pixels) in every frame (T, H, W, 3):
    the largest 8-connected region of pixels within ``max_delta_e`` of the colour. Returns per-frame arrays:
    ``area`` of that region, ``delta_e`` of its mean colour to the input colour (inf if none), and ``present``
    (its area within ``area_range`` × the input area)."""
    import cv2
    areas, errors = [], []
    for frame in frames:
        lab = srgb_to_lab(frame)
        close = (delta_e(lab, colour_lab) <= max_delta_e).astype(np.uint8)
        count, comp, stats, _ = cv2.connectedComponentsWithStats(close, connectivity=8)
        if count <= 1:
            areas.append(0)
            errors.append(float("inf"))
            continue
        best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        areas.append(int(stats[best, cv2.CC_STAT_AREA]))
        errors.append(float(delta_e(lab[comp == best].mean(0), colour_lab)))
    areas = np.asarray(areas)
    lo, hi = area_range
    return {"area": areas, "delta_e": np.asarray(errors), "present": (areas >= lo * area) & (areas <= hi * area)}


# elements of one (colours × input colours) distance block in foreign_area: 64 MB of float64, whatever the frame size
FOREIGN_BLOCK_ELEMENTS = 8 * 2 ** 20


def foreign_area(frames: np.ndarray, image: np.ndarray, max_delta_e: float = TRACK_MAX_DELTA_E) -> np.ndarray:
    """Share of each frame's pixels (T,) whose colour is farther than ``max_delta_e`` ΔE*ab from every colour of
    ``image`` (frames (T, H, W, 3), image (H, W, 3), uint8): what no input object and no input background explains,
    such as an object of a new colour. Its blends with the background are counted only where they, too, are
    farther than ``max_delta_e`` from every input colour."""
    # the input's colours, rounded to 0.5 ΔE (well under max_delta_e) so a smooth background gives a short list
    palette = np.unique(np.round(srgb_to_lab(image.reshape(-1, 3)) * 2) / 2, axis=0)
    palette_sq = (palette ** 2).sum(1)
    # each distinct colour of the frames once (a 32-frame 64x64 clip: 7k-18k colours for 131k pixels, measured)
    packed = np.asarray(frames, np.int32).reshape(-1, 3) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    colours, which = np.unique(packed, return_inverse=True)
    lab = srgb_to_lab(np.stack([colours >> 16, (colours >> 8) & 255, colours & 255], -1))
    far = np.empty(len(lab), bool)
    rows = max(1, FOREIGN_BLOCK_ELEMENTS // len(palette))  # colours per (colours × input colours) product
    for start in range(0, len(lab), rows):
        part = lab[start:start + rows]
        # squared distance to the nearest input colour: |a|² + |b|² − 2a·b
        nearest = ((part ** 2).sum(1)[:, None] + palette_sq[None] - 2 * part @ palette.T).min(1)
        far[start:start + rows] = nearest > max_delta_e ** 2
    return far[which.reshape(len(frames), -1)].mean(1)


def object_measures(frames: np.ndarray, image: np.ndarray, labels: np.ndarray) -> list:
    """For every object of the input's label map ``labels`` (H, W): the object-region PSNR of frame 0 against
    ``image``, and its track through ``frames`` (``track_object``): one dict per object, by id."""
    out = []
    for k, mask in object_masks(labels).items():
        colour = srgb_to_lab(image[mask]).mean(0)
        track = track_object(frames, colour, int((labels == k).sum()))
        out.append({"id": k, "first_frame_psnr": object_psnr(frames[0], image, mask), "colour_lab": colour.tolist(),
                    **{key: value.tolist() for key, value in track.items()}})
    return out


def trackable_objects(clip: np.ndarray, labels: np.ndarray) -> set:
    """Ids of the objects of ``labels`` (the clip's first label map) that ``object_measures`` finds in every frame
    of their own ``clip``: the ones a generated video can be held to (an object whose colour is close to the
    background's merges with it)."""
    return {o["id"] for o in object_measures(clip, clip[0], labels) if all(o["present"])}


def object_ranges(root: Union[str, Path], frames: int) -> dict:
    """``object_measures`` of every object of every clip of a dataset folder (its masks/ from
    make_synthetic_dataset.py), each clip against its own first frame: the ranges generated videos are held to
    (the data's own colour changes come from mp4 compression and overlapping objects). Returns the largest and
    95th-percentile per-frame colour ΔE of present objects, the fraction of (object, frame) pairs present and the
    largest ``foreign_area`` of any frame."""
    from exvideo_ms.data.object_masks import read_labels
    from exvideo_ms.media import read_video
    root = Path(root)
    errors, present, foreign = [], [], []
    for item in json.loads((root / "metadata.json").read_text()):
        labels = read_labels(root, item["path"])[0]
        video = read_video(root / item["path"], count=frames)
        for obj in object_measures(video, video[0], labels):
            found = np.asarray(obj["present"])
            present.extend(found.tolist())
            errors.extend(np.asarray(obj["delta_e"])[found].tolist())
        foreign.append(float(foreign_area(video, video[0]).max()))
    return {"delta_e_max": float(max(errors)),
            "delta_e_p95": float(np.percentile(errors, 95)), "present_fraction": float(np.mean(present)),
            "foreign_area_max": float(max(foreign))}


def object_survey(root: Union[str, Path], frames: int, generate: Callable[[np.ndarray], np.ndarray]) -> dict:
    """How well a model keeps the objects of every clip of a dataset folder (its masks/ from
    make_synthetic_dataset.py), not only of a few chosen images: ``generate(first_frame)`` returns a (T, H, W, 3)
    uint8 video from a clip's first frame, and every object the tracker follows through ``frames`` frames of its
    own clip is tracked through that video (``object_measures``). Returns the share of (object, frame) pairs
    present, how many objects are present in every frame, of how many, and per object its clip, id, input
    area and frames present."""
    from exvideo_ms.data.object_masks import read_labels
    from exvideo_ms.media import read_video
    root = Path(root)
    per_object = []
    for item in json.loads((root / "metadata.json").read_text()):
        labels = read_labels(root, item["path"])[0]
        clip = read_video(root / item["path"], count=frames)
        tracked = trackable_objects(clip, labels)
        if not tracked:
            continue
        for obj in object_measures(generate(clip[0]), clip[0], labels):
            if obj["id"] in tracked:
                per_object.append({"clip": item["path"], "id": obj["id"], "area": int((labels == obj["id"]).sum()),
                                   "frames_present": int(sum(obj["present"])), "frames": len(obj["present"])})
    if not per_object:
        raise ValueError(f"{root}: no object can be followed through {frames} frames of its own clip")
    present = sum(o["frames_present"] for o in per_object) / sum(o["frames"] for o in per_object)
    return {"present_fraction": present, "objects": len(per_object),
            "kept_throughout": sum(o["frames_present"] == o["frames"] for o in per_object), "per_object": per_object}
