"""FID per frame (Heusel et al. 2017, arXiv 1706.08500), a by-product of the per-frame Inception Score: every
frame of every video is one sample; its InceptionV3 2048-d pool feature enters the Fréchet distance
(frechet.py) between generated and reference frames. ``inception_outputs`` gives both the features and the
logits (inception_score.py) from one pass over the frames.
"""
from typing import Iterable, Tuple

import mindspore as ms
import numpy as np
from tqdm import tqdm

from exvideo_ms.metrics.frechet import FeatureStatistics, feature_statistics, frechet_distance
from exvideo_ms.metrics.networks import batched
from exvideo_ms.models.inception_v3 import preprocess


def inception_outputs(inception, frames: Iterable[np.ndarray], resize: str = "antialias", batch_size: int = 16,
                      progress: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """((n, 2048) pool features, (n, 1008) logits without bias), float64, of uint8 (H, W, 3) frames."""
    pools, logits = [], []
    for chunk in tqdm(batched(frames, batch_size), desc="InceptionV3", unit="batch", disable=not progress):
        pool, logit = inception(ms.Tensor(preprocess(chunk, resize)))
        pools.append(pool.asnumpy().astype(np.float64))
        logits.append(logit.asnumpy().astype(np.float64))
    if not pools:
        raise ValueError("no frames to compute InceptionV3 features of")
    return np.concatenate(pools), np.concatenate(logits)


def fid(generated: FeatureStatistics, reference: FeatureStatistics) -> float:
    """FID between the statistics of generated and reference frame features."""
    return frechet_distance(generated, reference)


def fid_from_features(generated: np.ndarray, reference: np.ndarray) -> float:
    return fid(feature_statistics(generated), feature_statistics(reference))
