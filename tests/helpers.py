"""Paths and comparisons shared by the tests."""
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# published key/shape lists of the real checkpoints (no weights), copied from the project's reference material
KEYS = REPO / "tests" / "data" / "keys"


def rel_err(a, b) -> float:
    """max |a − b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))
