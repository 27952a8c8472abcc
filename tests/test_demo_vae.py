"""scripts/train_demo_vae.py's object weighting (issue 19): which pixels weigh more, and the clip windows it
draws with their masks."""
import json
import subprocess
import sys

import numpy as np
import pytest

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
        with pytest.raises(FileNotFoundError, match=r"clip_00001\.npz: missing; the demo VAE trainer reads the object masks"):
            vae.ObjectClips(small_dataset, frames=2, size=32, weight=1.0)
    finally:
        (tmp_path / "moved.npz").rename(small_dataset / "masks" / "clip_00001.npz")
    assert len(meta) == 3
