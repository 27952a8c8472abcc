"""MindSpore's compile cache as image_to_video.py and train.py use it: one directory per graph configuration, and
a warm cache runs whatever weights are loaded (the cache holds graphs, not values) with exactly the output of an
uncached run. train.py's runs through a warm cache: tests/test_train.py (kill and resume)."""
import json
import subprocess
import sys
from pathlib import Path

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


def _key(**changes):
    import dataclasses

    from exvideo_ms import backend
    from exvideo_ms.config import load_config
    from exvideo_ms.train.trainer import EnvironmentOptions, TrainOptions, compile_cache_key
    cfg = load_config(REPO / "tests" / "configs" / "tiny.yaml")
    train, env, shapes = TrainOptions(), EnvironmentOptions(), [(1, 8, 4, 8, 8)]
    for name, value in changes.items():
        if name == "shapes":
            shapes = value
        elif name == "model_channels":
            cfg = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, model_channels=value))
        elif name.startswith("dataset."):
            train = dataclasses.replace(train, dataset=dataclasses.replace(train.dataset, **{name[8:]: value}))
        elif hasattr(env, name):
            env = dataclasses.replace(env, **{name: value})
        else:
            train = dataclasses.replace(train, **{name: value})
    return backend.compile_cache_dir("/cache", compile_cache_key(cfg, train, env, backend.choices_for("CPU"), 1, 0,
                                                                 shapes))


def test_train_step_cache_folder_changes_with_what_shapes_the_graph_only():
    from exvideo_ms.train.optim import OptimizerOptions
    same = _key()
    # where a run writes, how long it runs, where its data lies and what the host draws or schedules before each
    # step: the same compiled step (tests/test_train.py's kill-and-resume run trains on a step compiled for another
    # learning rate and seed, to the weights of a run that compiled its own)
    for change in ({"output_dir": "elsewhere"}, {"max_steps": 7}, {"save_every": 3}, {"resume": "auto"},
                   {"seed": 7}, {"conditioning_dropout": 0.1},
                   {"optimizer": OptimizerOptions(lr=3e-4, warmup_steps=10)},
                   {"dataset.path": "/other/data"}, {"dataset.num_workers": 4}, {"compile_cache": "/elsewhere"},
                   {"precompile": True}):  # the compiling child's folder is the training process's
        assert _key(**change) == same, change
    for change in ({"mode": "full"}, {"batch_size": 2}, {"recompute": True}, {"frozen_dtype": "fp16"},
                   {"optimizer": OptimizerOptions(eps=1e-3)}, {"optimizer": OptimizerOptions(weight_decay=0.0)},
                   {"dataset.num_frames": 16}, {"zero_stage": 1}, {"model_channels": 64},
                   {"shapes": [(1, 8, 4, 16, 16)]}):
        assert _key(**change) != same, change


def test_train_step_opens_the_cache_on_its_first_call_and_refuses_other_shapes_after(tmp_path):
    """Trainer.call_step with a stand-in for the compiled step: the first call's shapes key the folder, a failed
    first call removes the folder it created, and a later call with other shapes is refused, naming both."""
    import os
    import types

    import mindspore as ms

    from exvideo_ms.backend import choices_for
    from exvideo_ms.config import load_config
    from exvideo_ms.train.trainer import EnvironmentOptions, Trainer, TrainOptions
    calls = []

    def failing(*args):
        raise RuntimeError("compilation failed")
    fake = types.SimpleNamespace(cfg=load_config(REPO / "tests" / "configs" / "tiny.yaml"), opts=TrainOptions(),
                                 env=EnvironmentOptions(), choices=choices_for("CPU"),
                                 par=types.SimpleNamespace(world=1, rank=0), cache_root=tmp_path, input_shapes=None,
                                 step_cell=failing)
    small = (ms.Tensor(np.zeros((1, 8, 4, 8, 8), np.float32)),)
    saved = {k: os.environ.get(k) for k in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH")}
    try:
        with pytest.raises(RuntimeError, match="compilation failed"):
            Trainer.call_step(fake, 1.0, True, small, 0)
        assert list(tmp_path.iterdir()) == []  # the folder the failed call made is gone
        fake.input_shapes, fake.step_cell = None, lambda *a: calls.append(a) or "ran"
        assert Trainer.call_step(fake, 1.0, True, small, 0) == "ran"
        folder = Path(os.environ["MS_COMPILER_CACHE_PATH"])
        assert folder.parent == tmp_path and folder.is_dir() and os.environ["MS_COMPILER_CACHE_ENABLE"] == "1"
        assert Trainer.call_step(fake, 1.0, True, small, 1) == "ran"
        big = (ms.Tensor(np.zeros((1, 8, 4, 16, 16), np.float32)),)
        with pytest.raises(ValueError, match=r"step 3: train step inputs of shapes \[\(1, 8, 4, 16, 16\)\], the "
                                             r"first step's were \[\(1, 8, 4, 8, 8\)\]"):
            Trainer.call_step(fake, 1.0, True, big, 2)
        assert len(calls) == 2
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
