"""Choosing the backbone by config: what the DiT cannot do is refused on the key that asks for it, each backbone
refuses the other's keys, and the Wan 2.1 configs validate at Wan's published sizes."""

import pytest

from pyoco_jax.config import ConfigError, load_config
from pyoco_jax.models.dit import WAN21_1_3B, WAN21_14B, wan_config
from tests.train.helpers import REPO

CONFIGS = REPO / "configs"
TINY, TINY_DIT = str(CONFIGS / "tiny.py"), str(CONFIGS / "tiny_dit.py")
# The overrides each Wan config's docstring gives for its other resolution.
RESOLUTIONS = {
    "480p": ["data.resolution=80", "diffusion.flow.shift=3.0", "diffusion.flow.sample_shift=3.0"],
    "720p": ["data.resolution=120", "diffusion.flow.shift=5.0", "diffusion.flow.sample_shift=5.0"],
}


@pytest.mark.parametrize(
    ("config", "overrides", "key"),
    [
        (TINY, ["model.backbone=vit"], "model.backbone"),
        (TINY_DIT, ["model.fps_conditioning=True"], "model.fps_conditioning"),
        (TINY_DIT, ["condition.frames=first", "model.condition_channels=4"], "condition.frames"),
        (TINY_DIT, ["condition.low_res_factor=2", "model.condition_channels=3"], "condition.low_res_factor"),
        (TINY_DIT, ["model.block_out_channels=(8,16)"], "model.block_out_channels"),
        (TINY_DIT, ["model.temporal.num_heads=2"], "model.temporal.num_heads"),
        (TINY, ["model.dit.num_layers=2"], "model.dit.num_layers"),
        (TINY_DIT, ["data.num_frames=5", "model.dit.patch_size=(2,4,4)"], "data.num_frames"),
        (TINY_DIT, ["data.resolution=18", "model.dit.patch_size=(2,4,4)"], "data.resolution"),
        (TINY_DIT, ["model.dit.attention_head_dim=15"], "model.dit"),
        (TINY_DIT, ["model.dit.num_layers=0"], "model.dit.num_layers"),
        (TINY_DIT, ["model.dit.rope_max_seq_len=4"], "model.dit.rope_max_seq_len"),
        (TINY_DIT, ["model.in_channels=4"], "model.in_channels"),
        (TINY_DIT, ["sample.unipc_order=0"], "sample.unipc_order"),
    ],
)
def test_impossible_backbone_settings_name_their_key(config, overrides, key):
    with pytest.raises(ConfigError, match=f"config key '{key}'"):
        load_config(config, overrides, reads_data=False)


@pytest.mark.parametrize(
    ("name", "published", "sample_shift"),
    [("wan21_1_3b", WAN21_1_3B, 3.0), ("wan21_14b", WAN21_14B, 5.0)],
)
def test_wan_configs_validate_at_the_published_sizes(name, published, sample_shift):
    config = load_config(str(CONFIGS / f"{name}.py"), reads_data=False)
    assert wan_config(config.model) == published
    assert (config.data.num_frames, config.data.channels, config.model.backbone) == (21, 16, "dit")
    assert (config.diffusion.formulation, config.sample.sampler) == ("flow", "unipc")
    assert config.model.dtype == "bfloat16" and config.model.dit.scan_layers and config.model.remat != "none"
    assert config.mesh.fsdp == -1
    assert config.diffusion.flow.sample_shift == sample_shift
    other = "480p" if sample_shift == 5.0 else "720p"
    assert load_config(str(CONFIGS / f"{name}.py"), RESOLUTIONS[other], reads_data=False).mesh.fsdp == -1
