"""image_to_video.py end to end on the tiny converted model, and its refusals (exit code 2, no output)."""
import json
import re
import subprocess
import sys
from pathlib import Path

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
    assert side["allocator"] == "jemalloc"  # the command relaunched itself with it (exvideo_ms/allocator.py)
    import mindspore
    assert side["versions"]["mindspore"] == mindspore.__version__


def run_in_process(args, capsys):
    """image_to_video.main in this process: (exit code, stderr)."""
    import image_to_video
    try:
        code = image_to_video.main(args)
    except SystemExit as e:  # the parser's own errors
        code = e.code
    return code, capsys.readouterr().err


BAD_INPUTS = {  # case: (extra arguments, expected message)
    "missing_image": (["--image", "{tmp}/nope.png"], "image not found"),
    "corrupt_image": (["--image", "{tmp}/bad.jpg"], "not a readable image"),
    "mismatched_checkpoint": (["--SVD.config", "{repo}/tests/configs/tiny.yaml", "--SVD.checkpoint", "{ckpt}"],
                              "does not match the network"),
    "zero_frames": (["--SVD.num_frames", "0"], "num_frames must be an integer >= 1, got 0"),
    "zero_chunk": (["--SVD.decode_chunk_size", "0"], "decode_chunk_size must be an integer >= 1"),
    "no_checkpoint": (["--SVD.config", "{repo}/tests/configs/tiny.yaml"], "no checkpoint"),
    "nan_noise_aug_in_yaml": (["--config", "{tmp}/nan.yaml"], "noise_aug_strength must be a finite number, got nan"),
    "nan_min_cfg_in_yaml": (["--config", "{tmp}/nan_cfg.yaml"], "min_guidance_scale must be a finite number"),
    "zero_fps": (["--SVD.fps", "0"], "fps must be an integer >= 1, got 0"),
    "negative_motion_bucket": (["--SVD.motion_bucket_id", "-5"], "motion_bucket_id must be an integer >= 0"),
    "negative_seed": (["--seed", "-1"], "seed must be an integer >= 0"),
    "abbreviated_option": (["--SVD.num_frame", "3"], "unrecognized arguments: --SVD.num_frame"),
    "checkpoint_twice": (["--SVD.checkpoint", "{ckpt}", "--SVD.checkpoint", "{ckpt}"],
                         "--SVD.checkpoint is given more than once"),
    "one_frame_exvideo": (["--SVD.config", "{repo}/tests/configs/tiny_exvideo.yaml", "--SVD.checkpoint", "{ckpt}",
                           "--SVD.num_frames", "1"], "needs at least 2 frames and 2x2 latents"),
    "checkpoint_as_config": (["--SVD.config", "{ckpt}"], "not a YAML text file (a checkpoint?"),
    "absent_device": (["--device_target", "GPU"], "device_target GPU is not available"),
    "compile_cache_is_a_file": (["--mode", "0", "--compile_cache", "{tmp}/a_file"],
                                "--compile_cache {tmp}/a_file is a file, not a folder"),
    "compile_cache_none": (["--mode", "0", "--compile_cache", "none"],
                           "--compile_cache none: null turns the compile cache off; for a folder of that name in "
                           "the working directory give ./none"),
    "output_dir_is_a_file": (["--output_dir", "{tmp}/a_file"], "--output_dir {tmp}/a_file is a file, not a folder"),
    "input_video_length": (["--SVD.denoising_strength", "0.5", "--SVD.input_video", "{tmp}/frames"],
                           "--SVD.input_video has 1 frames, expected 2"),
    "lora_missing": (["--SVD.lora", "[{tmp}/nope.safetensors]"], "{tmp}/nope.safetensors: no such LoRA file"),
    "lora_for_another_model": (["--SVD.lora", "[{tmp}/other.safetensors]"],
                               "1 LoRA module(s) the model does not have (diffusers naming expected): "
                               "down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_q"),
    "lora_scales": (["--SVD.lora", "[{tmp}/other.safetensors, {tmp}/other.safetensors]", "--SVD.lora_scale",
                     "[0.5, 1, 2]"], "--SVD.lora_scale has 3 values for 2 --SVD.lora files"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_exit_2_before_loading_weights_and_write_nothing(case, converted, image_path, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.chdir(tmp_path)  # MindSpore's failure dumps would land here
    out = tmp_path / "out"
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "frames").mkdir()
    from safetensors.numpy import save_file
    save_file({f"down_blocks.7.attentions.0.transformer_blocks.0.attn1.to_q.lora_{ab}.weight": np.ones((2, 2), np.float32)
               for ab in "AB"}, str(tmp_path / "other.safetensors"))
    Image.fromarray(np.zeros((64, 128, 3), np.uint8)).save(tmp_path / "frames" / "0.png")
    base = {"mode": 1, "image": str(image_path), "output_dir": str(out),
            "SVD": {"config": str(converted[1]), "sampling_steps": 1, "num_frames": 2}}
    for name, key in (("nan.yaml", "noise_aug_strength"), ("nan_cfg.yaml", "min_cfg")):
        (tmp_path / name).write_text(yaml.safe_dump(base).replace("sampling_steps: 1", f"sampling_steps: 1\n  {key}: .nan"))
    args = ["--mode", "1", "--output_dir", str(out), "--image", str(image_path), "--SVD.config", str(converted[1]),
            "--SVD.sampling_steps", "1", "--SVD.num_frames", "2"]
    extra, expected = BAD_INPUTS[case]
    fill = dict(tmp=tmp_path, repo=REPO, ckpt=converted[0])
    extra = [a.format(**fill) for a in extra]
    for flag in ("--image", "--output_dir", "--mode", "--SVD.config", "--SVD.num_frames"):  # the case's value wins
        if flag in extra and flag in args:
            i = args.index(flag)
            del args[i:i + 2]
    if case.endswith("in_yaml"):
        args = []
    if case != "mismatched_checkpoint":  # every other case is refused before a weight is read
        def no_weights(*a, **k):
            raise AssertionError("weights were loaded before the input was refused")
        monkeypatch.setattr("exvideo_ms.pipeline.load_checkpoint", no_weights)
    code, err = run_in_process(args + extra, capsys)
    assert code == 2, err[-2000:]
    assert expected.format(**fill) in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not out.exists() or not any(out.iterdir())
    assert not (tmp_path / "rank_0").exists() and not (tmp_path / "none").exists()


def test_help_describes_every_option():
    """Every option of image_to_video.py and train.py says what it means; enumerations list their choices."""
    import image_to_video
    import train
    for module in (image_to_video, train):
        parser = module.build_parser()
        text = parser.format_help()
        assert re.search(r"\n +python \S+\.py --", text)  # the examples keep their lines
        for action in parser._actions:
            if not action.option_strings or action.dest in ("help", "print_config"):
                continue
            if action.help and action.help.startswith("Path to a configuration file"):
                continue  # jsonargparse's --SVD / --train group loaders
            assert action.help and not action.help.startswith("(") and action.help.strip() != "", action.dest
    svd = image_to_video.build_parser().format_help()
    assert "--SVD.cfg_mode {batch,sequential}" in svd and "--gif, --no_gif" in svd
    assert "--train.mode {exvideo,temporal_only,full,lora}" in train.build_parser().format_help()


def test_sigterm_is_an_interrupt_and_every_clean_up_runs(tmp_path):
    import os
    import signal

    from exvideo_ms import cli
    marker = tmp_path / "partial"

    def work():
        marker.write_text("x")
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            marker.unlink()

    assert cli.run(work) == cli.EXIT_INTERRUPTED and not marker.exists()


@pytest.mark.slow
def test_two_runs_into_one_folder_at_once_keep_two_videos(converted, image_path, tmp_path):
    """Same image, same folder, started together: two videos, each sidecar naming its own existing files."""
    out = tmp_path / "out"
    procs = [subprocess.Popen(CLI + ["--mode", "1", "--image", str(image_path), "--output_dir", str(out),
                                     "--SVD.config", str(converted[1]), "--SVD.num_frames", "2",
                                     "--SVD.sampling_steps", "1", "--seed", str(seed), "--gif"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for seed in (1, 2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-1500:] for e in errs]
    sidecars = sorted(out.glob("*.json"))
    assert len(sidecars) == 2 and len(list(out.glob("*.mp4"))) == 2 and len(list(out.glob("*.gif"))) == 2
    videos = set()
    for path in sidecars:
        side = json.loads(path.read_text())
        assert all(Path(p).is_file() for p in side["outputs"].values())
        videos.add(Path(side["outputs"]["mp4"]).read_bytes())
    assert len(videos) == 2 and not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_ctrl_c_while_writing_leaves_nothing(converted, image_path, tmp_path):
    """SIGINT while the PNG frames are being written (slowed down by a sitecustomize hook): exit 130 and no file
    in the output folder."""
    import os
    import signal
    import time
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import time\nfrom PIL import Image\n_save = Image.Image.save\n"
        "def _slow(self, fp, *a, **k):\n    time.sleep(0.4)\n    return _save(self, fp, *a, **k)\n"
        "Image.Image.save = _slow\n")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.Popen(CLI + ["--mode", "1", "--image", str(image_path), "--output_dir", str(out),
                                   "--SVD.config", str(converted[1]), "--SVD.num_frames", "6",
                                   "--SVD.sampling_steps", "1", "--seed", "4", "--png_frames"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if out.is_dir() and any(p.name.endswith(".tmp") and "_frames" in p.name for p in out.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    time.sleep(0.5)  # a frame or two written
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert list(out.iterdir()) == []


def test_an_interrupted_graph_run_removes_the_compile_cache_it_created(converted, image_path, tmp_path, capsys,
                                                                      monkeypatch, caplog):
    """Graph mode with a new compile cache folder, interrupted during generation (the pipeline's generate
    replaced by one that raises KeyboardInterrupt, so nothing compiles): exit 130, the folder is gone, and a
    cache folder that existed before the run is kept."""
    from exvideo_ms.pipeline import SVDPipeline

    def interrupted(self, *a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(SVDPipeline, "generate", interrupted)
    for var in ("MS_COMPILER_CACHE_ENABLE", "MS_COMPILER_CACHE_PATH"):  # restored after the test
        monkeypatch.setenv(var, "")
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ["--mode", "0", "--image", str(image_path), "--output_dir", str(out), "--SVD.config", str(converted[1]),
            "--SVD.num_frames", "2", "--SVD.sampling_steps", "1", "--seed", "4", "--compile_cache", str(cache)]
    with caplog.at_level("INFO", logger="exvideo_ms.backend"):
        code, err = run_in_process(args, capsys)
    assert code == 130 and "interrupted" in err, err[-2000:]
    assert f"compile cache {cache}/" in caplog.text and "(new)" in caplog.text
    assert cache.is_dir() and list(cache.iterdir()) == []
    assert not out.exists() or list(out.iterdir()) == []
    made = tmp_path / "warm"
    (made / "kept").mkdir(parents=True)
    (made / "kept" / "graph.bin").write_bytes(b"x")
    monkeypatch.setattr("exvideo_ms.backend.compile_cache_dir", lambda root, key: made / "kept")
    code, err = run_in_process(args[:-1] + [str(made)], capsys)
    assert code == 130 and (made / "kept" / "graph.bin").is_file()


def test_bare_gif_flag(converted, image_path, tmp_path):
    out = tmp_path / "out"
    r = run(["--mode", "1", "--image", str(image_path), "--output_dir", str(out), "--SVD.config", str(converted[1]),
             "--SVD.num_frames", "2", "--SVD.sampling_steps", "1", "--gif"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list(out.glob("*.gif"))) == 1 and len(list(out.glob("*.mp4"))) == 1
