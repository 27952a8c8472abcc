"""image_to_video.py end to end on the tiny converted model, and its refusals (exit code 2, no output)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from tests.helpers import REPO
from PIL import Image

CLI = [sys.executable, str(REPO / "image_to_video.py")]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "cat.png"
    g = np.random.default_rng(3)
    Image.fromarray(g.integers(0, 255, (60, 130, 4), dtype=np.uint8), "RGBA").save(path)  # RGBA, not 64-aligned
    return path


def run(args, cwd=None):
    return subprocess.run(CLI + args, capture_output=True, text=True, cwd=cwd)


def test_generates_mp4_gif_and_sidecar_from_a_yaml_config(converted, image_path, tmp_path):
    import cv2
    out = tmp_path / "out"
    options = {"mode": 1, "image": str(image_path), "output_dir": str(out), "seed": 11, "gif": True,
               "SVD": {"config": str(converted[1]), "num_frames": 4, "sampling_steps": 2, "fps": 9}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(options))
    r = run(["--config", str(cfg)])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "device_target CPU (best available)" in r.stderr
    mp4s, jsons, gifs = list(out.glob("*.mp4")), list(out.glob("*.json")), list(out.glob("*.gif"))
    assert len(mp4s) == len(jsons) == len(gifs) == 1 and not list(out.glob("*.tmp*"))
    cap = cv2.VideoCapture(str(mp4s[0]))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 4 and int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) == 128
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(9)
    cap.release()
    side = json.loads(jsons[0].read_text())
    s = side["settings"]
    assert (s["seed"], s["num_frames"], s["num_inference_steps"], s["height"], s["width"], s["fps"]) == (11, 4, 2, 64, 128, 9)
    assert side["checkpoint"] == str(converted[0])  # found beside the config
    import mindspore
    assert side["versions"]["mindspore"] == mindspore.__version__


@pytest.mark.parametrize("case", ["missing_image", "corrupt_image", "mismatched_checkpoint", "zero_frames",
                                  "zero_chunk", "no_checkpoint"])
def test_bad_inputs_exit_2_and_write_nothing(case, converted, image_path, tmp_path):
    out = tmp_path / "out"
    args = ["--mode", "1", "--output_dir", str(out), "--image", str(image_path),
            "--SVD.config", str(converted[1]), "--SVD.sampling_steps", "1", "--SVD.num_frames", "2"]
    expected = {"missing_image": "image not found", "corrupt_image": "not a readable image",
                "mismatched_checkpoint": "does not match the network", "zero_frames": "num_frames must be",
                "zero_chunk": "decode_chunk_size must be", "no_checkpoint": "no checkpoint"}[case]
    if case == "missing_image":
        args[args.index("--image") + 1] = str(tmp_path / "nope.png")
    elif case == "corrupt_image":
        bad = tmp_path / "bad.jpg"
        bad.write_bytes(b"\xff\xd8\xff\xe0 broken")
        args[args.index("--image") + 1] = str(bad)
    elif case == "mismatched_checkpoint":
        args += ["--SVD.config", str(REPO / "tests" / "configs" / "tiny.yaml"), "--SVD.checkpoint", str(converted[0])]
    elif case == "zero_frames":
        args += ["--SVD.num_frames", "0"]
    elif case == "zero_chunk":
        args += ["--SVD.decode_chunk_size", "0"]
    elif case == "no_checkpoint":
        args += ["--SVD.config", str(REPO / "tests" / "configs" / "tiny.yaml")]
    r = run(args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert expected in r.stderr
    assert not out.exists() or not any(out.iterdir())
