"""Our Wan VAE back to diffusers: a saved tiny AutoencoderKLWan read here and written back loads in diffusers with
every tensor and config key equal to the original; the full-size Wan 2.1 layout maps back name for name."""

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKLWan

from pyoco_jax.convert.merge import ConversionError
from pyoco_jax.convert.wan_vae import convert_state_dict, diffusers_state_dict, load_wan_vae_params, save_wan_vae
from tests.models.test_wan_vae import TINY

# Keys whose value the round trip must keep (diffusers adds bookkeeping keys of its own, e.g. _diffusers_version).
ARCHITECTURE_KEYS = (
    *TINY,
    "decoder_base_dim",
    "attn_scales",
    "temperal_downsample",
    "is_residual",
    "in_channels",
    "out_channels",
    "patch_size",
    "scale_factor_temporal",
    "scale_factor_spatial",
)


def test_round_trip_equals_the_diffusers_original(tmp_path):
    torch.manual_seed(0)
    original = AutoencoderKLWan(**TINY, decoder_base_dim=12).eval()
    with torch.no_grad():  # Gammas off 1 and biases off 0, so a misplaced tensor shows.
        for param in original.parameters():
            param.add_(0.1 * torch.randn_like(param))
    original.save_pretrained(tmp_path / "source")
    config, params = load_wan_vae_params(tmp_path / "source")
    files = save_wan_vae(config, params, tmp_path / "exported")
    assert {f.name for f in files} == {"config.json", "diffusion_pytorch_model.safetensors"}

    exported = AutoencoderKLWan.from_pretrained(tmp_path / "exported")
    want, got = original.state_dict(), exported.state_dict()
    assert got.keys() == want.keys()
    for name, tensor in want.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
    for key in ARCHITECTURE_KEYS:
        assert exported.config[key] == original.config[key], key


def test_full_size_layout_maps_back_name_for_name():
    with torch.device("meta"):
        reference = AutoencoderKLWan()
    shapes = {name: tuple(p.shape) for name, p in reference.state_dict().items()}
    fake = {name: np.broadcast_to(np.float32(0), shape) for name, shape in shapes.items()}
    back = diffusers_state_dict(convert_state_dict(fake))
    assert {name: value.shape for name, value in back.items()} == shapes


def test_a_parameter_without_a_diffusers_place_is_named():
    with pytest.raises(ConversionError, match="no AutoencoderKLWan equivalent for parameter 'decoder.extra.weight'"):
        diffusers_state_dict({"decoder.extra.weight": np.zeros((2, 2), np.float32)})
