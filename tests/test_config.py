"""Configs load with their command-line overrides, and bad ones fail naming the key to change."""

import pathlib

import pytest

from pyoco_jax.config import ConfigError, load_config

CONFIGS = pathlib.Path(__file__).parents[1] / "configs"
TINY = str(CONFIGS / "tiny.py")


@pytest.mark.parametrize("path", sorted(p.name for p in CONFIGS.glob("*.py") if p.name != "__init__.py"))
def test_every_config_file_loads_and_validates(path):
    config = load_config(str(CONFIGS / path), reads_data=False)  # Data paths come on the command line.
    assert config.data.num_frames >= 1


def test_overrides_apply_with_types():
    config = load_config(TINY, ["noise.prior=mixed", "--config.noise.alpha=0.5", "model.block_out_channels=(16,32,32)"])
    assert config.noise.prior == "mixed" and config.noise.alpha == 0.5
    assert tuple(config.model.block_out_channels) == (16, 32, 32)


def test_the_last_override_of_a_key_wins():
    overrides = ["model.block_out_channels=(8,8,8)", "noise.alpha=3", "model.block_out_channels=(8,16,16)"]
    config = load_config(TINY, overrides)
    assert tuple(config.model.block_out_channels) == (8, 16, 16) and config.noise.alpha == 3


@pytest.mark.parametrize(
    "override,key",
    [
        ("optim.lerning_rate=1e-3", "lerning_rate"),
        ("optim.learning_rate=fast", "learning_rate"),
        ("noise.alpha=-0.5", "noise.alpha"),
        ("noise.sample_alpha=-0.5", "noise.sample_alpha"),
        ("noise.prior=gaussian", "noise.prior"),
        ("data.resolution=33", "data.resolution"),
        ("model.block_out_channels=(32,32,32,32,32,32,32)", "data.resolution"),
        ("model.attention_levels=(True,)", "model.attention_levels"),
        ("model.temporal.levels=(0,3)", "model.temporal.levels"),
        ("model.temporal.num_heads=5", "model.temporal.num_heads"),
        ("optim.accum_steps=3", "data.global_batch_size"),
        ("sample.sampler=ancestral", "sample.sampler"),
        ("model.in_channels=4", "model.in_channels"),
        ("model.num_classes=2", "model.num_classes"),
        ("mesh.sequence=3", "data.num_frames"),
        ("data.shape_size=(0.3,0.2)", "data.shape_size"),
    ],
)
def test_bad_values_fail_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config(TINY, [override])


def test_unknown_key_added_by_a_config_file_is_caught(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(
        "from pyoco_jax.configs import tiny\n"
        "def get_config():\n"
        "    c = tiny.get_config()\n"
        "    c.optim.lerning_rate = 1e-3\n"
        "    return c\n"
    )
    with pytest.raises(ConfigError, match="optim.lerning_rate"):
        load_config(str(path))


def test_wrong_type_in_a_config_file_is_caught(tmp_path):
    path = tmp_path / "wrongtype.py"
    path.write_text(
        "import ml_collections\n"
        "from pyoco_jax.configs import tiny\n"
        "def get_config():\n"
        "    c = tiny.get_config().to_dict()\n"
        "    c['data']['num_frames'] = 'eight'\n"
        "    return ml_collections.ConfigDict(c)\n"
    )
    with pytest.raises(ConfigError, match="data.num_frames"):
        load_config(str(path))


def test_override_values_take_the_type_the_key_holds():
    config = load_config(
        TINY,
        ["text.path=", "sample.prompts=a cat", "data.flip=TRUE", "model.num_attention_heads=(2,2,4)", "noise.alpha=2"],
    )
    assert config.text.path == "" and config.sample.prompts == ("a cat",) and config.data.flip is True
    assert config.model.num_attention_heads == (2, 2, 4) and isinstance(config.noise.alpha, float)


def test_a_misspelt_key_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(TINY, ["optim.learning_rat=1e-3"])


def test_relative_paths_become_absolute_and_urls_stay(tmp_path, monkeypatch):
    (tmp_path / "unet").mkdir()
    monkeypatch.chdir(tmp_path)
    overrides = ["train.init_from=unet", "diffusion.edm.pretrained_prediction=edm", "vae.video_decoder=gs://b/vae"]
    config = load_config(TINY, overrides)
    assert config.train.init_from == str(tmp_path / "unet")
    assert config.vae.video_decoder == "gs://b/vae"
