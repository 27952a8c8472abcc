"""Images and videos in and out: loading a conditioning image, writing mp4 (OpenCV), GIF and PNG frames,
reading video frames. Every writer goes through a temporary name and a rename, so a failed write never
leaves a partial file under the final name."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

logger = logging.getLogger(__name__)


class MediaError(ValueError):
    """An image or video that cannot be read or written."""


def load_image(image) -> np.ndarray:
    """A path, PIL image or (H, W, 3) uint8 array -> (H, W, 3) uint8 RGB. RGBA, LA, grayscale and palette
    images are converted to RGB (alpha is dropped, with a log line)."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise MediaError(f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise MediaError(f"{path}: not a readable image ({e})") from None
    if isinstance(image, Image.Image):
        if image.mode != "RGB":
            logger.info("converting %s image to RGB%s", image.mode,
                        " (alpha channel dropped)" if "A" in image.getbands() else "")
            image = image.convert("RGB")
        return np.asarray(image, dtype=np.uint8).copy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise MediaError(f"image array must be uint8 (H, W, 3), got dtype {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] in (3, 4):
            return np.ascontiguousarray(image[:, :, :3])
        raise MediaError(f"image array must have shape (H, W, 3), got {image.shape}")
    raise MediaError(f"image must be a path, a PIL image or a uint8 array, got {type(image).__name__}")


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) with PIL's Lanczos filter (diffusers' VaeImageProcessor default)."""
    from PIL import Image
    if image.shape[:2] == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((width, height), Image.LANCZOS), dtype=np.uint8)


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """float frames in [0, 1] -> uint8 with rounding (diffusers ``numpy_to_pil``)."""
    return np.round(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)


def _commit(tmp: Path, final: Path) -> None:
    os.replace(tmp, final)


def write_mp4(frames: np.ndarray, path: Union[str, Path], fps: float) -> Path:
    """(T, H, W, 3) uint8 RGB -> mp4 (OpenCV ``mp4v``), atomically."""
    import cv2
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    t, h, w, _ = frames.shape
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
    if not writer.isOpened():
        raise MediaError(f"OpenCV cannot open an mp4 writer for {path}")
    try:
        for frame in frames:
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    if not tmp.is_file() or tmp.stat().st_size == 0:
        tmp.unlink(missing_ok=True)
        raise MediaError(f"OpenCV wrote no data for {path}")
    _commit(tmp, path)
    return path


def write_gif(frames: np.ndarray, path: Union[str, Path], fps: float) -> Path:
    from PIL import Image
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=int(round(1000 / fps)),
                   loop=0)
    _commit(tmp, path)
    return path


def write_pngs(frames: np.ndarray, folder: Union[str, Path]) -> Path:
    """One PNG per frame in ``folder`` (written to ``folder.tmp`` and renamed)."""
    from PIL import Image
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp / f"{i:04d}.png")
    if folder.exists():
        raise MediaError(f"{folder} already exists")
    os.replace(tmp, folder)
    return folder


def read_video(path: Union[str, Path], start: int = 0, count: Optional[int] = None, step: int = 1) -> np.ndarray:
    """Frames ``start, start+step, ...`` (``count`` of them, or all) of a video as (T, H, W, 3) uint8 RGB."""
    import cv2
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"video not found: {path}")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: OpenCV cannot open this video")
    frames: List[np.ndarray] = []
    index = 0
    try:
        while count is None or len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            if index >= start and (index - start) % step == 0:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            index += 1
    finally:
        cap.release()
    if not frames:
        raise MediaError(f"{path}: no frames could be decoded")
    return np.stack(frames)


def video_info(path: Union[str, Path]) -> dict:
    """Frame count, fps and size as the container reports them (OpenCV)."""
    import cv2
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise MediaError(f"{path}: OpenCV cannot open this video")
    try:
        return {"frames": int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), "fps": float(cap.get(cv2.CAP_PROP_FPS)),
                "width": int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), "height": int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}
    finally:
        cap.release()


def load_frames(frames: Union[str, Path, Sequence, np.ndarray]) -> np.ndarray:
    """A video path, a folder of images, a list of images, or a (T, H, W, 3) uint8 array -> (T, H, W, 3)."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise MediaError(f"frames must be a (T, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}")
        return frames
    if isinstance(frames, (str, os.PathLike)):
        p = Path(frames)
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
            if not files:
                raise MediaError(f"{p}: no image files")
            return np.stack([load_image(f) for f in files])
        return read_video(p)
    return np.stack([load_image(f) for f in frames])
