"""Strict YAML configs: the released models' values, and errors that name the offending key."""
import pytest
from tests.helpers import REPO

from exvideo_ms.config import ConfigError, load_config


@pytest.mark.parametrize("name,frames,steps,cfg_min,cfg_max", [("svd", 14, 25, 1.0, 2.5), ("svd_xt", 25, 30, 1.5, 3.0)])
def test_released_configs(name, frames, steps, cfg_min, cfg_max):
    cfg = load_config(REPO / "configs" / f"{name}.yaml")
    s = cfg.sampling
    assert (s.num_frames, s.num_inference_steps, s.min_cfg, s.max_cfg) == (frames, steps, cfg_min, cfg_max)
    assert (s.sigma_min, s.sigma_max, s.rho) == (0.002, 700.0, 7.0)
    u = cfg.unet
    assert (u.model_channels, u.channel_mult, u.num_head_channels, u.context_dim) == (320, (1, 2, 4, 4), 64, 1024)
    assert [u.heads_at(level) for level in range(4)] == [5, 10, 20, 20]
    assert cfg.vae.scale_factor == 0.18215


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def base_text():
    return (REPO / "tests" / "configs" / "tiny.yaml").read_text()


def test_tiny_config_loads():
    assert load_config(REPO / "tests" / "configs" / "tiny.yaml").unet.num_heads == (2, 4)


def test_misspelled_key_names_it_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unet\.num_res_block \(did you mean unet\.num_res_blocks\?\)"):
        load_config(write(tmp_path, base_text().replace("num_res_blocks:", "num_res_block:", 1)))


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unet\.model_channels: expected an integer, got '32'"):
        load_config(write(tmp_path, base_text().replace("model_channels: 32", "model_channels: '32'")))


def test_missing_key_names_it(tmp_path):
    with pytest.raises(ConfigError, match=r"missing config key vae\.z_channels"):
        load_config(write(tmp_path, base_text().replace("  z_channels: 4\n", "")))


def test_inconsistent_vector_width(tmp_path):
    with pytest.raises(ConfigError, match="adm_in_channels is 24 but the three added-time embeddings give 3 x 16"):
        load_config(write(tmp_path, base_text().replace("addition_time_embed_dim: 8", "addition_time_embed_dim: 16")))


def test_heads_must_divide_channels(tmp_path):
    with pytest.raises(ConfigError, match="not divisible into 3 heads"):
        load_config(write(tmp_path, base_text().replace("num_heads: [2, 4]", "num_heads: [3, 4]")))


def test_missing_file():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config("no/such.yaml")


def test_configs_written_before_the_steps_rename_still_load(tmp_path, caplog):
    import logging

    import yaml
    data = yaml.safe_load((REPO / "tests" / "configs" / "tiny.yaml").read_text())
    data["sampling"]["num_steps"] = data["sampling"].pop("num_inference_steps")
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(data))
    with caplog.at_level(logging.WARNING, logger="exvideo_ms.config"):
        assert load_config(old).sampling.num_inference_steps == 4
    assert "sampling.num_steps is now sampling.num_inference_steps" in caplog.text
