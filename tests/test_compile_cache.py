"""image_to_video's compile cache: one directory per graph configuration, and a warm cache runs whatever
weights are loaded (the cache holds graphs, not values) with exactly the output of an uncached run."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tests.helpers import REPO

I2V_CONFIG = REPO / "configs" / "demo" / "i2v.yaml"
ASSETS = REPO / "assets" / "demo"


def test_cache_directory_changes_with_shapes_and_model_not_with_weights_or_seed(tmp_path):
    from exvideo_ms.backend import compile_cache_dir
    base = {"model": {"unet": {"model_channels": 32}}, "height": 64, "SVD": {"num_frames": 32}}
    d = compile_cache_dir(tmp_path, base)
    assert d.parent == tmp_path and d == compile_cache_dir(tmp_path, json.loads(json.dumps(base)))
    assert compile_cache_dir(tmp_path, {**base, "SVD": {"num_frames": 16}}) != d
    assert compile_cache_dir(tmp_path, {**base, "height": 128}) != d
    assert compile_cache_dir(tmp_path, {**base, "model": {"unet": {"model_channels": 64}}}) != d


def _run(out, cache, checkpoint):
    args = [sys.executable, "image_to_video.py", "--config", str(I2V_CONFIG), "--output_dir", str(out),
            "--no_gif", "--SVD.num_frames", "8", "--SVD.sampling_steps", "2", "--SVD.decode_window", "8",
            "--SVD.checkpoint", json.dumps([str(ASSETS / "base.ckpt"), str(checkpoint)]),
            "--compile_cache", "null" if cache is None else str(cache)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from exvideo_ms.media import read_video
    side = json.loads(next(out.glob("*.json")).read_text())
    return read_video(next(out.glob("*.mp4"))), side["compile_cache"]


@pytest.fixture(scope="module")
def other_weights(tmp_path_factory):
    """The bundled ExVideo weights, every tensor scaled by 0.9: same names and shapes, other values."""
    import mindspore as ms
    path = tmp_path_factory.mktemp("weights") / "exvideo_scaled.ckpt"
    params = ms.load_checkpoint(str(ASSETS / "exvideo.ckpt"))
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v.asnumpy() * 0.9)} for k, v in params.items()], str(path))
    return path


@pytest.mark.slow
def test_warm_cache_with_other_weights_equals_an_uncached_run(tmp_path, other_weights):
    cache = tmp_path / "cache"
    bundled, first = _run(tmp_path / "a", cache, ASSETS / "exvideo.ckpt")
    warm, second = _run(tmp_path / "b", cache, other_weights)
    uncached, third = _run(tmp_path / "c", None, other_weights)
    assert first["reused"] is False and second == {"path": first["path"], "reused": True} and third is None
    assert warm.shape == (8, 64, 64, 3)
    np.testing.assert_array_equal(warm, uncached)  # the cached graphs ran the newly loaded weights
    assert np.abs(warm.astype(int) - bundled).mean() > 0.5  # and those weights do change the video
