"""Image loading (mode conversion, errors) and video writers."""
import numpy as np
import pytest
from PIL import Image

from exvideo_ms.media import (MediaError, load_image, read_video, to_uint8, write_gif, write_mp4, write_pngs,
                              write_video)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "YCbCr"])
def test_opaque_modes_convert_to_rgb(mode, tmp_path):
    rgb = (np.random.default_rng(0).uniform(0, 255, (20, 30, 3))).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    out = load_image(im)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(im.convert("RGB")))
    path = tmp_path / f"x.{'jpg' if mode in ('CMYK', 'YCbCr') else 'png'}"
    im.save(path)
    assert load_image(path).shape == (20, 30, 3)


def _transparent(mode):
    """A 2x2 image: opaque red, fully transparent green, half-transparent blue, opaque white."""
    rgba = np.array([[[255, 0, 0, 255], [0, 255, 0, 0]], [[0, 0, 255, 128], [255, 255, 255, 255]]], np.uint8)
    im = Image.fromarray(rgba, "RGBA")
    if mode == "LA":
        return im.convert("LA"), np.array([[76, 255], [(29 * 128 + 255 * 127) / 255, 255]])
    if mode == "P":  # a palette image whose index 1 (green) is the transparent colour
        pal = Image.fromarray(np.array([[0, 1], [2, 3]], np.uint8), "P")
        pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255] + [0] * 756)
        pal.info["transparency"] = 1
        return pal, np.array([[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [255, 255, 255]]])
    alpha = rgba[..., 3:] / 255.0
    return im, rgba[..., :3] * alpha + 255 * (1 - alpha)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_is_composited_over_white(mode, tmp_path):
    im, expected = _transparent(mode)
    expected = np.asarray(expected, np.float64)
    if expected.ndim == 2:
        expected = np.repeat(expected[..., None], 3, -1)
    path = tmp_path / "t.png"
    im.save(path)
    for source in (im, path):
        out = load_image(source).astype(np.float64)
        assert np.abs(out - expected).max() <= 1.0, (mode, out, expected)


def test_sixteen_bit_grayscale_is_scaled_and_float_refused(tmp_path):
    values = np.array([[0, 257], [32896, 65535]], np.uint16)  # 8-bit 0, 1, 128, 255
    path = tmp_path / "g16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")  # what Pillow makes of a 16-bit PNG
    out = load_image(path)
    assert out.dtype == np.uint8 and out[..., 0].tolist() == [[0, 1], [128, 255]] and (out == out[..., :1]).all()
    assert load_image(Image.fromarray(values.astype(np.int32), "I"))[..., 0].tolist() == [[0, 1], [128, 255]]
    with pytest.raises(MediaError, match=r"mode F\) images have no defined range"):
        load_image(Image.fromarray(np.zeros((2, 2), np.float32), "F"))
    with pytest.raises(MediaError, match="only 8- and 16-bit integer images"):
        load_image(Image.fromarray(np.array([[0, 70000]], np.int32), "I"))


def test_exif_orientation_is_applied(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :5] = 255  # white on the left
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "rotated.jpg"
    im.save(path, exif=exif, quality=100)
    out = load_image(path)
    assert out.shape == (20, 10, 3) and out[:5].mean() > 200 and out[-5:].mean() < 50  # white now on top


def test_arrays(tmp_path):
    gray = np.zeros((5, 6), np.uint8)
    assert load_image(gray).shape == (5, 6, 3)
    rgba = np.zeros((5, 6, 4), np.uint8)
    assert load_image(rgba).shape == (5, 6, 3) and (load_image(rgba) == 255).all()  # transparent: white
    with pytest.raises(MediaError, match="uint8"):
        load_image(np.zeros((5, 6, 3), np.float32))


def test_missing_and_corrupt(tmp_path):
    with pytest.raises(MediaError, match="image not found"):
        load_image(tmp_path / "none.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(MediaError, match="not a readable image"):
        load_image(bad)


def test_writers_roundtrip(tmp_path):
    t, y, x = np.meshgrid(np.arange(6), np.arange(32), np.arange(48), indexing="ij")
    smooth = np.stack([x / 47.0, y / 31.0, (t / 5.0) * np.ones_like(x)], -1)
    frames = to_uint8(smooth)
    mp4 = write_mp4(frames, tmp_path / "v.mp4", fps=7)
    back = read_video(mp4)
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 6  # lossy codec
    gif = write_gif(frames, tmp_path / "v.gif", fps=7)
    assert Image.open(gif).n_frames == 6
    folder = write_pngs(frames, tmp_path / "frames")
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:04d}.png" for i in range(6)]
    assert not list(tmp_path.glob("*.tmp*"))
    # never over an existing file or folder, and nothing left behind
    before = {p: p.stat().st_mtime_ns for p in (mp4, gif)}
    for write, target in ((lambda p: write_mp4(frames, p, 7), mp4), (lambda p: write_gif(frames, p, 7), gif),
                          (lambda p: write_pngs(frames, p), folder)):
        with pytest.raises(MediaError, match="already exists; not overwritten"):
            write(target)
    assert {p: p.stat().st_mtime_ns for p in (mp4, gif)} == before and len(list(folder.iterdir())) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "v.gif", "v.mp4"]
    with pytest.raises(MediaError, match="fps must be a positive number"):
        write_mp4(frames, tmp_path / "w.mp4", fps=0)


def test_a_stream_of_blocks_writes_every_format_in_one_pass(tmp_path):
    """Blocks from a generator reach every writer as they come (consumed once); the files equal those written
    from the whole array; a block of another size, or a failure mid-stream, leaves no file."""
    frames = to_uint8(np.random.default_rng(0).random((7, 16, 24, 3)))
    consumed = []

    def blocks():
        for i in (0, 3, 5):
            consumed.append(i)
            yield frames[i:{0: 3, 3: 5, 5: 7}[i]]
    out = write_video(blocks(), {"mp4": tmp_path / "s.mp4", "gif": tmp_path / "s.gif", "png_frames": tmp_path / "f"}, 6)
    assert consumed == [0, 3, 5] and sorted(out) == ["gif", "mp4", "png_frames"]
    assert np.array_equal(read_video(out["mp4"]), read_video(write_mp4(frames, tmp_path / "whole.mp4", 6)))
    pngs = sorted(out["png_frames"].iterdir())
    assert [p.name for p in pngs] == [f"{i:04d}.png" for i in range(7)]
    assert all(np.array_equal(np.asarray(Image.open(p)), f) for p, f in zip(pngs, frames))
    gif = Image.open(out["gif"])
    assert gif.n_frames == 7 and gif.info["duration"] == 160  # 1000/6 ms, in GIF's 10 ms units
    with pytest.raises(MediaError, match="frame 3 is 12x16, the video's frames are 24x16"):
        write_video(iter([frames[:3], frames[3:, :, :12]]), {"mp4": tmp_path / "m.mp4"}, 6)

    def failing():
        yield frames[:2]
        raise RuntimeError("decoder failed")
    with pytest.raises(RuntimeError, match="decoder failed"):
        write_video(failing(), {"mp4": tmp_path / "x.mp4", "png_frames": tmp_path / "x"}, 6)
    with pytest.raises(MediaError, match="uint8 blocks, got float32"):
        write_video(frames.astype(np.float32), {"gif": tmp_path / "y.gif"}, 6)
    with pytest.raises(MediaError, match=r"formats must be among \['gif', 'mp4', 'png_frames'\], got \['avi'\]"):
        write_video(frames, {"avi": tmp_path / "z.avi"}, 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "s.gif", "s.mp4", "whole.mp4"]


def test_an_interrupt_while_writing_leaves_nothing(tmp_path, monkeypatch):
    import cv2
    frames = np.zeros((5, 16, 16, 3), np.uint8)
    calls = []

    class Interrupting:
        def __init__(self, *a):
            self.w = real(*a)

        def isOpened(self):
            return self.w.isOpened()

        def write(self, frame):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt
            self.w.write(frame)

        def release(self):
            self.w.release()

    real = cv2.VideoWriter
    monkeypatch.setattr(cv2, "VideoWriter", Interrupting)
    with pytest.raises(KeyboardInterrupt):
        write_mp4(frames, tmp_path / "v.mp4", fps=5)
    assert list(tmp_path.iterdir()) == []


def test_run_outputs_claim_unique_stems_and_roll_back(tmp_path):
    from exvideo_ms.media import RunOutputs
    a, b = RunOutputs(tmp_path, "20260101-000000_cat_s1"), RunOutputs(tmp_path, "20260101-000000_cat_s1")
    assert (a.stem, b.stem) == ("20260101-000000_cat_s1", "20260101-000000_cat_s1-1")
    (tmp_path / "20260101-000000_cat_s1-2.mp4").write_bytes(b"someone else's")
    c = RunOutputs(tmp_path, "20260101-000000_cat_s1")
    assert c.stem == "20260101-000000_cat_s1-3"  # a stem whose video exists is not taken either
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    b.add(write_gif(frames, b.path(".gif"), 5))
    b.write_sidecar("{}")
    b.rollback()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260101-000000_cat_s1-2.mp4", "20260101-000000_cat_s1-3.json",
                                                          "20260101-000000_cat_s1.json"]


def test_output_dir_check_is_safe_when_processes_check_one_new_folder_at_once(tmp_path):
    """The ranks of one training run check the same new output folder together; the check once created and
    removed the folder, and one rank's removal made another's probe fail (seen in a 2-worker run)."""
    import threading
    from exvideo_ms.media import check_output_dir
    errors = []

    def check():
        for k in range(200):
            try:
                check_output_dir(tmp_path / f"run{k}" / "out", "--train.output_dir")
            except Exception as e:  # noqa: BLE001 - every failure is the test's finding
                errors.append(e)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and list(tmp_path.iterdir()) == []  # nothing left behind either
