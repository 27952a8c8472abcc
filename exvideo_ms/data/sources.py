"""Clip lists in the three layouts the SVD/ExVideo tools use:

- ``metadata``: ExVideo's ``metadata.json``, a JSON list of ``{"path": "videos/x.mp4"}`` relative to the root;
- ``csv``: mindone's CSV with header ``path,length,motion_bucket_id`` (extra columns ignored);
- ``frames``: a folder per clip holding its frames as images (sorted by name).

Every path must stay inside the dataset root: an absolute path or one that climbs out with ``..`` (or a
symlink pointing outside) is rejected when the list is loaded.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

FORMATS = ("metadata", "csv", "frames")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


class DatasetError(ValueError):
    """A dataset list that cannot be used."""


@dataclass(frozen=True)
class Clip:
    path: Path  # a video file, or a folder of frames
    motion_bucket_id: Optional[float] = None  # from the CSV, when given
    length: Optional[int] = None  # from the CSV, when given


def _inside(root: Path, rel: str, where: str) -> Path:
    if not rel or Path(rel).is_absolute():
        raise DatasetError(f"{where}: path {rel!r} must be relative to the dataset root {root}")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: path {rel!r} escapes the dataset root {root}")
    return full


def _csv_number(text, column: str, where: str, kind):
    """A CSV cell as a non-negative number (empty: None); otherwise an error naming file, row and column."""
    if text in (None, ""):
        return None
    try:
        value = kind(text)
    except ValueError:
        raise DatasetError(f"{where}: {column} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if not math.isfinite(value) or value < 0:
        raise DatasetError(f"{where}: {column} {text!r} must be a finite number >= 0")
    return value


def load_clips(root, fmt: str = "metadata", list_file: Optional[str] = None) -> List[Clip]:
    """The clips of a dataset; ``list_file`` defaults to ``metadata.json`` / ``metadata.csv``."""
    root = Path(root)
    if fmt not in FORMATS:
        raise DatasetError(f"dataset format must be one of {FORMATS}, got {fmt!r}")
    if not root.is_dir():
        raise DatasetError(f"dataset root not found: {root}")
    if fmt == "frames":
        folders = sorted(p for p in root.iterdir() if p.is_dir())
        clips = [Clip(_inside(root, f.name, str(root))) for f in folders]
    elif fmt == "metadata":
        path = root / (list_file or "metadata.json")
        try:
            items = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DatasetError(f"{path}: cannot read the clip list ({e})") from None
        if not isinstance(items, list):
            raise DatasetError(f"{path}: expected a JSON list of {{\"path\": ...}} objects")
        clips = []
        for i, item in enumerate(items):
            if not isinstance(item, dict) or "path" not in item:
                raise DatasetError(f"{path}: entry {i} has no \"path\"")
            clips.append(Clip(_inside(root, item["path"], f"{path} entry {i}")))
    else:
        path = root / (list_file or "metadata.csv")
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
        except OSError as e:
            raise DatasetError(f"{path}: cannot read the clip list ({e})") from None
        if rows and "path" not in rows[0]:
            raise DatasetError(f"{path}: the header must name a 'path' column (path,length,motion_bucket_id)")
        clips = []
        for i, row in enumerate(rows):
            where = f"{path} row {i + 2}"
            clips.append(Clip(_inside(root, row["path"], where),
                              _csv_number(row.get("motion_bucket_id"), "motion_bucket_id", where, float),
                              _csv_number(row.get("length"), "length", where, int)))
    if not clips:
        raise DatasetError(f"{root}: the {fmt} dataset lists no clips")
    return clips
