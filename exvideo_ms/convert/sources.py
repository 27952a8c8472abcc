"""Readers for PyTorch-side weight files, each giving keys, shapes and one tensor at a time as NumPy.

- ``SafetensorsFile``: a ``.safetensors`` file through the safetensors NumPy API (no torch). bfloat16
  tensors, which NumPy cannot hold, are read from the file's own offsets and widened to float32.
- ``PickleFile``: ``.ckpt/.pt/.pth/.bin`` through ``torch.load(weights_only=True, mmap=True)``; only with
  ``allow_pickle`` and torch installed.
- ``DiffusersFolder``: ``unet/``, ``vae/``, ``image_encoder/`` of a diffusers model folder, keys prefixed
  with the component name; ``config(component)`` returns its ``config.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

import numpy as np

from exvideo_ms.checkpoint import SafetensorsReader

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
DIFFUSERS_COMPONENTS = ("unet", "vae", "image_encoder")
# weight file names diffusers and transformers write, in order of preference
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "model.safetensors",
                 "diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
                 "diffusion_pytorch_model.bin", "pytorch_model.bin")


class SourceError(ValueError):
    """A source that cannot be read or recognised."""


class Source:
    path: Path

    def keys(self) -> List[str]:
        raise NotImplementedError

    def shape(self, key: str) -> tuple:
        raise NotImplementedError

    def get(self, key: str) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self):
        return f"{type(self).__name__}({self.path})"


class SafetensorsFile(SafetensorsReader, Source):
    """A ``.safetensors`` file (checkpoint.SafetensorsReader), its errors as SourceError."""

    error = SourceError


class PickleFile(Source):
    def __init__(self, path, allow_pickle: bool):
        self.path = Path(path)
        if not allow_pickle:
            raise SourceError(f"{self.path} is a pickled PyTorch file; pickles can run code when loaded. Pass "
                              f"--allow-pickle to read it with torch.load(weights_only=True), or convert it "
                              f"to safetensors first")
        if not self.path.is_file():
            raise SourceError(f"source not found: {self.path}")
        try:
            import torch
        except ImportError:
            raise SourceError(f"reading {self.path} needs PyTorch: pip install 'exvideo-ms[convert]'") from None
        try:
            sd = torch.load(str(self.path), map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:
            raise SourceError(f"{self.path}: torch.load(weights_only=True) failed: {e}") from None
        for wrapper in ("state_dict", "module"):
            if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
                sd = sd[wrapper]
        if not isinstance(sd, dict):
            raise SourceError(f"{self.path}: expected a state dict, found {type(sd).__name__}")
        self._sd = {k: v for k, v in sd.items() if hasattr(v, "shape")}

    def keys(self):
        return list(self._sd)

    def shape(self, key):
        return tuple(self._sd[key].shape)

    def get(self, key):
        import torch
        t = self._sd[key]
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()


def open_file(path, allow_pickle: bool = False) -> Source:
    path = Path(path)
    if path.suffix == ".safetensors":
        return SafetensorsFile(path)
    if path.suffix in PICKLE_SUFFIXES:
        return PickleFile(path, allow_pickle)
    raise SourceError(f"{path}: unknown weight file type {path.suffix!r} (expected .safetensors or one of "
                      f"{', '.join(PICKLE_SUFFIXES)})")


class DiffusersFolder(Source):
    """A diffusers pipeline folder, or a folder holding just the three component folders."""

    def __init__(self, path, allow_pickle: bool = False):
        self.path = Path(path)
        missing = [c for c in DIFFUSERS_COMPONENTS if not (self.path / c / "config.json").is_file()]
        if missing:
            raise SourceError(f"{self.path}: not a diffusers SVD folder, missing "
                              f"{', '.join(f'{c}/config.json' for c in missing)}")
        self._files: Dict[str, Source] = {}
        self._where: Dict[str, tuple] = {}
        for comp in DIFFUSERS_COMPONENTS:
            for src in self._component_files(comp, allow_pickle):
                for k in src.keys():
                    self._where[f"{comp}.{k}"] = (src, k)

    def _component_files(self, comp: str, allow_pickle: bool) -> List[Source]:
        folder = self.path / comp
        indexes = sorted(folder.glob("*.safetensors.index.json"))
        if indexes:
            shards = sorted(set(json.loads(indexes[0].read_text())["weight_map"].values()))
            return [SafetensorsFile(folder / s) for s in shards]
        for name in _WEIGHT_NAMES:
            if (folder / name).is_file():
                return [open_file(folder / name, allow_pickle)]
        raise SourceError(f"{folder}: no weights found (looked for {', '.join(_WEIGHT_NAMES)})")

    def config(self, comp: str) -> dict:
        return json.loads((self.path / comp / "config.json").read_text())

    def keys(self):
        return list(self._where)

    def shape(self, key):
        src, k = self._where[key]
        return src.shape(k)

    def get(self, key):
        src, k = self._where[key]
        return src.get(k)


def open_source(path, allow_pickle: bool = False) -> Source:
    path = Path(path)
    if not path.exists():
        raise SourceError(f"source not found: {path}")
    if path.is_dir():
        return DiffusersFolder(path, allow_pickle)
    return open_file(path, allow_pickle)

