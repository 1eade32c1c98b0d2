"""The SD VAE against diffusers' AutoencoderKL: numerical parity, conversion errors, pickle refusal."""

import json
import shutil

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch
from diffusers import AutoencoderKL as TorchAutoencoderKL
from flax import nnx

from pyoco_jax.convert.merge import ConversionError, flat_params
from pyoco_jax.convert.vae import load_vae
from pyoco_jax.models import axes
from pyoco_jax.models.vae import AutoencoderKL
from pyoco_jax.models.vae.config import VAEConfig
from pyoco_jax.models.vae.video import TemporalDecoderSpec, VideoVAE
from tests.models.vae_testing import save_tiny_vae, to_nchw, to_nhwc

WEIGHTS = "diffusion_pytorch_model.safetensors"
PARITY_CONFIGS = {
    "two-levels-attention-quant-convs": dict(
        block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=16
    ),
    "three-levels-no-attention-no-quant-convs": dict(
        block_out_channels=(16, 32, 32),
        layers_per_block=2,
        latent_channels=8,
        norm_num_groups=8,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,
        scaling_factor=0.5,
        shift_factor=0.25,
    ),
}


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    save_tiny_vae(folder)
    return folder


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_parity_with_diffusers(tmp_path, name):
    """Encoder moments and decoder output equal diffusers' to 1e-4 on random inputs, frames folded in order."""
    config = PARITY_CONFIGS[name]
    reference = save_tiny_vae(tmp_path, **config)
    ours = load_vae(tmp_path)
    rng = np.random.default_rng(0)
    frames = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        posterior = reference.encode(to_nchw(frames)).latent_dist
        mean, logvar = to_nhwc(posterior.mean), to_nhwc(posterior.logvar)
        latents = rng.standard_normal(mean.shape).astype(np.float32)
        decoded = to_nhwc(reference.decode(to_nchw(latents)).sample)

    # As video (1, 3, ...): checks encode/decode and that per_frame folds and unfolds frames in order.
    ours_posterior = nnx.jit(lambda vae, x: vae.encode_video(x))(ours, frames[None])
    ours_decoded = nnx.jit(lambda vae, z: vae.decode_video(z))(ours, latents[None])
    errors = {
        "mean": np.abs(np.asarray(ours_posterior.mean[0]) - mean).max(),
        "logvar": np.abs(np.asarray(ours_posterior.logvar[0]) - logvar).max(),
        "decoded": np.abs(np.asarray(ours_decoded[0]) - decoded).max(),
    }
    print(f"{name}: max abs errors {errors}")
    assert max(errors.values()) < 1e-4, errors
    assert min(np.abs(mean).max(), np.abs(decoded).max()) > 0.5  # Non-trivial outputs.
    assert ours.config == VAEConfig.from_diffusers(json.loads((tmp_path / "config.json").read_text()))
    assert ours.config.scaling_factor == config.get("scaling_factor", 0.18215)
    assert ours.config.shift_factor == config.get("shift_factor", 0.0)
    assert (ours.quant_conv is None) == (not config.get("use_quant_conv", True))


SD15_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}


def test_sd15_vae_architecture_matches_diffusers_and_carries_logical_axes():
    """Same parameter count as diffusers' SD-1.5 VAE (built on the meta device: no memory, no weights)."""
    config = VAEConfig.from_diffusers(SD15_VAE)
    assert config.downsampling_factor == 8 and config.scaling_factor == 0.18215 and config.sample_size == 512
    with torch.device("meta"):
        reference = TorchAutoencoderKL(**{k: v for k, v in SD15_VAE.items() if not k.startswith("_")})
    expected = sum(p.numel() for p in reference.parameters())
    ours = nnx.eval_shape(lambda: AutoencoderKL(config, rngs=nnx.Rngs(0)))
    assert sum(v.get_value().size for v in flat_params(ours).values()) == expected
    video = nnx.eval_shape(lambda: VideoVAE(config, TemporalDecoderSpec(), num_frames=16, rngs=nnx.Rngs(0)))
    for name, variable in {**flat_params(ours), **flat_params(video)}.items():
        names = variable.get_metadata().get("out_sharding")
        assert names is not None and len(names) == variable.get_value().ndim, name
        assert set(names) <= set(axes.VOCABULARY), name
    print(f"SD-1.5 VAE: {expected:,} params")


def test_latent_scaling_round_trips():
    config = VAEConfig(scaling_factor=0.5, shift_factor=0.25)
    z = np.array([0.25, 2.25, -1.75])
    np.testing.assert_allclose(config.scale_latents(z), [0.0, 1.0, -1.0])
    np.testing.assert_allclose(config.unscale_latents(config.scale_latents(z)), z)


def _edit_weights(source, target, edit) -> None:
    shutil.copytree(source, target)
    tensors = safetensors.numpy.load_file(target / WEIGHTS)
    edit(tensors)
    safetensors.numpy.save_file(tensors, target / WEIGHTS)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda t: t.pop("decoder.up_blocks.1.resnets.0.conv_shortcut.weight"),
            "decoder.up_blocks.1.resnets.0.conv_shortcut",
        ),
        (lambda t: t.pop("encoder.mid_block.attentions.0.to_q.bias"), "encoder.mid_block.attentions.0.to_q.bias"),
        (
            lambda t: t.update({"encoder.mid_block.resnets.2.conv1.weight": np.zeros((32, 32, 3, 3), np.float32)}),
            "encoder.mid_block.resnets.2.conv1",
        ),
        (lambda t: t.update({"decoder.conv_out.bias": np.zeros(4, np.float32)}), "decoder.conv_out.bias"),
    ],
    ids=["missing-weight", "missing-bias", "extra-tensor", "wrong-shape"],
)
def test_mismatched_weights_name_the_tensor(tmp_path, tiny_vae, edit, message):
    _edit_weights(tiny_vae, tmp_path / "vae", edit)
    with pytest.raises(ConversionError, match=message.replace(".", r"\.")):
        load_vae(tmp_path / "vae")


def test_legacy_attention_names_load(tmp_path, tiny_vae):
    """Checkpoints saved before diffusers renamed query/key/value/proj_attn load to the same params."""

    def rename(tensors):
        for old, new in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
            for part in ("encoder", "decoder"):
                for leaf in ("weight", "bias"):
                    name = f"{part}.mid_block.attentions.0.{old}.{leaf}"
                    tensors[name.replace(old, new)] = tensors.pop(name)

    _edit_weights(tiny_vae, tmp_path / "vae", rename)
    legacy, current = flat_params(load_vae(tmp_path / "vae")), flat_params(load_vae(tiny_vae))
    assert legacy.keys() == current.keys()
    for name, value in current.items():
        np.testing.assert_array_equal(legacy[name].get_value(), value.get_value(), err_msg=name)


def test_refuses_pickle_unless_allowed_and_finds_the_vae_subfolder(tmp_path, tiny_vae):
    # The same weights re-saved as a pickle, inside a pipeline folder.
    TorchAutoencoderKL.from_pretrained(tiny_vae).save_pretrained(
        tmp_path / "pipeline" / "vae", safe_serialization=False
    )
    assert not (tmp_path / "pipeline" / "vae" / WEIGHTS).exists()
    with pytest.raises(ConversionError, match="pickle.*allow_pickle=True"):
        load_vae(tmp_path / "pipeline")
    pickled, safe = flat_params(load_vae(tmp_path / "pipeline", allow_pickle=True)), flat_params(load_vae(tiny_vae))
    assert pickled.keys() == safe.keys()
    for name, value in safe.items():
        np.testing.assert_array_equal(pickled[name].get_value(), value.get_value(), err_msg=name)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"act_fn": "gelu"}, "act_fn"),
        ({"up_block_types": ["UpDecoderBlock2D", "AttnUpDecoderBlock2D"]}, "up_block_types"),
        ({"_class_name": "AutoencoderTiny"}, "AutoencoderTiny"),
        ({"norm_num_groups": 5}, "norm_num_groups"),
    ],
)
def test_unsupported_configs_are_refused(tmp_path, tiny_vae, change, message):
    shutil.copytree(tiny_vae, tmp_path / "vae")
    config = json.loads((tiny_vae / "config.json").read_text())
    (tmp_path / "vae" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ConversionError, match=message):
        load_vae(tmp_path / "vae")


def test_load_vae_is_reexported_and_checks_inputs(tiny_vae):
    from pyoco_jax.convert import diffusers

    assert diffusers.load_vae is load_vae
    vae = load_vae(tiny_vae, dtype="bfloat16")
    assert vae.dtype == jax.numpy.bfloat16 and vae.encoder.conv_in.kernel.get_value().dtype == np.float32
    with pytest.raises(ValueError, match="not divisible by the VAE's factor 2"):
        vae.encode(np.zeros((1, 31, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(B, F, H, W, C\)"):
        vae.decode_video(np.zeros((1, 16, 16, 4), np.float32))
    with pytest.raises(ConversionError, match="no config.json"):
        load_vae(tiny_vae / "missing")
