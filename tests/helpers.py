"""Paths, inputs and comparisons shared by the tests."""
import ast
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    """A script of scripts/ (not a package) imported as a module, e.g. ``load_script("train_demo_vae")``."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
# published key/shape lists of the real checkpoints (no weights), copied from the project's reference material
KEYS = REPO / "tests" / "data" / "keys"


def rel_err(a, b) -> float:
    """max |a − b| / max |b|."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def read_key_list(path: Path, section: str = None) -> dict:
    """key -> shape of a published key list (``tests/data/keys``), optionally of one ``## section``."""
    out, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            continue
        if not line.strip() or line.startswith("#") or (section and current != section):
            continue
        key, shape = line.split("\t")[:2]
        out[key] = tuple(ast.literal_eval(shape))
    return out


def shapes_only_source(shapes: dict, path="keys.txt"):
    """A conversion source that knows keys and shapes but holds no data (for planning at full size)."""
    from exvideo_ms.convert.sources import Source

    class ShapesOnly(Source):
        def __init__(self):
            self.path = Path(path)

        def keys(self):
            return list(shapes)

        def shape(self, key):
            return shapes[key]

    return ShapesOnly()


# the tiny UNet's inputs (tests/test_unet.py, test_graph_mode.py): two videos, non-square 8x16 latents
UNET_VIDEOS, UNET_H, UNET_W = 2, 8, 16


def unet_inputs(frames: int, seed: int = 0, h: int = UNET_H, w: int = UNET_W):
    """(x (B, T, 8, h, w), c_noise (B,), context (B, 1, 32), added-time ids (B, 3)) as NumPy."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((UNET_VIDEOS, frames, 8, h, w)).astype(np.float32)
    t = np.array([0.25 * np.log(700.0), -0.9], np.float32)  # c_noise per video
    ctx = g.standard_normal((UNET_VIDEOS, 1, 32)).astype(np.float32)
    ids = np.array([[6, 127, 0.02], [29, 40, 0.0]], np.float32)
    return x, t, ctx, ids


def torch_unet(unet, x, t, ctx, ids):
    """diffusers' UNet on ``unet_inputs``, output (B, T, C, h, w) as NumPy."""
    import torch
    with torch.no_grad():
        return unet(torch.from_numpy(x), torch.from_numpy(t), torch.from_numpy(ctx), torch.from_numpy(ids)).sample.numpy()


def ms_unet(net, x, t, ctx, ids, dim=8):
    """Our UNet on ``unet_inputs`` (frames of each video consecutive), output (B, T, C, h, w)."""
    from mindspore import Tensor

    from exvideo_ms.models.conditioner import added_time_vector, repeat_frames
    b, frames = x.shape[:2]
    y = repeat_frames(added_time_vector(Tensor(ids), dim), frames)
    out = net(Tensor(x.reshape((b * frames,) + x.shape[2:])), Tensor(np.repeat(t, frames)),
              repeat_frames(Tensor(ctx), frames), y, frames)
    return out.asnumpy().reshape((b, frames) + out.shape[1:])
