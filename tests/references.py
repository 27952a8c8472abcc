"""Independent PyTorch references for the tests: tiny random diffusers / transformers models saved as a
diffusers folder, open_clip's own ViT, k-diffusion's sampler, ExVideo's original code (DiffSynth-Studio 1.1.9's
SVD files), and a Stability-layout renaming written from the published rules (reference/svd_architecture.md
§9), independent of the converter's tables.

open_clip and k-diffusion are installed without their dependencies (their torchvision does not import
beside torch 2.13 CPU). We load the two modules we need (open_clip.transformer, k_diffusion.sampling)
without running their package ``__init__``, which imports torchvision-backed image transforms that these
modules never call; if torchvision is absent, the names those imports ask for are provided as inert
placeholders so the module bodies can execute.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
import types
from pathlib import Path

TINY_SEED = 1234


@contextlib.contextmanager
def _placeholder_torchvision():
    """While importing a reference module: inert torchvision names if torchvision is absent, removed afterwards
    (left in ``sys.modules`` they would make diffusers believe torchvision is installed)."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        yield
        return
    tv = types.ModuleType("torchvision")
    tv.__path__ = []
    ops = types.ModuleType("torchvision.ops")
    ops.__path__ = []
    misc = types.ModuleType("torchvision.ops.misc")

    class FrozenBatchNorm2d:  # referenced by open_clip.utils.freeze_batch_norm_2d, unused by ViTs
        def __init__(self, *a, **k):
            raise RuntimeError("placeholder: torchvision is not installed")

    misc.FrozenBatchNorm2d = FrozenBatchNorm2d
    transforms = types.ModuleType("torchvision.transforms")
    transforms.__path__ = []

    class GaussianBlur:  # imported by DiffSynth's pipelines/base.py, unused by its SVD pipeline
        def __init__(self, *a, **k):
            raise RuntimeError("placeholder: torchvision is not installed")

    transforms.GaussianBlur = GaussianBlur
    functional = types.ModuleType("torchvision.transforms.functional")
    transforms.functional = functional
    placeholders = {"torchvision": tv, "torchvision.ops": ops, "torchvision.ops.misc": misc,
                    "torchvision.transforms": transforms, "torchvision.transforms.functional": functional}
    sys.modules.update(placeholders)
    try:
        yield
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)


def _load_submodule(package: str, module: str):
    """Import ``package.module`` without executing ``package/__init__.py``."""
    full = f"{package}.{module}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ImportError(f"{package} is not installed (pip install --no-deps -r requirements/test-nodeps.txt)")
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec  # for importlib.util.find_spec of its submodules
        sys.modules[package] = pkg
    with _placeholder_torchvision():
        return importlib.import_module(full)


def open_clip_transformer():
    return _load_submodule("open_clip", "transformer")


def open_clip_tokenizer():
    return _load_submodule("open_clip", "tokenizer")


def torchmetrics_image(module: str):
    """``torchmetrics.image.<module>``. torchmetrics imports torch-fidelity's InceptionV3 module when torch-fidelity
    is installed, and that package's __init__ imports torchvision: the module is loaded without it first."""
    _load_submodule("torch_fidelity", "feature_extractor_inceptionv3")
    return importlib.import_module(f"torchmetrics.image.{module}")


def k_diffusion_sampling():
    return _load_submodule("k_diffusion", "sampling")


# DiffSynth-Studio 1.1.9, the last release with SVD and ExVideo. Its package __init__s import every model it
# knows (and their dependencies); its SVD files need only torch and einops. The subpackages become namespaces
# holding just the names ``pipelines/svd_video.py`` imports from them.
_DIFFSYNTH_NAMES = {
    "models": {"SVDImageEncoder": "svd_image_encoder", "SVDUNet": "svd_unet", "SVDVAEEncoder": "svd_vae_encoder",
               "SVDVAEDecoder": "svd_vae_decoder"},
    "schedulers": {"ContinuousODEScheduler": "continuous_ode"},
}


def diffsynth(module: str):
    """``diffsynth.<module>`` (e.g. "pipelines.svd_video", "models.svd_vae_decoder") without the package
    ``__init__`` files."""
    full = f"diffsynth.{module}"
    if full in sys.modules:
        return sys.modules[full]
    if "diffsynth" in sys.modules:
        root = Path(sys.modules["diffsynth"].__path__[0])
    else:
        spec = importlib.util.find_spec("diffsynth")
        if spec is None:
            raise ImportError("diffsynth is not installed (pip install --no-deps -r requirements/test-nodeps.txt)")
        root = Path(list(spec.submodule_search_locations)[0])
    for name in ("diffsynth", "diffsynth.models", "diffsynth.pipelines", "diffsynth.schedulers"):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = pkg
    models = sys.modules["diffsynth.models"]
    with _placeholder_torchvision():
        if not hasattr(models, "ModelManager"):
            class ModelManager:  # the pipeline's loader; tests hand it models directly
                def __init__(self, *a, **k):
                    raise RuntimeError("placeholder: DiffSynth's ModelManager is not loaded by the tests")

            models.ModelManager = ModelManager
            for sub, names in _DIFFSYNTH_NAMES.items():
                for attr, file in names.items():
                    setattr(sys.modules[f"diffsynth.{sub}"], attr,
                            getattr(importlib.import_module(f"diffsynth.{sub}.{file}"), attr))
        return importlib.import_module(full)


def diffsynth_generate(pipe, image, image_noise, latent_noise, **kwargs) -> dict:
    """DiffSynth's ``SVDVideoPipeline.__call__`` on ``image`` (H, W, 3) uint8 with given noise — its two
    ``generate_noise`` draws are the latents' noise, then the image's augmentation noise. Returns the sampler's
    final latents ("raw"), the post-processed latents the decoder got ("latents") and the frames (T, H, W, 3)
    as floats in [0, 1] ("frames"). The pipeline is left as it was."""
    import torch
    from PIL import Image
    queue, seen = [latent_noise, image_noise], {}

    def generate_noise(shape, seed=None, device=None, dtype=None):
        noise = queue.pop(0)
        if tuple(shape) != noise.shape:
            raise AssertionError(f"DiffSynth asked for noise of shape {tuple(shape)}, the next given is {noise.shape}")
        return torch.from_numpy(noise)

    def seeing(name, fn):  # ``fn`` unchanged, its latents kept under ``name``
        def wrapped(latents, **k):
            seen[name] = latents.numpy().copy()
            return fn(latents, **k)
        return wrapped

    patches = [(pipe, "generate_noise", generate_noise), (pipe, "tensor2video", lambda frames: frames),
               (pipe, "post_process_latents", seeing("raw", pipe.post_process_latents)),
               (pipe.vae_decoder, "decode_video", seeing("latents", pipe.vae_decoder.decode_video))]
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name, _ in patches]
    for obj, name, fn in patches:
        setattr(obj, name, fn)
    try:
        with torch.no_grad():
            video = pipe(input_image=Image.fromarray(image), progress_bar_cmd=lambda x: x, **kwargs)
    finally:
        for obj, name, before in saved:  # instance attributes back as they were (class methods un-shadowed)
            if before is None:
                delattr(obj, name)
            else:
                setattr(obj, name, before)
    if queue:
        raise AssertionError(f"DiffSynth drew {2 - len(queue)} of the 2 noises given")
    return {**seen, "frames": ((video.permute(1, 2, 3, 0).numpy() + 1) / 2).clip(0, 1)}


# ----------------------------------------------------------------------------------------------------------
# tiny diffusers SVD with SVD-XT's structure (4 levels, 2 res blocks, attention at levels 0-2)
TINY_UNET = dict(in_channels=8, out_channels=4,
                 down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
                 up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
                 block_out_channels=(32, 32, 64, 64), addition_time_embed_dim=8,
                 projection_class_embeddings_input_dim=24, layers_per_block=2, cross_attention_dim=32,
                 transformer_layers_per_block=1, num_attention_heads=(2, 2, 4, 4), num_frames=8)
TINY_VAE = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                block_out_channels=(32, 32, 64, 64), layers_per_block=2, latent_channels=4, sample_size=64,
                scaling_factor=0.18215)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=224,
                 patch_size=14, projection_dim=32, hidden_act="gelu", layer_norm_eps=1e-5)
# scheduler_config.json of stabilityai/stable-video-diffusion-img2vid-xt (reference §8)
SVD_SCHEDULER = dict(prediction_type="v_prediction", use_karras_sigmas=True, sigma_min=0.002, sigma_max=700.0,
                     timestep_type="continuous", timestep_spacing="leading", steps_offset=1,
                     interpolation_type="linear", beta_schedule="scaled_linear", beta_start=0.00085,
                     beta_end=0.012, num_train_timesteps=1000)


def randomise_(module, seed: int) -> None:
    """Perturb every parameter so that no branch is neutral: mix factors far from 0, norms not identity."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith("mix_factor"):
                p.copy_(torch.rand(p.shape, generator=g) * 4 - 2)
            elif "norm" in name and p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.02 * torch.randn(p.shape, generator=g))


def align_unet_eps_(unet) -> int:
    """Set diffusers' ResBlock GroupNorms to the original eps 1e-5 (diffusers uses 1e-6 in 72 of them at full
    size); transformer norms keep 1e-6. Returns how many norms changed."""
    import torch
    changed = 0
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.GroupNorm):
            want = 1e-6 if re.search(r"attentions\.\d+\.norm$", name) else 1e-5
            if m.eps != want:
                m.eps = want
                changed += 1
    return changed


def tiny_torch_models(seed: int = TINY_SEED):
    import torch
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection
    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**TINY_UNET).eval()
    vae = AutoencoderKLTemporalDecoder(**TINY_VAE).eval()
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP)).eval()
    for i, m in enumerate((unet, vae, clip)):
        randomise_(m, seed + i)
    return unet, vae, clip


def save_diffusers_folder(path: Path, unet, vae, clip) -> Path:
    from diffusers import EulerDiscreteScheduler
    path = Path(path)
    unet.save_pretrained(path / "unet")
    vae.save_pretrained(path / "vae")
    clip.save_pretrained(path / "image_encoder")
    EulerDiscreteScheduler(**SVD_SCHEDULER).save_pretrained(path / "scheduler")
    return path


def diffusers_pipeline(path: Path):
    """StableVideoDiffusionPipeline from a folder written by ``save_diffusers_folder``."""
    from diffusers import (AutoencoderKLTemporalDecoder, EulerDiscreteScheduler, StableVideoDiffusionPipeline,
                           UNetSpatioTemporalConditionModel)
    from transformers import CLIPVisionModelWithProjection
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    path = Path(path)
    unet = UNetSpatioTemporalConditionModel.from_pretrained(path / "unet").eval()
    align_unet_eps_(unet)
    return StableVideoDiffusionPipeline(
        vae=AutoencoderKLTemporalDecoder.from_pretrained(path / "vae").eval(),
        image_encoder=CLIPVisionModelWithProjection.from_pretrained(path / "image_encoder").eval(),
        unet=unet, scheduler=EulerDiscreteScheduler.from_pretrained(path / "scheduler"),
        feature_extractor=CLIPImageProcessorPil())


# ----------------------------------------------------------------------------------------------------------
# Stability (sgm) layout from diffusers names, written from the rules of reference §9 for 2 res blocks
def _unet_sgm(key: str) -> str:
    rules = [
        (r"time_embedding\.linear_([12])\.(.*)", lambda m: f"time_embed.{(int(m[1]) - 1) * 2}.{m[2]}"),
        (r"add_embedding\.linear_([12])\.(.*)", lambda m: f"label_emb.0.{(int(m[1]) - 1) * 2}.{m[2]}"),
        (r"conv_in\.(.*)", lambda m: f"input_blocks.0.0.{m[1]}"),
        (r"conv_norm_out\.(.*)", lambda m: f"out.0.{m[1]}"),
        (r"conv_out\.(.*)", lambda m: f"out.2.{m[1]}"),
        (r"down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", lambda m: f"input_blocks.{3 * int(m[1]) + 3}.0.op.{m[2]}"),
        (r"down_blocks\.(\d)\.resnets\.(\d)\.(.*)", lambda m: f"input_blocks.{3 * int(m[1]) + int(m[2]) + 1}.0.{_res(m[3])}"),
        (r"down_blocks\.(\d)\.attentions\.(\d)\.(.*)", lambda m: f"input_blocks.{3 * int(m[1]) + int(m[2]) + 1}.1.{_attn(m[3])}"),
        (r"mid_block\.resnets\.(\d)\.(.*)", lambda m: f"middle_block.{2 * int(m[1])}.{_res(m[2])}"),
        (r"mid_block\.attentions\.0\.(.*)", lambda m: f"middle_block.1.{_attn(m[1])}"),
        (r"up_blocks\.(\d)\.resnets\.(\d)\.(.*)", lambda m: f"output_blocks.{3 * int(m[1]) + int(m[2])}.0.{_res(m[3])}"),
        (r"up_blocks\.(\d)\.attentions\.(\d)\.(.*)", lambda m: f"output_blocks.{3 * int(m[1]) + int(m[2])}.1.{_attn(m[3])}"),
        (r"up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)",
         lambda m: f"output_blocks.{3 * int(m[1]) + 2}.{1 if m[1] == '0' else 2}.conv.{m[2]}"),
    ]
    for pattern, fn in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return fn(m)
    raise KeyError(key)


_RES_SGM = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
            "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _res(rest: str) -> str:
    part, module, leaf = re.fullmatch(r"(spatial_res_block|temporal_res_block|time_mixer)\.?(\w*)\.(\w+)", rest).groups()
    if part == "time_mixer":
        return f"time_mixer.{leaf}"
    return ("time_stack." if part == "temporal_res_block" else "") + f"{_RES_SGM[module]}.{leaf}"


def _attn(rest: str) -> str:
    rest = rest.replace("temporal_transformer_blocks.", "time_stack.")
    return re.sub(r"time_pos_embed\.linear_([12])", lambda m: f"time_pos_embed.{(int(m[1]) - 1) * 2}", rest)


_VAE_ATTN_SGM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_RES_SGM = {"conv_shortcut": "nin_shortcut"}


def _vae_sgm(key: str, levels: int):
    """(sgm key, tensor) rules for the diffusers temporal VAE; returns the sgm key and whether to unsqueeze."""
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(\w+)", key)
    if m:
        prefix = "conditioner.embedders.3.encoder.encoder" if m[1] == "encoder" else "first_stage_model.decoder"
        return f"{prefix}.mid.attn_1.{_VAE_ATTN_SGM[m[2]]}.{m[3]}", m[2] != "group_norm" and m[3] == "weight"
    enc = "conditioner.embedders.3.encoder."
    rules = [
        (r"quant_conv\.(.*)", lambda m: f"{enc}quant_conv.{m[1]}"),
        (r"encoder\.conv_norm_out\.(.*)", lambda m: f"{enc}encoder.norm_out.{m[1]}"),
        (r"encoder\.(conv_in|conv_out)\.(.*)", lambda m: f"{enc}encoder.{m[1]}.{m[2]}"),
        (r"encoder\.down_blocks\.(\d)\.downsamplers\.0\.conv\.(.*)", lambda m: f"{enc}encoder.down.{m[1]}.downsample.conv.{m[2]}"),
        (r"encoder\.down_blocks\.(\d)\.resnets\.(\d)\.(\w+)\.(.*)",
         lambda m: f"{enc}encoder.down.{m[1]}.block.{m[2]}.{_VAE_RES_SGM.get(m[3], m[3])}.{m[4]}"),
        (r"encoder\.mid_block\.resnets\.(\d)\.(\w+)\.(.*)",
         lambda m: f"{enc}encoder.mid.block_{int(m[1]) + 1}.{_VAE_RES_SGM.get(m[2], m[2])}.{m[3]}"),
        (r"decoder\.conv_norm_out\.(.*)", lambda m: f"first_stage_model.decoder.norm_out.{m[1]}"),
        (r"decoder\.time_conv_out\.(.*)", lambda m: f"first_stage_model.decoder.conv_out.time_mix_conv.{m[1]}"),
        (r"decoder\.(conv_in|conv_out)\.(.*)", lambda m: f"first_stage_model.decoder.{m[1]}.{m[2]}"),
        (r"decoder\.up_blocks\.(\d)\.upsamplers\.0\.conv\.(.*)",
         lambda m: f"first_stage_model.decoder.up.{levels - 1 - int(m[1])}.upsample.conv.{m[2]}"),
        (r"decoder\.up_blocks\.(\d)\.resnets\.(\d)\.(.*)",
         lambda m: f"first_stage_model.decoder.up.{levels - 1 - int(m[1])}.block.{m[2]}.{_vae_video_res(m[3])}"),
        (r"decoder\.mid_block\.resnets\.(\d)\.(.*)",
         lambda m: f"first_stage_model.decoder.mid.block_{int(m[1]) + 1}.{_vae_video_res(m[2])}"),
    ]
    for pattern, fn in rules:
        m = re.fullmatch(pattern, key)
        if m:
            return fn(m), False
    raise KeyError(key)


def _vae_video_res(rest: str) -> str:
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    part, module, leaf = re.fullmatch(r"(spatial_res_block|temporal_res_block)\.(\w+)\.(\w+)", rest).groups()
    if part == "temporal_res_block":
        return f"time_stack.{_RES_SGM[module]}.{leaf}"
    return f"{_VAE_RES_SGM.get(module, module)}.{leaf}"


def _clip_sgm(key: str, state: dict, out: dict) -> None:
    p = "conditioner.embedders.0.open_clip.model.visual."
    simple = {"vision_model.embeddings.patch_embedding.weight": "conv1.weight",
              "vision_model.embeddings.class_embedding": "class_embedding",
              "vision_model.embeddings.position_embedding.weight": "positional_embedding"}
    t = state[key]
    if key in simple:
        out[p + simple[key]] = t
        return
    if key == "visual_projection.weight":
        out[p + "proj"] = t.T.contiguous()
        return
    m = re.fullmatch(r"vision_model\.(pre_layrnorm|post_layernorm)\.(\w+)", key)
    if m:
        out[p + ("ln_pre" if m[1] == "pre_layrnorm" else "ln_post") + "." + m[2]] = t
        return
    m = re.fullmatch(r"vision_model\.encoder\.layers\.(\d+)\.(.*)\.(\w+)", key)
    i, module, leaf = m.groups()
    if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
        if module == "self_attn.q_proj":
            import torch
            parts = [state[f"vision_model.encoder.layers.{i}.self_attn.{x}_proj.{leaf}"] for x in "qkv"]
            out[p + f"transformer.resblocks.{i}.attn.in_proj_{leaf}"] = torch.cat(parts, 0)
        return
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    out[p + f"transformer.resblocks.{i}.{names[module]}.{leaf}"] = t


def sgm_state_dict(unet, vae, clip) -> dict:
    """The three tiny models as one Stability-layout state dict (plus the unused groups a real file has)."""
    import torch
    out = {}
    for k, v in unet.state_dict().items():
        out["model.diffusion_model." + _unet_sgm(k)] = v
    levels = len(vae.config.block_out_channels)
    for k, v in vae.state_dict().items():
        sgm_key, unsqueeze = _vae_sgm(k, levels)
        out[sgm_key] = v[:, :, None, None] if unsqueeze else v
    cs = clip.state_dict()
    for k in cs:
        _clip_sgm(k, cs, out)
    # groups the real file carries and image-to-video does not use
    for k, v in list(out.items()):
        if k.startswith("conditioner.embedders.3.encoder.encoder."):
            out["first_stage_model.encoder." + k[len("conditioner.embedders.3.encoder.encoder."):]] = v.clone()
    out["conditioner.embedders.3.encoder.post_quant_conv.weight"] = torch.zeros(4, 4, 1, 1)
    out["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.tensor(4.6)
    return {k: v.contiguous() for k, v in out.items()}
