"""The video U-Net backbone: diffusers' UNet2DConditionModel layout with PYoCo's and MagicVideo's temporal layers.

model.py builds VideoUNet from the run's `model` section; stages.py holds its down, mid and up stages. The
building blocks it shares with the VAE and the DiT (layers, attention, ResNets, temporal layers) stay in
pyoco_jax/models/.
"""

from pyoco_jax.models.unet.model import VideoUNet

__all__ = ["VideoUNet"]
