"""Inception Score (Salimans et al. 2016, arXiv 1606.03498) of frames from their InceptionV3 class logits:
exp E_x KL(p(y|x) ‖ p(y)) within each of ``splits`` groups, then the mean and standard deviation over groups.
Groups and deviation follow StyleGAN-V (StyleGAN2-ADA's metrics/inception_score.py), which scores video
frames this way: group i holds items [i·n//k, (i+1)·n//k) in their order, and the deviation is the population
one (ddof 0; torchmetrics' InceptionScore shuffles first, cuts equal chunks and reports ddof 1)."""
from typing import Tuple

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10) -> Tuple[float, float]:
    """(mean, std) over ``splits`` groups of the score of (n, classes) logits, n >= splits >= 1."""
    x = np.asarray(logits, np.float64)
    if x.ndim != 2 or splits < 1 or len(x) < splits:
        raise ValueError(f"logits must be (n, classes) with n >= splits >= 1, got shape {x.shape}, splits {splits}")
    log_p = x - x.max(1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(1, keepdims=True))
    n, scores = len(x), []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        p = np.exp(part)
        scores.append(np.exp(np.mean(np.sum(p * (part - np.log(p.mean(0, keepdims=True))), 1))))
    return float(np.mean(scores)), float(np.std(scores))
