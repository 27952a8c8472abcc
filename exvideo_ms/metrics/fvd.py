"""Fréchet Video Distance (Unterthiner et al. 2018, arXiv 1812.01717) with cd-fvd's I3D protocol: each
video gives one clip of ``CLIP_FRAMES`` consecutive frames, resized to 224² (models/i3d.preprocess), whose
400 Kinetics logits from I3D are its feature; FVD is the Fréchet distance (frechet.py) between the Gaussians
of the generated and the reference features.

Frame sampling is deterministic: the clip starts at frame ``start`` and takes every ``every``-th frame
(cd-fvd's ``sample_every_n_frames``; defaults: the first 16 consecutive frames). A video too short for the
clip is an error, not a padded clip.
"""
from typing import Iterable

import mindspore as ms
import numpy as np
from tqdm import tqdm

from exvideo_ms.metrics.frechet import FeatureStatistics, feature_statistics, frechet_distance
from exvideo_ms.metrics.networks import batched
from exvideo_ms.models.i3d import preprocess

CLIP_FRAMES = 16  # StyleGAN-V and cd-fvd: FVD on 16-frame clips


def sample_clip(video: np.ndarray, frames: int = CLIP_FRAMES, start: int = 0, every: int = 1) -> np.ndarray:
    """Frames start, start + every, ... (``frames`` of them) of a (T, H, W, 3) video."""
    if frames < 1 or start < 0 or every < 1:
        raise ValueError(f"clip sampling needs frames >= 1, start >= 0, every >= 1; got {frames}, {start}, {every}")
    last = start + (frames - 1) * every
    if last >= len(video):
        raise ValueError(f"a {frames}-frame clip from frame {start} every {every} needs {last + 1} frames; the "
                         f"video has {len(video)}")
    return np.asarray(video)[start:last + 1:every]


def i3d_features(i3d, clips: Iterable[np.ndarray], batch_size: int = 4, progress: bool = True) -> np.ndarray:
    """(n, 400) float64 I3D logits of uint8 (T, H, W, 3) clips of one shape, ``batch_size`` at a time."""
    out = []
    for videos in tqdm(batched(clips, batch_size), desc="I3D features", unit="batch", disable=not progress):
        out.append(i3d(ms.Tensor(preprocess(videos))).asnumpy().astype(np.float64))
    if not out:
        raise ValueError("no clips to compute I3D features of")
    return np.concatenate(out)


def fvd(generated: FeatureStatistics, reference: FeatureStatistics) -> float:
    """FVD between the statistics of generated and reference I3D features."""
    return frechet_distance(generated, reference)


def fvd_from_features(generated: np.ndarray, reference: np.ndarray) -> float:
    return fvd(feature_statistics(generated), feature_statistics(reference))
