"""Images and videos in and out: loading a conditioning image, writing mp4 (OpenCV), GIF and PNG frames,
reading video frames, and the output files of one run.

Writers never overwrite and never leave a partial file: each writes under a hidden per-process temporary name
in the destination folder and links it to its final name only when complete (``os.link`` fails if that name
exists); on any error or interrupt the temporary is removed. ``RunOutputs`` gives one run's files a unique
stem and removes them all again if the run fails.
"""
from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Union

import numpy as np

logger = logging.getLogger(__name__)

WHITE = 255  # transparent pixels are composited over white, as an image viewer shows them
SIXTEEN_BIT_MAX = 65535
SIXTEEN_TO_EIGHT = 257  # 65535 / 255


class MediaError(ValueError):
    """An image or video that cannot be read or written."""


def _from_pil(image) -> np.ndarray:
    """Any PIL mode a photo can have -> (H, W, 3) uint8 RGB, or MediaError naming the mode."""
    from PIL import ImageOps
    image = ImageOps.exif_transpose(image)  # camera orientation, as diffusers' load_image
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        if values.min() < 0 or values.max() > SIXTEEN_BIT_MAX:
            raise MediaError(f"{mode} image with values {values.min()}..{values.max()}: only 8- and 16-bit integer "
                             f"images have a known range; convert it to 8-bit RGB")
        gray = np.round(values / SIXTEEN_TO_EIGHT).astype(np.uint8)
        logger.info("converting a 16-bit grayscale (%s) image to 8-bit RGB", mode)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise MediaError("32-bit float (mode F) images have no defined range; convert it to 8-bit RGB")
    has_alpha = "A" in image.getbands() or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        alpha = rgba[:, :, 3:] / 255.0
        logger.info("compositing the %s image's transparency over white", mode)
        return np.round(rgba[:, :, :3] * alpha + WHITE * (1.0 - alpha)).astype(np.uint8)
    if mode != "RGB":
        try:
            image = image.convert("RGB")
        except (ValueError, OSError) as e:
            raise MediaError(f"cannot convert a {mode} image to RGB ({e})") from None
        logger.info("converting %s image to RGB", mode)
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(image) -> np.ndarray:
    """A path, PIL image or uint8 array -> (H, W, 3) uint8 RGB. Every PIL mode a photo can have is converted:
    16-bit grayscale scaled to 8 bits, CMYK/YCbCr/palette/grayscale to RGB, transparency (RGBA, LA, PA, P with
    a transparent colour; 4-channel arrays) composited over white; EXIF orientation applied. Float images
    and values outside 16 bits are refused by name."""
    from PIL import Image, UnidentifiedImageError
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise MediaError(f"image not found: {path}")
        try:
            with Image.open(path) as im:
                im.load()
                image = im.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise MediaError(f"{path}: not a readable image ({e})") from None
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise MediaError(f"image array must be uint8 (H, W, 3), got dtype {image.dtype}")
        if image.ndim == 2:
            return np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim == 3 and image.shape[2] == 3:
            return np.ascontiguousarray(image)
        if image.ndim == 3 and image.shape[2] == 4:
            return _from_pil(Image.fromarray(image, "RGBA"))
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


def _temporary(final: Path) -> Path:
    """A hidden name beside ``final``, unique to this process."""
    return final.with_name(f".{final.name}.{os.getpid()}.tmp{final.suffix}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def _publish(final: Path):
    """Yield a temporary path to write; on success link it to ``final`` (never replacing an existing file);
    on any error or interrupt remove it."""
    final = Path(final)
    tmp = _temporary(final)
    try:
        yield tmp
        if final.exists():
            raise MediaError(f"{final} already exists; not overwritten")
        if tmp.is_dir():
            os.rename(tmp, final)  # a directory: its name was free just above
        else:
            try:
                os.link(tmp, final)
            except FileExistsError:
                raise MediaError(f"{final} already exists; not overwritten") from None
    finally:
        _remove(tmp)


class _Mp4:
    """mp4 through OpenCV's ``mp4v`` writer, opened at the first block's size."""

    def __init__(self, tmp: Path, final: Path, fps: float):
        self.tmp, self.final, self.fps, self.writer = tmp, final, fps, None

    def add(self, block: np.ndarray) -> None:
        import cv2
        if self.writer is None:
            h, w = block.shape[1:3]
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(self.fps), (w, h))
            if not self.writer.isOpened():
                raise MediaError(f"OpenCV cannot open an mp4 writer for {self.final}")
        for frame in block:
            self.writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def finish(self) -> None:
        self.release()
        if not self.tmp.is_file() or self.tmp.stat().st_size == 0:
            raise MediaError(f"OpenCV wrote no data for {self.final}")

    def release(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None


class _Gif:
    """Animated GIF (PIL): a GIF is written in one piece, so its frames are held until the end."""

    def __init__(self, tmp: Path, final: Path, fps: float):
        self.tmp, self.fps, self.images = tmp, fps, []

    def add(self, block: np.ndarray) -> None:
        from PIL import Image
        self.images.extend(Image.fromarray(f) for f in block)

    def finish(self) -> None:
        self.images[0].save(self.tmp, format="GIF", save_all=True, append_images=self.images[1:],
                            duration=int(round(1000 / self.fps)), loop=0)

    def release(self) -> None:
        self.images = []


class _Pngs:
    """One PNG per frame, 0000.png, 0001.png, ..., in a new folder."""

    def __init__(self, tmp: Path, final: Path, fps: Optional[float]):
        self.tmp, self.count = tmp, 0
        tmp.mkdir(parents=True)

    def add(self, block: np.ndarray) -> None:
        from PIL import Image
        for f in block:
            Image.fromarray(f).save(self.tmp / f"{self.count:04d}.png")
            self.count += 1

    def finish(self) -> None:
        pass

    def release(self) -> None:
        pass


FORMATS = {"mp4": _Mp4, "gif": _Gif, "png_frames": _Pngs}
TIMED_FORMATS = ("mp4", "gif")  # the formats that carry a frame rate


def write_video(blocks: Iterable[np.ndarray], paths: Dict[str, Union[str, Path]], fps: Optional[float]) -> Dict[str, Path]:
    """Write a video given as (n, H, W, 3) uint8 RGB blocks in frame order (an array is one block; a generator
    such as ``SVDPipeline.decode_stream`` streams) to every format of ``paths`` ({"mp4": ..., "gif": ...,
    "png_frames": folder}) in one pass, so only the GIF holds all frames. Each file is complete or absent."""
    paths = {k: Path(v) for k, v in paths.items()}
    unknown = sorted(set(paths) - set(FORMATS))
    if unknown or not paths:
        raise MediaError(f"video formats must be among {sorted(FORMATS)}, got {sorted(paths)}")
    timed = [paths[k] for k in TIMED_FORMATS if k in paths]
    if timed and (fps is None or not np.isfinite(fps) or fps <= 0):
        raise MediaError(f"fps must be a positive number to write {timed[0]}, got {fps}")
    with contextlib.ExitStack() as stack:
        sinks = []
        for kind, final in paths.items():
            sink = FORMATS[kind](stack.enter_context(_publish(final)), final, fps)
            stack.callback(sink.release)  # before its temporary is published or removed
            sinks.append(sink)
        count, size = 0, None
        for block in ([blocks] if isinstance(blocks, np.ndarray) else blocks):
            if block.dtype != np.uint8 or block.ndim != 4 or block.shape[-1] != 3:
                raise MediaError(f"video frames must be (n, H, W, 3) uint8 blocks, got {block.dtype} {block.shape}")
            if size is not None and block.shape[1:3] != size:
                raise MediaError(f"frame {count} is {block.shape[2]}x{block.shape[1]}, the video's frames are "
                                 f"{size[1]}x{size[0]}")
            size = block.shape[1:3]
            for sink in sinks:
                sink.add(block)
            count += len(block)
        if count == 0:
            raise MediaError(f"no frames to write to {next(iter(paths.values()))}")
        for sink in sinks:
            sink.finish()
    return paths


def write_mp4(frames: np.ndarray, path: Union[str, Path], fps: float) -> Path:
    """(T, H, W, 3) uint8 RGB -> mp4 (OpenCV ``mp4v``), complete or not at all."""
    return write_video(frames, {"mp4": path}, fps)["mp4"]


def write_gif(frames: np.ndarray, path: Union[str, Path], fps: float) -> Path:
    return write_video(frames, {"gif": path}, fps)["gif"]


def write_pngs(frames: np.ndarray, folder: Union[str, Path]) -> Path:
    """One PNG per frame in ``folder``, which must not exist yet."""
    return write_video(frames, {"png_frames": folder}, None)["png_frames"]


def check_output_dir(path: Union[str, Path], what: str = "--output_dir") -> Path:
    """Fail now, naming ``what``, if files cannot be written in ``path`` (a file, a folder without write
    permission, a read-only or virtual file system): a probe file is written and removed in ``path`` or, if it
    does not exist yet, in its nearest existing ancestor, where its folders would be made. Nothing is created
    that outlives the check, and nothing shared is removed, so the ranks of one run may check one new folder at
    once."""
    import tempfile
    path = Path(path).expanduser()
    if path.is_file():
        raise MediaError(f"{what} {path} is a file, not a folder")
    probe = path
    while not probe.is_dir():
        if probe.is_file():
            raise MediaError(f"{what} {path}: {probe} is a file, not a folder")
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        fd, name = tempfile.mkstemp(dir=probe, prefix=".write-probe-")
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise MediaError(f"{what} {path}: cannot write there ({e.strerror or e})") from None
    return path


class RunOutputs:
    """The files of one run, named ``<stem><suffix>`` in ``folder`` with a stem no other run has: the stem is
    claimed by creating ``<stem>.json`` exclusively (``base``, then ``base-1``, ``base-2``, ... when taken), so
    concurrent runs never share names. ``rollback`` removes every file this run created, the claim included."""

    def __init__(self, folder: Union[str, Path], base: str, suffixes: Sequence[str] = (".mp4", ".gif", "_frames")):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        for i in itertools.count():
            stem = base if i == 0 else f"{base}-{i}"
            if any((self.folder / f"{stem}{s}").exists() for s in suffixes):
                continue
            try:
                os.close(os.open(self.folder / f"{stem}.json", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            except FileExistsError:
                continue
            break
        self.stem = stem
        self.created: List[Path] = [self.folder / f"{stem}.json"]

    def path(self, suffix: str) -> Path:
        return self.folder / f"{self.stem}{suffix}"

    def add(self, path: Path) -> Path:
        self.created.append(Path(path))
        return Path(path)

    def write_sidecar(self, text: str) -> Path:
        """Fill the claimed ``<stem>.json`` (written beside it and moved over it: the claim is this run's)."""
        final = self.path(".json")
        tmp = _temporary(final)
        try:
            tmp.write_text(text)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return final

    def rollback(self) -> None:
        for path in reversed(self.created):
            _remove(path)
        self.created = []


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
