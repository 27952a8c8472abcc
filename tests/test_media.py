"""Image loading (mode conversion, errors) and video writers."""
import numpy as np
import pytest
from PIL import Image

from exvideo_ms.media import MediaError, load_image, read_video, to_uint8, write_gif, write_mp4, write_pngs


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "LA", "CMYK"])
def test_modes_convert_to_rgb(mode, tmp_path):
    rgb = (np.random.default_rng(0).uniform(0, 255, (20, 30, 3))).astype(np.uint8)
    im = Image.fromarray(rgb).convert(mode)
    out = load_image(im)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.asarray(im.convert("RGB")))
    path = tmp_path / f"x.{'jpg' if mode == 'CMYK' else 'png'}"
    im.save(path)
    assert load_image(path).shape == (20, 30, 3)


def test_arrays(tmp_path):
    gray = np.zeros((5, 6), np.uint8)
    assert load_image(gray).shape == (5, 6, 3)
    assert load_image(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
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
