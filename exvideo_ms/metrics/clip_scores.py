"""CLIP scores of a video from embeddings of one CLIP model (SVD's OpenCLIP ViT-H/14 image tower for frames
and the conditioning image; its text tower for a prompt): 100 × cosine similarity, averaged, clamped at 0 as
torchmetrics' CLIPScore (Hessel et al. 2021, arXiv 2104.08718).

- CLIP-I: every frame against the conditioning image;
- frame consistency: every frame against the next one;
- CLIP-T: every frame against the prompt.
"""
import numpy as np

SCALE = 100.0  # CLIPScore's weight on the cosine


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _score(cosines: np.ndarray) -> float:
    return max(SCALE * float(np.mean(cosines)), 0.0)


def clip_image_score(frames: np.ndarray, image: np.ndarray) -> float:
    """CLIP-I of (T, D) frame embeddings against the (D,) embedding of the conditioning image."""
    return _score(_unit(frames) @ _unit(image))


def frame_consistency(frames: np.ndarray) -> float:
    """Mean 100 × cosine of consecutive (T, D) frame embeddings, T >= 2."""
    if len(frames) < 2:
        raise ValueError(f"frame consistency needs at least 2 frames, got {len(frames)}")
    f = _unit(frames)
    return _score(np.sum(f[1:] * f[:-1], -1))


def clip_text_score(frames: np.ndarray, text: np.ndarray) -> float:
    """CLIP-T of (T, D) frame embeddings against the (D,) embedding of the prompt."""
    return _score(_unit(frames) @ _unit(text))
