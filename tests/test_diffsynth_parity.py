"""ExVideo's method against its original code, DiffSynth-Studio 1.1.9 (the last release with SVD and ExVideo),
same inputs on both sides: the sampling schedule and Euler step, the image encoder's preprocessing, the latent
post-processing, the latent scalings, windowed VAE decoding on the full-size decoder, the whole pipeline with
DiffSynth's own ``SVDVideoPipeline.__call__`` driving the tiny networks (whose parity with diffusers the other
tests prove), and the training loss written from ``examples/ExVideo/ExVideo_svd_train.py`` (not in the wheel;
read at tag v1.1.9). The full-size pipeline end to end is ``benchmarks/parity_diffsynth.py`` (minutes, 20 GiB).
"""
import dataclasses

import mindspore as ms
import numpy as np
import pytest
import torch
from PIL import Image

from exvideo_ms.config import load_config
from exvideo_ms.decoding import decode_windowed
from exvideo_ms.diffusion.edm import karras_sigmas, karras_sigmas_strength, v_scalings
from exvideo_ms.diffusion.post_process import post_process_latents
from exvideo_ms.diffusion.sampler import sample_euler
from exvideo_ms.models.conditioner import added_time_ids, to_model_range
from exvideo_ms.models.exvideo import PositionalEmbedding
from exvideo_ms.models.image_encoder import preprocess
from exvideo_ms.pipeline import SVDPipeline
from tests import references
from tests.references import diffsynth
from tests.helpers import KEYS, REPO, read_key_list, rel_err

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SVD_XT = REPO / "configs" / "svd_xt.yaml"
EXVIDEO = REPO / "configs" / "exvideo_svd_128f.yaml"


@pytest.fixture(scope="module")
def scales():
    """DiffSynth's latent scalings, read from its own VAE classes (full size: a few seconds to build)."""
    return {"encode": diffsynth("models.svd_vae_encoder").SVDVAEEncoder().scaling_factor,
            "decode": diffsynth("models.svd_vae_decoder").SVDVAEDecoder().scaling_factor}


# ------------------------------------------------------------------------------------------------ schedule
@pytest.mark.parametrize("steps", [1, 4, 25])
@pytest.mark.parametrize("strength", [1.0, 0.6, 0.25])
def test_schedule_and_model_input_scalings_match_diffsynth(steps, strength):
    """sigmas of ``ContinuousODEScheduler.set_timesteps(n, denoising_strength)``, its timesteps (the UNet's
    c_noise) and its model-input scaling (``add_noise``: (x0 + σ·ε)/√(σ²+1)) against ours."""
    s = load_config(SVD_XT).sampling
    sched = diffsynth("schedulers.continuous_ode").ContinuousODEScheduler()
    assert (sched.sigma_min, sched.sigma_max, sched.rho) == (s.sigma_min, s.sigma_max, s.rho)
    sched.set_timesteps(steps, denoising_strength=strength)
    ours = (karras_sigmas(steps, s.sigma_min, s.sigma_max, s.rho) if strength == 1.0 else
            karras_sigmas_strength(steps, s.sigma_min, s.sigma_max, s.rho, strength))
    assert ours[-1] == 0.0 and len(ours) == steps + 1  # DiffSynth has no trailing 0: its last step goes to D
    theirs = sched.sigmas.numpy().astype(np.float64)
    assert rel_err(ours[:-1], theirs) < 1e-6  # DiffSynth computes in float32, we in float64
    _, _, c_in, c_noise = v_scalings(ours[:-1])
    assert np.abs(c_noise - sched.timesteps.numpy()).max() < 1e-6
    g = np.random.default_rng(0)
    x0, eps = g.standard_normal((2, 3, 4, 4)).astype(np.float32)
    for i, t in enumerate(sched.timesteps):
        theirs_in = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(eps), t).numpy()
        assert rel_err(c_in[i] * (x0 + ours[i] * eps), theirs_in) < 1e-5


def test_euler_steps_match_diffsynth():
    """One step of ``ContinuousODEScheduler.step`` (in its scaled space x/√(σ²+1), v-prediction) equals our
    Euler step of D = c_skip·x + c_out·v in EDM's unscaled space; the last step lands on D in both."""
    s = load_config(SVD_XT).sampling
    sched = diffsynth("schedulers.continuous_ode").ContinuousODEScheduler()
    sched.set_timesteps(6)
    sigmas = karras_sigmas(6, s.sigma_min, s.sigma_max, s.rho)
    g = np.random.default_rng(1)
    for i, t in enumerate(sched.timesteps):
        x = (g.standard_normal((3, 4, 5, 5)) * np.sqrt(sigmas[i] ** 2 + 1)).astype(np.float32)
        v = g.standard_normal(x.shape).astype(np.float32)
        c_skip, c_out, c_in, _ = v_scalings(sigmas[i])
        denoised = ms.Tensor(np.float32(c_skip) * x + np.float32(c_out) * v)
        ours = sample_euler(lambda xx, sigma: denoised, ms.Tensor(x), sigmas[i:i + 2], disable=True).asnumpy()
        scaled = sched.step(torch.from_numpy(v), t, torch.from_numpy(np.float32(c_in) * x)).numpy()
        theirs = scaled * np.sqrt(sigmas[i + 1] ** 2 + 1)  # back to EDM's space (σ_next = 0 at the end)
        assert rel_err(ours, theirs) < 2e-5, i


# ------------------------------------------------------------------------------------------- conditioning
@pytest.mark.parametrize("size", [(64, 128), (576, 1024), (301, 203), (200, 200)])
def test_image_encoder_preprocessing_matches_diffsynth(size):
    """``SVDVideoPipeline.encode_image_with_clip`` before the encoder: antialiased bicubic resize to 224 (kornia's
    blur-then-resize), [-1, 1] -> [0, 1], CLIP mean/std — against ``image_encoder.preprocess``."""
    m = diffsynth("pipelines.svd_video")
    g = np.random.default_rng(2)
    image = g.integers(0, 256, size + (3,)).astype(np.uint8)
    pipe = m.SVDVideoPipeline(device="cpu", torch_dtype=torch.float32)
    x = pipe.preprocess_image(Image.fromarray(image))
    x = m.SVDCLIPImageProcessor().resize_with_antialiasing(x, (224, 224))
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(1, 3, 1, 1)
    theirs = (((x + 1.0) / 2.0 - mean) / std).numpy()
    ours = preprocess(x_in := (image.astype(np.float32) * (2 / 255) - 1).transpose(2, 0, 1)[None], 224)
    assert x_in.shape == (1, 3) + size
    assert np.abs(ours - theirs).max() < 2e-5


def test_motion_bucket_matches_exvideo_script():
    """ExVideo_svd_train.py's MotionBucketManager: per-pixel std over time (unbiased), its mean, and the first
    bucket whose next threshold exceeds the score — written from the script, against ``data.motion``."""
    from exvideo_ms.data.motion import THRESHOLDS, motion_bucket
    g = np.random.default_rng(3)
    for amplitude in (0.0, 0.01, 0.05, 0.12, 0.3, 0.9):
        frames = (g.uniform(-0.5, 0.5, (1, 3, 1, 8, 8)) + amplitude * g.standard_normal((1, 3, 6, 8, 8)))
        frames = torch.from_numpy(frames.astype(np.float32))  # (B, C, T, H, W) as the script's dataset yields
        score = frames.std(dim=2).mean(dim=[1, 2, 3]).tolist()[0]
        theirs = next((b for b in range(len(THRESHOLDS) - 1) if THRESHOLDS[b + 1] > score), len(THRESHOLDS) - 1)
        assert motion_bucket(frames[0].permute(1, 0, 2, 3).numpy()) == theirs, amplitude


def test_position_table_initialisation_matches_diffsynth():
    """``TrainableTemporalTimesteps(C, True, 0, 128)``: the sinusoid at PositionalID's folded frame ids."""
    svd_unet = diffsynth("models.svd_unet")
    for channels in (320, 64):
        theirs = svd_unet.TrainableTemporalTimesteps(channels, True, 0, 128).embeddings.detach().numpy()
        ours = PositionalEmbedding(128, channels).embeddings.asnumpy()
        assert np.abs(ours - theirs).max() < 5e-6  # float32 arguments up to 24 rad: each side is 2e-6 from float64


# ----------------------------------------------------------------------------------------- post-processing
@pytest.mark.parametrize("post_normalize,contrast", [(True, 1.2), (False, 1.01), (True, 1.0)])
def test_post_processing_matches_diffsynth(post_normalize, contrast):
    m = diffsynth("pipelines.svd_video")
    x = np.random.default_rng(4).standard_normal((6, 4, 5, 7)).astype(np.float32)
    x *= np.linspace(0.5, 2.0, 6, dtype=np.float32).reshape(-1, 1, 1, 1)  # frames with different spreads
    theirs = m.SVDVideoPipeline.post_process_latents(None, torch.from_numpy(x.copy()), post_normalize, contrast)
    ours = post_process_latents(ms.Tensor(x), post_normalize, contrast).asnumpy()
    assert rel_err(ours, theirs.numpy()) < 1e-5


def test_latent_scalings_match_diffsynth(scales):
    """DiffSynth encodes frames (video-to-video, keyframes, training targets) with its SVD VAE encoder's 0.13025
    and decodes with 1/0.18215; the ExVideo config keeps both (README: kept on purpose, as the published ExVideo
    weights were trained so), SVD-XT's config uses 0.18215 both ways as sgm does."""
    ex, xt = load_config(EXVIDEO).vae, load_config(SVD_XT).vae
    assert (ex.encode_scale, ex.scale_factor) == (scales["encode"], scales["decode"]) == (0.13025, 0.18215)
    assert xt.encode_scale == xt.scale_factor == 0.18215


# ------------------------------------------------------------------------------------ windowed VAE decoding
@pytest.fixture(scope="module")
def full_decoders():
    """DiffSynth's ``SVDVAEDecoder`` and our full-size VAE decoder with the same random weights, given in the
    Stability layout of svd_xt.safetensors (DiffSynth's ``from_civitai``, our sgm table)."""
    from exvideo_ms.convert.sgm import target
    from exvideo_ms.models.svd import build_model
    shapes = read_key_list(KEYS / "sgm_svd_xt_keys.txt")
    prefix = "first_stage_model.decoder."
    g = np.random.default_rng(5)
    weights = {}
    for key, shape in shapes.items():
        if not key.startswith(prefix):
            continue
        if key.endswith("mix_factor"):
            w = g.uniform(-2, 2, shape)
        elif len(shape) == 1:  # biases, norm shifts and scales
            w = (1.0 if ("norm" in key and key.endswith("weight")) else 0.0) + 0.1 * g.standard_normal(shape)
        else:  # fan-in scaled, so activations stay O(1) through 30 blocks
            w = g.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        weights[key] = w.astype(np.float32)
    theirs = diffsynth("models.svd_vae_decoder").SVDVAEDecoder()
    converted = theirs.state_dict_converter().from_civitai({k: torch.from_numpy(v) for k, v in weights.items()})
    theirs.load_state_dict(converted, strict=True)
    ours = build_model(load_config(SVD_XT), components=("vae",)).vae
    params = {f"vae.{name}": p for name, p in ours.parameters_and_names()}
    for key, w in weights.items():
        name = target(key)
        params[name].set_data(ms.Tensor(w.reshape(params[name].shape)))
        params.pop(name)
    assert not [n for n in params if n.startswith("vae.decoder.")], "decoder parameters left unset"
    ours.set_train(False)
    return theirs.eval(), ours


@pytest.mark.parametrize("frames", [13])
def test_windowed_decoding_full_size_matches_diffsynth(full_decoders, scales, frames):
    """``SVDVAEDecoder.decode_video`` (temporal tiles of 8, stride 4, its blending masks; one spatial tile at
    these sizes) against ``decode_windowed(window=8, stride=4)``: 13 frames, three windows, the last one short
    (the pipeline test below decodes 10 frames the same way on the tiny decoder)."""
    theirs, ours = full_decoders
    z = np.random.default_rng(frames).standard_normal((frames, 4, 4, 6)).astype(np.float32)
    with torch.no_grad():
        ref = theirs.decode_video(torch.from_numpy(z))  # (3, T, H, W) in [-1, 1]
    ref = ((ref.permute(1, 2, 3, 0).numpy() + 1) / 2).clip(0, 1)
    got = decode_windowed(ours, ms.Tensor(z), scales["decode"], 8, 4, progress=False)
    assert got.shape == ref.shape == (frames, 32, 48, 3)
    assert ((ref > 0) & (ref < 1)).mean() > 0.8  # random weights, yet most pixels are not clipped (86%)
    assert np.abs(got - ref).max() < 1e-4  # measured 1.1e-5


# ------------------------------------------------------------------------------------------ whole pipeline
class _UNet(torch.nn.Module):
    """diffusers' tiny UNet behind DiffSynth's ``SVDUNet`` call: one video's (T, 8, h, w) rows, a scalar c_noise,
    the CLIP embedding, ``add_time_id`` (1, 3)."""

    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, add_time_id):
        return self.unet(sample[None], timestep, encoder_hidden_states.reshape(1, 1, -1),
                         added_time_ids=add_time_id.float()).sample[0]


class _ImageEncoder(torch.nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, pixels):
        return self.clip(pixel_values=pixels).image_embeds


def _vae_encoder(vae, scaling_factor):
    """diffusers' tiny VAE encoder (its mode) with DiffSynth's scaling and ``encode_video`` (8 frames a call)."""
    class Encoder(torch.nn.Module):
        encode_video = diffsynth("models.sd_vae_encoder").SDVAEEncoder.encode_video

        def __init__(self):
            super().__init__()
            self.vae, self.scaling_factor = vae, scaling_factor

        def forward(self, x):
            return self.vae.encode(x).latent_dist.mode() * self.scaling_factor

    return Encoder()


def _vae_decoder(vae, scaling_factor):
    """diffusers' tiny temporal decoder inside DiffSynth's ``decode_video`` (its tiles and masks)."""
    svd_decoder = diffsynth("models.svd_vae_decoder").SVDVAEDecoder

    class Decoder(torch.nn.Module):
        decode_video, build_mask = svd_decoder.decode_video, svd_decoder.build_mask

        def __init__(self):
            super().__init__()
            self.vae, self.scaling_factor, self.conv_in = vae, scaling_factor, vae.decoder.conv_in

        def forward(self, sample):  # (C, T, h, w) scaled latents -> (3, T, H, W)
            z = sample.permute(1, 0, 2, 3) / self.scaling_factor
            return self.vae.decode(z, num_frames=z.shape[0]).sample.permute(1, 0, 2, 3)

    return Decoder()


FRAMES, H, W, SEED = 10, 64, 128, 11


@pytest.fixture(scope="module")
def tiny_pair(torch_models, aligned_unet, converted, scales):
    """(DiffSynth's SVDVideoPipeline on the tiny torch networks, ours on the same weights converted), both
    encoding frames at DiffSynth's 0.13025 and decoding at 0.18215."""
    _, vae, clip = torch_models
    theirs = diffsynth("pipelines.svd_video").SVDVideoPipeline(device="cpu", torch_dtype=torch.float32)
    theirs.unet, theirs.image_encoder = _UNet(aligned_unet), _ImageEncoder(clip)
    theirs.vae_encoder = _vae_encoder(vae, scales["encode"])
    theirs.vae_decoder = _vae_decoder(vae, scales["decode"])
    cfg = load_config(converted[1])
    assert cfg.vae.scale_factor == scales["decode"]
    cfg = dataclasses.replace(cfg, vae=dataclasses.replace(cfg.vae, encode_scale_factor=scales["encode"]))
    return theirs, SVDPipeline.from_config(cfg, converted[0])


def _frames(seed, n):
    g = np.random.default_rng(seed)
    ramp = np.linspace(0, 255, W)[None, :, None] * np.ones((H, 1, 3))
    return [np.clip(ramp * (0.5 + 0.05 * i) + g.normal(0, 40, (H, W, 3)), 0, 255).astype(np.uint8)
            for i in range(n)]


def run_diffsynth(pipe, image, **kw):
    """DiffSynth's pipeline with the noise ours draws from SEED: the image's augmentation noise first, then
    the latents'."""
    rng = np.random.default_rng(SEED)
    image_noise = rng.standard_normal((1, 3, H, W)).astype(np.float32)
    latent_noise = rng.standard_normal((FRAMES, 4, H // 8, W // 8)).astype(np.float32)
    made = references.diffsynth_generate(pipe, image, image_noise, latent_noise, num_frames=FRAMES, height=H,
                                         width=W, **kw)
    return made["latents"], made["frames"]


CASES = {
    # image to video: CFG ramp 1 -> 3 per frame, noise augmentation, ExVideo's post-processing, 8/4 windows
    "image_to_video": dict(theirs=dict(min_cfg_scale=1.0, max_cfg_scale=3.0, num_inference_steps=3, fps=7,
                                       motion_bucket_id=100, noise_aug_strength=0.02, contrast_enhance_scale=1.2,
                                       post_normalize=True),
                           ours=dict(min_guidance_scale=1.0, max_guidance_scale=3.0, num_inference_steps=3, fps=7,
                                     motion_bucket_id=100, noise_aug_strength=0.02, contrast_enhance_scale=1.2,
                                     post_normalize=True)),
    # video to video at strength 0.6 with keyframes at 0, 4 and 9 re-noised every step; no post-processing
    "video_to_video_keyframes": dict(
        theirs=dict(min_cfg_scale=2.0, max_cfg_scale=2.5, num_inference_steps=3, denoising_strength=0.6,
                    noise_aug_strength=0.0, post_normalize=False, contrast_enhance_scale=1.0, mask_frame_ids=[0, 4, 9]),
        ours=dict(min_guidance_scale=2.0, max_guidance_scale=2.5, num_inference_steps=3, denoising_strength=0.6,
                  noise_aug_strength=0.0, post_normalize=False, contrast_enhance_scale=1.0, mask_frame_ids=[0, 4, 9])),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_pipeline_matches_diffsynth(tiny_pair, case):
    """DiffSynth's ``SVDVideoPipeline.__call__`` — its scheduler, per-frame CFG, keyframes, video-to-video start,
    post-processing and windowed decoding — against ``SVDPipeline`` on the same tiny weights and noise."""
    theirs, ours = tiny_pair
    image = _frames(7, 1)[0]
    kw = CASES[case]
    extra_theirs, extra_ours = {}, {}
    if "denoising_strength" in kw["ours"]:
        video = _frames(8, FRAMES)
        keys = [video[i] for i in kw["ours"]["mask_frame_ids"]]
        extra_theirs = dict(input_video=[Image.fromarray(f) for f in video],
                            mask_frames=[Image.fromarray(f) for f in keys])
        extra_ours = dict(input_video=np.stack(video), mask_frames=np.stack(keys))
    ref_latents, ref = run_diffsynth(theirs, image, **kw["theirs"], **extra_theirs)
    # one denoising window over all FRAMES frames, as DiffSynth runs them (past the tiny config's 8 frames our
    # pipeline would otherwise denoise in windows)
    args = dict(num_frames=FRAMES, seed=SEED, decode_window=8, decode_stride=4, temporal_window=FRAMES, progress=False,
                **kw["ours"], **extra_ours)
    made = ours.generate(image, output_type="latent", **args)
    assert made.frames.shape == ref_latents.shape == (FRAMES, 4, H // 8, W // 8)
    assert rel_err(made.frames, ref_latents) < 1e-4
    if case == "image_to_video":  # windowed decoding of the same latents (the other case would repeat it)
        frames = ours.decode(ms.Tensor(made.frames), made.settings, progress=False)
        assert frames.shape == ref.shape == (FRAMES, H, W, 3)
        assert np.abs(frames - ref).max() < 1e-4
        assert ref.std() > 0.05


# ------------------------------------------------------------------------------------------- training loss
def exvideo_script_loss(unet, vae_encoder, image_encoder, frames, sigma_index, noise):
    """``LightningModel.calculate_loss`` of ExVideo_svd_train.py (DiffSynth-Studio v1.1.9), written from the
    script: frames (C, T, H, W) in [-1, 1]; returns (loss, reweighted loss) and the σ it used."""
    svd_video = diffsynth("pipelines.svd_video")
    sched = diffsynth("schedulers.continuous_ode").ContinuousODEScheduler(num_inference_steps=1000)
    with torch.no_grad():
        latents = vae_encoder.encode_video(frames[None])[0].permute(1, 0, 2, 3)  # (T, C, h, w) × 0.13025
        image_emb_vae = (latents[0] / vae_encoder.scaling_factor)[None].repeat(frames.shape[1], 1, 1, 1)
        first = svd_video.SVDCLIPImageProcessor().resize_with_antialiasing(frames[:, 0][None], (224, 224))
        mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).reshape(1, 3, 1, 1)
        std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).reshape(1, 3, 1, 1)
        image_emb_clip = image_encoder(((first + 1.0) / 2.0 - mean) / std)
        timestep = sched.timesteps[sigma_index]
        noisy = sched.add_noise(latents, noise, timestep)
        score = frames[None].std(dim=2).mean(dim=[1, 2, 3]).tolist()[0]  # MotionBucketManager
        from exvideo_ms.data.motion import THRESHOLDS
        bucket = next((b for b in range(len(THRESHOLDS) - 1) if THRESHOLDS[b + 1] > score), len(THRESHOLDS) - 1)
        add_time_id = torch.tensor([[30 - 1, bucket, 0]])  # fps 30, noise_aug_strength 0
        pred = unet(torch.cat([noisy, image_emb_vae], 1), timestep, image_emb_clip, add_time_id)
        out = sched.step(pred.float(), timestep, noisy.float(), to_final=True)
        loss = torch.nn.functional.mse_loss(out, latents.float() * 1.01, reduction="mean")
        return float(loss), float(loss * sched.training_weight(timestep)), float(sched.sigmas[sigma_index])


def test_training_loss_matches_exvideo_script(tiny_pair, torch_models, aligned_unet, scales):
    """Our trainer's path for one clip — ``Trainer.condition`` (targets × 0.13025, the clean first frame's
    latent and CLIP embedding), the dataset's fps 30 and motion bucket, ``draw_sigma_and_noise`` (σ uniform on
    the 1000 Karras sigmas) and ``DenoisingLoss`` (×1.01 target, weight √(1+σ²)/σ) — against the script on the
    same UNet, σ and noise."""
    from types import SimpleNamespace

    from exvideo_ms.data.dataset import DataOptions
    from exvideo_ms.data.motion import motion_bucket
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.trainer import Trainer, TrainOptions, draw_sigma_and_noise
    _, vae, clip = torch_models
    ours = tiny_pair[1]
    opts = TrainOptions()
    assert (opts.loss.recipe, opts.loss.contrast_enhance_scale, opts.loss.num_sigmas, opts.noise_aug_strength,
            DataOptions().fps) == ("exvideo", 1.01, 1000, 0.0, 30.0)  # the script's constants are our defaults
    clip_frames = to_model_range(np.stack(_frames(9, 4)))  # (T, 3, H, W)
    trainer = SimpleNamespace(conditioner=ours.conditioner, opts=opts, cfg=ours.cfg)
    grid = diffsynth("schedulers.continuous_ode").ContinuousODEScheduler(num_inference_steps=1000).sigmas.numpy()
    loss_fn = DenoisingLoss(ours.unet, "exvideo", opts.loss.contrast_enhance_scale,
                            ours.cfg.conditioning.addition_time_embed_dim)
    seen = []
    for index in range(2):  # two samples: two σ of the grid
        cond = Trainer.condition(trainer, clip_frames[None], [index])
        ids = added_time_ids(DataOptions().fps, motion_bucket(clip_frames), opts.noise_aug_strength)[None]
        sigma, noise = draw_sigma_and_noise(opts, ours.cfg, [index], cond["latents"].shape[1:])
        k = int(np.abs(grid - sigma[0]).argmin())
        assert abs(grid[k] - sigma[0]) <= 1e-6 * sigma[0]
        weighted, plain = loss_fn(ms.Tensor(cond["latents"]), ms.Tensor(cond["cond_latent"]),
                                  ms.Tensor(cond["clip_embedding"]), ms.Tensor(ids), ms.Tensor(sigma),
                                  ms.Tensor(noise))
        ref_plain, ref_weighted, ref_sigma = exvideo_script_loss(
            _UNet(aligned_unet), _vae_encoder(vae, scales["encode"]), _ImageEncoder(clip),
            torch.from_numpy(clip_frames.transpose(1, 0, 2, 3).copy()), k, torch.from_numpy(noise[0]))
        assert abs(float(plain.asnumpy()) - ref_plain) <= 1e-4 * ref_plain, (index, ref_sigma)
        assert abs(float(weighted.asnumpy()) - ref_weighted) <= 1e-4 * ref_weighted, (index, ref_sigma)
        seen.append(ref_sigma)
    assert len(set(seen)) == 2


def test_uint8_frames_round_where_diffsynth_truncates():
    """Kept on purpose (README): DiffSynth's ``tensor2video`` truncates ((x + 1)·127.5 cast to uint8), a bias of
    half a level down; ``media.to_uint8`` rounds, as diffusers' ``numpy_to_pil`` does."""
    from exvideo_ms.media import to_uint8
    x = np.array([-1.0, -0.9, 0.0, 0.5, 0.99, 1.0], np.float32)  # DiffSynth's range [-1, 1]
    theirs = diffsynth("pipelines.svd_video").SVDVideoPipeline.tensor2video(
        None, torch.from_numpy(x).reshape(1, -1, 1, 1).repeat(3, 1, 1, 1))
    theirs = np.stack([np.asarray(f) for f in theirs])[:, 0, 0, 0]
    ours = to_uint8((x + 1) / 2)
    assert theirs.tolist() == [0, 12, 127, 191, 253, 255]
    assert ours.tolist() == [0, 13, 128, 191, 254, 255]


def test_smallest_extended_size_is_refused_before_work_as_diffsynth_fails():
    """SVD-XT's middle block sees latents / 8 and has a temporal transformer: at 64 pixels its 1×1 tokens cannot be
    reflect-padded. DiffSynth's conv fails there mid-sampling; we refuse at settings time (the check once
    looked only at the down levels' attention, and let 64 pixels through)."""
    from exvideo_ms.models.exvideo import check_geometry
    unet = load_config(EXVIDEO).unet
    with pytest.raises(ValueError, match="1x1 latents at the deepest level, the middle block's"):
        check_geometry(unet, 32, 64 // 8, 64 // 8)
    check_geometry(unet, 32, 128 // 8, 128 // 8)
    conv = torch.nn.Conv3d(4, 4, kernel_size=3, padding=1, padding_mode="reflect")  # DiffSynth's positional_conv
    with pytest.raises(RuntimeError, match="Padding size"):
        conv(torch.zeros(1, 4, 3, 1, 1))
    assert conv(torch.zeros(1, 4, 3, 2, 2)).shape == (1, 4, 3, 2, 2)
