"""The converter: three source layouts to the same weights, full-size coverage from the published key
lists (no weights needed), and bad inputs that must stop with a clear error and leave no output."""
import subprocess
import sys

import mindspore as ms
import numpy as np
import pytest
import torch
from tests.helpers import KEYS, REPO, read_key_list, shapes_only_source
from safetensors.torch import save_file

from exvideo_ms.checkpoint import CheckpointError, checkpoint_index, iter_checkpoint, load_checkpoint
from exvideo_ms.config import load_config
from exvideo_ms.convert import diffusers as diffusers_layout
from exvideo_ms.convert import sgm
from exvideo_ms.convert.converter import ConversionError, convert, make_plan
from exvideo_ms.models.svd import build_model

CONVERT = [sys.executable, str(REPO / "svd_tools" / "convert.py"), "--quiet"]


@pytest.fixture(scope="module")
def sgm_file(torch_models, tmp_path_factory):
    from tests import references
    path = tmp_path_factory.mktemp("sgm") / "tiny_svd.safetensors"
    save_file(references.sgm_state_dict(*torch_models), str(path))
    return path


def assert_same_checkpoints(a, b):
    ia, ib = dict(iter_checkpoint(a)), dict(iter_checkpoint(b))
    assert set(ia) == set(ib)
    for k in ia:
        assert ia[k].dtype == ib[k].dtype and np.array_equal(ia[k], ib[k]), k


# ---------------------------------------------------------------------------------------------- layouts
def test_stability_file_gives_the_same_weights_as_the_diffusers_folder(sgm_file, converted, tmp_path):
    out = tmp_path / "from_sgm.ckpt"
    plan = convert([sgm_file], out, config=converted[1], progress=False)
    assert_same_checkpoints(out, converted[0])
    unused = plan.unused[str(sgm_file)]
    assert "conditioner.embedders.0.open_clip.model.logit_scale" in unused
    assert any(k.startswith("first_stage_model.encoder.") for k in unused)


def test_pickle_needs_allow_pickle_and_then_matches(sgm_file, converted, tmp_path):
    from safetensors.torch import load_file
    pt = tmp_path / "tiny_svd.ckpt"
    torch.save({"state_dict": load_file(str(sgm_file))}, pt)
    out = tmp_path / "from_pickle.ckpt"
    r = subprocess.run(CONVERT + ["--source", str(pt), "--output", str(out), "--config", str(converted[1])],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "--allow-pickle" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
    r = subprocess.run(CONVERT + ["--source", str(pt), "--output", str(out), "--config", str(converted[1]),
                                  "--allow-pickle"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert_same_checkpoints(out, converted[0])


def test_diffusers_conversion_writes_a_runnable_config(converted, tiny_cfg):
    assert converted[1].is_file()
    assert tiny_cfg.unet.num_heads == (2, 2, 4, 4) and tiny_cfg.unet.attention_resolutions == (1, 2, 4)
    assert tiny_cfg.sampling.sigma_max == 700.0 and tiny_cfg.vae.scale_factor == pytest.approx(0.18215)
    model = build_model(tiny_cfg)
    load_checkpoint(model, converted[0])  # strict: every name and shape


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_output_dtypes(diffusers_folder, converted, tmp_path, dtype):
    out = tmp_path / f"tiny_{dtype}.ckpt"
    convert([diffusers_folder], out, dtype=dtype, progress=False)
    ref = dict(iter_checkpoint(converted[0]))
    for name, arr in iter_checkpoint(out):
        if dtype == "fp16":
            expected = ref[name].astype(np.float16)
        else:
            expected = torch.from_numpy(ref[name].copy()).to(torch.bfloat16).float().numpy()
        assert np.array_equal(arr, expected), name
    loaded = ms.load_checkpoint(str(out))  # MindSpore's own reader agrees on names and dtype
    assert set(loaded) == set(ref)
    assert loaded["unet.out.2.weight"].dtype == (ms.float16 if dtype == "fp16" else ms.bfloat16)


def test_mindspore_reads_our_ckpt_and_safetensors(diffusers_folder, converted, tmp_path):
    ref = dict(iter_checkpoint(converted[0]))
    own = ms.load_checkpoint(str(converted[0]))
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: v.shape for k, v in ref.items()}
    assert np.array_equal(own["unet.input_blocks.1.1.time_stack.0.attn1.to_q.weight"].asnumpy(),
                          ref["unet.input_blocks.1.1.time_stack.0.attn1.to_q.weight"])
    out = tmp_path / "tiny.safetensors"
    convert([diffusers_folder], out, progress=False)
    st = ms.load_checkpoint(str(out), format="safetensors")
    assert all(np.array_equal(st[k].asnumpy(), ref[k]) for k in ref)


# ------------------------------------------------------------------------------------ full size, no weights
@pytest.mark.parametrize("config", ["svd_xt.yaml", "svd.yaml"])
def test_full_size_stability_keys_cover_the_network_exactly(config):
    shapes = read_key_list(KEYS / "sgm_svd_xt_keys.txt")
    assert len(shapes) == 2446
    plan = make_plan([shapes_only_source(shapes)], REPO / "configs" / config)
    assert len(plan.entries) == 2194
    assert len(plan.unused["keys.txt"]) == 252
    assert sum(int(np.prod(e.shape)) for e in plan.entries) == 2_254_442_729


def test_full_size_diffusers_table_matches_the_published_map():
    cfg = load_config(REPO / "configs" / "svd_xt.yaml")
    names = [n for n, _ in build_model(cfg, allocate=False).parameters_and_names()]
    table = diffusers_layout.table(cfg, names)
    expected = {}
    for line in (KEYS / "sgm_to_diffusers_map.txt").read_text().splitlines():
        parts = line.split("\t")
        if line.startswith("#") or len(parts) < 3 or sgm.target(parts[0]) is None:
            continue
        expected.setdefault(sgm.target(parts[0]), []).append(parts[1].replace(":", ".", 1))
    assert set(table) == set(expected)
    for name, keys in expected.items():
        assert table[name] is not None and sorted(table[name][0]) == sorted(keys), name
    # and every key of the diffusers folder is used exactly once
    listed = set()
    for comp in ("unet", "vae", "image_encoder"):
        listed |= {f"{comp}.{k}" for k in read_key_list(KEYS / "diffusers_svd_keys.txt", comp)}
    used = [k for v in table.values() for k in v[0]]
    assert len(used) == len(set(used)) and set(used) == listed


# --------------------------------------------------------------------------------------------- bad inputs
def run_convert(args):
    return subprocess.run(CONVERT + args, capture_output=True, text=True)


def test_truncated_safetensors_is_an_error_without_output(sgm_file, converted, tmp_path):
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(sgm_file.read_bytes()[:-1000])
    out = tmp_path / "out.ckpt"
    r = run_convert(["--source", str(bad), "--output", str(out), "--config", str(converted[1])])
    assert r.returncode == 2 and "truncated.safetensors" in r.stderr and "not a readable safetensors" in r.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_other_architecture_is_an_error_naming_shapes(sgm_file, tmp_path):
    out = tmp_path / "out.ckpt"
    r = run_convert(["--source", str(sgm_file), "--output", str(out), "--config", str(REPO / "configs" / "svd_xt.yaml")])
    assert r.returncode == 2
    assert "shape mismatch" in r.stderr and "unet.time_embed.0.weight: network (1280, 320)" in r.stderr
    assert not list(tmp_path.iterdir())


def test_misspelled_config_key_is_an_error(sgm_file, converted, tmp_path):
    text = converted[1].read_text().replace("num_res_blocks:", "num_res_block:", 1)
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text(text)
    r = run_convert(["--source", str(sgm_file), "--output", str(tmp_path / "o.ckpt"), "--config", str(bad_cfg)])
    assert r.returncode == 2 and "unet.num_res_block (did you mean unet.num_res_blocks?)" in r.stderr
    assert not (tmp_path / "o.ckpt").exists()


def test_unknown_and_missing_keys_are_named(torch_models, converted, tmp_path):
    from tests import references
    sd = references.sgm_state_dict(*torch_models)
    sd["model.diffusion_model.input_blocks.1.1.extra.weight"] = torch.zeros(3)
    del sd["model.diffusion_model.out.2.bias"]
    path = tmp_path / "odd.safetensors"
    save_file(sd, str(path))
    with pytest.raises(ConversionError) as e:
        convert([path], tmp_path / "o.ckpt", config=converted[1], progress=False)
    msg = str(e.value)
    assert "unet.input_blocks.1.1.extra.weight" in msg and "unet.out.2.bias (4,)" in msg
    assert not (tmp_path / "o.ckpt").exists()


def test_patch_without_base_is_an_error(tmp_path):
    path = tmp_path / "patch.safetensors"
    save_file({"blocks.7.norm_in.weight": torch.ones(320)}, str(path))
    r = run_convert(["--source", str(path), "--output", str(tmp_path / "o.ckpt")])
    assert r.returncode == 2 and "ExVideo patch" in r.stderr and "base" in r.stderr


def test_help_documents_each_source_layout():
    r = run_convert(["--help"])
    assert r.returncode == 0
    for words in ("Stability single file", "diffusers folder", "ExVideo patch", "--allow-pickle", "--dtype"):
        assert words in r.stdout


# ------------------------------------------------------------------------------------------- strict load
def test_strict_load_names_missing_unexpected_and_mismatched(converted, tiny_cfg, tmp_path):
    from exvideo_ms.checkpoint import save_checkpoint
    arrays = dict(iter_checkpoint(converted[0]))
    arrays.pop("unet.out.2.bias")
    arrays["unet.surplus"] = np.zeros(2, np.float32)
    arrays["unet.out.2.weight"] = np.zeros((4, 32, 1, 1), np.float32)
    bad = tmp_path / "bad.ckpt"
    save_checkpoint(arrays.items(), bad)
    model = build_model(tiny_cfg)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(model, bad)
    msg = str(e.value)
    assert "missing (1): unet.out.2.bias (4,)" in msg
    assert "unexpected (1): unet.surplus (2,)" in msg
    assert "unet.out.2.weight: file (4, 32, 1, 1) vs network (4, 32, 3, 3)" in msg


def test_truncated_ckpt_is_detected(converted, tmp_path):
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(converted[0].read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated"):
        checkpoint_index(bad)


def test_existing_output_and_sources_are_never_overwritten_unless_asked(sgm_file, converted, tmp_path):
    """An existing output or its YAML is refused without --overwrite, and a source is never written onto."""
    import shutil
    src = tmp_path / "model.safetensors"
    shutil.copy(sgm_file, src)
    source_bytes = src.read_bytes()
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"an earlier conversion")
    r = run_convert(["--source", str(src), "--output", str(out), "--config", str(converted[1])])
    assert r.returncode == 2 and f"{out} already exist" in r.stderr and "--overwrite" in r.stderr
    assert out.read_bytes() == b"an earlier conversion"
    out.unlink()
    out.with_suffix(".yaml").write_text("# someone's notes\n")
    r = run_convert(["--source", str(src), "--output", str(out), "--config", str(converted[1])])
    assert r.returncode == 2 and "out.yaml already exist" in r.stderr and not out.exists()
    # the output named as a source: refused even with --overwrite, the source untouched
    r = run_convert(["--source", str(src), "--output", str(src), "--overwrite", "--config", str(converted[1])])
    assert r.returncode == 2 and "would overwrite the source" in r.stderr and src.read_bytes() == source_bytes
    r = run_convert(["--source", str(src), "--output", str(out), "--config", str(converted[1]), "--overwrite"])
    assert r.returncode == 0, r.stderr[-2000:]
    assert_same_checkpoints(out, converted[0])
    assert "# written by svd_tools/convert.py" in out.with_suffix(".yaml").read_text()
