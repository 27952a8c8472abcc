"""Training data: the three clip-list formats, frame sampling and transforms, motion buckets, and the handling
of corrupt, short and escaping entries."""
import json
import subprocess
import sys

import numpy as np
import pytest

from exvideo_ms.data.dataset import DataOptions, VideoClipSource, batches, make_source, sample_indices
from exvideo_ms.data.object_masks import object_fraction, read_labels
from exvideo_ms.data.motion import THRESHOLDS, motion_bucket, motion_score
from exvideo_ms.data.sources import DatasetError, load_clips
from exvideo_ms.data.transforms import frame_indices, resize_crop
from exvideo_ms.models.conditioner import to_model_range
from tests.helpers import REPO


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(root),
                        "--clips", "3", "--heldout", "1", "--frames", "10", "--size", "48", "--csv",
                        "--frame-folders", "--seed", "4"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return root / "train"


def opts(root, fmt, **kw):
    base = dict(path=str(root), format=fmt, num_frames=6, interval=1, start="fixed", height=32, width=40,
                fps=8.0, num_workers=0)
    base.update(kw)
    return DataOptions(**base)


def test_synthetic_generator_is_deterministic(synthetic, tmp_path):
    again = tmp_path / "again"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(again),
                    "--clips", "3", "--heldout", "1", "--frames", "10", "--size", "48", "--seed", "4"], check=True,
                   capture_output=True)
    from exvideo_ms.media import read_video
    for name in ("clip_00000.mp4", "clip_00002.mp4"):
        assert np.array_equal(read_video(synthetic / "videos" / name), read_video(again / "train" / "videos" / name))
    assert (synthetic.parent / "heldout" / "metadata.json").is_file()


def test_synthetic_generator_refuses_to_overwrite_a_dataset(tmp_path):
    """A second run into a folder that holds a dataset exits 2 naming the folder and what it holds, and leaves every
    file as it was; with --overwrite it replaces the dataset, with no clip of the old one left behind."""
    def run(*args):
        return subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output",
                               str(tmp_path / "d"), "--frames", "2", "--size", "32", *args], capture_output=True,
                              text=True)
    assert run("--clips", "3", "--heldout", "1").returncode == 0
    before = {f: f.read_bytes() for f in (tmp_path / "d").rglob("*") if f.is_file()}
    r = run("--clips", "1", "--heldout", "0", "--seed", "1")
    assert r.returncode == 2 and f"--output {tmp_path / 'd'} already holds a dataset (train, heldout, generator.json)" \
        in r.stderr, r.stderr
    assert {f: f.read_bytes() for f in (tmp_path / "d").rglob("*") if f.is_file()} == before
    assert run("--clips", "1", "--heldout", "0", "--seed", "1", "--overwrite").returncode == 0
    assert sorted(f.name for f in (tmp_path / "d" / "train" / "videos").iterdir()) == ["clip_00000.mp4"]
    assert not (tmp_path / "d" / "heldout").exists()
    assert json.loads((tmp_path / "d" / "generator.json").read_text())["seed"] == 1


def test_three_formats_load_the_same_clip_identically(synthetic):
    """metadata.json and the CSV point at the same mp4; the frame folder holds the PNGs of the same frames:
    all three give the same sample up to the video codec (mp4 vs lossless PNG)."""
    samples = {}
    for fmt in ("metadata", "csv", "frames"):
        src = VideoClipSource(opts(synthetic / "frames" if fmt == "frames" else synthetic, fmt), seed=3)
        assert len(src.clips) == 3
        samples[fmt] = src[0]
    m, c, f = samples["metadata"], samples["csv"], samples["frames"]
    assert np.array_equal(m[0], c[0])  # same file, same decode
    assert m[0].shape == (6, 3, 32, 40) and m[0].min() >= -1 and m[0].max() <= 1
    # the folder's PNGs were written from the same rendered frames: equal up to mp4v's coding error (measured
    # ~0.04 mean on [-1, 1] at 48 px), far below the difference to another clip
    assert np.abs(m[0] - f[0]).mean() < 0.06
    other = VideoClipSource(opts(synthetic / "frames", "frames"), seed=3)[1][0]
    assert np.abs(other - f[0]).mean() > 3 * np.abs(m[0] - f[0]).mean()
    csv_src = VideoClipSource(opts(synthetic, "csv"), seed=3)
    assert c[2] == np.float32(csv_src.clips[csv_src.order.clip(0)].motion_bucket_id)  # taken from the CSV
    assert m[2] == motion_bucket(m[0])  # computed from the sampled frames when the list has none


def test_sampling_start_interval_and_transform(synthetic):
    assert frame_indices(10, 4, 2, 0) == [0, 2, 4, 6]
    assert frame_indices(10, 4, 3, 0) == [0, 3, 6, 9]
    assert frame_indices(10, 4, 3, 1) is None and frame_indices(5, 6, 1, 0) is None
    frame = np.zeros((30, 60, 3), np.uint8)
    frame[:, 25:35] = 255  # a bright centre column survives the centre crop
    out = resize_crop(frame, 32, 32)
    assert out.shape == (32, 32, 3) and out[:, 14:18].mean() > 200 and out[:, :4].max() < 30
    x = to_model_range(np.full((2, 4, 4, 3), 255, np.uint8))
    assert x.shape == (2, 3, 4, 4) and np.all(x == 1.0)
    a = VideoClipSource(opts(synthetic, "metadata", start="random", interval=2, num_frames=4), seed=1)
    starts = {tuple(a[i][0][0, 0, 0, :3].round(3)) for i in range(6)}
    assert len(starts) > 1  # random starts differ between samples
    assert np.array_equal(a[5][0], a[5][0])  # and each sample is a pure function of (seed, index)


def test_motion_bucket_thresholds():
    assert len(THRESHOLDS) == 128 and np.all(np.diff(THRESHOLDS) > 0)
    still = np.zeros((5, 3, 8, 8), np.float32)
    assert motion_score(still) == 0.0 and motion_bucket(still) == 0
    g = np.random.default_rng(0)
    frames = g.uniform(-1, 1, (8, 3, 8, 8)).astype(np.float32)
    score = frames.astype(np.float64).std(axis=0, ddof=1).mean()
    assert motion_bucket(frames) == int((THRESHOLDS[1:] <= score).sum()) == 127


def test_corrupt_and_short_clips_are_skipped_and_counted(synthetic, tmp_path, caplog):
    root = tmp_path / "mixed"
    (root / "videos").mkdir(parents=True)
    for name in ("clip_00000.mp4", "clip_00001.mp4"):
        (root / "videos" / name).write_bytes((synthetic / "videos" / name).read_bytes())
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
    from exvideo_ms.media import read_video, write_mp4
    write_mp4(read_video(synthetic / "videos" / "clip_00002.mp4")[:3], root / "videos" / "short.mp4", 8)
    entries = [{"path": f"videos/{n}"} for n in ("broken.mp4", "short.mp4", "clip_00000.mp4", "clip_00001.mp4")]
    (root / "metadata.json").write_text(json.dumps(entries))
    src = VideoClipSource(opts(root, "metadata"), seed=0)
    total_skipped = 0
    for b in batches(src, list(range(8)), 2, workers=0):
        assert b["frames"].shape == (2, 6, 3, 32, 40)
        total_skipped += int(b["skipped"].sum())
    assert total_skipped > 0
    assert "skipping clip" in caplog.text and ("broken.mp4" in caplog.text or "short.mp4" in caplog.text)


@pytest.mark.parametrize("bad", ["../outside.mp4", "/etc/passwd", "videos/../../x.mp4"])
def test_paths_escaping_the_root_are_rejected_at_load(tmp_path, bad):
    (tmp_path / "metadata.json").write_text(json.dumps([{"path": "videos/a.mp4"}, {"path": bad}]))
    with pytest.raises(DatasetError, match="escapes the dataset root|must be relative"):
        load_clips(tmp_path, "metadata")
    (tmp_path / "metadata.csv").write_text(f"path,length,motion_bucket_id\n{bad},10,3\n")
    with pytest.raises(DatasetError, match="escapes the dataset root|must be relative"):
        load_clips(tmp_path, "csv")


def test_symlink_out_of_the_root_is_rejected(tmp_path):
    root = tmp_path / "root"
    (root / "videos").mkdir(parents=True)
    (root / "videos" / "link.mp4").symlink_to(tmp_path / "elsewhere.mp4")
    (root / "metadata.json").write_text(json.dumps([{"path": "videos/link.mp4"}]))
    with pytest.raises(DatasetError, match="escapes the dataset root"):
        load_clips(root, "metadata")


def test_sample_indices_split_a_global_batch_across_ranks():
    one = sample_indices(step=3, micro=0, accum=1, rank=0, world=1, batch=2)
    two = sample_indices(3, 0, 1, 0, 2, 1) + sample_indices(3, 0, 1, 1, 2, 1)
    assert one == two == [6, 7]
    assert sample_indices(1, 1, 2, 0, 1, 1) == [3]


# ------------------------------------------------------------------------------------------ object masks
def test_object_fraction_is_the_object_share_of_each_latent_pixel(synthetic):
    labels = read_labels(synthetic, "videos/clip_00000.mp4")  # 10 frames of 48², 0 background, k the k-th object
    assert labels.shape == (10, 48, 48) and labels.max() >= 1
    # no resize: the block mean of the object pixels
    share = object_fraction(labels, 48, 48, 8)
    want = (labels > 0).reshape(10, 6, 8, 6, 8).mean(axis=(2, 4))
    np.testing.assert_allclose(share, want, atol=1e-7)
    assert 0 < share.mean() < 0.5
    # resized and cropped as the frames are: an all-object or object-free frame stays 1 or 0 everywhere
    full, empty = np.ones((2, 30, 50), np.uint8), np.zeros((2, 30, 50), np.uint8)
    np.testing.assert_array_equal(object_fraction(full, 16, 24, 8), np.ones((2, 2, 3)))
    np.testing.assert_array_equal(object_fraction(empty, 16, 24, 8), np.zeros((2, 2, 3)))
    # the left half of a frame that is cropped to its centre: more object on the left latent pixels
    half = np.zeros((1, 32, 64), np.uint8)
    half[:, :, :32] = 3
    s = object_fraction(half, 32, 32, 8)  # the crop keeps columns 16..47: object in the crop's left half
    np.testing.assert_allclose(s, np.repeat([[[1.0, 1.0, 0.0, 0.0]]], 4, axis=1), atol=1e-7)
    with pytest.raises(ValueError, match="do not tile"):
        object_fraction(labels, 48, 44, 8)
    with pytest.raises(DatasetError, match="clip_00099.npz: no object masks"):
        read_labels(synthetic, "videos/clip_00099.mp4")


def _precomputed(root, with_fraction: bool, frames: int = 8):
    """A precomputed folder by hand: frame i's latents all i, its object fraction i / 100."""
    root.mkdir()
    lat = np.broadcast_to(np.arange(frames, dtype=np.float32)[:, None, None, None], (frames, 4, 2, 3)).copy()
    extra = {"object_fraction": lat[:, 0] / 100} if with_fraction else {}
    np.savez(root / "a.npz", latents=lat, clip_embeddings=np.zeros((frames, 1, 4), np.float32), fps=np.float32(8),
             motion_bucket_id=np.float32(20), **extra)
    (root / "precomputed.json").write_text(json.dumps(
        {"files": ["a.npz"], "encode_scale": 2.0, "num_frames": frames, "object_fraction": with_fraction}))


def test_precomputed_windows_carry_their_own_object_fractions(tmp_path):
    _precomputed(tmp_path / "with", True)
    o = DataOptions(path=str(tmp_path / "with"), format="precomputed", num_frames=3, interval=2, start="random")
    source = make_source(o, seed=5, object_fraction=True)
    assert source.columns[-1] == "object_fraction"
    starts = set()
    for i in range(12):
        latents, cond, _, _, _, _, fraction = source[i]
        frames = latents[:, 0, 0, 0]
        np.testing.assert_array_equal(frames, frames[0] + np.array([0, 2, 4]))
        assert fraction.shape == (3, 2, 3)
        np.testing.assert_allclose(fraction * 100, np.broadcast_to(frames[:, None, None], (3, 2, 3)), rtol=1e-6)
        starts.add(int(frames[0]))
    assert len(starts) > 1  # random starts, each with its own fractions
    assert len(make_source(o, seed=5)[0]) == 6  # not asked for: the plain columns
    # asked for where there are none: refused before training, naming the fix
    _precomputed(tmp_path / "without", False)
    with pytest.raises(DatasetError, match="hold no object fractions.*--object_masks"):
        make_source(DataOptions(path=str(tmp_path / "without"), format="precomputed", num_frames=3), 5, True)
    with pytest.raises(DatasetError, match="dataset.format is 'metadata'"):
        make_source(DataOptions(path=str(tmp_path / "with"), format="metadata"), 5, True)
