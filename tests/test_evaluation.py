"""Object-level measures (exvideo_ms/evaluation.py) and the label maps the synthetic dataset writes for them."""

import numpy as np
import pytest

from exvideo_ms import evaluation
from exvideo_ms.data.sources import DatasetError
from tests.helpers import REPO, load_script


def _dataset_script():
    return load_script("make_synthetic_dataset")


def test_lab_of_reference_colours():
    """sRGB white is L* 100 with no chroma; sRGB red, green and blue have the published D65 values."""
    lab = evaluation.srgb_to_lab(np.array([[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]]))
    expected = [[100, 0, 0], [0, 0, 0], [53.24, 80.09, 67.20], [87.73, -86.18, 83.18], [32.30, 79.19, -107.86]]
    assert np.abs(lab - np.asarray(expected)).max() < 0.05
    assert evaluation.delta_e(lab[2], lab[2]) == 0.0 and abs(evaluation.delta_e([50, 3, 4], [50, 0, 0]) - 5) < 1e-12


def test_label_maps_mark_exactly_the_drawn_objects():
    """Inside each object's eroded label region the rendered frame has the object's colour (an antialiased edge
    of an object drawn later may touch a few of those pixels); labels and frames come from one rendering."""
    script = _dataset_script()
    video, labels, colours = script.render_clip(np.random.default_rng([5, 0]), 12, 64)
    assert labels.shape == video.shape[:3] and colours.shape[1] == 3 and set(np.unique(labels)) <= set(range(len(colours) + 1))
    exact = total = 0
    for frame, lab in zip(video, labels):
        for k, mask in evaluation.object_masks(lab).items():
            exact += int(np.all(frame[mask] == colours[k - 1], axis=-1).sum())
            total += int(mask.sum())
    assert total > 0 and exact >= 0.99 * total


def _centroids(labels, k):
    """(T, 2) x, y of object k's label pixels in every frame."""
    return np.array([np.argwhere(lab == k).mean(0)[::-1] for lab in labels])


def test_orbit_motion_circles_the_frame_centre_at_one_speed():
    """--motion orbit: every uncovered object's label centroid keeps its distance from the frame centre (within
    2 pixels: rasterisation and pulsing) and all turn by the clip's one angle per frame; the mixed kind's clips are the
    same numbers as before the option (its draws come first)."""
    script = _dataset_script()
    mixed = script.render_clip(np.random.default_rng([7, 0]), 10, 64)
    again = script.render_clip(np.random.default_rng([7, 0]), 10, 64, "mixed")
    assert all(np.array_equal(a, b) for a, b in zip(mixed, again))
    import cv2
    checked = 0
    for seed in range(12):
        video, labels, colours = script.render_clip(np.random.default_rng([7, seed]), 10, 64, "orbit")
        steps = []
        for k in range(1, len(colours) + 1):
            def whole(lab):  # no other object within 2 pixels: nothing covers this one
                near = cv2.dilate((lab == k).astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
                return (lab == k).any() and not np.any((lab[near] != k) & (lab[near] != 0))
            if not all(whole(lab) for lab in labels):
                continue  # covered in some frame (orbiting together, objects keep their relative places)
            pts = _centroids(labels, k) - 31.5
            r = np.hypot(*pts.T)
            assert r.max() - r.min() < 2.0, (seed, k, r)
            angle = np.unwrap(np.arctan2(pts[:, 1], pts[:, 0]))
            steps.append((angle[-1] - angle[0]) / (len(angle) - 1))  # mean turn per frame
        if steps:
            assert script.ORBIT_SPEED[0] - 0.02 <= abs(steps[0]) <= script.ORBIT_SPEED[1] + 0.02, (seed, steps)
            assert np.ptp(steps) < 0.02, (seed, steps)
            checked += len(steps)
    assert checked >= 3, checked


def test_object_radius_scales_the_objects_and_keeps_every_other_draw(tmp_path):
    """--object-radius: with every radius 1.5× the default range's, the same seed gives the same objects (count,
    colours) whose label areas are 1.5² = 2.25× as large in every frame of the clips with one object (nothing covers
    it; measured 1.95-2.19: rasterised edges, within 15%); a range outside 0 < MIN <= MAX <= 0.5 is refused, naming
    it, before anything is written."""
    import subprocess
    import sys
    script = _dataset_script()
    lo, hi = script.OBJECT_RADIUS
    checked = 0
    for seed in range(6):
        small = script.render_clip(np.random.default_rng([3, seed]), 6, 64)
        large = script.render_clip(np.random.default_rng([3, seed]), 6, 64, radius=(1.5 * lo, 1.5 * hi))
        assert np.array_equal(small[2], large[2])  # colours
        if len(small[2]) != 1:
            continue  # one object alone: no covering (every object stays inside the frame: it bounces)
        for a, b in zip(small[1], large[1]):
            ratio = (b == 1).sum() / (a == 1).sum()
            assert 2.25 * 0.85 <= ratio <= 2.25 * 1.15, (seed, ratio)
            checked += 1
    assert checked == 18, checked  # seeds 0, 2 and 3 have one object
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output",
                        str(tmp_path / "d"), "--object-radius", "0.3", "0.2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--object-radius 0.3 0.2: expected 0 < MIN <= MAX <= 0.5" in r.stderr, r.stderr
    assert not (tmp_path / "d").exists()


def test_drift_and_no_pan_slow_the_objects_and_keep_every_other_draw(tmp_path):
    """--drift SCALE --no-pan: the same seed gives the same first frame (image and labels) and colours; with drift 0
    an object alone in its clip stays where it is (its label centroid within 1 px of frame 0's: it only turns and
    pulses) while the default moves it further; with drift 0.25 it moves a quarter as far per frame until it first
    bounces. A negative scale, or either option with --motion orbit, is refused before anything is written."""
    import subprocess
    import sys
    script = _dataset_script()
    checked = 0
    for seed in range(6):
        moving = script.render_clip(np.random.default_rng([3, seed]), 12, 64)
        still = script.render_clip(np.random.default_rng([3, seed]), 12, 64, drift=0.0, pans=False)
        slow = script.render_clip(np.random.default_rng([3, seed]), 12, 64, drift=0.25, pans=False)
        for other in (still, slow):
            assert np.array_equal(moving[0][0], other[0][0]) and np.array_equal(moving[1][0], other[1][0])
            assert np.array_equal(moving[2], other[2])
        if len(moving[2]) != 1:
            continue  # one object alone: nothing covers it, so its label centroid is its position
        c_moving, c_still, c_slow = (_centroids(v[1], 1) for v in (moving, still, slow))
        assert np.abs(c_still - c_still[0]).max() <= 1.0, (seed, c_still)
        assert np.abs(c_moving - c_moving[0]).max() > 4.0, (seed, c_moving)
        step_moving, step_slow = c_moving[1] - c_moving[0], c_slow[1] - c_slow[0]
        np.testing.assert_allclose(step_slow, step_moving / 4, atol=0.5)
        checked += 1
    assert checked == 3, checked  # seeds 0, 2 and 3 have one object
    for args, message in ((["--drift", "-0.5"], "--drift -0.5: expected SCALE >= 0"),
                          (["--motion", "orbit", "--no-pan"], "--drift and --no-pan change the mixed kind's motion")):
        r = subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output",
                            str(tmp_path / "d")] + args, capture_output=True, text=True)
        assert r.returncode == 2 and message in r.stderr, (args, r.stderr)
        assert not (tmp_path / "d").exists()


def _moving_disc(frames=6, colour=(220, 40, 40), vanish_at=None, recolour_at=None):
    import cv2
    yy, xx = np.mgrid[0:48, 0:48]
    out, labels = [], []
    for t in range(frames):
        f = np.stack([xx * 4, yy * 4, np.full_like(xx, 90)], -1).astype(np.uint8)  # a gradient background
        lab = np.zeros((48, 48), np.uint8)
        c = (40, 40, 220) if recolour_at is not None and t >= recolour_at else colour
        if vanish_at is None or t < vanish_at:
            cv2.circle(f, (12 + 4 * t, 20), 7, c, -1)
            cv2.circle(lab, (12 + 4 * t, 20), 7, 1, -1)
        out.append(f)
        labels.append(lab)
    return np.stack(out), np.stack(labels)


def test_object_measures_follow_a_moving_object_and_notice_its_loss():
    video, labels = _moving_disc()
    (obj,) = evaluation.object_measures(video, video[0], labels[0])
    assert obj["first_frame_psnr"] == float("inf") and all(obj["present"])
    assert max(obj["delta_e"]) < 1e-9  # the same colour in every frame
    gone, _ = _moving_disc(vanish_at=4)
    (obj,) = evaluation.object_measures(gone, video[0], labels[0])
    assert obj["present"] == [True] * 4 + [False] * 2
    blue, _ = _moving_disc(recolour_at=3)
    (obj,) = evaluation.object_measures(blue, video[0], labels[0])
    assert obj["present"][:3] == [True] * 3 and not any(obj["present"][3:])  # another colour is another object
    noisy = np.clip(video.astype(int) + np.random.default_rng(0).integers(-6, 7, video.shape), 0, 255).astype(np.uint8)
    (obj,) = evaluation.object_measures(noisy, video[0], labels[0])
    assert all(obj["present"]) and 0 < max(obj["delta_e"]) < 3 and 25 < obj["first_frame_psnr"] < 40


def test_foreign_area_counts_exactly_the_colours_the_input_lacks():
    video, labels = _moving_disc()
    area = labels.reshape(len(labels), -1).mean(1)  # the disc's share of each frame
    # moving the disc uncovers background whose neighbours are in the input: nothing foreign
    assert evaluation.foreign_area(video, video[0]).tolist() == [0.0] * 6
    assert evaluation.foreign_area(_moving_disc(vanish_at=2)[0], video[0]).tolist() == [0.0] * 6
    # a blue disc on a background without blue: every pixel of it is foreign from the frame it turns blue
    blue, _ = _moving_disc(recolour_at=3)
    assert evaluation.foreign_area(blue, video[0]).tolist() == [0.0] * 3 + area[3:].tolist()
    # against an input with the blue disc, the red one is the foreign object
    assert evaluation.foreign_area(blue, blue[3]).tolist() == area[:3].tolist() + [0.0] * 3
    # noise of a few levels moves colours by less than ΔE 20
    noisy = np.clip(video.astype(int) + np.random.default_rng(0).integers(-6, 7, video.shape), 0, 255).astype(np.uint8)
    assert not evaluation.foreign_area(noisy, video[0]).any()


def test_foreign_area_equals_the_brute_force_nearest_colour():
    """Against every pixel's distance to every input colour, unrounded: equal except pixels whose nearest
    distance lies within the palette's rounding (0.5 ΔE per axis) of the threshold."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
    frames = rng.integers(0, 256, (3, 12, 12, 3)).astype(np.uint8)
    palette = evaluation.srgb_to_lab(image.reshape(-1, 3))
    for frame, got in zip(frames, evaluation.foreign_area(frames, image, max_delta_e=15.0)):
        nearest = np.linalg.norm(evaluation.srgb_to_lab(frame.reshape(-1, 3))[:, None] - palette[None], axis=-1).min(1)
        borderline = np.abs(nearest - 15.0) < 0.5
        assert 0 < np.mean(nearest > 15.0) < 1
        assert abs(got - np.mean(nearest > 15.0)) <= borderline.mean(), (got, np.mean(nearest > 15.0))


def test_foreign_area_is_the_same_in_blocks(monkeypatch):
    """Frames larger than one distance block are counted block by block: with an input of exactly four colours,
    blocks of 1 and of 5 pixels (5 does not divide the 144 pixels) count what one block of the whole frame does."""
    rng = np.random.default_rng(2)
    image = np.array([[0, 0, 0], [255, 0, 0], [0, 200, 0], [40, 40, 220]], np.uint8)[np.arange(144).reshape(12, 12) % 4]
    frames = rng.integers(0, 256, (3, 12, 12, 3)).astype(np.uint8)
    whole = evaluation.foreign_area(frames, image, max_delta_e=15.0)
    for rows in (1, 5):
        monkeypatch.setattr(evaluation, "FOREIGN_BLOCK_ELEMENTS", rows * 4)
        np.testing.assert_array_equal(evaluation.foreign_area(frames, image, max_delta_e=15.0), whole)
    assert 0 < whole.min() and whole.max() < 1


def test_object_psnr_looks_only_at_the_object():
    video, labels = _moving_disc()
    mask = evaluation.object_masks(labels[0])[1]
    other = video[0].copy()
    other[~mask] = 0  # the background changes entirely
    assert evaluation.object_psnr(other, video[0], mask) == float("inf") and evaluation.psnr(other, video[0]) < 15
    with pytest.raises(ValueError, match="selects no pixel"):
        evaluation.object_psnr(other, video[0], np.zeros_like(mask))


@pytest.fixture(scope="module")
def heldout3(tmp_path_factory):
    """Three held-out clips of 8 frames with their masks (make_synthetic_dataset.py, seed 0); tests only read it."""
    import subprocess
    import sys
    out = tmp_path_factory.mktemp("heldout3")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(out),
                    "--clips", "0", "--heldout", "3", "--frames", "8", "--size", "64", "--seed", "0"], check=True,
                   capture_output=True)
    return out / "heldout"


def test_heldout_object_ranges_from_the_written_masks(heldout3, tmp_path):
    import shutil
    r = evaluation.object_ranges(heldout3, 8)
    assert r["present_fraction"] > 0.9 and 0 < r["delta_e_p95"] <= r["delta_e_max"] < 25  # 16 demo clips: 0.94, 9.5, 17.9
    assert 0 <= r["foreign_area_max"] < 0.01  # 16 demo clips: 0.3% over 8 frames (mp4 compression, overlaps)
    root = shutil.copytree(heldout3, tmp_path / "heldout")
    (root / "masks" / "clip_00001.npz").unlink()
    with pytest.raises(DatasetError, match="clip_00001.npz: no object masks"):
        evaluation.object_ranges(root, 8)


def test_object_survey_counts_the_tracked_objects_of_every_clip(heldout3, tmp_path):
    """A model that returns each clip itself keeps every object the survey counts; an object the tracker cannot
    follow through its own clip is not counted; a still video of the first frame keeps the objects too; a video
    whose last half is one flat grey loses each counted object in exactly those frames."""
    import json
    import shutil

    from exvideo_ms.media import read_video
    root = shutil.copytree(heldout3, tmp_path / "heldout")
    # a 4x4 "object" of background colour in clip 0's label maps: the background around it is far larger than
    # 4x its area in every frame, so the tracker never finds it and the survey must leave it out
    with np.load(root / "masks" / "clip_00000.npz") as z:
        labels, colors = z["labels"].copy(), z["colors"]
    assert not labels[:, :4, :4].any()
    labels[:, :4, :4] = labels.max() + 1
    np.savez_compressed(root / "masks" / "clip_00000.npz", labels=labels, colors=colors)
    clips = {read_video(root / item["path"], count=1)[0].tobytes(): read_video(root / item["path"], count=8)
             for item in json.loads((root / "metadata.json").read_text())}
    itself = evaluation.object_survey(root, 8, lambda first: clips[first.tobytes()])
    assert itself["present_fraction"] == 1.0 and itself["kept_throughout"] == itself["objects"] == 3
    assert {o["clip"] for o in itself["per_object"]} <= {f"videos/clip_{i:05d}.mp4" for i in range(3)}
    still = evaluation.object_survey(root, 8, lambda first: np.repeat(first[None], 8, 0))
    assert still["present_fraction"] == 1.0 and still["objects"] == itself["objects"]

    def grey_after_four(first):
        video = clips[first.tobytes()].copy()
        video[4:] = 128
        return video
    lost = evaluation.object_survey(root, 8, grey_after_four)
    assert lost["present_fraction"] == 0.5 and lost["kept_throughout"] == 0
    assert [o["frames_present"] for o in lost["per_object"]] == [4] * lost["objects"]
