"""Parameter counts of an SD-1.5-shaped U-Net (abstract, nothing allocated) and logical axis names."""

import math

import jax
from flax import nnx
from pyoco_jax.configs import default

from pyoco_jax.convert.merge import NEW_PARAM_PATTERN, flat_params
from pyoco_jax.models import axes
from pyoco_jax.models.unet import VideoUNet
from tests.models.model_testing import TEMPORAL_OFF, tiny_model_config

SD15_PARAMS = 859_520_964  # diffusers' UNet2DConditionModel for runwayml/stable-diffusion-v1-5


def sd15_model_config(**temporal):
    """SD 1.5's unet/config.json in our `model` section's terms."""
    m = default.get_config().model
    m.in_channels = m.out_channels = 4
    m.block_out_channels = (320, 640, 1280, 1280)
    m.layers_per_block = 2
    m.attention_levels = (True, True, True, False)
    m.num_attention_heads = 8
    m.cross_attention_dim = 768
    m.norm_num_groups = 32
    m.norm_eps = 1e-5
    m.temporal.update({**TEMPORAL_OFF, **temporal})
    return m


def _counts(model_config, num_frames):
    abstract = nnx.eval_shape(lambda: VideoUNet(model_config, num_frames=num_frames, rngs=nnx.Rngs(0)))
    sizes = {name: math.prod(v.get_value().shape) for name, v in flat_params(abstract).items()}
    new = sum(size for name, size in sizes.items() if NEW_PARAM_PATTERN.search(name))
    return sum(sizes.values()) - new, new


def test_sd15_shaped_unet_has_diffusers_parameter_count():
    temporal = dict(levels=(0, 1, 2, 3), mid=True, attention=True, adaptor=True, position_encoding="relative")
    video_2d, added = _counts(sd15_model_config(**temporal), 16)
    assert video_2d == SD15_PARAMS
    print(f"SD-1.5 2D params {video_2d:,}; temporal attention + adaptor + relative positions add {added:,}")
    assert 0 < added < SD15_PARAMS // 2


def test_image_model_has_no_temporal_parameters():
    abstract = nnx.eval_shape(lambda: VideoUNet(tiny_model_config(), num_frames=1, rngs=nnx.Rngs(0)))
    assert not [n for n in flat_params(abstract) if "temporal_" in n or "adaptor" in n or "fps_" in n]


def test_every_parameter_carries_known_logical_axes():
    m = tiny_model_config(
        levels=(0, 1), mid=True, attention=True, conv=True, adaptor=True, position_encoding="relative"
    )
    m.fps_conditioning = True
    abstract = nnx.eval_shape(lambda: VideoUNet(m, num_frames=4, rngs=nnx.Rngs(0)))
    for name, variable in flat_params(abstract).items():
        names = variable.get_metadata().get("out_sharding")
        assert names is not None and len(names) == variable.get_value().ndim, name
        assert set(names) <= set(axes.VOCABULARY), name
    specs = nnx.get_partition_spec(nnx.state(abstract, nnx.Param))
    assert all(isinstance(s, jax.sharding.PartitionSpec) for s in jax.tree.leaves(specs))
