"""benchmarks/torch_exvideo.py, the PyTorch side of issue 23's fair training benchmark: diffusers' UNet given
ExVideo's position table and positional conv computes what our VideoUNet with its ExVideo extension computes,
with the same weights, and its trainable set is train.py's exvideo mode's."""
import copy
import dataclasses

import numpy as np
import torch
from tests.helpers import ms_unet, rel_err, torch_unet, unet_inputs

NUM_POSITIONS = 12
TOL = 1e-4  # as tests/test_unet.py: the same networks without the extension
SIDE = 16  # square latents (the patched conv's token grid); the tiny UNet's middle block then sees 2x2, the least
#           the reflect-padded conv takes
LEAVES = {"positional_embedding.embeddings": "time_proj.embeddings",  # ours -> the patched diffusers transformer's
          "positional_conv.weight": "temporal_transformer_blocks.0.conv.weight",
          "positional_conv.bias": "temporal_transformer_blocks.0.conv.bias"}


def test_patched_diffusers_unet_equals_ours_with_exvideo(converted, tiny_cfg, aligned_unet):
    import mindspore as ms

    from benchmarks.torch_exvideo import add_exvideo, trainable_set
    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.config import ExVideoConfig
    from exvideo_ms.convert.diffusers import unet_blocks
    from exvideo_ms.models.exvideo import is_extension_parameter
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.train.trainable import trainable_names
    cfg = dataclasses.replace(tiny_cfg, exvideo=ExVideoConfig(num_positions=NUM_POSITIONS))
    model = build_model(cfg, ["unet"])
    load_checkpoint(model, converted[0], ignore=lambda n: not n.startswith("unet."), may_miss=is_extension_parameter)
    theirs_model = copy.deepcopy(aligned_unet)
    patched = add_exvideo(theirs_model, NUM_POSITIONS)
    prefixes = {ours: their for ours, their, kind in unet_blocks(cfg.unet) if kind == "attn"}
    assert sorted(p.rstrip(".") for p in prefixes.values()) == sorted(patched) and len(patched) == 16
    theirs = dict(theirs_model.named_parameters())
    rng = np.random.default_rng(0)
    copied = 0
    for name, p in model.unet.parameters_and_names():
        if not is_extension_parameter(name):
            continue
        prefix = next(o for o in prefixes if name.startswith(o))
        # away from the identity conv and the sinusoid table, so that a misplaced or skipped layer shows
        value = (p.asnumpy() + 0.05 * rng.standard_normal(p.shape)).astype(np.float32)
        p.set_data(ms.Tensor(value))
        with torch.no_grad():
            theirs[prefixes[prefix] + LEAVES[name[len(prefix):]]].copy_(torch.from_numpy(value))
        copied += 1
    assert copied == 3 * len(patched)
    for frames, seed in ((5, 0), (NUM_POSITIONS, 1)):
        x, t, ctx, ids = unet_inputs(frames, seed, SIDE, SIDE)
        ref = torch_unet(theirs_model, x, t, ctx, ids)
        assert rel_err(ms_unet(model.unet, x, t, ctx, ids), ref) <= TOL, frames
        assert rel_err(torch_unet(aligned_unet, x, t, ctx, ids), ref) > 1e-2  # ... and the additions matter
    for mode in ("exvideo", "temporal_only", "full"):
        names = set(trainable_names(model.unet, mode, True))
        ours = sorted(int(p.size) for n, p in model.unet.parameters_and_names() if n in names)
        assert sorted(p.numel() for p in trainable_set(theirs_model, mode)) == ours, mode
