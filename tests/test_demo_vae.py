"""scripts/train_demo_vae.py's object weighting (issue 19): which pixels weigh more, and the clip windows it
draws with their masks."""
import json
import subprocess
import sys

import numpy as np
import pytest

from exvideo_ms.data.sources import DatasetError
from tests.helpers import REPO, load_script


def _script():
    return load_script("train_demo_vae")


def test_object_weights_cover_the_objects_grown_by_their_antialiased_border():
    vae = _script()
    labels = np.zeros((2, 12, 12), np.uint8)
    labels[0, 3:6, 4:8] = 1  # a 3x4 object
    labels[0, 10, 10] = 2  # and a one-pixel one in the same frame; frame 1 is background only
    w = vae.object_weights(labels, 4.0)
    assert w.shape == (2, 1, 12, 12) and w.dtype == np.float32
    grown = np.zeros((12, 12), bool)
    grown[3 - vae.OBJECT_EDGE:6 + vae.OBJECT_EDGE, 4 - vae.OBJECT_EDGE:8 + vae.OBJECT_EDGE] = True
    grown[10 - vae.OBJECT_EDGE:11 + vae.OBJECT_EDGE, 10 - vae.OBJECT_EDGE:11 + vae.OBJECT_EDGE] = True
    np.testing.assert_array_equal(w[0, 0], np.where(grown, 5.0, 1.0))
    np.testing.assert_array_equal(w[1, 0], np.ones((12, 12)))
    np.testing.assert_array_equal(vae.object_weights(labels, 0.0), np.ones((2, 1, 12, 12)))


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_data")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(out),
                    "--clips", "3", "--heldout", "1", "--frames", "6", "--size", "32", "--fps", "8", "--seed", "0"],
                   check=True, capture_output=True)
    return out / "train"


def test_object_clips_draw_windows_with_their_own_masks(small_dataset):
    vae = _script()
    clips = vae.ObjectClips(small_dataset, frames=2, size=32, weight=3.0)
    frames, weights = clips.batch(np.random.default_rng(0), 4)
    assert frames.shape == (4, 2, 3, 32, 32) and weights.shape == (8, 1, 32, 32)
    assert frames.min() >= -1 and frames.max() <= 1
    # every window's weights are its own frames' masks: find each window in its clip and compare
    from exvideo_ms.models.conditioner import to_model_range
    for b in range(4):
        hits = [(i, s) for i, video in enumerate(clips.videos) for s in range(len(video) - 1)
                if np.array_equal(to_model_range(video[s:s + 2]), frames[b])]
        assert hits, b
        i, s = hits[0]
        np.testing.assert_array_equal(weights[2 * b:2 * b + 2], vae.object_weights(clips.labels[i][s:s + 2], 3.0))
    assert set(np.unique(weights)) == {1.0, 4.0}


def test_object_clips_name_a_missing_mask_and_a_wrong_size(small_dataset, tmp_path):
    vae = _script()
    with pytest.raises(ValueError, match="expected 6 frames of 64x64"):
        vae.ObjectClips(small_dataset, frames=2, size=64, weight=1.0)
    meta = json.loads((small_dataset / "metadata.json").read_text())
    (small_dataset / "masks" / "clip_00001.npz").rename(tmp_path / "moved.npz")
    try:
        with pytest.raises(DatasetError, match=r"clip_00001\.npz: no object masks for videos/clip_00001\.mp4"):
            vae.ObjectClips(small_dataset, frames=2, size=32, weight=1.0)
    finally:
        (tmp_path / "moved.npz").rename(small_dataset / "masks" / "clip_00001.npz")
    assert len(meta) == 3


def _tiny_32px_config(tmp_path):
    text = (REPO / "tests" / "configs" / "tiny.yaml").read_text()
    assert "\nsampling:\n" in text
    config = tmp_path / "tiny32.yaml"
    config.write_text(text.replace("\nsampling:\n", "\nsampling:\n  height: 32\n  width: 32\n"))
    return config


def _train_vae(config, data, output, *extra, check=True):
    return subprocess.run([sys.executable, str(REPO / "scripts" / "train_demo_vae.py"), "--config", str(config),
                           "--data", str(data), "--output", str(output), "--steps", "4", "--batch", "1",
                           "--frames", "2", "--object-weight", "2", "--lr", "1e-3", *extra],
                          check=check, capture_output=True, text=True)


def test_a_run_stopped_and_resumed_trains_the_same_vae_as_one_run(small_dataset, tmp_path):
    """--stop-after then --resume equals one uninterrupted run exactly: weights, logged losses, latent scale.
    The stop falls on a recompilation (every 2 steps here, every RECOMPILE_EVERY = 24 in train_demo.sh, which
    stops at 1800): a freshly compiled graph rounds differently from one that has run, so a stop elsewhere differs
    at float32 rounding level, which Adam's ε = 1e-8 amplifies on near-zero gradients (measured: 8e-5 after 4
    steps). Runs of 24 steps are not used here: this small graph stalls before its 24th run."""
    from exvideo_ms.checkpoint import iter_checkpoint
    every = ("--recompile-every", "2")
    config = _tiny_32px_config(tmp_path)
    _train_vae(config, small_dataset, tmp_path / "whole", *every)
    _train_vae(config, small_dataset, tmp_path / "split", *every, "--stop-after", "2")
    stopped = json.loads((tmp_path / "split" / "resume" / "progress.json").read_text())
    assert stopped["step"] == 2 and not (tmp_path / "split" / "encoders.ckpt").exists()
    assert [f.name for f in (tmp_path / "split" / "resume").glob("state*")] == [stopped["state"]]
    # the same stop again (a stage killed after it stopped, before train_demo.sh marked it done): nothing to do
    again = _train_vae(config, small_dataset, tmp_path / "split", *every, "--resume", "--stop-after", "2")
    assert "already stopped at step 2, nothing to do" in again.stderr
    assert json.loads((tmp_path / "split" / "resume" / "progress.json").read_text()) == stopped
    _train_vae(config, small_dataset, tmp_path / "split", *every, "--resume")
    whole, split = (dict(iter_checkpoint(tmp_path / d / "encoders.ckpt")) for d in ("whole", "split"))
    assert whole.keys() == split.keys() and any(k.startswith("vae.") for k in whole)
    for name in whole:
        np.testing.assert_array_equal(split[name], whole[name], err_msg=name)
    logs = [[json.loads(x) for x in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("whole", "split")]
    assert [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    assert [r["loss"] for r in logs[1]] == [r["loss"] for r in logs[0]]
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("whole", "split")]
    assert summaries[1]["scale_factor"] == summaries[0]["scale_factor"]
    # the stopped run's steps still count in the training time
    assert summaries[1]["seconds"] >= stopped["seconds"] > 0


def test_resume_names_what_differs_and_a_missing_run(small_dataset, tmp_path):
    config = _tiny_32px_config(tmp_path)
    missing = _train_vae(config, small_dataset, tmp_path / "none", "--resume", check=False)
    assert missing.returncode != 0 and "--resume: no stopped run in" in missing.stderr
    folder = tmp_path / "run" / "resume"
    folder.mkdir(parents=True)
    (folder / "state.ckpt").write_bytes(b"")
    args = {"config": str(config), "data": str(small_dataset), "steps": 4, "batch": 1, "frames": 2,
            "object_weight": 2.0, "init": None, "lr": 3e-4, "seed": 0}
    (folder / "progress.json").write_text(json.dumps({"step": 2, "seconds": 1.0, "rng": {}, "args": args}))
    other = _train_vae(config, small_dataset, tmp_path / "run", "--resume", check=False)
    assert other.returncode != 0 and "--lr was 0.0003, now 0.001" in other.stderr
    late = _train_vae(config, small_dataset, tmp_path / "run", "--stop-after", "5", check=False)
    assert late.returncode != 0 and "--stop-after must be in 1..3 (--steps 4), got 5" in late.stderr
