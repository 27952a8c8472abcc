"""The bundled demo model (assets/demo, trained by scripts/train_demo.sh): it learned (held-out denoising loss
against the same networks at random init), README's first command works, and its videos start from the input
image, move like the data, their objects keep shape and colour to the last frame, and the 32-frame ExVideo model
does not drift out of the data's range, at 32 frames or, in temporal windows, at 48."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO, load_script

ASSETS = REPO / "assets" / "demo"
I2V_CONFIG = REPO / "configs" / "demo" / "i2v.yaml"
HELDOUT_CLIPS = 1  # one clip keeps the test short; the margin to the target is wide (model card: 0.18, 0.045 vs 0.5)
MAX_LOSS_RATIO = 0.5  # trained held-out loss at most half the random-init loss, issue 6
MIN_FIRST_FRAME_PSNR_DB = 20.0  # a generated video's first frame against the input image (0..255), issue 6
MODEL_OF = {"base": "base", "extended": "exvideo"}  # the tests' names -> measurements.json's


def _make_heldout(out: Path, model: str, frames: int) -> Path:
    """The held-out split of a bundled model's training clips ("base" or "exvideo") exactly as train_demo.sh made it
    (the bundle's measurements.json keeps the generator's options; the split has its own seed stream, so one training
    clip is enough), at ``frames`` frames (the first frames do not depend on it)."""
    import json
    g = json.loads((ASSETS / "measurements.json").read_text())[model]["generator"]
    options = ([] if g["drift"] == 1 else ["--drift", f"{g['drift']:g}"]) + (["--no-pan"] if g["no_pan"] else [])
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(out),
                    "--clips", "1", "--heldout", str(g["heldout"]), "--frames", str(frames), "--size", str(g["size"]),
                    "--fps", f"{g['fps']:g}", "--seed", str(g["seed"]), "--motion", g["motion"], "--object-radius",
                    *map(str, g["object_radius"])] + options, check=True, capture_output=True)
    return out / "heldout"


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    """Each model's held-out clips, 32 frames: {"base": the base data's, "exvideo": the ExVideo stage's own data's
    (the same first frames, objects held in place)}."""
    return {model: _make_heldout(tmp_path_factory.mktemp(f"{model}_data"), model, 32) for model in MODEL_OF.values()}


def _extended_ranges(roots: dict, frames: int) -> dict:
    """The ranges the extended model is held to: those of the held-out clips of both data it learned from (its base
    stage's moving objects, its ExVideo stage's objects in place), per frame the smaller minimum and the larger
    maximum. Either alone leaves out what the other taught it: at 48 frames, README's video from the bundled model
    moves less than every base clip at frame 7 (drift 2.25 against 2.48) and more than every clip of its own data at
    7 of its 47 later frames (by up to 1.08), and both are within the two together."""
    from exvideo_ms import evaluation
    rs = [evaluation.data_ranges(root, frames) for root in roots.values()]
    return {"motion": [min(r["motion"][0] for r in rs), max(r["motion"][1] for r in rs)],
            "drift_min": np.min([r["drift_min"] for r in rs], 0), "drift_max": np.max([r["drift_max"] for r in rs], 0)}


def _load(config: str, checkpoints):
    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.config import load_config
    from exvideo_ms.models.svd import build_model
    cfg = load_config(ASSETS / config)
    model = build_model(cfg, allocate=False)
    load_checkpoint(model, [str(ASSETS / c) for c in checkpoints])
    return cfg, model


@pytest.mark.parametrize("model,config,checkpoints", [("base", "demo-base.yaml", ["base.ckpt"]),
                                                      ("exvideo", "demo-exvideo.yaml", ["base.ckpt", "exvideo.ckpt"])])
@pytest.mark.slow
def test_trained_demo_halves_heldout_loss(heldout, model, config, checkpoints):
    import mindspore as ms

    from exvideo_ms import evaluation
    from exvideo_ms.models.svd import build_model
    cfg, net = _load(config, checkpoints)
    lat, emb = evaluation.heldout_conditioning(net, cfg, heldout[model], cfg.sampling.num_frames, HELDOUT_CLIPS,
                                               cfg.sampling.height)
    args = (cfg.conditioning.addition_time_embed_dim, lat, emb, cfg.sampling.fps, cfg.sampling.motion_bucket_id,
            cfg.vae.encode_scale)
    trained = evaluation.denoising_loss(net.unet, *args)
    ms.set_seed(123)
    random = evaluation.denoising_loss(build_model(cfg, ["unet"]).unet, *args)
    assert np.isfinite(trained) and trained <= MAX_LOSS_RATIO * random, (trained, random)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory):
    """README's first command (its image_to_video.py part, output redirected, PNG frames added)."""
    readme = (REPO / "README.md").read_text()
    assert "image_to_video.py --config configs/demo/i2v.yaml" in readme.split("\n## ")[0]
    out = tmp_path_factory.mktemp("readme_run")
    proc = subprocess.run([sys.executable, "image_to_video.py", "--config", str(I2V_CONFIG), "--output_dir",
                           str(out), "--png_frames"], cwd=REPO, capture_output=True, text=True,
                          env=dict(os.environ, XDG_CACHE_HOME=str(out / "cache")))  # the default cache, not in ~
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_readme_first_command_writes_a_32_frame_video_and_gif(readme_run):
    from exvideo_ms.config import load_config
    from exvideo_ms.media import load_frames, video_info
    frames_expected = load_config(ASSETS / "demo-exvideo.yaml").sampling.num_frames
    mp4s, gifs = list(readme_run.glob("*.mp4")), list(readme_run.glob("*.gif"))
    assert len(mp4s) == 1 and len(gifs) == 1
    info = video_info(mp4s[0])
    assert info["frames"] == frames_expected == 32 and (info["width"], info["height"]) == (64, 64)
    assert load_frames(next(readme_run.glob("*_frames"))).shape == (32, 64, 64, 3)


@pytest.mark.slow
def test_readme_picture_is_what_the_first_command_makes(readme_run):
    """README shows assets/demo/demo_strip.png (scripts/bundle_demo.py's write_strip): the input image, then
    frames STRIP_FRAMES of README's first command (seed 0), enlarged. The committed picture matches this
    machine's run to within rounding (a mean of 1 level on 0..255; CPU kernels may differ in the last bit)."""
    from PIL import Image

    from exvideo_ms.media import load_frames, load_image
    bundle = load_script("bundle_demo")
    assert f"assets/demo/{bundle.STRIP}" in (REPO / "README.md").read_text().split("\n## ")[0]
    path = ASSETS / bundle.STRIP
    assert path.stat().st_size <= 100_000
    strip = np.asarray(Image.open(path).convert("RGB"))[::bundle.STRIP_SCALE, ::bundle.STRIP_SCALE]
    frames = load_frames(next(readme_run.glob("*_frames")))
    image = load_image(REPO / yaml.safe_load(I2V_CONFIG.read_text())["image"])
    tiles = [image] + [frames[i] for i in bundle.STRIP_FRAMES]
    size, gap = image.shape[1], bundle.STRIP_GAP
    assert strip.shape == (image.shape[0], len(tiles) * (size + gap) - gap, 3)
    for k, tile in enumerate(tiles):
        shown = strip[:, k * (size + gap):k * (size + gap) + size].astype(np.float64)
        assert np.abs(shown - tile).mean() <= 1.0, k


@pytest.mark.slow
def test_evaluate_scores_the_readme_video_against_the_heldout_clips(readme_run, heldout, tmp_path, monkeypatch, capsys):
    """svd_tools/evaluate.py on README's video vs the held-out clips with what is bundled: CLIP-I (against the
    sidecar's input image) and frame consistency from the demo model's image encoder; FVD, IS, FID and CLIP-T
    listed with the weights files they need."""
    import json
    from svd_tools.evaluate import main
    monkeypatch.chdir(REPO)  # the sidecar names the input image relative to the repository
    out = tmp_path / "scores.json"
    assert main(["--generated", str(readme_run), "--reference", str(heldout["exvideo"]), "--clip_config",
                 str(ASSETS / "demo-exvideo.yaml"), "--clip_checkpoint", str(ASSETS / "base.ckpt"),
                 "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["scores"]) == {"CLIP-I", "frame consistency"}
    assert all(0 < v <= 100 for v in result["scores"].values()), result["scores"]
    assert [c["conditioning_image"] for c in result["details"]["CLIP"]] == ["assets/demo/heldout/clip_00000.png"]
    needs = {"FVD": "i3d_pretrained_400.pt", "IS": "weights-inception-2015-12-05-6726825d.pth",
             "FID": "weights-inception-2015-12-05-6726825d.pth", "CLIP-T": "open_clip_pytorch_model.bin"}
    for score, file in needs.items():
        assert file in result["skipped"][score], (score, result["skipped"][score])
    assert "not computed" in capsys.readouterr().out


@pytest.mark.slow
def test_extended_demo_video_starts_from_the_image_moves_and_does_not_drift(readme_run, heldout):
    """The 32-frame ExVideo model (README's first command): its first frame matches the input image, motion is
    within the held-out range of the data it learned from (_extended_ranges), and every frame's difference to the
    first is no larger than those clips' largest at that frame (late frames do not collapse or explode)."""
    from exvideo_ms import evaluation
    from exvideo_ms.media import load_frames, load_image
    frames = load_frames(next(readme_run.glob("*_frames")))
    image = load_image(REPO / yaml.safe_load(I2V_CONFIG.read_text())["image"])
    assert evaluation.psnr(frames[0], image) >= MIN_FIRST_FRAME_PSNR_DB
    data = _extended_ranges(heldout, 32)
    assert data["motion"][0] <= evaluation.motion(frames) <= data["motion"][1]
    assert np.all(evaluation.drift(frames) <= data["drift_max"] + 1e-9), (evaluation.drift(frames), data)
    # no frame-to-frame jump at the ends (issue 15: windowed decoding without the mirrored overlap): neither end
    # step is larger than every step between them. The bundled model, this video: end steps 3.27 and 3.15, the
    # largest between them 3.82; decoded without the mirrored overlap (decode_reflect off), 4.00 and 3.89. Its
    # steps vary with the whole frame's shimmer, up to 1.83x their median in the middle, so a ratio to the median
    # (1.5 until this bundle: 1.57 and 1.51 here) does not tell a seam from it
    steps = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    assert max(steps[0], steps[-1]) <= steps[1:-1].max(), steps


@pytest.fixture(scope="module")
def pipelines():
    """{"base": the 8-frame base model's pipeline, "extended": the 32-frame ExVideo model's}, built once for the
    module: each model's graphs compile once (a second extended model cost ~20 s of compilation). Tests run in
    PyNative unless they set graph mode (conftest), so each user sets it."""
    from exvideo_ms.pipeline import SVDPipeline
    out = {}
    for kind, config, checkpoints in (("base", "demo-base.yaml", ["base.ckpt"]),
                                      ("extended", "demo-exvideo.yaml", ["base.ckpt", "exvideo.ckpt"])):
        cfg, model = _load(config, checkpoints)
        out[kind] = SVDPipeline(model, cfg)
    return out


@pytest.fixture(scope="module")
def object_videos(heldout, readme_run, pipelines):
    """Every bundled held-out image through the base (8 frames) and the extended model (32 frames), graph mode,
    seed 0 as the model card's: {model: [(image, video, the input's label map, its own held-out clip)]}. The
    extended model's video of README's image is README's first command's (same model, seed and settings)."""
    import json

    import mindspore as ms

    from exvideo_ms.media import load_frames, load_image, read_video
    ms.set_context(mode=ms.GRAPH_MODE)
    readme_image = (REPO / yaml.safe_load(I2V_CONFIG.read_text())["image"]).resolve()
    out = {}
    for kind, pipe in pipelines.items():
        held = heldout[MODEL_OF[kind]]
        clips = {Path(item["path"]).stem: held / item["path"]
                 for item in json.loads((held / "metadata.json").read_text())}
        out[kind] = []
        for file in sorted((ASSETS / "heldout").glob("*.png")):
            image = load_image(file)
            if kind == "extended" and file.resolve() == readme_image:
                video = load_frames(next(readme_run.glob("*_frames")))
            else:
                video = pipe(image, seed=0, progress=False)
            labels = np.load(held / "masks" / f"{file.stem}.npz")["labels"][0]
            out[kind].append((image, video, labels, read_video(clips[file.stem], count=len(video))))
    return out


@pytest.mark.slow
def test_base_demo_video_moves_like_the_data(object_videos, heldout):
    """The 8-frame base model, from another held-out image: its first frame matches the image, and motion is
    within the held-out range. Graph mode, as README's command."""
    from exvideo_ms import evaluation
    image, video = object_videos["base"][1][:2]
    assert video.shape == (8, 64, 64, 3)
    assert evaluation.psnr(video[0], image) >= MIN_FIRST_FRAME_PSNR_DB
    lo, hi = evaluation.data_ranges(heldout["base"], 8)["motion"]
    assert lo <= evaluation.motion(video) <= hi


# issue 19's every-frame targets (presence and colour), met by both bundled models at the test's seed 0 (model
# card: every tracked object in every frame, ΔE*ab at most 15.3 for the 8-frame base and 14.4 for the 32-frame
# extended model against their held-out data's 17.4 and 17.5), the extended one since its ExVideo stage post-tunes on
# clips of its own whose objects stay in place (docs/demo_objects.md has every recipe tried). Neither keeps to the
# data's evaluation.foreign_area yet (colours the input lacks: model card, base up to 5.6% of a frame, extended 3.8%,
# held-out clips 0.3% and 0.2%), so no test holds them to it
@pytest.mark.parametrize("kind", ["base", "extended"])
@pytest.mark.slow
def test_demo_objects_keep_their_shape_and_colour_to_the_last_frame(object_videos, heldout, kind):
    """Issue 19, for every object of every bundled image, both models: frame 0's object region matches the input
    (PSNR), and the object is found in every frame (a region of its colour within evaluation.PRESENT_AREA_RANGE of
    its area) with a colour ΔE*ab no larger than the largest of the model's own held-out clips.
    Objects this tracker cannot find in their own held-out clip (a colour close to the background's merges with it)
    are held to frame 0's PSNR only."""
    from exvideo_ms import evaluation
    frames = len(object_videos[kind][0][1])
    data = evaluation.object_ranges(heldout[MODEL_OF[kind]], frames)
    target = load_script("bundle_demo").TARGET_OBJECT_PSNR_DB  # the model card's: frame 0, issue 19
    tracked = 0
    for i, (image, video, labels, clip) in enumerate(object_videos[kind]):
        trackable = evaluation.trackable_objects(clip, labels)
        for obj in evaluation.object_measures(video, image, labels):
            where = f"{kind}, object {obj['id']} of held-out image {i}"
            assert obj["first_frame_psnr"] >= target, (where, obj["first_frame_psnr"])
            if obj["id"] not in trackable:
                continue
            tracked += 1
            assert all(obj["present"]), (where, obj["present"], obj["area"])
            assert max(obj["delta_e"]) <= data["delta_e_max"], (where, obj["delta_e"], data)
    assert tracked == 5  # of the 6 objects of the 4 images, 5 are found in every frame of their own clip


# issue 22: 1.5 times the demo ExVideo model's 32-row position table, 2 windows and their join (128 frames, 7 windows,
# took 157 s of CI's 20 minutes, 64 frames in 3 windows 89 s: README's 128-frame command is the same call with more
# windows)
LONG_FRAMES = 48
LONG_SEGMENT = 32  # motion is compared segment by segment, one table length each
MAX_STEP_TO_MEDIAN = 2.0  # no seam where windows join: every frame-to-frame change within 2x the median (measured 1.87)


@pytest.fixture(scope="module")
def heldout_long(tmp_path_factory):
    """Both models' held-out splits at LONG_FRAMES frames (as ``heldout``; clip 0 starts with the bundled held-out
    image)."""
    return {model: _make_heldout(tmp_path_factory.mktemp(f"{model}_data_long"), model, LONG_FRAMES)
            for model in MODEL_OF.values()}


@pytest.mark.slow
def test_extended_demo_makes_48_frames_in_windows_within_the_data_ranges(heldout_long, pipelines, caplog):
    """Past its table: the 32-frame ExVideo model makes 48 frames from README's image in 2 temporal windows
    (chosen by itself). Every frame's drift from the first lies within the held-out range at that frame of the
    data it learned from (_extended_ranges), the motion of each 32-frame segment (the last one shorter) within
    theirs, and no step where windows join is a jump."""
    import json
    import logging

    import mindspore as ms

    from exvideo_ms import evaluation
    from exvideo_ms.media import load_image, read_video
    ms.set_context(mode=ms.GRAPH_MODE)  # as README's command; the shared pipeline reuses the 32-frame graphs the
    # module's earlier tests compiled (object_videos), or compiles them here when run alone
    image = load_image(REPO / yaml.safe_load(I2V_CONFIG.read_text())["image"])
    with caplog.at_level(logging.INFO):
        frames = pipelines["extended"](image, num_frames=LONG_FRAMES, seed=0, progress=False)
    assert "denoising 48 frames in 2 windows of 32 (stride 16)" in caplog.text
    assert frames.shape == (LONG_FRAMES, 64, 64, 3)
    assert evaluation.psnr(frames[0], image) >= MIN_FIRST_FRAME_PSNR_DB
    data = _extended_ranges(heldout_long, LONG_FRAMES)
    d = evaluation.drift(frames)
    assert np.all(d >= data["drift_min"] - 1e-9) and np.all(d <= data["drift_max"] + 1e-9), (d, data)

    def segments(video):
        return [evaluation.motion(video[s:s + LONG_SEGMENT]) for s in range(0, LONG_FRAMES, LONG_SEGMENT)]
    clips = np.array([segments(read_video(root / item["path"])) for root in heldout_long.values()
                      for item in json.loads((root / "metadata.json").read_text())])
    ours = np.array(segments(frames))
    assert np.all(clips.min(0) <= ours) and np.all(ours <= clips.max(0)), (ours, clips.min(0), clips.max(0))
    steps = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))
    assert steps.max() <= MAX_STEP_TO_MEDIAN * np.median(steps), steps


MAX_LORA_LOSS_RATIO = 0.9  # issue 20's demo: base + orbit LoRA against the base on orbit clips (model card: 0.74)
MIN_LORA_SPECIFICITY = 0.05  # ... and at least this much lower than its ratio on the base data's own kinds
LORA_HELDOUT_CLIPS = 2  # measured: orbit 0.71, base data 1.08 on two clips each


@pytest.fixture(scope="module")
def orbit_heldout(tmp_path_factory):
    """The orbit held-out split exactly as train_demo.sh made it (--motion orbit, seed 1)."""
    out = tmp_path_factory.mktemp("orbit_data")
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output", str(out),
                    "--clips", "0", "--heldout", "16", "--frames", "32", "--size", "64", "--fps", "8", "--seed", "1",
                    "--motion", "orbit"], check=True, capture_output=True)
    return out / "heldout"


@pytest.mark.slow
def test_orbit_lora_lowers_the_heldout_loss_of_its_motion_kind(orbit_heldout, heldout):
    """The bundled LoRA (at most 2 MB, PEFT naming), merged into the bundled base model as --SVD.lora does,
    lowers its held-out denoising loss on clips of the kind it was trained on (objects orbiting the frame
    centre, which the base data lacks) to at most MAX_LORA_LOSS_RATIO of the base's, clearly more than on the
    base data's own kinds; README's LoRA example names the bundled file and image."""
    from exvideo_ms import evaluation, lora
    file = ASSETS / "orbit-lora.safetensors"
    assert file.stat().st_size <= 2_000_000
    readme = (REPO / "README.md").read_text()
    assert "--SVD.lora assets/demo/orbit-lora.safetensors" in readme and "assets/demo/orbit/clip_00000.png" in readme
    assert (ASSETS / "orbit" / "clip_00000.png").is_file()
    f = lora.read(file)
    assert f.naming == "peft"
    cfg, model = _load("demo-base.yaml", ["base.ckpt"])
    held = {kind: evaluation.heldout_conditioning(model, cfg, root, cfg.sampling.num_frames, LORA_HELDOUT_CLIPS,
                                                  cfg.sampling.height)
            for kind, root in (("orbit", orbit_heldout), ("base data", heldout["base"]))}

    def losses():
        return {kind: evaluation.denoising_loss(model.unet, cfg.conditioning.addition_time_embed_dim, lat, emb,
                                                cfg.sampling.fps, cfg.sampling.motion_bucket_id, cfg.vae.encode_scale)
                for kind, (lat, emb) in held.items()}
    base = losses()
    lora.merge(model.unet, lora.resolve(f, cfg, lora.unet_shapes(model.unet)))
    ratios = {kind: loss / base[kind] for kind, loss in losses().items()}
    assert ratios["orbit"] <= MAX_LORA_LOSS_RATIO, ratios
    assert ratios["orbit"] <= ratios["base data"] - MIN_LORA_SPECIFICITY, ratios


def test_model_card_reads_the_learning_rates_from_the_training_log(tmp_path):
    """A run resumed with another --train.optimizer.lr (the base's tail) is described by every lr it trained at:
    the card does not report only the last stage's."""
    import json
    log = tmp_path / "train_log.jsonl"
    lrs = [2.5e-4, 5e-4, 7.5e-4] + [1e-3] * 7 + [1e-4] * 4  # warmup to step 4, then two constant stages
    log.write_text("".join(json.dumps({"step": i, "lr": lr, "loss": 0.1}) + "\n" for i, lr in enumerate(lrs, 1)))
    assert load_script("bundle_demo")._lr_schedule(log) == "lr 0.001 to step 10, then 0.0001 to step 14 (warmup: steps 1–3)"


def test_model_card_names_the_frame_with_the_most_foreign_colour():
    """The issue 19 lines of the card: a model whose frames show no more colour the input lacks than the held-out
    data's largest meets the foreign-area line; one frame above it fails it, and the line names that image and frame."""
    card = load_script("bundle_demo")
    obj = {"first_frame_psnr_db": 30.0, "tracked_in_clip": True, "max_delta_e": 5.0, "present": [True] * 4}

    def model(*areas):
        return {"data_objects": {"delta_e_max": 17.9, "foreign_area_max": 0.007},
                "videos": [{"image": f"clip_{i}.png", "objects": [obj], "foreign_area": a} for i, a in enumerate(areas)]}
    lines = card._object_targets(model([0.0, 0.007, 0.0, 0.0]), model([0.0] * 4, [0.0, 0.001, 0.05, 0.002])).splitlines()
    base, extended = [line for line in lines if "colours the input image does not have" in line]
    assert base.startswith("- base:") and "0.7% (clip_0.png, frame 1" in base and base.endswith(": met")
    assert extended.startswith("- extended:") and "5.0% (clip_1.png, frame 2" in extended and extended.endswith("**not met**")


def test_model_card_holds_motion_and_drift_to_the_base_data_and_sets_the_extended_model_against_its_own():
    """The issue 6 lines of the card hold both models' motion and drift to the base data's held-out clips; when the
    ExVideo stage trained on clips of its own, the extended model's videos are also set against those, naming how
    many frames exceed their drift maximum and by how much."""
    card = load_script("bundle_demo")
    video = {"image": "clip_0.png", "first_frame_psnr_db": 28.0, "vae_only_psnr_db": 29.0, "motion": 2.0,
             "drift": [0.0, 3.0, 5.0, 4.0]}
    moving = {"motion": [0.5, 8.0], "drift_max": [0.0, 9.0, 12.0, 14.0], "drift_min": [0.0] * 4}
    still = {"motion": [0.1, 2.5], "drift_max": [0.0, 2.5, 5.0, 3.0], "drift_min": [0.0] * 4}

    def model(data, generator):
        return {"ratio": 0.2, "videos": [video], "base_data": moving, "data": data, "generator": generator}
    vae = {"heldout_reconstruction_psnr_db": 29.0, "reconstruction_psnr_db": 30.0}
    lines = card._targets(model(moving, {"drift": 1}), model(still, {"drift": 0}), vae).splitlines()
    assert all(line.endswith("drift within the held-out maximum at every frame: met")
               for line in lines if ", clip_0.png: first-frame PSNR" in line)
    own = [line for line in lines if "own held-out clips" in line]
    assert own == ["- extended, clip_0.png, against the ExVideo stage's own held-out clips: motion 2.0 in their range "
                   "0.10–2.50; drift above their maximum at 2 of 3 frames (by up to 1.00)"]
    same = card._targets(model(moving, {"drift": 1}), model(moving, {"drift": 1}), vae)
    assert "own held-out clips" not in same


def test_model_card_gives_each_models_object_survey():
    """The card's line on all held-out clips carries each model's own evaluation.object_survey figures."""
    card = load_script("bundle_demo")

    def model(frames, fraction, kept, objects):
        return {"frames": frames, "survey": {"present_fraction": fraction, "kept_throughout": kept, "objects": objects}}
    line = card._survey_line(model(8, 0.9875, 29, 31), model(32, 0.455, 3, 30), 16)
    assert "every one of the 16 held-out clips" in line
    assert "base 98.8% of (object, frame) pairs present, 29 of 31 objects in all 8 frames; " in line
    assert line.endswith("extended 45.5% of (object, frame) pairs present, 3 of 30 objects in all 32 frames.")


def test_model_card_says_what_the_exvideo_stage_trained_on(tmp_path):
    """make_synthetic_dataset.py keeps its options in generator.json, and the card's ExVideo data row describes
    them (the default motion and objects held in place differ); a run folder without the ExVideo stage's clips is
    refused by name before anything is bundled."""
    import json
    card = load_script("bundle_demo")
    for name, args, expected in (
            ("moving", [], "`--drift 1`: objects drift, bounce, turn and pulse, some clips with a camera pan"),
            ("slow", ["--drift", "0.25"],
             "`--drift 0.25`: objects drift at 0.25× the default speed, bounce, turn and pulse, some clips with a "
             "camera pan"),
            ("still", ["--drift", "0", "--no-pan"],
             "`--drift 0 --no-pan`: objects turn and pulse in place, no camera pans"),
            ("orbit", ["--motion", "orbit"], "`--motion orbit`")):
        subprocess.run([sys.executable, str(REPO / "scripts" / "make_synthetic_dataset.py"), "--output",
                        str(tmp_path / name), "--clips", "1", "--heldout", "0", "--frames", "2", "--size", "32",
                        "--seed", "5"] + args, check=True, capture_output=True)
        options = json.loads((tmp_path / name / "generator.json").read_text())
        assert options["seed"] == 5 and options["clips"] == 1 and "output" not in options, options
        assert card._motion_options(options) == expected
    run = tmp_path / "run"
    (run / "data" / "heldout").mkdir(parents=True)
    (run / "data" / "heldout" / "metadata.json").write_text("[]")
    with pytest.raises(FileNotFoundError, match=r"data/generator.json missing: the base model's clips"):
        card.bundle(run, tmp_path / "assets")
    (run / "data" / "generator.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"exvideo_data/heldout/metadata.json missing: the exvideo model's"):
        card.bundle(run, tmp_path / "assets")
    assert not (tmp_path / "assets").exists()
