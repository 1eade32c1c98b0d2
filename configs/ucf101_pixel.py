"""PYoCo small-scale UCF-101: pixel-space video diffusion, 16 frames at 64x64, progressive noise prior.

Needs the official UCF-101 files in one folder (https://www.crcv.ucf.edu/data/UCF101.php): UCF101.rar
extracted there (`unrar x UCF101.rar` gives UCF-101/<Class>/*.avi) and
UCF101TrainTestSplits-RecognitionTask.zip. The first run builds the TFDS dataset (array_record files
holding the original .avi bytes) in data.tfds_data_dir; multi-host runs should build it beforehand with
`python -c "from pyoco_jax.data.builders import prepare_ucf101; prepare_ucf101('/data/ucf101', '/data/tfds')"`.

    pyoco-train --config configs/ucf101_pixel.py --workdir runs/ucf101_pixel \
        --config.data.path=/data/ucf101 --config.data.tfds_data_dir=/data/tfds

Class-conditional on the 101 action classes (PYoCo's small-scale numbers are unconditional: set
--config.data.num_classes=0 --config.model.num_classes=0). EDM formulation, as PYoCo's eDiff-I base; a
U-Net of 116M parameters, about the size of the paper's smaller small-scale model (112M).
"""

import ml_collections
from pyoco_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
    c = default.get_config()
    c.data.source = "ucf101"
    c.data.ucf101_split = 1
    c.data.split = "train"
    c.data.num_frames = 16
    c.data.resolution = 64
    c.data.frame_stride = 3  # 25 fps videos: 16 frames cover about 2 s (8.3 fps).
    c.data.temporal_sampling = "random"
    c.data.crop = "center"
    c.data.flip = True
    c.data.num_classes = 101
    c.data.global_batch_size = 64
    c.data.worker_count = 8  # Decoding 16x 320x240 .avi frames per clip wants several CPU workers per host.
    c.data.prefetch = 4

    c.noise.prior = "progressive"
    c.noise.alpha = 2.0
    c.diffusion.formulation = "edm"

    c.model.block_out_channels = (128, 256, 256, 512)  # 116M parameters with the temporal layers.
    c.model.layers_per_block = 2
    c.model.attention_levels = (False, True, True, True)
    c.model.num_attention_heads = 8
    c.model.norm_num_groups = 32
    c.model.num_classes = 101
    c.model.dtype = "bfloat16"
    c.model.temporal.levels = (0, 1, 2, 3)
    c.model.temporal.mid = True
    c.model.temporal.num_heads = 8
    c.model.temporal.position_encoding = "relative"
    c.model.temporal.directed = False

    c.optim.learning_rate = 2e-4
    c.optim.warmup_steps = 1000
    c.optim.ema_decay = 0.9999
    c.optim.label_drop_rate = 0.1
    c.train.num_steps = 200_000
    c.train.log_every = 100
    c.train.checkpoint_every = 5000
    c.train.sample_every = 10_000
    c.sample.sampler = "heun"
    c.sample.num_steps = 32
    c.sample.num_samples = 8
    c.sample.guidance_scale = 2.0
    return c
