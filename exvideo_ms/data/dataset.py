"""Step-indexed training samples.

Sample ``i`` of a run (a global index over all steps, micro-steps, ranks and batch rows) is a pure function
of ``(seed, i)``: which clip (an epoch-wise permutation), which start frame, and — in the trainer — which σ
and noise. So a resumed run continues exactly where it stopped, and two workers with batch 1 see exactly
the two samples one process with batch 2 sees.

A clip that cannot be read, or is too short, is skipped: the next clip in the permutation is tried, and the
number of clips skipped for a sample travels with it (the trainer adds it to the step log).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Literal, Optional, Sequence

import numpy as np

from exvideo_ms.data.motion import motion_bucket
from exvideo_ms.data.sources import IMAGE_SUFFIXES, Clip, DatasetError, load_clips
from exvideo_ms.data.streams import Stream, stream_rng
from exvideo_ms.data.transforms import frame_indices, resize_crop
from exvideo_ms.models.conditioner import to_model_range

logger = logging.getLogger(__name__)

MAX_SKIPS = 64  # give up (error) when this many consecutive clips are unusable
COLUMNS_FRAMES = ("frames", "fps", "motion_bucket_id", "skipped")
COLUMNS_LATENTS = ("latents", "cond_latent", "clip_embedding", "fps", "motion_bucket_id", "skipped")


@dataclass
class DataOptions:
    """Training data (``--train.dataset.*``)."""

    path: str = "data"
    """dataset root folder"""
    format: Literal["metadata", "csv", "frames", "precomputed"] = "metadata"
    """metadata (ExVideo's metadata.json), csv (mindone's path,length,motion_bucket_id), frames (a folder of
    images per clip), precomputed (svd_tools/precompute.py's latents)"""
    list_file: Optional[str] = None
    """the clip list inside the root (default: metadata.json / metadata.csv)"""
    num_frames: int = 128
    """frames per training clip (>= 1)"""
    interval: int = 1
    """take every n-th frame (>= 1)"""
    start: Literal["fixed", "random"] = "fixed"
    """first frame: fixed (frame 0, as ExVideo) or random"""
    height: int = 512
    """frame height after resize and centre crop (>= 8)"""
    width: int = 512
    """frame width after resize and centre crop (>= 8)"""
    fps: Optional[float] = 30.0
    """fps condition (> 0; null: the file's frame rate / interval)"""
    motion_bucket_id: Optional[float] = None
    """motion condition (>= 0; null: from the CSV if given, else computed with ExVideo's buckets)"""
    num_workers: int = 2
    """loader threads (>= 0)"""


def sample_indices(step: int, micro: int, accum: int, rank: int, world: int, batch: int) -> List[int]:
    """Global sample indices of one rank's micro-batch at (step, micro)."""
    base = ((step * accum + micro) * world + rank) * batch
    return list(range(base, base + batch))


class _Order:
    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._cache = n, seed, {}

    def clip(self, index: int, attempt: int = 0) -> int:
        epoch, pos = divmod(index, self.n)
        if epoch not in self._cache:
            self._cache = {epoch: stream_rng(self.seed, epoch, Stream.CLIP_ORDER).permutation(self.n)}
        return int(self._cache[epoch][(pos + attempt) % self.n])


def _read_frames(clip: Clip, num_frames: int, interval: int, start_mode: str, rng) -> tuple:
    """(frames (T, H, W, 3) uint8, file fps or None); raises on unreadable or too-short clips."""
    import cv2
    path = clip.path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        total, fps = len(files), None
    else:
        cap = cv2.VideoCapture(str(path))
        if not cap.isOpened():
            raise DatasetError(f"{path}: cannot open")
        total, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), float(cap.get(cv2.CAP_PROP_FPS)) or None
        cap.release()
    span = (num_frames - 1) * interval + 1
    if total < span:
        raise DatasetError(f"{path}: {total} frames, needs {span}")
    start = int(rng.integers(0, total - span + 1)) if start_mode == "random" else 0
    idx = frame_indices(total, num_frames, interval, start)
    if path.is_dir():
        from exvideo_ms.media import load_image
        return np.stack([load_image(files[i]) for i in idx]), fps
    cap = cv2.VideoCapture(str(path))
    frames, want, i = [], set(idx), 0
    try:
        while len(frames) < num_frames:
            ok, frame = cap.read()
            if not ok:
                break
            if i in want:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
    finally:
        cap.release()
    if len(frames) < num_frames:
        raise DatasetError(f"{path}: decoded {len(frames)} of the {num_frames} frames needed")
    return np.stack(frames), fps


class VideoClipSource:
    """Random-access source for ``mindspore.dataset.GeneratorDataset``: index -> (frames (T, 3, H, W) float32
    in [-1, 1], fps, motion bucket, clips skipped)."""

    columns = COLUMNS_FRAMES

    def __init__(self, opts: DataOptions, seed: int):
        self.opts = opts
        self.clips = load_clips(opts.path, opts.format, opts.list_file)
        self.order = _Order(len(self.clips), seed)
        self.seed = seed
        if opts.start not in ("fixed", "random"):
            raise DatasetError(f"dataset.start must be 'fixed' or 'random', got {opts.start!r}")

    def __len__(self):
        return 2 ** 31 - 1  # addressed by global sample index

    def load(self, clip: Clip, rng: np.random.Generator):
        """(frames (T, 3, H, W) in [-1, 1], fps, motion bucket) of one clip; raises DatasetError if unusable."""
        o = self.opts
        frames, file_fps = _read_frames(clip, o.num_frames, o.interval, o.start, rng)
        x = to_model_range(np.stack([resize_crop(f, o.height, o.width) for f in frames]))
        fps = o.fps if o.fps is not None else (file_fps / o.interval if file_fps else None)
        if fps is None:
            raise DatasetError(f"{clip.path}: no frame rate in the file; set dataset.fps")
        if o.motion_bucket_id is not None:
            mb = o.motion_bucket_id
        elif clip.motion_bucket_id is not None:
            mb = clip.motion_bucket_id
        else:
            mb = motion_bucket(x)
        return x, np.float32(fps), np.float32(mb)

    def __getitem__(self, index: int):
        rng = stream_rng(self.seed, index, Stream.FRAME_WINDOW)
        for attempt in range(MAX_SKIPS):
            clip = self.clips[self.order.clip(int(index), attempt)]
            try:
                x, fps, mb = self.load(clip, rng)
            except (DatasetError, OSError, ValueError) as e:
                logger.warning("skipping clip %s: %s", clip.path, e)
                continue
            return x, fps, mb, np.int32(attempt)
        raise DatasetError(f"{MAX_SKIPS} consecutive clips were unusable around sample {index} in {self.opts.path}")


class PrecomputedSource:
    """Clips written by ``svd_tools/precompute.py``: every frame's latent (× the encode scale) and CLIP
    embedding, fps and motion bucket. A sample is a window of ``num_frames`` (``interval``, ``start``) like
    ``VideoClipSource``'s; its conditioning latent is the window's first latent unscaled (ExVideo trains
    without noise augmentation) and its CLIP embedding that frame's. With ``object_fraction`` a sample also
    carries the window's share of object pixels under each latent pixel (precompute.py --object_masks)."""

    def __init__(self, opts: DataOptions, seed: int, object_fraction: bool = False):
        root = Path(opts.path)
        index = root / "precomputed.json"
        if not index.is_file():
            raise DatasetError(f"{root}: no precomputed.json (run svd_tools/precompute.py)")
        meta = json.loads(index.read_text())
        self.files = [root / f for f in meta["files"]]
        for f in self.files:
            if not f.resolve().is_relative_to(root.resolve()):
                raise DatasetError(f"{index}: {f} escapes the dataset root")
        if not self.files:
            raise DatasetError(f"{index}: lists no clips")
        if opts.num_frames > meta["num_frames"]:
            raise DatasetError(f"{index}: clips hold {meta['num_frames']} frames, dataset.num_frames is {opts.num_frames}")
        if object_fraction and not meta.get("object_fraction"):
            raise DatasetError(f"{index}: these latents hold no object fractions, which the object-weighted loss "
                               f"needs (run svd_tools/precompute.py with --object_masks)")
        self.opts, self.seed, self.object_fraction = opts, seed, object_fraction
        self.columns = COLUMNS_LATENTS + (("object_fraction",) if object_fraction else ())
        self.encode_scale = float(meta["encode_scale"])
        self.order = _Order(len(self.files), seed)

    def __len__(self):
        return 2 ** 31 - 1

    def __getitem__(self, index: int):
        o = self.opts
        rng = stream_rng(self.seed, index, Stream.FRAME_WINDOW)
        for attempt in range(MAX_SKIPS):
            path = self.files[self.order.clip(int(index), attempt)]
            try:
                with np.load(path) as z:
                    latents, clips = z["latents"], z["clip_embeddings"]
                    fps, mb = np.float32(z["fps"]), np.float32(z["motion_bucket_id"])
                    fraction = z["object_fraction"] if self.object_fraction else None
                span = (o.num_frames - 1) * o.interval + 1
                if len(latents) < span:
                    raise DatasetError(f"{len(latents)} frames, needs {span}")
                if fraction is not None and fraction.shape != latents.shape[:1] + latents.shape[2:]:
                    raise DatasetError(f"object_fraction of shape {fraction.shape}, latents {latents.shape}")
                start = int(rng.integers(0, len(latents) - span + 1)) if o.start == "random" else 0
                idx = frame_indices(len(latents), o.num_frames, o.interval, start)
                sample = (latents[idx].astype(np.float32), (latents[start] / self.encode_scale).astype(np.float32),
                          clips[start].astype(np.float32), fps, mb, np.int32(attempt))
                return sample + ((fraction[idx].astype(np.float32),) if fraction is not None else ())
            except (OSError, KeyError, ValueError, DatasetError) as e:
                logger.warning("skipping precomputed clip %s: %s", path, e)
        raise DatasetError(f"{MAX_SKIPS} consecutive precomputed clips were unusable around sample {index}")


def make_source(opts: DataOptions, seed: int, object_fraction: bool = False):
    """The sample source of ``opts.format``; ``object_fraction`` (precomputed latents only) adds that column."""
    if opts.format == "precomputed":
        return PrecomputedSource(opts, seed, object_fraction)
    if object_fraction:
        raise DatasetError(f"object fractions come with precomputed latents (svd_tools/precompute.py "
                           f"--object_masks), dataset.format is {opts.format!r}")
    return VideoClipSource(opts, seed)


def batches(source, indices: Sequence[int], batch: int, workers: int) -> Iterator[Dict[str, np.ndarray]]:
    """Batched samples in the order of ``indices`` (a multiple of ``batch``), loaded by worker processes."""
    if workers <= 0:
        for i in range(0, len(indices), batch):
            rows = [source[j] for j in indices[i:i + batch]]
            yield {c: np.stack([r[k] for r in rows]) for k, c in enumerate(source.columns)}
        return
    import mindspore.dataset as ds
    data = ds.GeneratorDataset(source, column_names=list(source.columns), sampler=list(indices),
                               num_parallel_workers=workers, python_multiprocessing=True, shuffle=None)
    yield from data.batch(batch).create_dict_iterator(num_epochs=1, output_numpy=True)
