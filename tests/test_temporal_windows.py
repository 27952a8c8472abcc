"""Videos past the trained length (diffusion/temporal_windows.py, issue 22): windows, their blend, FreeNoise's
noise rescheduling, and the pipeline choosing them."""
import dataclasses
import logging

import numpy as np
import pytest
from mindspore import Tensor

from exvideo_ms.checkpoint import load_checkpoint
from exvideo_ms.config import ExVideoConfig
from exvideo_ms.diffusion.temporal_windows import (blend_weights, reschedule_noise, temporal_spans,
                                                   windowed_denoiser)
from exvideo_ms.models.svd import build_model
from exvideo_ms.pipeline import PipelineError, SVDPipeline
from exvideo_ms.settings import resolve_settings

N_POS = 4  # the tiny ExVideo model's position table


@pytest.mark.parametrize("total,window,stride", [(10, 4, 2), (16, 4, 4), (9, 4, 3), (30, 8, 5), (5, 8, 4), (7, 7, 1)])
def test_windows_have_one_length_cover_every_frame_and_blend_to_one(total, window, stride):
    spans = temporal_spans(total, window, stride)
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(e - s == min(window, total) for s, e in spans)
    assert all(b[0] - a[0] <= stride for a, b in zip(spans, spans[1:]))  # no start further than a stride on
    assert len({s for s, _ in spans}) == len(spans)
    weights = blend_weights(spans, total)
    total_weight = np.zeros(total)
    for (s, e), w in zip(spans, weights):
        assert w.shape == (e - s,) and np.all(w > 0)
        total_weight[s:e] += w
    np.testing.assert_allclose(total_weight, 1.0, rtol=0, atol=1e-6)


def test_window_errors():
    with pytest.raises(ValueError, match="1 <= stride <= window"):
        temporal_spans(10, 4, 5)
    with pytest.raises(ValueError, match="leave frames"):
        blend_weights([(0, 4), (6, 10)], 10)


def _coupled_denoiser(start, end):
    """A stand-in D(x; σ) that mixes frames (as temporal attention does) and knows its window."""
    def d(x, sigma):
        a = x.asnumpy()
        return Tensor((0.5 * a + 0.3 * a.mean(0, keepdims=True) + 0.01 * start + 0.001 * sigma).astype(np.float32))
    return d


def test_one_window_is_the_window_denoiser_itself_and_no_overlap_is_independent_windows():
    x = Tensor(np.random.default_rng(0).standard_normal((12, 2, 3, 3)).astype(np.float32))
    one = windowed_denoiser(_coupled_denoiser, temporal_spans(12, 12, 6), 12)
    np.testing.assert_array_equal(one(x, 2.0).asnumpy(), _coupled_denoiser(0, 12)(x, 2.0).asnumpy())
    apart = windowed_denoiser(_coupled_denoiser, temporal_spans(12, 4, 4), 12)(x, 2.0).asnumpy()
    for s in (0, 4, 8):
        np.testing.assert_array_equal(apart[s:s + 4], _coupled_denoiser(s, s + 4)(x[s:s + 4], 2.0).asnumpy())
    # overlapping windows: each frame is the weighted sum of its windows' estimates
    spans = temporal_spans(12, 6, 3)
    blended = windowed_denoiser(_coupled_denoiser, spans, 12)(x, 2.0).asnumpy()
    expected = np.zeros_like(blended)
    for (s, e), w in zip(spans, blend_weights(spans, 12)):
        expected[s:e] += w.reshape(-1, 1, 1, 1) * _coupled_denoiser(s, e)(x[s:e], 2.0).asnumpy()
    np.testing.assert_allclose(blended, expected, rtol=0, atol=1e-6)


def test_rescheduled_noise_is_shuffled_copies_deterministic_and_standard_normal():
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((40, 4, 16, 16)).astype(np.float32)
    a = reschedule_noise(noise, 8, 4, np.random.default_rng(1))
    b = reschedule_noise(noise, 8, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, reschedule_noise(noise, 8, 4, np.random.default_rng(2)))
    np.testing.assert_array_equal(a[:8], noise[:8])
    for start in range(8, 40, 4):  # each later block: the block a window earlier, permuted
        src = a[start - 8:start - 4].reshape(4, -1)
        got = a[start:start + 4].reshape(4, -1)
        assert sorted(map(bytes, got)) == sorted(map(bytes, src))
        assert not np.array_equal(got, src) or start == 8  # shuffled (the first block may keep its order by chance)
    # every frame is still marginally N(0, 1): its 1,024 values have the moments of a standard normal sample
    # (mean within 4 standard errors, variance within 4 of its standard errors)
    flat = a.reshape(40, -1).astype(np.float64)
    n = flat.shape[1]
    assert np.all(np.abs(flat.mean(1)) < 4 / np.sqrt(n))
    assert np.all(np.abs(flat.var(1) - 1) < 4 * np.sqrt(2 / n))


@pytest.fixture(scope="module")
def ext(tiny_cfg, converted):
    cfg = dataclasses.replace(tiny_cfg, exvideo=ExVideoConfig(num_positions=N_POS), name="tiny-exvideo")
    model = build_model(cfg)
    load_checkpoint(model, converted[0], strict=False)
    return cfg, SVDPipeline(model, cfg)


def _image(size=128):
    return np.random.default_rng(9).integers(0, 255, (size, size, 3), dtype=np.uint8)


def test_settings_choose_windows_past_the_table_and_check_the_options(ext, caplog):
    cfg, _ = ext
    with caplog.at_level(logging.INFO, logger="exvideo_ms.settings"):
        st = resolve_settings(cfg, (128, 128), num_frames=3 * N_POS, seed=0)
    assert (st.temporal_window, st.temporal_stride, st.noise_reschedule) == (N_POS, N_POS // 2, True)
    assert any("overlapping windows" in r.getMessage() for r in caplog.records)
    st = resolve_settings(cfg, (128, 128), num_frames=N_POS, seed=0)
    assert (st.temporal_window, st.noise_reschedule) == (None, False)  # within the table: no windows
    st = resolve_settings(cfg, (128, 128), num_frames=N_POS, temporal_window=N_POS, noise_reschedule=True, seed=0)
    assert (st.temporal_window, st.noise_reschedule) == (None, False)  # one window is the plain sampler
    st = resolve_settings(cfg, (128, 128), num_frames=3 * N_POS, latents_given=True, seed=0)
    assert (st.temporal_window, st.noise_reschedule) == (N_POS, False)  # given latents are used as they are
    for kw, message in [(dict(num_frames=9, temporal_window=N_POS + 1), f"temporal_window must be an integer <= {N_POS}"),
                        (dict(num_frames=9, temporal_window=4, temporal_stride=5), "temporal_stride must be an integer <= 4"),
                        (dict(num_frames=4, temporal_stride=2), "need temporal windows"),
                        (dict(num_frames=4, noise_reschedule=True), "need temporal windows"),
                        (dict(num_frames=3 * N_POS, noise_reschedule="yes"), "noise_reschedule must be true or false"),
                        (dict(num_frames=3 * N_POS, noise_reschedule=True, latents_given=True),
                         "noise_reschedule shuffles the noise the pipeline draws, and latents were given")]:
        with pytest.raises(PipelineError, match=message):
            resolve_settings(cfg, (128, 128), seed=0, **kw)


def test_long_video_without_overlap_is_independent_windows(ext):
    """Past the table with stride = window: each window of the video is the window sampled alone from its slice
    of the noise with the same conditions (no guidance, so the per-frame scales play no part)."""
    cfg, pipe = ext
    noise = np.random.default_rng(3).standard_normal((2 * N_POS, 4, 16, 16)).astype(np.float32)
    common = dict(num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=1.0, seed=1)
    whole_st = resolve_settings(cfg, (128, 128), num_frames=2 * N_POS, temporal_window=N_POS, temporal_stride=N_POS,
                                noise_reschedule=False, **common)
    alone_st = resolve_settings(cfg, (128, 128), num_frames=N_POS, **common)
    cond = pipe.condition(_image(), alone_st, np.random.default_rng(0))
    whole = pipe.sample(cond, whole_st, noise, progress=False).asnumpy()
    for s in (0, N_POS):
        alone = pipe.sample(cond, alone_st, noise[s:s + N_POS], progress=False).asnumpy()
        np.testing.assert_allclose(whole[s:s + N_POS], alone, rtol=0, atol=1e-5 * np.abs(alone).max())


def test_long_video_windows_by_default_with_rescheduled_noise(ext):
    """Past the table the pipeline windows by itself and reschedules the noise: with the plain noise instead,
    frames 0, 1 (in the first window only; the shuffles change frames 4, 5) are the same, the others are not."""
    _, pipe = ext
    common = dict(num_frames=N_POS + 2, num_inference_steps=1, min_guidance_scale=1.0, max_guidance_scale=1.0, seed=4,
                  progress=False, output_type="latent")
    a = pipe(_image(), **common)
    assert a.shape == (N_POS + 2, 4, 16, 16) and np.isfinite(a).all()
    plain = pipe(_image(), noise_reschedule=False, **common)
    np.testing.assert_array_equal(a[:2], plain[:2])
    assert not np.array_equal(a[2:], plain[2:])
