"""Training checkpoints: one directory per save, written as ``step-NNNNNNN.tmp`` and renamed when complete,
so a kill during a write leaves the previous checkpoints untouched and loadable.

    step-0000100/
        trainable.ckpt   the trainable weights, under our model names (exvideo mode: a complete ExVideo
                         patch for svd_tools/export.py)
        ema.ckpt         in-training EMA of the same tensors (when enabled)
        optimizer.ckpt   AdamW moments and step, loss scale and its counter
        state.json       step, samples seen, seed and RNG scheme, mode, options
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from exvideo_ms.checkpoint import CheckpointError, iter_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"step-(\d+)$")


def step_dirs(root: Path) -> List[Path]:
    """Complete checkpoint directories under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _STEP_DIR.match(p.name)) and (p / "state.json").is_file()]
    return [p for _, p in sorted(found)]


def latest(root: Path) -> Optional[Path]:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def save(root: Path, step: int, state: Dict[str, Optional[Dict[str, np.ndarray]]], meta: dict,
         keep_last: int = 3) -> Path:
    """Write one checkpoint atomically — ``state`` is a ``TrainingState.state_dict()`` (trainable, optimizer,
    ema), ``meta`` goes to state.json — and prune all but the newest ``keep_last``."""
    root = Path(root)
    final = root / f"step-{step:07d}"
    tmp = root / f"step-{step:07d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_checkpoint(state["trainable"].items(), tmp / "trainable.ckpt")
    if state.get("ema") is not None:
        save_checkpoint(state["ema"].items(), tmp / "ema.ckpt")
    save_checkpoint(state["optimizer"].items(), tmp / "optimizer.ckpt")
    (tmp / "state.json").write_text(json.dumps(meta, indent=2, default=str))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    for old in step_dirs(root)[:-keep_last] if keep_last > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_meta(path: Path) -> dict:
    """A checkpoint directory's state.json (step, mode, options, ...), without its arrays."""
    path = Path(path)
    if not (path / "state.json").is_file():
        raise CheckpointError(f"{path}: not a complete training checkpoint (no state.json)")
    return json.loads((path / "state.json").read_text())


def load(path: Path) -> dict:
    """{"meta", "trainable", "optimizer", "ema"} of a checkpoint directory (arrays by name; ``meta`` is
    state.json): what ``TrainingState.load_state_dict`` takes."""
    path = Path(path)
    out = {"meta": read_meta(path),
           "trainable": dict(iter_checkpoint(path / "trainable.ckpt")),
           "optimizer": dict(iter_checkpoint(path / "optimizer.ckpt"))}
    out["ema"] = dict(iter_checkpoint(path / "ema.ckpt")) if (path / "ema.ckpt").is_file() else None
    return out


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
