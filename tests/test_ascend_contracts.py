"""The Ascend path, proven on CPU: every NPU-specific call within its documented contract.

Networks are built with an Atlas A2 (910B) or 910A's choices through the one switch in backend.py; the NPU-only
flash kernel is then the contract double of exvideo_ms/contracts.py, which asserts the documented
preconditions, records each call and computes the same attention in float32. The tests run the UNet, the VAE,
the image encoder and a train step through the doubles where the limits bind, compare them with the plain
path, check that the calls recorded equal the calls the networks' own enumeration (``attention_calls`` +
``nn.attention.plan``) predicts, and then check that enumeration at the real sizes (SVD-XT 576×1024×25 with
batched CFG, ExVideo 512²×128, training 512²×128), which are far too large to run here.
"""
import dataclasses
import logging

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from exvideo_ms import backend, contracts
from exvideo_ms.checkpoint import load_checkpoint
from exvideo_ms.config import load_config
from exvideo_ms.models.conditioner import added_time_vector, repeat_frames
from exvideo_ms.models.svd import build_model
from exvideo_ms.nn.attention import CrossAttention, plan
from exvideo_ms.nn.layers import Conv3d
from exvideo_ms.nn.norm import GroupNorm
from tests.helpers import REPO, rel_err

A2 = backend.choices_for("Ascend", "ascend910b")
A1 = backend.choices_for("Ascend", "ascend910")
MICRO = REPO / "tests" / "configs" / "micro_exvideo.yaml"
# emulated vs CPU path, same weights: float16 rounding of the flash inputs and of every Conv3d (Ascend runs
# Conv3d in float16) is the whole difference; measured 3e-4 on the UNet
FP16_TOL = 3e-3


def flash_calls(calls):
    return [c for c in calls if c.op == "flash_attention_score"]


def planned(calls, dtype=ms.float32):
    return [k for c in calls for k in plan(c, dtype)]


# ------------------------------------------------------------------------------------- the documentation
def test_documented_limits_are_the_installed_wheels():
    """The numbers in contracts.py are read back from MindSpore's own docstrings."""
    doc = " ".join(ops.flash_attention_score.__doc__.split())
    assert f"B: Batch size. Value range 1 to {contracts.FLASH_MAX_BATCH // 1024}k." in doc
    assert f"S1: Sequence length of `query`. Value range 1 to {contracts.FLASH_MAX_SEQ // 1024}k." in doc
    assert f"N1: Num heads of `query`. Value range 1 to {contracts.FLASH_MAX_HEADS}." in doc
    assert (f"D: Head size. The value ranges is a multiple of {contracts.FLASH_HEAD_SIZE_MULTIPLE}, with the max "
            f"value of {contracts.FLASH_MAX_HEAD_SIZE}.") in doc
    assert "The supported dtype is float16 and bfloat16." in doc and contracts.FLASH_DTYPES == ("fp16", "bf16")
    assert "Only support on Atlas A2 training series." in doc
    conv = " ".join(nn.Conv3d.__doc__.split())
    assert "support float16 and float32 in CPU and GPU, and only float16 in Ascend" in conv
    assert contracts.ASCEND_CONV3D_DTYPES == ("fp16",)
    bn = " ".join(ops.batch_norm.__doc__.split())
    assert "If `training` is `True`, `weight`, `bias`, `running_mean` and `running_var` are Parameters." in bn
    assert "``Ascend`` ``GPU`` ``CPU``" in " ".join(ops.group_norm.__doc__.split())


# ------------------------------------------------------------------------------------ choices per chip
def test_choices_per_chip():
    assert A2.flash_attention == frozenset(backend.ATTENTION_KINDS) - {"text"}  # causal: plain everywhere
    with pytest.raises(ValueError, match=r"\['text'\] attention is plain on every device"):
        dataclasses.replace(A2, flash_attention=frozenset({"text"}))
    assert (A2.low_precision, A2.inference_dtype, A2.frozen_dtype, A2.conv3d_dtype) == ("bf16",) * 3 + ("fp16",)
    assert A2.bf16 and A2.group_norm == "group_norm" and A2.reduce_scatter
    assert backend.choices_for("Ascend", "ascend910_93").flash_attention == A2.flash_attention  # A3: as A2
    # 910A: neither flash attention nor bfloat16
    assert A1.flash_attention == frozenset() and not A1.bf16
    assert (A1.low_precision, A1.inference_dtype, A1.frozen_dtype, A1.conv3d_dtype) == ("fp16",) * 4
    gpu, cpu = backend.choices_for("GPU"), backend.choices_for("CPU")
    assert gpu.flash_attention == cpu.flash_attention == frozenset()
    assert (gpu.inference_dtype, gpu.frozen_dtype, gpu.conv3d_dtype, gpu.group_norm) == ("fp32", "fp16", None, "group_norm")
    assert (cpu.inference_dtype, cpu.frozen_dtype, cpu.conv3d_dtype, cpu.group_norm, cpu.geglu) == \
        ("fp32", "fp32", None, "batch_norm", "fused")
    assert not cpu.bf16 and not cpu.reduce_scatter and gpu.bf16 and gpu.reduce_scatter
    assert backend.choices() == cpu  # this machine


def test_unknown_soc_takes_the_910a_choices_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="exvideo_ms.backend"):
        c = backend.choices_for("Ascend", "ascend310p")
    assert c.flash_attention == frozenset() and c.low_precision == "fp16"
    assert "unknown Ascend SoC 'ascend310p'" in caplog.text


@pytest.mark.parametrize("chip", [A2, A1, backend.choices_for("GPU")])
def test_the_switch_builds_networks_with_a_chips_choices(tiny_cfg, chip):
    """``backend.use`` forces a chip's choices on this CPU; built cells carry them, emulated."""
    from image_to_video import SVDOptions, resolve_dtype
    with backend.use(chip) as active:
        assert backend.choices() == active and active.emulated
        model = build_model(tiny_cfg, allocate=False)
        assert resolve_dtype(SVDOptions(), backend.choices()) == chip.inference_dtype
        assert resolve_dtype(SVDOptions(amp_level="O2"), backend.choices()) == chip.low_precision
    assert backend.choices() == backend.choices_for("CPU") and not backend.choices().emulated
    cells = [c for _, c in model.cells_and_names()]
    kernels = [c.kernel for c in cells if hasattr(c, "kernel")]
    assert kernels and all(k.impl == ("flash" if chip.flash_attention else "plain") and k.emulated for k in kernels)
    assert {k.kind for k in kernels} == set(backend.ATTENTION_KINDS) - {"text"}  # the SVD model has no text tower
    convs = [c for c in cells if isinstance(c, Conv3d)]
    assert convs and all(c.compute_dtype == chip.dtype("conv3d_dtype") for c in convs)
    assert all(c.impl == chip.group_norm for c in cells if isinstance(c, GroupNorm))


def test_head_sizes_the_kernel_does_not_take_fall_back_to_plain(caplog):
    with caplog.at_level(logging.INFO, logger="exvideo_ms.nn.attention"):
        odd = CrossAttention(48, 2, 24, kind="spatial", choices=backend.resolve(A2))
        big = CrossAttention(1024, 1, 1024, kind="vae", choices=backend.resolve(A2))
        ok = CrossAttention(64, 2, 32, kind="spatial", choices=backend.resolve(A2))
    assert (odd.kernel.impl, big.kernel.impl, ok.kernel.impl) == ("plain", "plain", "flash")
    assert "heads of size 24: plain kernel" in caplog.text


# ------------------------------------------------------------------------------------------ the double
def test_the_double_enforces_the_contract_and_computes_attention():
    g = np.random.default_rng(0)
    b, s1, s2, n, d = 3, 5, 7, 2, 16
    q, k, v = (g.standard_normal((b, s, n * d)).astype(np.float16) for s in (s1, s2, s2))
    with contracts.record() as calls:
        out = contracts.flash_attention_score_double(Tensor(q), Tensor(k), Tensor(v), n, 0.25, "BSH", "spatial")
    assert out.dtype == ms.float16
    assert calls == [contracts.KernelCall("flash_attention_score", "spatial", b, s1, s2, n, d, "fp16")]
    qh, kh, vh = (x.astype(np.float64).reshape(b, -1, n, d).transpose(0, 2, 1, 3) for x in (q, k, v))
    scores = qh @ kh.transpose(0, 1, 3, 2) * 0.25
    p = np.exp(scores - scores.max(-1, keepdims=True))
    ref = ((p / p.sum(-1, keepdims=True)) @ vh).transpose(0, 2, 1, 3).reshape(b, s1, n * d)
    assert rel_err(out.asnumpy(), ref) <= 1e-3  # float16 rounding of the output
    bad = [((b, s1, n * d), np.float32, "dtype fp32 is not one of"),
           ((b, s1, n * 24), np.float16, "D = 24 is not a multiple of 16"),
           ((contracts.FLASH_MAX_BATCH + 1, 1, n * d), np.float16, "B = 2049 outside 1..2048")]
    for shape, dtype, message in bad:
        x = Tensor(np.zeros(shape, dtype))
        with pytest.raises(contracts.ContractError, match=message):
            contracts.flash_attention_score_double(x, x, x, n, 0.25, "BSH", "temporal")
    assert contracts.flash_violations(1, 1, 1, 257, 16, "bf16") == ["N1 = 257 outside 1..256"]
    assert contracts.flash_violations(1, 600 * 1024, 1, 1, 16, "bf16") == [f"S1 = {600 * 1024} outside 1..524288"]
    x = Tensor(np.zeros((2, 3, 4, 5, 6), np.float32))
    with pytest.raises(contracts.ContractError, match="5-D float16 input"):
        contracts.check_conv3d(x, x)


# ----------------------------------------------------------------------------- networks through the doubles
def _pair(cfg, converted, components, choices=A2):
    """The converted tiny weights in a network with ``choices`` and in one with this CPU's."""
    nets = []
    for c in (choices, backend.choices()):
        model = build_model(cfg, components, choices=c)
        load_checkpoint(model, converted, strict=False)
        nets.append(model)
    return nets


def _unet_inputs(videos, frames, h, w, seed=0):
    g = np.random.default_rng(seed)
    n = videos * frames
    return (Tensor(g.standard_normal((n, 8, h, w)).astype(np.float32)), Tensor(np.full((n,), 0.3, np.float32)),
            repeat_frames(Tensor(g.standard_normal((videos, 1, 32)).astype(np.float32)), frames),
            repeat_frames(added_time_vector(Tensor(np.array([[6, 127, 0.02]] * videos, np.float32)), 8), frames))


def test_unet_at_a_48x48_latent_splits_temporal_attention_at_the_batch_limit(tiny_cfg, converted):
    """A 48×48 latent: 2,304 temporal sequences at level 0, over the kernel's 2,048."""
    emulated, cpu = _pair(tiny_cfg, converted[0], ["unet"])
    videos, frames, h, w = 1, 2, 48, 48
    args = _unet_inputs(videos, frames, h, w)
    with contracts.record() as calls:
        out = emulated.unet(*args, frames).asnumpy()
    ref = cpu.unet(*args, frames).asnumpy()
    assert rel_err(out, ref) <= FP16_TOL
    enumerated = emulated.unet.attention_calls(videos, frames, h, w)
    assert max(c.batch for c in enumerated) == videos * h * w > contracts.FLASH_MAX_BATCH
    assert flash_calls(calls) == planned(enumerated)
    temporal = [c.batch for c in flash_calls(calls) if c.kind == "temporal"]
    assert temporal[:2] == [2048, 256] and max(temporal) <= contracts.FLASH_MAX_BATCH
    convs = [c for c in calls if c.op == "conv3d"]
    assert convs and all(c.dtype == "fp16" for c in convs)  # check_conv3d asserted each one


def test_the_kernel_gets_a_float16_models_dtype_and_float16_for_float32():
    """A float16 model on a bf16 chip gives the kernel float16, not bfloat16; float32 inputs arrive as float16."""
    from exvideo_ms.nn.precision import cast_weights
    attn = CrossAttention(64, 2, 32, kind="temporal", choices=backend.resolve(A2))
    x = Tensor(np.random.default_rng(3).standard_normal((4, 5, 64)).astype(np.float32))
    with contracts.record() as calls:
        full = attn(x)
        cast_weights(attn, ms.float16)
        half = attn(x.astype(ms.float16))
    assert (full.dtype, half.dtype) == (ms.float32, ms.float16)
    assert [c.dtype for c in calls] == ["fp16", "fp16"] and calls[0] == calls[1]
    assert rel_err(half.asnumpy(), full.asnumpy()) <= FP16_TOL


def test_vae_and_image_encoder_through_the_doubles(tiny_cfg, converted):
    """VAE attention goes through the same function and budget: a budget of one frame's temporaries splits a
    3-frame decode into three kernel calls; the image encoder's attention takes the kernel in one call."""
    budget = dataclasses.replace(A2, chunk_bytes=1)  # one batch row per call
    emulated, cpu = _pair(tiny_cfg, converted[0], ["vae", "image_encoder"], budget)
    g = np.random.default_rng(1)
    z = Tensor(g.standard_normal((3, 4, 16, 16)).astype(np.float32))
    img = Tensor(g.uniform(-1, 1, (2, 3, 64, 64)).astype(np.float32))
    size = tiny_cfg.image_encoder.image_size
    pix = Tensor(g.standard_normal((2, 3, size, size)).astype(np.float32))
    with contracts.record() as calls:
        out = [emulated.vae.decode(z, 3).asnumpy(), emulated.vae.encode(img).asnumpy(),
               emulated.image_encoder(pix).asnumpy()]
    ref = [cpu.vae.decode(z, 3).asnumpy(), cpu.vae.encode(img).asnumpy(), cpu.image_encoder(pix).asnumpy()]
    for a, b in zip(out, ref):
        assert rel_err(a, b) <= FP16_TOL
    predicted = planned(emulated.vae.attention_calls(0, 128, 128, 3) + emulated.vae.attention_calls(2, 64, 64, 0)
                        + emulated.image_encoder.attention_calls(2))
    assert flash_calls(calls) == predicted
    assert [c.batch for c in predicted if c.kind == "vae"] == [1, 1, 1, 1, 1]  # 3 decoded frames, 2 encoded images


def test_a_train_step_through_the_doubles_equals_the_plain_path():
    """One ExVideo-mode train step (trainable temporal blocks and the positional Conv3d, float32 masters
    computing in float16 on Ascend) through the doubles, against this CPU's path: the loss and the update.
    AdamW's ε = 1 makes the first update lr·g/(|g| + 1), nearly linear in the gradient, so comparing the
    updates compares the gradients (a small ε would turn float noise on zero gradients into ±lr)."""
    from exvideo_ms.train.loss import DenoisingLoss
    from exvideo_ms.train.optim import AdamW
    from exvideo_ms.train.step import LossScaleOptions, TrainStep
    from exvideo_ms.train.trainable import configure, trainable_names
    cfg = load_config(MICRO)
    ms.set_seed(0)
    nets = [build_model(cfg, ["unet"], choices=c).unet for c in (A2, backend.choices())]
    for (_, a), (_, b) in zip(*(n.parameters_and_names() for n in nets)):
        a.set_data(b.value())
    g = np.random.default_rng(2)
    videos, frames, h, w = 1, 4, 16, 16
    batch = [g.standard_normal((videos, frames, 4, h, w)), g.standard_normal((videos, 4, h, w)),
             g.standard_normal((videos, 1, 32)), np.array([[7, 20, 0.0]]), np.array([2.0]),
             g.standard_normal((videos, frames, 4, h, w))]
    batch = [Tensor(x.astype(np.float32)) for x in batch]
    results = []
    for unet in nets:
        params = configure(unet, trainable_names(unet, "exvideo", True), None)
        before = [p.asnumpy().copy() for p in params]
        step = TrainStep(DenoisingLoss(unet, "exvideo", 1.01, 8), AdamW(params, eps=1.0), LossScaleOptions(enable=False))
        with contracts.record() as calls:
            weighted, _, finite, _ = step(Tensor(1e-3, ms.float32), True, *batch)
        assert bool(finite.asnumpy())
        results.append((float(weighted.asnumpy()), [p.asnumpy() - b for p, b in zip(params, before)], calls))
    (wa, da, calls), (wb, db, _) = results
    assert abs(wa - wb) <= FP16_TOL * abs(wb)
    norm = np.sqrt(sum(float((b ** 2).sum()) for b in db))
    assert norm > 0 and np.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(da, db))) <= 1e-2 * norm
    assert flash_calls(calls) == planned(nets[0].attention_calls(videos, frames, h, w))
    assert any(c.op == "conv3d" for c in calls)


# --------------------------------------------------------------------------------------- the real sizes
# (name, config, videos per UNet call (2 = batched CFG), frames, height, width, images encoded per VAE call,
# frames decoded per VAE call)
REAL_SIZES = [
    ("SVD-XT 576x1024x25, batched CFG, decode chunk 14", "configs/svd_xt.yaml", 2, 25, 576, 1024, 1, 14),
    ("ExVideo 512x512x128, batched CFG, decode window 8", "configs/exvideo_svd_128f.yaml", 2, 128, 512, 512, 1, 8),
    ("ExVideo 512x512x128, sequential CFG", "configs/exvideo_svd_128f.yaml", 1, 128, 512, 512, 1, 8),
    ("ExVideo training 512x512x128, batch 1, frames encoded 8 at a time", "configs/exvideo_svd_128f.yaml", 1, 128,
     512, 512, 8, 0),
]


@pytest.fixture(scope="module")
def full_size():
    """Full-size networks (no weights allocated) for each config and chip."""
    return {(path, c.chip): build_model(load_config(REPO / path), allocate=False, choices=c)
            for path in {r[1] for r in REAL_SIZES} for c in (A2, A1)}


@pytest.mark.parametrize("chip", [A2, A1], ids=["910B", "910A"])
@pytest.mark.parametrize("name,config,videos,frames,height,width,encoded,decoded", REAL_SIZES,
                         ids=[r[0] for r in REAL_SIZES])
def test_every_kernel_call_at_real_sizes_keeps_its_contract(full_size, chip, name, config, videos, frames, height,
                                                            width, encoded, decoded):
    model = full_size[(config, chip.chip)]
    f = 8  # the VAE's downsampling
    unet = model.unet.attention_calls(videos, frames, height // f, width // f)
    others = model.vae.attention_calls(encoded, height, width, decoded) + model.image_encoder.attention_calls(1)
    low = chip.dtype("inference_dtype")
    kernels = planned(unet, low) + planned(others, ms.float32)  # the VAE stays float32
    for k in kernels:
        assert contracts.flash_violations(k.batch, k.seq_q, k.seq_kv, k.heads, k.head_size, k.dtype) == [], k
    calls = unet + others
    if chip.flash_attention:
        # every call is a kernel call; the enumeration covers the sizes where the limit binds
        assert sum(len(plan(c)) for c in calls) == len(kernels) and all(plan(c) for c in calls)
        assert max(c.batch for c in unet) == videos * (height // f) * (width // f) > contracts.FLASH_MAX_BATCH
        assert {k.dtype for k in planned(unet, low)} == {"bf16"}
        assert {k.dtype for k in planned(others)} == {"fp16"}  # float32 inputs are given to the kernel as fp16
    else:
        assert kernels == []  # 910A: plain attention throughout, sliced within the memory budget
    from exvideo_ms.nn.attention import row_bytes, spans
    for c in calls:
        for start, end in spans(c.kernel, c.batch, c.seq_q, c.seq_kv, c.heads, c.head_size):
            rows = end - start
            assert rows == 1 or rows * row_bytes(c.kernel.impl, c.seq_q, c.seq_kv, c.heads, c.head_size) \
                <= chip.chunk_bytes
    assert all(c.compute_dtype == ms.float16 for _, c in model.cells_and_names() if isinstance(c, Conv3d))
    assert all(c.impl == "group_norm" for _, c in model.cells_and_names() if isinstance(c, GroupNorm))


# ------------------------------------------------------------------------------------------- versions
@pytest.mark.parametrize("version,warns", [("2.8.0", False), ("2.9.0", True), ("2.10.0", True), ("2.7.0", False)])
def test_cpu_runs_on_the_slow_conv_versions_log_a_warning(monkeypatch, caplog, version, warns):
    monkeypatch.setattr(ms, "__version__", version)
    with caplog.at_level(logging.WARNING, logger="exvideo_ms.backend"):
        backend.setup_device("CPU", mode=1)
    assert ("100-150x slower" in caplog.text) == warns


def test_declared_mindspore_range_and_ci_pin():
    import tomllib
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "mindspore>=2.7.0,<2.11" in deps
    pins = [line for line in (REPO / "requirements" / "constraints.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert pins == ["mindspore==2.8.0"] and "-c requirements/constraints.txt" in (REPO / "scripts" / "setup.sh").read_text()
