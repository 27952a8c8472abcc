"""SVDPipeline end to end against diffusers' StableVideoDiffusionPipeline on the same tiny weights."""
import logging

import mindspore as ms
import numpy as np
import pytest
import torch
from PIL import Image

from exvideo_ms.pipeline import PipelineError, SVDPipeline

FRAMES, H, W = 8, 64, 128  # non-square, latents 8×16
TOL = 1e-3


@pytest.fixture(scope="module")
def ours(converted):
    return SVDPipeline.from_config(converted[1], converted[0])


@pytest.fixture(scope="module")
def theirs(diffusers_folder):
    from tests import references
    return references.diffusers_pipeline(diffusers_folder)


@pytest.fixture(scope="module")
def image():
    g = np.random.default_rng(5)
    base = np.linspace(0, 255, W)[None, :, None] * np.ones((H, 1, 3))
    return np.clip(base + g.normal(0, 30, (H, W, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def noise():
    return np.random.default_rng(6).standard_normal((FRAMES, 4, H // 8, W // 8)).astype(np.float32)


def run_ours(pipe, image, noise, graph=True, **kw):
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    args = dict(num_frames=FRAMES, num_inference_steps=4, min_guidance_scale=1.0, max_guidance_scale=2.5,
                noise_aug_strength=0.0, latents=noise, output_type="float", progress=False)
    args.update(kw)
    return pipe(Image.fromarray(image), **args)


def run_theirs(pipe, image, noise, **kw):
    args = dict(height=H, width=W, num_frames=FRAMES, num_inference_steps=4, min_guidance_scale=1.0,
                max_guidance_scale=2.5, noise_aug_strength=0.0, latents=torch.from_numpy(noise[None]),
                output_type="np")
    args.update(kw)
    with torch.no_grad():
        return pipe(Image.fromarray(image), **args).frames[0]


@pytest.mark.slow
@pytest.mark.parametrize("steps", [3])  # 4 and 8 steps took 47 s each; tests/test_diffsynth_parity.py checks schedules
def test_matches_diffusers(ours, theirs, image, noise, steps):
    a = run_ours(ours, image, noise, num_inference_steps=steps)
    b = run_theirs(theirs, image, noise, num_inference_steps=steps)
    assert a.shape == b.shape == (FRAMES, H, W, 3)
    assert np.abs(a - b).max() <= TOL
    assert b.std() > 0.05  # a real video, not a constant


def test_chunked_decoding_matches_diffusers_chunking(ours, theirs, image, noise):
    a = run_ours(ours, image, noise, decode_chunk_size=3)
    b = run_theirs(theirs, image, noise, decode_chunk_size=3)
    assert np.abs(a - b).max() <= TOL
    whole = run_ours(ours, image, noise)
    assert np.abs(a - whole).max() > 1e-3  # chunk borders see zero padding: chunking changes the frames


def test_same_seed_same_video_and_seed_matters(ours, image):
    kw = dict(latents=None, noise_aug_strength=0.02)
    a = run_ours(ours, image, None, seed=7, **kw)
    b = run_ours(ours, image, None, seed=7, **kw)
    c = run_ours(ours, image, None, seed=8, **kw)
    assert np.array_equal(a, b) and not np.allclose(a, c)
    ms.set_context(mode=ms.GRAPH_MODE)
    made = ours.generate(Image.fromarray(image), num_frames=FRAMES, num_inference_steps=4, min_guidance_scale=1.0,
                         max_guidance_scale=2.5, noise_aug_strength=0.02, seed=8, output_type="float", progress=False)
    assert made.settings.seed == 8 and np.array_equal(made.frames, c)


@pytest.mark.slow
def test_graph_equals_pynative_and_sequential_cfg_equals_batched(ours, image, noise):
    kw = dict(num_inference_steps=1)  # one guided denoiser call per run: PyNative steps are slow (2 steps took 60 s)
    graph = run_ours(ours, image, noise, **kw)
    eager = run_ours(ours, image, noise, graph=False, **kw)
    assert np.abs(graph - eager).max() <= 1e-4
    sequential = run_ours(ours, image, noise, graph=False, cfg_mode="sequential", **kw)
    assert np.abs(sequential - eager).max() <= 1e-4  # other batch sizes, other float rounding


def test_no_guidance_pass_when_max_scale_is_1(ours, theirs, image, noise):
    kw = dict(num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=1.0)
    a = run_ours(ours, image, noise, graph=False, **kw)
    b = run_theirs(theirs, image, noise, **kw)
    assert np.abs(a - b).max() <= TOL


def test_uint8_output_and_image_forms(ours, image, noise, tmp_path):
    as_float = run_ours(ours, image, noise, num_inference_steps=1)
    path = tmp_path / "im.png"
    Image.fromarray(image).save(path)
    for form in (image, str(path), Image.fromarray(image)):
        ms.set_context(mode=ms.GRAPH_MODE)
        out = ours(form, num_frames=FRAMES, num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=2.5,
                   noise_aug_strength=0.0, latents=noise, output_type="np", progress=False)
        assert out.dtype == np.uint8 and out.shape == (FRAMES, H, W, 3)
        assert np.array_equal(out, np.round(as_float * 255).astype(np.uint8))


@pytest.mark.parametrize("kw,message", [
    (dict(num_frames=0), "num_frames must be an integer >= 1"),
    (dict(decode_chunk_size=0), "decode_chunk_size must be an integer >= 1"),
    (dict(num_inference_steps=0), "num_inference_steps must be an integer >= 1"),
    (dict(height=100), "height must be a positive multiple of 64"),
    (dict(cfg_mode="parallel"), "cfg_mode must be one of"),
    (dict(latents=np.zeros((3, 4, 8, 16), np.float32)), r"latents must have shape \(8, 4, 8, 16\)"),
    (dict(noise_aug_strength=float("nan")), "noise_aug_strength must be a finite number, got nan"),
    (dict(min_guidance_scale=float("inf")), "min_guidance_scale must be a finite number"),
    (dict(max_guidance_scale=-1.0), "max_guidance_scale must be >= 0.0"),
    (dict(fps=0), "fps must be an integer >= 1, got 0"),
    (dict(fps=7.5), "fps must be an integer, got 7.5"),
    (dict(motion_bucket_id=-1), "motion_bucket_id must be an integer >= 0, got -1"),
    (dict(seed=-3), "seed must be an integer >= 0, got -3"),
    (dict(contrast_enhance_scale=0.0), "contrast_enhance_scale must be > 0.0"),
    (dict(denoising_strength=float("nan")), "denoising_strength must be a finite number"),
    (dict(post_normalize="yes"), "post_normalize must be true or false"),
    (dict(output_type="pil"), "output_type must be one of"),
])
def test_bad_arguments(ours, image, kw, message):
    args = dict(num_frames=FRAMES, num_inference_steps=1, progress=False)
    args.update(kw)
    with pytest.raises(PipelineError, match=message):
        ours(image, **args)


def test_default_size_rounds_to_64_with_a_log_line_unless_the_config_sets_it(ours, caplog):
    import dataclasses

    from exvideo_ms.settings import resolve_size
    with caplog.at_level(logging.INFO, logger="exvideo_ms.settings"):
        assert resolve_size(ours.cfg, (100, 150), None, None) == (128, 128)
    assert "height 100 is not a multiple of 64: generating at 128" in caplog.text
    assert resolve_size(ours.cfg, (64, 128), None, None) == (64, 128)
    sized = dataclasses.replace(ours.cfg, sampling=dataclasses.replace(ours.cfg.sampling, height=192, width=256))
    assert resolve_size(sized, (64, 128), None, None) == (192, 256)  # the config's size, when it has one
    assert resolve_size(sized, (64, 128), 64, None) == (64, 256)  # an argument wins


def test_bf16_is_refused_on_cpu(ours):
    with pytest.raises(PipelineError, match="bf16 needs an Atlas A2 NPU or a GPU"):
        SVDPipeline(ours.model, ours.cfg, dtype="bf16")
