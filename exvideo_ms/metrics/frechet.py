"""The Fréchet distance between two Gaussians fitted to feature sets: FVD on I3D features of clips (Unterthiner
et al. 2018, arXiv 1812.01717; StyleGAN-V's and cd-fvd's protocol), FID on InceptionV3 pool features of frames
(Heusel et al. 2017, arXiv 1706.08500).

    d² = ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2 (Σ₁ Σ₂)^½)

tr((Σ₁ Σ₂)^½) is the sum of the square roots of the eigenvalues of Σ₁ Σ₂ (real and non-negative for two
covariance matrices, up to rounding), as torchmetrics computes it; no matrix square root is formed.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np


@dataclass
class FeatureStatistics:
    """Mean (D,) and covariance (D, D, normalised by n − 1) of n feature vectors, and n."""

    mean: np.ndarray
    cov: np.ndarray
    count: int

    def save(self, path: Union[str, Path]) -> Path:
        """Reference statistics of a dataset, computed once (``.npz``: mean, cov, count)."""
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path} already exists; not overwritten")
        with open(path, "xb") as f:
            np.savez(f, mean=self.mean, cov=self.cov, count=np.int64(self.count))
        return path

    @classmethod
    def load(cls, path: Union[str, Path]) -> "FeatureStatistics":
        with np.load(path) as z:
            missing = {"mean", "cov", "count"} - set(z.files)
            if missing:
                raise ValueError(f"{path} is not a feature statistics file: it lacks {sorted(missing)}")
            return cls(z["mean"].astype(np.float64), z["cov"].astype(np.float64), int(z["count"]))


def feature_statistics(features: np.ndarray) -> FeatureStatistics:
    """Statistics of (n, D) features, n >= 2."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be (n, D) with n >= 2, got shape {f.shape}")
    return FeatureStatistics(f.mean(0), np.cov(f, rowvar=False), len(f))


def frechet_distance(a: FeatureStatistics, b: FeatureStatistics) -> float:
    """d² between the Gaussians of ``a`` and ``b`` (FVD or FID, depending on the features)."""
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"feature sizes differ: {a.mean.shape[0]} and {b.mean.shape[0]}")
    mean_term = float(np.sum((a.mean - b.mean) ** 2))
    root_trace = float(np.sum(np.sqrt(np.linalg.eigvals(a.cov @ b.cov).astype(np.complex128)).real))
    return mean_term + float(np.trace(a.cov) + np.trace(b.cov)) - 2.0 * root_trace
