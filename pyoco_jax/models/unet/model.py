"""VideoUNet: an image diffusion U-Net (diffusers' UNet2DConditionModel layout) plus temporal layers.

The 2D layers see frames folded into the batch, so SD 1.x/2.x weights map onto them one to one
(`pyoco_jax.convert.diffusers`); the temporal layers of `model.temporal` start as the identity,
so at init the video U-Net equals the image U-Net applied to every frame.

Cascade stages and image-to-video models also take a `condition` video (`model.condition_channels`:
given frames with their mask, an upsampled low-resolution clip; `pyoco_jax.conditioning` builds it) through
`conv_in_condition`, a zero-initialised convolution added to `conv_in`, and the noise level it was
augmented with through `augmentation_embedding` (`model.condition_augmentation`, zero at init): an
unconditioned checkpoint loads unchanged and the model computes exactly what it did until they train.
"""

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from pyoco_jax.models.attention import BACKENDS
from pyoco_jax.models.embeddings import LabelEmbedding, TimestepEmbedding, sinusoidal_embedding
from pyoco_jax.models.keys import ParamKeys
from pyoco_jax.models.layers import Conv2d, GroupNorm, Precision
from pyoco_jax.models.remat import REMAT_MODES
from pyoco_jax.models.temporal import TemporalSpec
from pyoco_jax.models.unet.stages import DownStage, MidStage, StageOptions, UpStage

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _per_level(value, levels: int, key: str) -> list[int]:
    if isinstance(value, (tuple, list)):
        if len(value) != levels:
            raise ValueError(f"model.{key} has {len(value)} entries, needs one per level ({levels})")
        return [int(v) for v in value]
    return [int(value)] * levels


def _dtype(name: str, key: str) -> jnp.dtype:
    if name not in DTYPES:
        raise ValueError(f"model.{key}={name!r} is not one of {tuple(DTYPES)}")
    return DTYPES[name]


class VideoUNet(nnx.Module):
    """Denoiser on channels-last video (B, F, H, W, C).

    Built from the `config.model` section; `num_frames` sizes the per-frame tables (adaptor,
    relative positions), so clips may have at most that many frames.
    """

    def __init__(self, model_config: ml_collections.ConfigDict, *, num_frames: int, rngs: nnx.Rngs):
        m = model_config
        rngs = ParamKeys(rngs)
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if m.remat not in REMAT_MODES:
            raise ValueError(f"model.remat={m.remat!r} is not one of {REMAT_MODES}")
        if m.attention_backend not in BACKENDS:
            raise ValueError(f"model.attention_backend={m.attention_backend!r} is not one of {BACKENDS}")
        channels = [int(c) for c in m.block_out_channels]
        levels = len(channels)
        attention = [bool(a) for a in m.attention_levels]
        if len(attention) != levels:
            raise ValueError(f"model.attention_levels needs {levels} entries, one per level")
        heads = _per_level(m.num_attention_heads, levels, "num_attention_heads")
        depth = _per_level(m.transformer_layers_per_block, levels, "transformer_layers_per_block")
        precision = Precision(_dtype(m.dtype, "dtype"), _dtype(m.param_dtype, "param_dtype"))
        spec = TemporalSpec.from_config(m.get("temporal"))
        for level in spec.levels:
            if not 0 <= level < levels:
                raise ValueError(f"model.temporal.levels has level {level}; the U-Net has levels 0..{levels - 1}")
        self.num_frames, self.levels, self.dtype = num_frames, levels, precision.dtype
        self.context_dim = int(m.cross_attention_dim)
        self.flip_sin_to_cos, self.freq_shift = bool(m.flip_sin_to_cos), float(m.freq_shift)
        self.time_proj_dim, temb = channels[0], 4 * channels[0]
        options = StageOptions(
            temb_channels=temb,
            groups=int(m.norm_num_groups),
            eps=float(m.norm_eps),
            context_dim=self.context_dim,
            backend=m.attention_backend,
            remat=m.remat,
            num_frames=num_frames,
            temporal=spec,
            precision=precision,
        )
        edge_adaptor = num_frames if spec.adaptor and spec.active(0) else 0

        self.conv_in = Conv2d(m.in_channels, channels[0], adaptor_frames=edge_adaptor, precision=precision, rngs=rngs)
        self.condition_channels = int(m.condition_channels)
        self.conv_in_condition = (
            Conv2d(self.condition_channels, channels[0], precision=precision, rngs=rngs, zero_init=True)
            if self.condition_channels
            else None
        )
        self.time_embedding = TimestepEmbedding(channels[0], temb, precision=precision, rngs=rngs)
        self.augmentation_embedding = (
            TimestepEmbedding(channels[0], temb, precision=precision, rngs=rngs, zero_out=True)
            if m.condition_augmentation
            else None
        )
        self.class_embedding = (
            LabelEmbedding(m.num_classes, temb, precision=precision, rngs=rngs) if m.num_classes else None
        )
        self.fps_embedding = (
            TimestepEmbedding(channels[0], temb, precision=precision, rngs=rngs, zero_out=True)
            if m.fps_conditioning
            else None
        )

        skip_channels = [channels[0]]
        down = []
        for level, out in enumerate(channels):
            last = level == levels - 1
            down.append(
                DownStage(
                    skip_channels[-1],
                    out,
                    num_layers=int(m.layers_per_block),
                    add_downsample=not last,
                    attention=attention[level],
                    heads=heads[level],
                    transformer_layers=depth[level],
                    level=level,
                    options=options,
                    rngs=rngs,
                )
            )
            skip_channels += [out] * (int(m.layers_per_block) + (0 if last else 1))
        self.down_blocks = nnx.List(down)
        self.mid_block = MidStage(
            channels[-1],
            attention=bool(m.mid_block_attention),
            heads=heads[-1],
            transformer_layers=depth[-1],
            level=None,
            options=options,
            rngs=rngs,
        )
        up, prev = [], channels[-1]
        for level in reversed(range(levels)):
            units = int(m.layers_per_block) + 1
            skips, skip_channels = skip_channels[-units:][::-1], skip_channels[:-units]
            up.append(
                UpStage(
                    prev,
                    channels[level],
                    skip_channels=skips,
                    add_upsample=level > 0,
                    attention=attention[level],
                    heads=heads[level],
                    transformer_layers=depth[level],
                    level=level,
                    options=options,
                    rngs=rngs,
                )
            )
            prev = channels[level]
        self.up_blocks = nnx.List(up)
        self.conv_norm_out = GroupNorm(
            int(m.norm_num_groups), channels[0], eps=float(m.norm_eps), precision=precision, rngs=rngs
        )
        self.conv_out = Conv2d(channels[0], m.out_channels, adaptor_frames=edge_adaptor, precision=precision, rngs=rngs)

    def _embed(
        self,
        t: jax.Array,
        batch: int,
        labels: jax.Array | None,
        fps: jax.Array | None,
        augmentation: jax.Array | None,
    ) -> jax.Array:
        t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (batch,))
        sinusoid = lambda v: sinusoidal_embedding(
            v, self.time_proj_dim, flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift
        ).astype(self.dtype)
        emb = self.time_embedding(sinusoid(t))
        if self.augmentation_embedding is not None:
            if augmentation is None:
                raise ValueError("the model embeds its condition's noise level (model.condition_augmentation): pass it")
            level = jnp.broadcast_to(jnp.asarray(augmentation, jnp.float32), (batch,))
            emb = emb + self.augmentation_embedding(sinusoid(level))
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(labels, batch)
        elif labels is not None:
            raise ValueError("labels were given but the model has no class embedding (model.num_classes = 0)")
        if self.fps_embedding is not None:
            if fps is None:
                raise ValueError("the model is fps-conditioned (model.fps_conditioning): pass fps, shape (B,)")
            emb = emb + self.fps_embedding(sinusoid(jnp.broadcast_to(jnp.asarray(fps, jnp.float32), (batch,))))
        return emb

    def __call__(
        self,
        x: jax.Array,
        t: jax.Array,
        context: jax.Array | None = None,
        labels: jax.Array | None = None,
        fps: jax.Array | None = None,
        condition: jax.Array | None = None,
        augmentation: jax.Array | None = None,
    ) -> jax.Array:
        """x: (B, F, H, W, C); t: (B,) timestep or c_noise; context: (B, L, D); labels: (B,) int
        (None: the null label); fps: (B,) frame rate; condition: (B, F, H, W, condition_channels);
        augmentation: (B,) its noise level, as the embedding takes it (c_noise of that sigma).
        Returns (B, F, H, W, out_channels) float32."""
        if x.ndim != 5:
            raise ValueError(f"VideoUNet takes video (B, F, H, W, C), got shape {x.shape}")
        b, f, h, w, c = x.shape
        factor = 2 ** (self.levels - 1)
        if h % factor or w % factor:
            raise ValueError(f"frame size {h}x{w} is not divisible by the U-Net's downsampling factor {factor}")
        if self.context_dim and context is None:
            raise ValueError(
                f"the model cross-attends to text (model.cross_attention_dim={self.context_dim}): pass context"
            )
        if context is not None:
            if not self.context_dim:
                raise ValueError("context was given but the model has no cross-attention (model.cross_attention_dim=0)")
            if context.ndim != 3 or context.shape[0] != b or context.shape[-1] != self.context_dim:
                raise ValueError(f"context must be (B={b}, L, {self.context_dim}), got shape {context.shape}")
            context = context.astype(self.dtype)
        temb = jnp.repeat(self._embed(t, b, labels, fps, augmentation), f, axis=0)
        hidden = self.conv_in(x.reshape(b * f, h, w, c).astype(self.dtype), f)
        if self.conv_in_condition is not None:
            if condition is None or condition.shape != (b, f, h, w, self.condition_channels):
                got = None if condition is None else condition.shape
                raise ValueError(f"the model takes a condition (B, F, H, W, {self.condition_channels}), got {got}")
            hidden = hidden + self.conv_in_condition(condition.reshape(b * f, h, w, -1).astype(self.dtype), f)
        elif condition is not None:
            raise ValueError("a condition was given but the model takes none (model.condition_channels = 0)")
        skips = [hidden]
        for stage in self.down_blocks:
            hidden, stage_skips = stage(hidden, temb, context, f)
            skips += stage_skips
        hidden = self.mid_block(hidden, temb, context, f)
        for stage in self.up_blocks:
            hidden = stage(hidden, skips, temb, context, f)
        hidden = self.conv_out(jax.nn.silu(self.conv_norm_out(hidden)), f)
        return hidden.reshape(b, f, h, w, -1).astype(jnp.float32)
