"""LoRA files (exvideo_ms/lora.py) against PEFT applying the same LoRA to diffusers' UNet: PEFT is the
reference for the naming, the alpha/rank rule and the update B·A."""
import copy
import json

import numpy as np
import pytest
import torch
from tests.helpers import ms_unet, rel_err, unet_inputs
from tests.test_unet import TOL, torch_unet

from exvideo_ms import lora

RANK, ALPHA = 4, 6.0  # alpha ≠ rank, so a wrong scaling rule shows
TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # SVD_Xtend's LoRA targets: every attention, spatial and temporal


@pytest.fixture(scope="module")
def peft_lora(aligned_unet, tmp_path_factory):
    """(diffusers UNet with a random non-zero PEFT LoRA, the LoRA's file as diffusers' save_lora_adapter writes
    it, the PEFT state dict)."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model
    from safetensors.torch import save_file
    torch.manual_seed(5)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False)
    unet = inject_adapter_in_model(config, copy.deepcopy(aligned_unet))
    state = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    for k in state:
        if ".lora_B." in k:  # init_lora_weights=False draws B of the same size as A: large enough to matter
            assert float(state[k].abs().max()) > 0
    path = tmp_path_factory.mktemp("lora") / "pytorch_lora_weights.safetensors"
    save_file(state, str(path), metadata={"format": "pt", lora.METADATA_KEY: json.dumps(config.to_dict(), default=list)})
    return unet, path, state


@pytest.fixture(scope="module")
def _unet(tiny_cfg, converted):
    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.models.svd import build_model
    model = build_model(tiny_cfg, components=["unet"])
    load_checkpoint(model, converted[0], strict=False)
    return model.unet, weights(model.unet)


@pytest.fixture()
def fresh_unet(_unet):
    """The converted tiny UNet, its weights put back after each test."""
    from mindspore import Tensor
    unet, base = _unet
    yield unet
    for p in unet.get_parameters():
        p.set_data(Tensor(base[p.name]))


def weights(unet) -> dict:
    return {p.name: p.asnumpy().copy() for p in unet.get_parameters()}


def test_lora_equals_peft_on_diffusers_and_unmerges(tiny_cfg, fresh_unet, aligned_unet, peft_lora):
    peft_unet, path, state = peft_lora
    f = lora.read(path)
    assert f.naming == "peft" and len(f.updates) == len(state) // 2 == 256  # 16 transformers x (spatial, temporal) x 2 attns x 4
    assert {u.alpha for u in f.updates.values()} == {ALPHA} and {u.rank for u in f.updates.values()} == {RANK}
    updates = lora.resolve(f, tiny_cfg, lora.unet_shapes(fresh_unet))
    before = weights(fresh_unet)
    x, t, ctx, ids = unet_inputs(5, seed=3)
    plain = torch_unet(aligned_unet, x, t, ctx, ids)
    reference = torch_unet(peft_unet, x, t, ctx, ids)
    assert rel_err(reference, plain) > 1e-2  # the LoRA matters
    lora.merge(fresh_unet, updates)
    assert rel_err(ms_unet(fresh_unet, x, t, ctx, ids), reference) <= TOL
    lora.unmerge(fresh_unet, updates)
    after = weights(fresh_unet)
    changed = [n for n in updates]
    for n in before:
        if n in changed:  # W + Δ − Δ in float32: within a couple of units in the last place of the larger term
            bound = 2 * np.spacing(np.abs(before[n]) + np.abs(updates[n].delta(before[n].shape)))
            assert np.all(np.abs(after[n] - before[n]) <= bound), n
        else:
            assert np.array_equal(after[n], before[n]), n
    assert rel_err(ms_unet(fresh_unet, x, t, ctx, ids), plain) <= TOL


def test_scale_and_kohya_naming_give_the_same_merge(tiny_cfg, fresh_unet, peft_lora, tmp_path):
    """The same LoRA in kohya naming (with alpha tensors) merges into the same weights; scale 0.5 halves the
    update exactly as PEFT's scaling would."""
    from mindspore import Tensor
    from safetensors.numpy import save_file
    _, path, state = peft_lora
    kohya = {}
    for key, value in state.items():
        module, _, kind = key.rpartition(".lora_")
        name = lora.KOHYA_PREFIX + module.replace(".", "_")
        kohya[f"{name}.{'lora_down' if kind.startswith('A') else 'lora_up'}.weight"] = value.numpy()
        kohya[f"{name}.alpha"] = np.array(ALPHA, np.float32)
    save_file(kohya, str(tmp_path / "kohya.safetensors"))
    base = weights(fresh_unet)
    results = []
    for file in (path, tmp_path / "kohya.safetensors"):
        f = lora.read(file)
        updates = lora.resolve(f, tiny_cfg, lora.unet_shapes(fresh_unet))
        lora.merge(fresh_unet, updates, scale=0.5)
        results.append(weights(fresh_unet))
        for p in fresh_unet.get_parameters():  # back to the base weights exactly
            p.set_data(Tensor(base[p.name]))
    assert f.naming == "kohya"
    for n in base:
        np.testing.assert_array_equal(results[0][n], results[1][n])
    name = "unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    module = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"
    expected = 0.5 * ALPHA / RANK * (state[module + ".lora_B.weight"].numpy() @ state[module + ".lora_A.weight"].numpy())
    np.testing.assert_allclose(results[0][name] - base[name], expected, rtol=1e-5, atol=1e-7)


def test_bad_lora_files_are_errors_naming_the_problem(tiny_cfg, fresh_unet, peft_lora, tmp_path):
    from safetensors.numpy import save_file
    _, _, state = peft_lora
    a = state["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight"].numpy()
    b = state["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight"].numpy()
    cases = {
        "unknown": ({"unet.down_blocks.9.attentions.0.attn1.to_q.lora_A.weight": a,
                     "unet.down_blocks.9.attentions.0.attn1.to_q.lora_B.weight": b},
                    "1 LoRA module.s. the model does not have .*down_blocks.9.attentions.0.attn1.to_q"),
        "half": ({"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": a},
                 "has lora_A only"),
        "shape": ({"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": a[:, :-1],
                   "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": b},
                  "do not fit the weight unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"),
        "foreign": ({"text_model.encoder.layers.0.mlp.fc1.weight": a}, "neither <module>.lora_A.weight"),
    }
    for name, (tensors, message) in cases.items():
        save_file(tensors, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(lora.LoRAError, match=message):
            lora.resolve(lora.read(tmp_path / f"{name}.safetensors"), tiny_cfg, lora.unet_shapes(fresh_unet))
    save_file({"x.lora_A.weight": a, "x.lora_B.weight": b}, str(tmp_path / "dora.safetensors"),
              metadata={lora.METADATA_KEY: json.dumps({"r": RANK, "lora_alpha": ALPHA, "use_dora": True})})
    with pytest.raises(lora.LoRAError, match=r"\['use_dora'\] are not supported"):
        lora.read(tmp_path / "dora.safetensors")
    with pytest.raises(lora.LoRAError, match="no such LoRA file"):
        lora.read(tmp_path / "missing.safetensors")


def test_pipeline_merges_loras_in_order_before_its_dtype_cast(tiny_cfg, converted, fresh_unet, peft_lora):
    """SVDPipeline.from_config(loras=[(file, scale), ...]) (what --SVD.lora / --SVD.lora_scale call): each LoRA's
    update added to the checkpoint's float32 weights, then the pipeline's cast."""
    from exvideo_ms.pipeline import SVDPipeline
    _, path, _ = peft_lora
    f = lora.read(path)
    pipe = SVDPipeline.from_config(tiny_cfg, converted[0], dtype="fp16", loras=[(f, 0.5), (f, 0.25)])
    base = weights(fresh_unet)
    updates = lora.resolve(f, tiny_cfg, lora.unet_shapes(fresh_unet))
    got = weights(pipe.unet)
    for name, update in updates.items():
        expected = (base[name] + update.delta(base[name].shape, 0.5)) + update.delta(base[name].shape, 0.25)
        assert got[name].dtype == np.float16
        np.testing.assert_array_equal(got[name], expected.astype(np.float16))
    untouched = "unet.input_blocks.1.0.in_layers.2.weight"
    assert untouched not in updates
    np.testing.assert_array_equal(got[untouched], base[untouched].astype(np.float16))


def test_extract_a_lora_from_two_checkpoints_and_merge_it_back(tiny_cfg, converted, aligned_unet, tmp_path, caplog):
    """svd_tools/lora.py extract: a tuned checkpoint whose attention weights moved by rank-2 updates (and one
    bias) gives a rank-2 LoRA that PEFT loads onto diffusers' UNet with the same update; merge puts it into the
    base checkpoint, which then equals the tuned one on those weights."""
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors import safe_open
    from svd_tools import lora as tool

    from exvideo_ms.checkpoint import iter_checkpoint, save_checkpoint
    base = dict(iter_checkpoint(converted[0]))
    g = np.random.default_rng(7)
    moved = ["unet.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight",
             "unet.middle_block.1.time_stack.0.attn2.to_v.weight",
             "unet.output_blocks.3.1.transformer_blocks.0.attn1.to_out.0.weight"]
    tuned = {}
    for name in moved:
        w = base[name]
        tuned[name] = w + 0.05 * (g.standard_normal((w.shape[0], 2)) @ g.standard_normal((2, w.shape[1]))).astype(np.float32)
    bias = "unet.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.bias"
    tuned[bias] = base[bias] + 1.0
    save_checkpoint(tuned.items(), tmp_path / "tuned.ckpt")
    out = tmp_path / "lora.safetensors"
    args = ["extract", "--config", str(converted[1]), "--base", str(converted[0]), "--tuned", str(tmp_path / "tuned.ckpt"),
            "--rank", "2", "--output", str(out)]
    assert tool.main(args) == 0
    assert f"1 changed tensors are not in the LoRA (not a matching layer's weight): {bias}" in caplog.text
    assert tool.main(args) == 2 and out.is_file()  # never overwritten

    f = lora.read(out)
    assert f.naming == "peft" and sorted(f.updates) == ["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q",
                                                        "mid_block.attentions.0.temporal_transformer_blocks.0.attn2.to_v",
                                                        "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0"]
    with safe_open(str(out), "pt") as fh:
        state = {k: fh.get_tensor(k) for k in fh.keys()}
        meta = json.loads(fh.metadata()[lora.METADATA_KEY])
    config = LoraConfig(**{k: meta[k] for k in ("r", "lora_alpha", "target_modules", "rank_pattern", "alpha_pattern")})
    peft_unet = inject_adapter_in_model(config, copy.deepcopy(aligned_unet))
    assert set_peft_model_state_dict(peft_unet, state).unexpected_keys == []
    for module, ours in lora.module_names(tiny_cfg, list(base)).items():
        if module in f.updates:
            layer = peft_unet.get_submodule(module)
            np.testing.assert_allclose(layer.get_delta_weight("default").detach().numpy(), tuned[ours] - base[ours],
                                       rtol=0, atol=1e-5 * float(np.abs(tuned[ours]).max()))

    merged = tmp_path / "merged.ckpt"
    assert tool.main(["merge", "--config", str(converted[1]), "--checkpoint", str(converted[0]), "--lora", str(out),
                      "--output", str(merged)]) == 0
    got = dict(iter_checkpoint(merged))
    assert set(got) == set(base)
    for name in base:
        if name in moved:
            np.testing.assert_allclose(got[name], tuned[name], rtol=0, atol=1e-5 * float(np.abs(tuned[name]).max()))
        else:
            np.testing.assert_array_equal(got[name], base[name])


def test_lora_training_loss_and_gradients_match_peft(tiny_cfg, converted, peft_lora):
    """--train.mode lora's network: our UNet with LoRA branches (lora.add_lora) carrying PEFT's A and B gives the
    loss and LoRA gradients of PEFT's LoRA on diffusers' UNet (the EDM loss of tests/test_train.py)."""
    import mindspore as ms
    from mindspore import Tensor
    from tests.test_train import LOSS_INPUTS, _torch_loss, loss_batch

    from exvideo_ms.checkpoint import load_checkpoint
    from exvideo_ms.models.svd import build_model
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.trainable import trainable_names
    peft_unet, _, state = peft_lora
    model = build_model(tiny_cfg, components=["unet"])
    load_checkpoint(model, converted[0], strict=False)
    unet = model.unet
    x, t, ctx, ids = unet_inputs(3, seed=4)
    before = ms_unet(unet, x, t, ctx, ids)
    names = lora.add_lora(unet, tiny_cfg, RANK, ALPHA, lora.kinds_pattern(["spatial_attention", "temporal_attention"]))
    assert sorted(names.values()) == sorted(state)  # PEFT's names for the same 256 branches
    np.testing.assert_array_equal(ms_unet(unet, x, t, ctx, ids), before)  # lora_B starts at zero
    trainable = trainable_names(unet, "lora", has_extension=False)
    params = dict(unet.parameters_and_names())
    assert len(trainable) == 512 and all(f"unet.{n}" in names for n in trainable)
    for n in trainable:
        params[n].set_data(Tensor(state[names[f"unet.{n}"]].numpy()))
        params[n].requires_grad = True
    batch, order = loss_batch(), LOSS_INPUTS
    loss = DenoisingLoss(unet, "edm", 1.01, tiny_cfg.conditioning.addition_time_embed_dim)
    grad_fn = ms.value_and_grad(loss, None, [params[n] for n in trainable], has_aux=True)
    (weighted, _), grads = grad_fn(*(Tensor(batch[k]) for k in order))
    tparams = dict(peft_unet.named_parameters())
    for n, p in tparams.items():
        p.requires_grad_(".lora_" in n)
        p.grad = None
    tw, _ = _torch_loss(peft_unet, *(torch.from_numpy(batch[k]) for k in order), "edm", 1.01)
    tw.backward()
    assert abs(float(weighted.asnumpy()) - tw.item()) <= 1e-4 * abs(tw.item())
    theirs = [tparams[names[f"unet.{n}"].replace(".weight", ".default.weight")].grad.numpy() for n in trainable]
    ours = [gr.asnumpy() for gr in grads]
    diff = np.sqrt(sum(float(((a - c) ** 2).sum()) for a, c in zip(ours, theirs)))
    norm = np.sqrt(sum(float((c ** 2).sum()) for c in theirs))
    assert norm > 0 and diff / norm <= 1e-4
